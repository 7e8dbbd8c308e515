package cluster

import (
	"errors"
	"fmt"
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
		{"a via chain added", func(r *http.Request) { r.Header.Set(HeaderVia, "node-x") }, secret, now},
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

// A pull's via chain is signed with it, and a node finds itself in it.
func TestViaChain(t *testing.T) {
	const secret = "a-cluster-secret-for-tests"
	now := time.Unix(1_800_000_000, 0)
	r := httptest.NewRequest(http.MethodGet, "http://c:8080"+PullPath+"live/stream", nil)
	SetVia(r, []NodeID{"edge-1", "edge-2"})
	SignPull(r, secret, "mid", now)
	if _, err := VerifyPull(r, secret, now); err != nil {
		t.Fatalf("VerifyPull of a pull with a via chain: %v", err)
	}
	via, err := ParseVia(r, "top")
	if err != nil || fmt.Sprint(via) != "[edge-1 edge-2 mid]" {
		t.Fatalf("ParseVia = %v, %v; want [edge-1 edge-2 mid]", via, err)
	}
	for _, self := range []NodeID{"edge-1", "edge-2", "mid"} {
		if _, err := ParseVia(r, self); !errors.Is(err, ErrLoop) {
			t.Errorf("ParseVia at %s, in the chain: %v, want ErrLoop", self, err)
		}
	}
	// Changing the chain breaks the signature.
	r.Header.Set(HeaderVia, "edge-1")
	if _, err := VerifyPull(r, secret, now); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("VerifyPull with a shortened chain: %v, want ErrUnauthorized", err)
	}
	// Too deep a chain is a loop, whatever it names.
	deep := make([]NodeID, MaxVia)
	for i := range deep {
		deep[i] = NodeID(fmt.Sprintf("n%d", i))
	}
	r = httptest.NewRequest(http.MethodGet, "http://c:8080"+PullPath+"live/stream", nil)
	SetVia(r, deep)
	SignPull(r, secret, "last", now)
	if _, err := ParseVia(r, "top"); !errors.Is(err, ErrLoop) {
		t.Errorf("ParseVia of %d nodes: %v, want ErrLoop", MaxVia+1, err)
	}
	// A pull without a chain (a first-tier edge's) is the sender alone.
	r = httptest.NewRequest(http.MethodGet, "http://c:8080"+PullPath+"live/stream", nil)
	SetVia(r, nil)
	SignPull(r, secret, "edge", now)
	if via, err := ParseVia(r, "top"); err != nil || len(via) != 1 || via[0] != "edge" {
		t.Errorf("ParseVia without a chain = %v, %v", via, err)
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
