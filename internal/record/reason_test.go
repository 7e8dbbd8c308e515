//go:build unix

package record

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcast/meshcast/internal/stream"
)

// A recording's failure is counted under the reason its error tells, and
// every reason is a series of meshcast_recordings_failed_total from the
// start.
func TestFailureReasons(t *testing.T) {
	for _, c := range []struct {
		err  error
		want Reason
	}{
		{fmt.Errorf("record: write: %w", syscall.ENOSPC), ReasonDiskFull},
		{fmt.Errorf("record: write: %w", syscall.EFBIG), ReasonDiskFull},
		{fmt.Errorf("record: sync: %w", syscall.EDQUOT), ReasonDiskFull},
		{stream.ErrSlowReader, ReasonSlowDisk},
		{fmt.Errorf("record: write: %w", syscall.EIO), ReasonIOError},
		{errors.New("something else"), ReasonIOError},
	} {
		if got := reasonOf(c.err); got != c.want {
			t.Errorf("reasonOf(%v) = %s, want %s", c.err, got, c.want)
		}
	}

	r, err := New(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.fail(ReasonDiskFull)
	r.fail(ReasonDiskFull)
	r.fail(ReasonIOError)
	if st := r.Stats(); st.Failed != 3 || st.FailedBy[ReasonDiskFull] != 2 || st.FailedBy[ReasonSlowDisk] != 0 || st.FailedBy[ReasonIOError] != 1 {
		t.Errorf("Stats = %+v; want 3 failed: 2 disk_full, 1 io_error", st)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "meshcast_recordings_failed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				got[l.GetName()+"="+l.GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	if want := map[string]float64{"reason=disk_full": 2, "reason=slow_disk": 0, "reason=io_error": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("meshcast_recordings_failed_total = %v, want %v", got, want)
	}
}
