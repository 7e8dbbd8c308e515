// Package procstat reads a Linux process's CPU time and memory from /proc.
package procstat

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Stat is a process's CPU time and resident memory.
type Stat struct {
	CPU time.Duration // user and system time so far
	RSS int64         // resident set size in bytes
}

// clockTick is the kernel's USER_HZ, 100 on every Linux ABI.
const clockTick = 100

// Read reads /proc/PID/stat and /proc/PID/status; pid 0 means this process.
func Read(pid int) (Stat, error) {
	dir := "/proc/self"
	if pid > 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	b, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return Stat{}, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("%s/stat: unexpected format", dir)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return Stat{}, fmt.Errorf("%s/stat: unexpected format", dir)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	st := Stat{CPU: time.Duration(utime+stime) * time.Second / clockTick}
	b, err = os.ReadFile(dir + "/status")
	if err != nil {
		return Stat{}, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			st.RSS = kb << 10
		}
	}
	return st, nil
}
