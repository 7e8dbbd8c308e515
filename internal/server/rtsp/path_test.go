package rtsp

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"

	"github.com/bluenviron/gortsplib/v5/pkg/base"

	"github.com/meshcast/meshcast/internal/streamname"
)

func TestParsePath(t *testing.T) {
	for _, c := range []struct {
		path, query string
		name        streamname.Name
		params      url.Values
	}{
		{"/live/cam", "", "live/cam", url.Values{}},
		{"/live/cam/", "", "live/cam", url.Values{}}, // GStreamer adds a slash
		{"/live/cam", "key=K", "live/cam", url.Values{"key": {"K"}}},
		{"/live/cam", "expires=1&sig=ab", "live/cam", url.Values{"expires": {"1"}, "sig": {"ab"}}},
		{"live/cam.v2", "", "live/cam.v2", url.Values{}},
	} {
		name, params, err := ParsePath(c.path, c.query)
		if err != nil || name != c.name || params.Encode() != c.params.Encode() {
			t.Errorf("ParsePath(%q, %q) = %q %v %v; want %q %v", c.path, c.query, name, params, err, c.name, c.params)
		}
	}
	for _, c := range [][2]string{
		{"/", ""}, {"/live", ""}, {"/live/", ""}, {"/live/a/b", ""}, {"/../x", ""},
		{"/live/a b", ""}, {"/api/x", ""}, {"/live/cam", "key=%zz"},
		{"/" + strings.Repeat("a", 65) + "/x", ""},
	} {
		if name, _, err := ParsePath(c[0], c[1]); err == nil {
			t.Errorf("ParsePath(%q, %q) admitted %q", c[0], c[1], name)
		}
	}
}

func FuzzParsePath(f *testing.F) {
	f.Add("/live/cam", "key=K")
	f.Fuzz(func(t *testing.T, path, query string) {
		name, _, err := ParsePath(path, query)
		if err != nil {
			if len(err.Error()) > 400 {
				t.Fatalf("error quotes too much: %d bytes", len(err.Error()))
			}
			return
		}
		if _, err := streamname.Parse(string(name)); err != nil {
			t.Fatalf("name %q: %v", name, err)
		}
	})
}

// TestWithPassword: a Basic password is a publish key; the query's key
// wins, and Digest gives none.
func TestWithPassword(t *testing.T) {
	basic := func(user, pass string) *base.Request {
		cred := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
		return &base.Request{Header: base.Header{"Authorization": base.HeaderValue{"Basic " + cred}}}
	}
	if p, given := withPassword(url.Values{}, basic("any", "K")); !given || p.Get("key") != "K" {
		t.Errorf("Basic password: %v %v", p, given)
	}
	if p, _ := withPassword(url.Values{"key": {"Q"}}, basic("any", "K")); p.Get("key") != "Q" {
		t.Errorf("query key and password: %v", p)
	}
	digest := &base.Request{Header: base.Header{"Authorization": base.HeaderValue{`Digest username="u", realm="meshcast", nonce="n", uri="rtsp://h/live/x", response="0123"`}}}
	if p, given := withPassword(url.Values{}, digest); !given || p.Get("key") != "" {
		t.Errorf("Digest: %v %v", p, given)
	}
	if p, given := withPassword(url.Values{}, &base.Request{Header: base.Header{}}); given || p.Get("key") != "" {
		t.Errorf("no credentials: %v %v", p, given)
	}
}
