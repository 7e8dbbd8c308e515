package auth

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/clock"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/webhook"
)

const secret = "url-secret-of-tests"

var (
	loopback = netip.MustParseAddr("127.0.0.1")
	remote   = netip.MustParseAddr("192.0.2.10")
	cam      = streamname.Name("live/cam")
)

func newAuth(t testing.TB, cfg Config) *Policy {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func params(raw string) url.Values {
	q, err := url.ParseQuery(raw)
	if err != nil {
		panic(err)
	}
	return q
}

func wantStatus(t *testing.T, what string, err error, status int) {
	t.Helper()
	if status == 0 {
		if err != nil {
			t.Errorf("%s: refused (%v), want admitted", what, err)
		}
		return
	}
	var ae *Error
	if !errors.As(err, &ae) {
		t.Errorf("%s: err = %v, want status %d", what, err, status)
		return
	}
	if ae.Status != status {
		t.Errorf("%s: status %d (%v), want %d", what, ae.Status, ae, status)
	}
}

func TestPublishKeys(t *testing.T) {
	a := newAuth(t, Config{PublishKeys: []string{"live=app-key-1", "other/cam*=cam-key-1", "*=every-key"}})
	cases := []struct {
		name   streamname.Name
		params string
		addr   netip.Addr
		status int
	}{
		{cam, "", loopback, 0},                     // loopback needs no key
		{cam, "", remote, http.StatusUnauthorized}, // elsewhere it does
		{cam, "key=app-key-1", remote, 0},          // the app's key
		{cam, "key=app-key-2", remote, http.StatusForbidden},
		{"other/cam7", "key=cam-key-1", remote, 0},  // a stream pattern
		{"other/mic", "key=cam-key-1", remote, 403}, // outside the pattern
		{"third/x", "key=every-key", remote, 0},     // the * pattern
		{cam, "key=", remote, http.StatusUnauthorized},
		{cam, "", netip.MustParseAddr("::1"), 0},
		{cam, "", netip.Addr{}, http.StatusUnauthorized}, // unknown address
	}
	for _, c := range cases {
		g, err := a.Check(context.Background(), Request{Action: Publish, Name: c.name, Params: params(c.params), Remote: c.addr})
		wantStatus(t, string(c.name)+"?"+c.params+" from "+c.addr.String(), err, c.status)
		if err == nil && strings.Contains(c.params, "key=") && c.params != "key=" && g.Credential == "" {
			t.Errorf("%s: no credential recorded", c.params)
		}
		if strings.Contains(g.Credential, "app-key") || strings.Contains(g.Credential, "every-key") {
			t.Errorf("credential %q holds the key itself", g.Credential)
		}
	}
	// The same key gives the same credential; another key another one.
	g1, _ := a.Check(context.Background(), Request{Action: Publish, Name: cam, Params: params("key=app-key-1"), Remote: remote})
	g2, _ := a.Check(context.Background(), Request{Action: Publish, Name: cam, Params: params("key=app-key-1"), Remote: loopback})
	g3, _ := a.Check(context.Background(), Request{Action: Publish, Name: cam, Params: params("key=every-key"), Remote: remote})
	if g1.Credential == "" || g1 != g2 || g1 == g3 {
		t.Errorf("credentials %q %q %q: want the first two equal, the third different", g1.Credential, g2.Credential, g3.Credential)
	}
}

func TestPublishModes(t *testing.T) {
	always := newAuth(t, Config{PublishAuth: ModeAlways, PublishKeys: []string{"live=app-key-1"}})
	_, err := always.Check(context.Background(), Request{Action: Publish, Name: cam, Remote: loopback})
	wantStatus(t, "always, loopback without key", err, http.StatusUnauthorized)
	_, err = always.Check(context.Background(), Request{Action: Publish, Name: cam, Params: params("key=app-key-1"), Remote: loopback})
	wantStatus(t, "always, loopback with key", err, 0)

	open := newAuth(t, Config{PublishAuth: ModeOpen})
	_, err = open.Check(context.Background(), Request{Action: Publish, Name: cam, Remote: remote})
	wantStatus(t, "open, remote without key", err, 0)

	// A trusted network publishes without a key as loopback does; the
	// log's hint of a refusal names the settings that would admit it.
	trusted := newAuth(t, Config{TrustedNetworks: []netip.Prefix{netip.MustParsePrefix("172.16.0.0/12")}})
	_, err = trusted.Check(context.Background(), Request{Action: Publish, Name: cam, Remote: netip.MustParseAddr("172.17.0.1")})
	wantStatus(t, "loopback mode, trusted network without key", err, 0)
	_, err = trusted.Check(context.Background(), Request{Action: Publish, Name: cam, Remote: netip.MustParseAddr("::ffff:172.17.0.1")})
	wantStatus(t, "loopback mode, trusted network as a mapped IPv6 address", err, 0)
	_, err = trusted.Check(context.Background(), Request{Action: Publish, Name: cam, Remote: remote})
	wantStatus(t, "loopback mode, another network without key", err, http.StatusUnauthorized)
	if h := fmt.Sprint(Hint(err)...); !strings.Contains(h, "--publish-trusted-networks") || !strings.Contains(h, "--publish-keys") {
		t.Errorf("Hint of a key-less refusal: %q", h)
	}
	if h := Hint(ErrBadKey); h != nil {
		t.Errorf("Hint of a bad key: %v, want none", h)
	}
	_, err = newAuth(t, Config{PublishAuth: ModeAlways, TrustedNetworks: trusted.cfg.TrustedNetworks}).Check(context.Background(),
		Request{Action: Publish, Name: cam, Remote: netip.MustParseAddr("172.17.0.1")})
	wantStatus(t, "always, trusted network without key", err, http.StatusUnauthorized)
}

func TestSignedURLs(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	a := newAuth(t, Config{URLSecret: secret, SignedPlayApps: []string{"live"}, Now: func() time.Time { return now }})
	valid := Sign(secret, Play, cam, now.Add(time.Minute))
	expired := Sign(secret, Play, cam, now.Add(-clock.MaxSkew-time.Second))
	other := Sign(secret, Play, "live/other", now.Add(time.Minute))
	publish := Sign(secret, Publish, cam, now.Add(time.Minute))
	tampered := strings.Replace(valid, "expires=18", "expires=19", 1)
	flipped := valid[:len(valid)-1] + string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", valid[len(valid)-1])+1)%16])
	cases := []struct {
		what   string
		name   streamname.Name
		params string
		status int
	}{
		{"valid", cam, valid, 0},
		{"no signature", cam, "", http.StatusUnauthorized},
		{"expired", cam, expired, http.StatusGone},
		{"signed for another stream", cam, other, http.StatusForbidden},
		{"signed for publishing", cam, publish, http.StatusForbidden},
		{"expiry changed", cam, tampered, http.StatusForbidden},
		{"signature changed", cam, flipped, http.StatusForbidden},
		{"signature not hex", cam, "expires=1900000000&sig=zz", http.StatusForbidden},
		{"no expiry", cam, "sig=" + strings.Split(valid, "sig=")[1], http.StatusForbidden},
		{"open app", "public/x", "", 0},
	}
	for _, c := range cases {
		_, err := a.Check(context.Background(), Request{Action: Play, Name: c.name, Params: params(c.params), Remote: remote})
		wantStatus(t, c.what, err, c.status)
	}

	// A signed publish token admits a remote publisher, and any valid token
	// of the stream speaks for the same publisher.
	g1, err := a.Check(context.Background(), Request{Action: Publish, Name: cam, Params: params(publish), Remote: remote})
	wantStatus(t, "publish token", err, 0)
	g2, _ := a.Check(context.Background(), Request{Action: Publish, Name: cam, Params: params(Sign(secret, Publish, cam, now.Add(time.Hour))), Remote: remote})
	if g1.Credential == "" || g1 != g2 {
		t.Errorf("token credentials %q and %q: want equal and set", g1.Credential, g2.Credential)
	}
	_, err = a.Check(context.Background(), Request{Action: Publish, Name: cam, Params: params(Sign(secret, Publish, cam, now.Add(-time.Minute))), Remote: remote})
	wantStatus(t, "expired publish token", err, http.StatusGone)

	all := newAuth(t, Config{URLSecret: secret, SignedPlayApps: []string{"*"}})
	_, err = all.Check(context.Background(), Request{Action: Play, Name: "any/x", Remote: loopback})
	wantStatus(t, "* signs every app", err, http.StatusUnauthorized)
}

// hook is an admission hook answering with status after delay.
type hook struct {
	srv    *httptest.Server
	status atomic.Int32
	delay  atomic.Int64
	hang   chan struct{}
	calls  atomic.Int32
	last   atomic.Pointer[HookRequest]
	badSig atomic.Bool
}

func newHook(t *testing.T, hookSecret string) *hook {
	h := &hook{hang: make(chan struct{})}
	h.status.Store(http.StatusOK)
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		if webhook.Sign(hookSecret, r.Header.Get(webhook.HeaderTimestamp), body) != r.Header.Get(webhook.HeaderSignature) {
			h.badSig.Store(true)
		}
		var req HookRequest
		json.Unmarshal(body, &req)
		h.last.Store(&req)
		if d := time.Duration(h.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-h.hang:
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(int(h.status.Load()))
	}))
	t.Cleanup(func() { close(h.hang); h.srv.Close() })
	return h
}

func TestHook(t *testing.T) {
	const hookSecret = "hook-secret-of-tests"
	h := newHook(t, hookSecret)
	a := newAuth(t, Config{Hook: h.srv.URL, HookSecret: hookSecret, HookTimeout: 300 * time.Millisecond, Node: func() string { return "n1" }})
	ctx := context.Background()

	// 2xx admits a remote publisher without a key the node knows, and
	// the hook sees what it needs to decide.
	g, err := a.Check(ctx, Request{Action: Publish, Name: cam, Params: params("key=hook-knows&x=1"), Remote: remote, Protocol: "rtmp"})
	wantStatus(t, "hook 200", err, 0)
	if g.Credential == "" {
		t.Error("hook-admitted key: no credential")
	}
	got := h.last.Load()
	if got == nil || got.Action != Publish || got.Stream != "live/cam" || got.App != "live" || got.Name != "cam" ||
		got.Params["key"] != "hook-knows" || got.ClientIP != "192.0.2.10" || got.Protocol != "rtmp" || got.Node != "n1" {
		t.Errorf("hook request = %+v", got)
	}
	if h.badSig.Load() {
		t.Error("hook request signature does not verify")
	}
	// A client's parameters reach the hook bounded.
	long := strings.Repeat("k", 5000)
	a.Check(ctx, Request{Action: Publish, Name: cam, Params: params("key=" + long + "&" + long + "=1"), Remote: remote})
	if got := h.last.Load(); len(got.Params["key"]) != maxHookParamLen || len(got.Params) != 1 {
		t.Errorf("hook got a %d-byte key and %d parameters, want %d bytes and 1", len(got.Params["key"]), len(got.Params), maxHookParamLen)
	}

	// Every other answer refuses; so do a slow hook and a hanging one,
	// within the timeout.
	for _, c := range []struct {
		what   string
		status int
		delay  time.Duration
	}{
		{"500", 500, 0},
		{"403", 403, 0},
		{"302", 302, 0},
		{"timeout", 200, time.Second},
		{"hang", 200, time.Hour},
	} {
		h.status.Store(int32(c.status))
		h.delay.Store(int64(c.delay))
		start := time.Now()
		_, err := a.Check(ctx, Request{Action: Publish, Name: cam, Params: params("key=k"), Remote: loopback})
		wantStatus(t, "hook "+c.what, err, http.StatusForbidden)
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("hook %s: refused after %v, want within the 300ms timeout", c.what, el)
		}
	}

	// A hook that cannot be reached refuses.
	dead := newAuth(t, Config{Hook: "http://127.0.0.1:1/auth", HookSecret: hookSecret, HookTimeout: time.Second})
	_, err = dead.Check(ctx, Request{Action: Play, Name: cam, Remote: loopback})
	if !errors.Is(err, ErrHookFailed) {
		t.Errorf("unreachable hook: %v, want %v", err, ErrHookFailed)
	}

	// A player admitted once is not asked about again for a while (HLS
	// fetches a file every second), whatever LL-HLS parameters it adds.
	h.status.Store(200)
	h.delay.Store(0)
	before := h.calls.Load()
	for i := range 5 {
		_, err := a.Check(ctx, Request{Action: Play, Name: cam, Params: params("t=1&_HLS_msn=" + string(rune('0'+i))), Remote: remote, Protocol: "hls"})
		wantStatus(t, "cached play", err, 0)
	}
	if n := h.calls.Load() - before; n != 1 {
		t.Errorf("hook asked %d times for 5 requests of one player, want 1", n)
	}
	_, _ = a.Check(ctx, Request{Action: Play, Name: cam, Params: params("t=2"), Remote: remote, Protocol: "hls"})
	if n := h.calls.Load() - before; n != 2 {
		t.Errorf("hook asked %d times, want 2 after other parameters", n)
	}
}

func TestSplitName(t *testing.T) {
	name, q := SplitName("cam?key=abc&expires=1&sig=ff")
	if name != "cam" || q.Get("key") != "abc" || q.Get("sig") != "ff" {
		t.Errorf("SplitName = %q %v", name, q)
	}
	if name, q := SplitName("cam"); name != "cam" || len(q) != 0 {
		t.Errorf("SplitName(cam) = %q %v", name, q)
	}
	if a := RemoteAddr("[::ffff:127.0.0.1]:5"); a != loopback {
		t.Errorf("RemoteAddr = %v", a)
	}
}

// FuzzCheck feeds client-chosen names and parameters through every check:
// no panic, and nothing but a refusal or a grant.
func FuzzCheck(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	f.Add("cam?key=app-key-1", "live")
	f.Add("cam?"+Sign(secret, Play, cam, now.Add(time.Minute)), "live")
	f.Add("cam?"+Sign(secret, Publish, cam, now.Add(time.Minute)), "live")
	f.Add("cam?expires=99999999999999999999999&sig=00", "live")
	f.Add("cam?sig=%zz&&&;key", "live")
	f.Add("x?expires=-1&sig="+strings.Repeat("a", 64), "*")
	a := newAuth(f, Config{PublishAuth: ModeAlways, PublishKeys: []string{"live=app-key-1"}, URLSecret: secret, SignedPlayApps: []string{"live"}, Now: func() time.Time { return now }})
	f.Fuzz(func(t *testing.T, raw, app string) {
		base, q := SplitName(raw)
		name, err := streamname.New(app, base)
		if err != nil {
			return
		}
		for _, act := range []Action{Publish, Play} {
			_, err := a.Check(context.Background(), Request{Action: act, Name: name, Params: q, Remote: remote})
			var ae *Error
			if err != nil && !errors.As(err, &ae) {
				t.Fatalf("%s %q: %v is not a refusal", act, raw, err)
			}
		}
	})
}

// A signed URL or publish token is good until its expiry plus
// clock.MaxSkew on the node's clock, to the second, and refused with 410
// past it: a node whose clock runs up to MaxSkew behind or ahead of the
// signer's still honours what the signer meant, and no more.
func TestSignedExpiryClockSkew(t *testing.T) {
	signedAt := time.Unix(1_800_000_000, 0)
	expires := signedAt.Add(time.Hour)
	clk := clock.NewFake(signedAt)
	a := newAuth(t, Config{URLSecret: secret, SignedPlayApps: []string{"live"}, Now: clk.Now})
	cases := []struct {
		what   string
		at     time.Time // the node's clock
		status int
	}{
		{"long before the expiry (a node a day behind)", expires.Add(-24 * time.Hour), 0},
		{"at the expiry", expires, 0},
		{"a second past the expiry", expires.Add(time.Second), 0},
		{"MaxSkew past the expiry", expires.Add(clock.MaxSkew), 0},
		{"MaxSkew and 999 ms past the expiry", expires.Add(clock.MaxSkew + 999*time.Millisecond), 0},
		{"MaxSkew and a second past the expiry", expires.Add(clock.MaxSkew + time.Second), http.StatusGone},
		{"an hour past the expiry", expires.Add(time.Hour), http.StatusGone},
	}
	for _, action := range []Action{Play, Publish} {
		q := params(Sign(secret, action, cam, expires))
		for _, c := range cases {
			clk.Set(c.at)
			_, err := a.Check(context.Background(), Request{Action: action, Name: cam, Params: q, Remote: remote})
			wantStatus(t, string(action)+", "+c.what, err, c.status)
		}
	}
	// An expiry at either end of int64 neither overflows into validity
	// nor out of it.
	clk.Set(expires)
	for _, exp := range []string{"-9223372036854775808", "9223372036854775807"} {
		q := url.Values{"expires": {exp}, "sig": {hex.EncodeToString(mac(secret, Play, cam, exp))}}
		_, err := a.Check(context.Background(), Request{Action: Play, Name: cam, Params: q, Remote: remote})
		want := 0
		if exp[0] == '-' {
			want = http.StatusGone
		}
		wantStatus(t, "expires="+exp, err, want)
	}
}
