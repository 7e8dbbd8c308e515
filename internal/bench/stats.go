package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// histogram counts durations in 1 ms buckets up to 10 s; it is safe for
// concurrent use and allocates nothing per sample.
type histogram struct {
	buckets [10001]atomic.Uint32
	n       atomic.Int64
}

func (h *histogram) add(d time.Duration) {
	ms := d.Milliseconds()
	if ms < 0 {
		ms = 0
	}
	if ms > 10000 {
		ms = 10000
	}
	h.buckets[ms].Add(1)
	h.n.Add(1)
}

// quantile returns the q-quantile in milliseconds, or -1 with no samples.
func (h *histogram) quantile(q float64) float64 {
	n := h.n.Load()
	if n == 0 {
		return -1
	}
	rank := int64(q*float64(n-1)) + 1
	var seen int64
	for i := range h.buckets {
		seen += int64(h.buckets[i].Load())
		if seen >= rank {
			return float64(i)
		}
	}
	return 10000
}

// procStat is a process's CPU time and resident memory.
type procStat struct {
	cpu time.Duration
	rss int64
}

// clockTick is the kernel's USER_HZ, 100 on every Linux ABI.
const clockTick = 100

// readProc reads /proc/PID/stat and /proc/PID/status; pid 0 means self.
func readProc(pid int) (procStat, error) {
	dir := "/proc/self"
	if pid > 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	b, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("%s/stat: unexpected format", dir)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("%s/stat: unexpected format", dir)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	st := procStat{cpu: time.Duration(utime+stime) * time.Second / clockTick}
	b, err = os.ReadFile(dir + "/status")
	if err != nil {
		return procStat{}, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			st.rss = kb << 10
		}
	}
	return st, nil
}
