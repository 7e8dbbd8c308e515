package cluster

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestSignAndVerifyPull(t *testing.T) {
	const secret = "a-cluster-secret-for-tests"
	now := time.Unix(1_800_000_000, 0)
	signed := func() *http.Request {
		r := httptest.NewRequest(http.MethodGet, "http://a:8080"+PullPath+"live/stream", nil)
		SignPull(r, secret, "node-b", now)
		return r
	}
	if node, err := VerifyPull(signed(), secret, now.Add(30*time.Second)); err != nil || node != "node-b" {
		t.Fatalf("VerifyPull = %q, %v; want node-b", node, err)
	}
	if v := signed().Header.Get(HeaderAuth); len(v) < 64 || v == secret {
		t.Fatalf("auth header %q", v)
	}
	cases := []struct {
		name   string
		mod    func(*http.Request)
		secret string
		at     time.Time
	}{
		{"another secret", nil, "another-secret-altogether", now},
		{"no secret here", nil, "", now},
		{"too old", nil, secret, now.Add(2 * time.Minute)},
		{"from the future", nil, secret, now.Add(-2 * time.Minute)},
		{"other stream", func(r *http.Request) { r.URL.Path = PullPath + "live/other" }, secret, now},
		{"other node", func(r *http.Request) { r.Header.Set(HeaderNode, "node-c") }, secret, now},
		{"no node", func(r *http.Request) { r.Header.Del(HeaderNode) }, secret, now},
		{"no signature", func(r *http.Request) { r.Header.Del(HeaderAuth) }, secret, now},
		{"garbage", func(r *http.Request) { r.Header.Set(HeaderAuth, "x:y") }, secret, now},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := signed()
			if tc.mod != nil {
				tc.mod(r)
			}
			if _, err := VerifyPull(r, tc.secret, tc.at); !errors.Is(err, ErrUnauthorized) {
				t.Errorf("VerifyPull = %v, want ErrUnauthorized", err)
			}
		})
	}
}

// FuzzParseAuth checks the signature header parser never panics and
// accepts only its own shape.
func FuzzParseAuth(f *testing.F) {
	f.Add("1800000000:" + "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
	f.Add("")
	f.Add(":")
	f.Fuzz(func(t *testing.T, v string) {
		unix, mac, err := parseAuth(v)
		if err != nil {
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("error %v is not ErrUnauthorized", err)
			}
			return
		}
		if unix < 0 || len(mac) != 32 {
			t.Fatalf("accepted %q as %d, %d-byte MAC", v, unix, len(mac))
		}
	})
}
