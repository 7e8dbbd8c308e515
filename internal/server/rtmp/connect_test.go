package rtmp

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/protocol/rtmp"
)

// The shapes of tcUrl real clients send.
func TestSplitTcURL(t *testing.T) {
	for _, tc := range []struct {
		tcURL, app, stream, query string
	}{
		{"rtmp://host/live", "live", "", ""},                             // OBS
		{"rtmp://host:1935/live", "live", "", ""},                        // ffmpeg (librtmp, native), GStreamer rtmp2
		{"rtmps://host:443/live/", "live", "", ""},                       // a trailing slash
		{"rtmp://host/live?key=K", "live", "", "key=K"},                  // the key in the query
		{"rtmp://host/live/cam1?key=K&x=1", "live", "cam1", "key=K&x=1"}, // everything in tcUrl
		{"rtmp://[::1]:1935/live/cam1", "live", "cam1", ""},              // an IPv6 host
		{"rtmp://host", "", "", ""},                                      // no app at all
		{"host/live", "", "", ""},                                        // not a URL
		{"rtmp://host/live/inst/cam1", "live", "inst/cam1", ""},          // an instance: refused as a name later
	} {
		app, stream, params := splitTcURL(tc.tcURL)
		if app != tc.app || stream != tc.stream || params.Encode() != mustQuery(tc.query).Encode() {
			t.Errorf("splitTcURL(%q) = %q, %q, %q; want %q, %q, %q", tc.tcURL, app, stream, params.Encode(), tc.app, tc.stream, tc.query)
		}
	}
}

func mustQuery(q string) url.Values {
	v, _ := url.ParseQuery(q)
	return v
}

// keyAuth admits publishers presenting the key "K".
type keyAuth struct{}

func (keyAuth) Check(_ context.Context, req auth.Request) (auth.Grant, error) {
	if req.Action == auth.Publish && req.Params.Get("key") != "K" {
		return auth.Grant{}, auth.ErrBadKey
	}
	return auth.Grant{}, nil
}

// Clients that send only tcUrl (no app), with the key and even the stream
// in it, publish and play like any other.
func TestConnectWithTcURLOnly(t *testing.T) {
	s, _ := startServer(t, Config{Auth: keyAuth{}})
	addr := s.Addr().String()
	client := func(app, tcURL string) *rtmp.Client {
		t.Helper()
		c := dialFrom(t, s, "127.0.0.1")
		c.SetDeadline(time.Now().Add(5 * time.Second))
		cl, err := rtmp.NewClient(c)
		if err == nil {
			err = cl.Connect(app, tcURL)
		}
		if err != nil {
			t.Fatalf("connect with app %q, tcUrl %q: %v", app, tcURL, err)
		}
		c.SetDeadline(time.Time{})
		return cl
	}
	// No app; the app, the stream and the key all in tcUrl.
	pub := client("", "rtmp://"+addr+"/live/cam1?key=K")
	if err := pub.Publish(""); err != nil {
		t.Fatalf("publish with everything in tcUrl: %v", err)
	}
	// No app; the key in tcUrl's query, the stream in publish.
	pub2 := client("", "rtmp://"+addr+"/live?key=K")
	if err := pub2.Publish("cam2"); err != nil {
		t.Fatalf("publish with the app and key in tcUrl: %v", err)
	}
	// The app given, the key only in tcUrl's query.
	pub3 := client("live", "rtmp://"+addr+"/live?key=K")
	if err := pub3.Publish("cam3"); err != nil {
		t.Fatalf("publish with the key in tcUrl's query: %v", err)
	}
	// Without the key anywhere: refused.
	bad := client("", "rtmp://"+addr+"/live")
	if err := bad.Publish("cam4"); err == nil {
		t.Fatal("publish without a key was accepted")
	}
	// Players with only tcUrl play what those published; a stream nobody
	// publishes is not found.
	for _, name := range []string{"cam1", "cam2", "cam3"} {
		player := client("", "rtmp://"+addr+"/live")
		if err := player.Play(name); err != nil {
			t.Fatalf("play live/%s with the app in tcUrl: %v", name, err)
		}
	}
	if err := client("", "rtmp://"+addr+"/live").Play("cam4"); err == nil {
		t.Fatal("played live/cam4, which nobody publishes")
	}
	if err := client("", "rtmp://"+addr+"/live/cam1").Play(""); err != nil {
		t.Fatalf("play with the stream in tcUrl: %v", err)
	}
}

// FuzzSplitTcURL: any tcUrl a client sends splits without panicking into
// an app of one path segment and a query that parses.
func FuzzSplitTcURL(f *testing.F) {
	for _, s := range []string{"rtmp://host/live", "rtmp://h:1/live/cam?key=K", "rtmp://", "://", "rtmp://h//", "rtmp://h/a?%zz", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tcURL string) {
		app, _, params := splitTcURL(tcURL)
		if strings.Contains(app, "/") || strings.Contains(app, "?") {
			t.Fatalf("splitTcURL(%q): app %q has a separator", tcURL, app)
		}
		if params == nil {
			t.Fatalf("splitTcURL(%q): nil parameters", tcURL)
		}
	})
}
