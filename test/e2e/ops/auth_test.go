//go:build unix

package ops

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// proxyIP is the address tests connect from to play a load balancer that
// speaks the PROXY protocol, so that a publisher can appear to come from
// another machine (remoteIP).
const (
	proxyIP  = "127.0.0.9"
	remoteIP = "192.0.2.10"
)

// clipPublisher publishes the test clip in a loop, paced by its timestamps,
// until stopped. Frozen, it stops sending but keeps its connection open: a
// publisher whose network died without the server noticing yet.
type clipPublisher struct {
	conn   net.Conn
	frozen atomic.Bool
	stop   chan struct{}
	done   chan struct{}
}

// startClipPublisher connects to addr from proxyIP and publishes name (which
// may carry ?key=...), announcing itself as remoteIP when remote is set.
func startClipPublisher(t *testing.T, addr, name string, remote bool) (*clipPublisher, error) {
	t.Helper()
	tags := e2eutil.Clip(t)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(proxyIP)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if remote {
		_, port, _ := net.SplitHostPort(addr)
		fmt.Fprintf(conn, "PROXY TCP4 %s 127.0.0.1 40000 %s\r\n", remoteIP, port)
	}
	c, err := rtmp.NewClient(conn)
	app, key, _ := strings.Cut(name, "/")
	if err == nil {
		err = c.Connect(app, "rtmp://"+addr+"/"+app)
	}
	if err == nil {
		err = c.Publish(key)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	p := &clipPublisher{conn: conn, stop: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(p.close)
	go func() {
		defer close(p.done)
		start := time.Now()
		for loop := uint32(0); ; loop++ {
			for _, tag := range tags {
				ts := loop*3100 + tag.TS
				select {
				case <-p.stop:
					return
				case <-time.After(time.Until(start.Add(time.Duration(ts) * time.Millisecond))):
				}
				if p.frozen.Load() {
					continue
				}
				conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if c.WriteMedia(tag.Type, ts, tag.Body) != nil || c.Flush() != nil {
					return
				}
			}
		}
	}()
	return p, nil
}

func (p *clipPublisher) close() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.conn.Close()
	<-p.done
}

// closedByServer reports whether the server closes the publisher's
// connection within timeout.
func (p *clipPublisher) closedByServer(timeout time.Duration) bool {
	p.conn.SetReadDeadline(time.Now().Add(timeout))
	_, err := io.Copy(io.Discard, p.conn)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// rising checks that the healthy viewer still receives frames.
func rising(t *testing.T, v *e2eutil.RTMPViewer, what string) {
	t.Helper()
	before := v.Video.Load()
	v.WaitFrames(t, 10, 15*time.Second)
	if v.Err.Load() != nil || v.Video.Load() <= before {
		t.Fatalf("after %s: the healthy viewer stalled (%v)", what, v.Err.Load())
	}
}

func TestPublishAuthAndTakeover(t *testing.T) {
	const (
		ownerKey = "owner-key-123456"
		otherKey = "other-key-654321"
		urlKey   = "url-secret-for-e2e-tests"
		admin    = "admin-token-for-e2e-tests"
	)
	p := e2eutil.StartProcess(t, "--trusted-proxies", proxyIP, "--publisher-grace", "5s",
		"--publish-keys", "live="+ownerKey+",*="+otherKey, "--url-secret", urlKey, "--admin-token", admin)

	// A healthy stream from this machine, and its viewer.
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/healthy", p.RTMPPort))
	e2eutil.WaitLiveHTTP(t, p.HTTPURL, "live/healthy")
	v := e2eutil.PlayRTMP(t, p.RTMPAddr, "live/healthy")
	v.WaitFrames(t, 30, 15*time.Second)

	refused := func(name string, remote bool, want string) {
		t.Helper()
		pub, err := startClipPublisher(t, p.RTMPAddr, name, remote)
		if err == nil {
			pub.close()
			t.Fatalf("publish %s (remote %v) admitted, want refused", name, remote)
		}
		if !errors.Is(err, rtmp.ErrRefused) || !strings.Contains(err.Error(), want) {
			t.Fatalf("publish %s: %v, want a refusal saying %q", name, err, want)
		}
	}
	t.Run("remote publisher needs a key", func(t *testing.T) {
		refused("live/remote", true, "publishing needs a key")
		refused("live/remote?key=wrong-key-0000", true, "invalid publish key")
		expired := auth.Sign(urlKey, auth.Publish, "live/remote", time.Now().Add(-time.Minute))
		refused("live/remote?"+expired, true, "expired")
		other := auth.Sign(urlKey, auth.Publish, "live/elsewhere", time.Now().Add(time.Minute))
		refused("live/remote?"+other, true, "invalid signature")
		rising(t, v, "refused publishers")
	})

	var owner *clipPublisher
	top := t // publishers outlive the subtest that starts them
	t.Run("remote publisher with a key", func(t *testing.T) {
		var err error
		owner, err = startClipPublisher(top, p.RTMPAddr, "live/cam?key="+ownerKey, true)
		if err != nil {
			t.Fatalf("publish with the app's key: %v", err)
		}
		e2eutil.WaitLiveHTTP(t, p.HTTPURL, "live/cam")
		// A signed token works too, for a stream of its own.
		tok := auth.Sign(urlKey, auth.Publish, "live/tok", time.Now().Add(time.Minute))
		if _, err := startClipPublisher(top, p.RTMPAddr, "live/tok?"+tok, true); err != nil {
			t.Fatalf("publish with a signed token: %v", err)
		}
		e2eutil.WaitLiveHTTP(t, p.HTTPURL, "live/tok")
	})
	if owner == nil {
		t.FailNow()
	}
	cam := e2eutil.PlayRTMP(t, p.RTMPAddr, "live/cam")
	cam.WaitFrames(t, 20, 15*time.Second)

	t.Run("second publisher without the owner's credentials", func(t *testing.T) {
		refused("live/cam", false, "already being published")              // this machine, no key
		refused("live/cam?key="+otherKey, true, "already being published") // another valid key
		refused("live/cam", true, "publishing needs a key")
		rising(t, cam, "a second publisher")
		rising(t, v, "a second publisher")
	})

	t.Run("owner reconnecting takes over", func(t *testing.T) {
		owner.frozen.Store(true) // its network died; the server still sees the connection
		start := time.Now()
		again, err := startClipPublisher(t, p.RTMPAddr, "live/cam?key="+ownerKey, true)
		if err != nil {
			t.Fatalf("owner reconnecting: %v", err)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("owner's reconnect took %v, want < 2 s", el)
		}
		if !owner.closedByServer(5 * time.Second) {
			t.Error("the old connection of the owner is still open after the takeover")
		}
		rising(t, cam, "the takeover") // the same viewer goes on with the new connection
		if cam.BackTS.Load() != 0 {
			t.Errorf("viewer saw %d timestamps going back across the takeover", cam.BackTS.Load())
		}
		again.close()
	})

	t.Run("keys are never shown", func(t *testing.T) {
		for _, path := range []string{"/api/v1/streams", "/api/v1/streams/live/cam", "/api/v1/config", "/api/v1/sessions"} {
			req, _ := http.NewRequest("GET", p.HTTPURL+path, nil)
			req.Header.Set("Authorization", "Bearer "+admin)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("GET %s: %d", path, resp.StatusCode)
			}
			for _, secret := range []string{ownerKey, otherKey, urlKey, admin, "sig="} {
				if strings.Contains(string(body), secret) {
					t.Errorf("GET %s shows a secret: %s", path, body)
				}
			}
		}
		logs := p.Stderr.String()
		for _, secret := range []string{ownerKey, otherKey, urlKey, admin, "sig="} {
			if strings.Contains(logs, secret) {
				t.Errorf("the server log holds a secret (%.6s...)", secret)
			}
		}
		// Without the token, the stream listing hides client addresses.
		_, body := e2eutil.HTTPGet(t, p.HTTPURL+"/api/v1/streams")
		if strings.Contains(string(body), "remote_addr") {
			t.Errorf("stream listing without the admin token shows addresses: %s", body)
		}
	})
}

func TestSignedPlay(t *testing.T) {
	t.Parallel()
	const urlKey = "url-secret-for-e2e-tests"
	p := e2eutil.StartProcess(t, "--url-secret", urlKey, "--signed-play-apps", "private")
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://127.0.0.1:%d/private/p", p.RTMPPort))
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/healthy", p.RTMPPort))
	e2eutil.WaitLiveHTTP(t, p.HTTPURL, "private/p")
	e2eutil.WaitLiveHTTP(t, p.HTTPURL, "live/healthy")
	v := e2eutil.PlayRTMP(t, p.RTMPAddr, "live/healthy") // open app: no signature
	v.WaitFrames(t, 20, 15*time.Second)

	name := streamname.Name("private/p")
	valid := auth.Sign(urlKey, auth.Play, name, time.Now().Add(time.Hour))
	cases := []struct {
		what   string
		query  string
		status int
	}{
		{"unsigned", "", http.StatusUnauthorized},
		{"valid", valid, http.StatusOK},
		{"expired", auth.Sign(urlKey, auth.Play, name, time.Now().Add(-time.Minute)), http.StatusGone},
		{"tampered expiry", regexp.MustCompile(`expires=\d`).ReplaceAllString(valid, "expires=9"), http.StatusForbidden},
		{"tampered signature", strings.Replace(valid, "sig=", "sig=00", 1), http.StatusForbidden},
		{"signed for another stream", auth.Sign(urlKey, auth.Play, "private/q", time.Now().Add(time.Hour)), http.StatusForbidden},
		{"signed for publishing", auth.Sign(urlKey, auth.Publish, name, time.Now().Add(time.Hour)), http.StatusForbidden},
	}
	for _, c := range cases {
		t.Run("HTTP-FLV "+c.what, func(t *testing.T) {
			if got := e2eutil.FLVStarts(p.HTTPURL + "/private/p.flv?" + c.query); got != c.status {
				t.Errorf("status %d, want %d", got, c.status)
			}
		})
		t.Run("HLS "+c.what, func(t *testing.T) {
			code, _ := e2eutil.HTTPGet(t, p.HTTPURL+"/private/p/index.m3u8?"+c.query)
			if code != c.status && !(c.status == 200 && code == http.StatusServiceUnavailable) {
				t.Errorf("status %d, want %d", code, c.status)
			}
		})
	}
	t.Run("HLS playlists carry the signature to every file", func(t *testing.T) {
		var body []byte
		testutil.WaitFor(t, 20*time.Second, "the HLS playlist", func() bool {
			var code int
			code, body = e2eutil.HTTPGet(t, p.HTTPURL+"/private/p/index.m3u8?"+valid)
			return code == 200
		})
		media := regexp.MustCompile(`(?m)^[^#\s]+$`).FindString(string(body))
		if !strings.Contains(media, "sig=") {
			t.Fatalf("multivariant playlist URI %q lacks the signature:\n%s", media, body)
		}
		base, _ := url.Parse(p.HTTPURL + "/private/p/index.m3u8")
		mu, _ := base.Parse(media)
		var mbody []byte
		testutil.WaitFor(t, 20*time.Second, "the media playlist", func() bool {
			var code int
			code, mbody = e2eutil.HTTPGet(t, mu.String())
			return code == 200 && regexp.MustCompile(`(?m)^[^#\s]+$`).Match(mbody)
		})
		seg := regexp.MustCompile(`(?m)^[^#\s]+$`).FindString(string(mbody))
		su, _ := mu.Parse(seg)
		if code, b := e2eutil.HTTPGet(t, su.String()); code != 200 || len(b) == 0 {
			t.Errorf("segment %s: %d, %d bytes", seg, code, len(b))
		}
		bare := *su
		bare.RawQuery = ""
		if code, _ := e2eutil.HTTPGet(t, bare.String()); code != http.StatusUnauthorized {
			t.Errorf("segment without the signature: %d, want 401", code)
		}
	})
	t.Run("RTMP", func(t *testing.T) {
		if _, err := e2eutil.DialRTMPViewer(p.RTMPAddr, "private/p"); err == nil || !strings.Contains(err.Error(), "signed URL") {
			t.Errorf("unsigned RTMP play: %v, want refused for want of a signed URL", err)
		}
		if _, err := e2eutil.DialRTMPViewer(p.RTMPAddr, "private/p?"+auth.Sign(urlKey, auth.Play, name, time.Now().Add(-time.Minute))); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Errorf("expired RTMP play: %v, want refused as expired", err)
		}
		sv := e2eutil.PlayRTMP(t, p.RTMPAddr, "private/p?"+valid)
		sv.WaitFrames(t, 20, 15*time.Second)
	})
	t.Run("ffprobe plays a URL from meshcast sign", func(t *testing.T) {
		out, err := exec.Command(e2eutil.MeshcastBinary(t), "sign", "--url-secret", urlKey, "--stream", "private/p", "--ttl", "1m",
			"--url", p.HTTPURL+"/private/p.flv").Output()
		if err != nil {
			t.Fatal(err)
		}
		e2eutil.ProbeCodecs(t, strings.TrimSpace(string(out)))
	})
	rising(t, v, "the signed-URL cases")
}

// authHook is an admission hook whose answer the test sets.
type authHook struct {
	status atomic.Int32
	delay  atomic.Int64 // nanoseconds; <0 hangs until the request ends
	calls  atomic.Int32
}

func (h *authHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.calls.Add(1)
	var req auth.HookRequest
	json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req)
	d := time.Duration(h.delay.Load())
	switch {
	case d < 0:
		<-r.Context().Done()
		return
	case d > 0:
		select {
		case <-time.After(d):
		case <-r.Context().Done():
		}
	}
	if req.Params["key"] == "hook-vetoes" {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	w.WriteHeader(int(h.status.Load()))
}

func TestAuthHook(t *testing.T) {
	h := &authHook{}
	h.status.Store(200)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	p := e2eutil.StartProcess(t, "--trusted-proxies", proxyIP, "--auth-hook", "http://"+ln.Addr().String()+"/auth",
		"--auth-hook-secret", "hook-secret-for-e2e-tests", "--auth-hook-timeout", "700ms")
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/healthy", p.RTMPPort))
	e2eutil.WaitLiveHTTP(t, p.HTTPURL, "live/healthy")
	v := e2eutil.PlayRTMP(t, p.RTMPAddr, "live/healthy")
	v.WaitFrames(t, 20, 15*time.Second)

	t.Run("2xx admits a remote publisher", func(t *testing.T) {
		pub, err := startClipPublisher(t, p.RTMPAddr, "live/remote?key=anything", true)
		if err != nil {
			t.Fatalf("hook said 200: %v", err)
		}
		pub.close()
		if _, err := startClipPublisher(t, p.RTMPAddr, "live/remote2?key=hook-vetoes", true); err == nil {
			t.Error("hook said 403: admitted")
		}
	})
	for _, c := range []struct {
		what   string
		status int32
		delay  time.Duration
	}{
		{"answering 500", 500, 0},
		{"timing out", 200, 3 * time.Second},
		{"hanging", 200, -1},
	} {
		t.Run("hook "+c.what, func(t *testing.T) {
			h.status.Store(c.status)
			h.delay.Store(int64(c.delay))
			defer h.status.Store(200)
			defer h.delay.Store(0)
			start := time.Now()
			_, err := startClipPublisher(t, p.RTMPAddr, "live/x", true)
			if err == nil || !errors.Is(err, rtmp.ErrRefused) {
				t.Errorf("publish: %v, want refused", err)
			}
			_, err = startClipPublisher(t, p.RTMPAddr, "live/x", false) // even from this machine
			if err == nil {
				t.Error("publish from this machine: admitted, want refused")
			}
			if code := e2eutil.FLVStarts(p.HTTPURL + "/live/healthy.flv?new=1"); code != http.StatusForbidden {
				t.Errorf("HTTP-FLV play: %d, want 403", code)
			}
			if el := time.Since(start); el > 6*time.Second {
				t.Errorf("three refusals took %v: the hook's 700ms timeout was not applied", el)
			}
			rising(t, v, "the hook "+c.what)
		})
	}
	if h.calls.Load() == 0 {
		t.Error("the hook was never asked")
	}
}

func TestAdminTokenAndCORS(t *testing.T) {
	t.Parallel()
	const admin = "admin-token-for-e2e-tests"
	p := e2eutil.StartProcess(t, "--admin-token", admin, "--cors-origins", "https://ok.example")
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/healthy", p.RTMPPort))
	e2eutil.WaitLiveHTTP(t, p.HTTPURL, "live/healthy")
	v := e2eutil.PlayRTMP(t, p.RTMPAddr, "live/healthy")
	v.WaitFrames(t, 20, 15*time.Second)

	do := func(method, path, token string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, p.HTTPURL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	// Every endpoint the API description marks as admin answers 401
	// without the token and with a wrong one, even from this machine.
	_, spec := do("GET", "/api/v1/openapi.json", "")
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal([]byte(spec), &doc); err != nil {
		t.Fatal(err)
	}
	fill := strings.NewReplacer("{app}", "live", "{stream}", "healthy", "{id}", "1", "{file}", "healthy.flv", "{asset}", "healthy.mp4")
	n := 0
	for path, ops := range doc.Paths {
		for method, raw := range ops {
			var op struct {
				Security []map[string][]string `json:"security"`
			}
			if json.Unmarshal(raw, &op) != nil || len(op.Security) == 0 {
				continue
			}
			n++
			for _, token := range []string{"", "not-the-admin-token"} {
				resp, body := do(strings.ToUpper(method), fill.Replace(path), token)
				if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s %s with token %q: %d %s, want 401 with WWW-Authenticate", method, path, token, resp.StatusCode, body)
				}
			}
		}
	}
	if n < 3 {
		t.Errorf("the API description marks %d admin endpoints, want at least 3", n)
	}
	if resp, _ := do("GET", "/api/v1/sessions", admin); resp.StatusCode != 200 {
		t.Errorf("sessions with the token: %d", resp.StatusCode)
	}
	// The stream is still there: nothing was kicked without the token.
	rising(t, v, "admin requests without a token")

	// CORS: the allowed origin may read, others get no grant; preflights
	// from others are refused. No JSONP: a callback parameter changes nothing.
	resp, _ := do("GET", "/api/v1/streams", "", "Origin", "https://ok.example")
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "https://ok.example" || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("allowed origin: Access-Control-Allow-Origin %q, Allow-Credentials %q", got, resp.Header.Get("Access-Control-Allow-Credentials"))
	}
	resp, _ = do("GET", "/api/v1/streams", "", "Origin", "https://evil.example")
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("other origin granted %q", got)
	}
	resp, _ = do("OPTIONS", "/api/v1/sessions", "", "Origin", "https://evil.example", "Access-Control-Request-Method", "DELETE")
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("preflight from another origin: %d, want 403", resp.StatusCode)
	}
	resp, _ = do("OPTIONS", "/api/v1/sessions", "", "Origin", "https://ok.example", "Access-Control-Request-Method", "DELETE",
		"Access-Control-Request-Headers", "authorization")
	if resp.StatusCode != http.StatusNoContent || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("preflight from the allowed origin: %d %v", resp.StatusCode, resp.Header)
	}
	resp, body := do("GET", "/api/v1/streams?callback=steal", "")
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") || strings.HasPrefix(body, "steal") {
		t.Errorf("callback parameter: %s %q", ct, body)
	}
	// Media follows the same policy, on the hijacked HTTP-FLV path too.
	req, _ := http.NewRequest("GET", p.HTTPURL+"/live/healthy.flv", nil)
	req.Header.Set("Origin", "https://ok.example")
	fresp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	fresp.Body.Close()
	if got := fresp.Header.Get("Access-Control-Allow-Origin"); got != "https://ok.example" {
		t.Errorf("HTTP-FLV Access-Control-Allow-Origin %q", got)
	}
}
