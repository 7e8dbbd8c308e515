package srt

import (
	"net/url"
	"testing"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/streamname"
)

// TestMain checks for leaked goroutines, except two of gosrt's own, in
// the test's clients (gosrt v0.9.0 through v0.11.0, dial.go): a refused
// dial leaves its connection-timeout timer running, and when it fires its
// goroutine blocks on a channel nobody reads any more (Dial.func3); and
// the refused dial's socket reader, once it sees the dialer shut down,
// blocks sending on the same channel (Dial.func1). The tests' callers
// close with srtconn.Close, so a closed connection's reader leaks
// nothing; the server's goroutines are all checked.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/datarhei/gosrt.Dial.func3"),
		goleak.IgnoreAnyFunction("github.com/datarhei/gosrt.Dial.func1"))
}

func TestParseStreamID(t *testing.T) {
	for _, c := range []struct {
		id, mode string
		name     streamname.Name
		params   url.Values
	}{
		{"publish:live/cam", "publish", "live/cam", url.Values{}},
		{"publish:live/cam?key=K1", "publish", "live/cam", url.Values{"key": {"K1"}}},
		{"read:live/cam", "read", "live/cam", url.Values{}},
		{"live/cam", "publish", "live/cam", url.Values{}},
		{"#!::r=live/cam,m=publish", "publish", "live/cam", url.Values{}},
		{"#!::m=publish,r=live/cam,key=K2", "publish", "live/cam", url.Values{"key": {"K2"}}},
		{"#!::r=live/cam", "read", "live/cam", url.Values{}},
	} {
		mode, name, params, err := ParseStreamID(c.id)
		if err != nil || mode != c.mode || name != c.name || params.Encode() != c.params.Encode() {
			t.Errorf("ParseStreamID(%q) = %q %q %v %v; want %q %q %v", c.id, mode, name, params, err, c.mode, c.name, c.params)
		}
	}
	for _, id := range []string{"", "publish:", "publish:live", "publish:../x", "play:live/cam", "publish:api/x", "#!::m=publish", "publish:live/a b", "publish:live/cam?key=%zz"} {
		if _, _, _, err := ParseStreamID(id); err == nil {
			t.Errorf("ParseStreamID(%q) admitted", id)
		}
	}
}

func FuzzParseStreamID(f *testing.F) {
	for _, s := range []string{"publish:live/cam?key=K", "#!::r=live/cam,m=publish,u=x", "read:a/b", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		mode, name, _, err := ParseStreamID(id)
		if err != nil {
			return
		}
		if mode != "publish" && mode != "read" {
			t.Fatalf("mode %q", mode)
		}
		if _, err := streamname.Parse(string(name)); err != nil {
			t.Fatalf("name %q: %v", name, err)
		}
	})
}
