package rtmp

import "testing"

func TestTimestampUnwrap(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []uint32
		want []int64
	}{
		{"plain", []uint32{0, 33, 66, 60, 100}, []int64{0, 33, 66, 60, 100}},
		{"across 0xFFFFFF", []uint32{0xfffffe, 0xffffff, 0x1000000}, []int64{0xfffffe, 0xffffff, 0x1000000}},
		{"across the 32-bit wrap", []uint32{1<<32 - 40, 1<<32 - 7, 1<<32 - 12, 26, 21, 59}, []int64{1<<32 - 40, 1<<32 - 7, 1<<32 - 12, 1<<32 + 26, 1<<32 + 21, 1<<32 + 59}},
		{"just behind the first", []uint32{0, 1<<32 - 5, 33}, []int64{0, -5, 33}},
		{"twice around", []uint32{1<<32 - 1, 1<<31 - 2, 1<<32 - 3, 1}, []int64{1<<32 - 1, 1<<32 + 1<<31 - 2, 2<<32 - 3, 2<<32 + 1}},
	} {
		var u tsUnwrap
		for i, ts := range tc.in {
			if got := u.unwrap(ts); got != tc.want[i] {
				t.Errorf("%s: unwrap #%d (%d) = %d, want %d", tc.name, i, ts, got, tc.want[i])
			}
		}
	}
}
