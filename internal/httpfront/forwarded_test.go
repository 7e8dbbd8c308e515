package httpfront

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestForwardedFor(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32")}
	var seen string
	h := ForwardedFor(trusted, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r.RemoteAddr }))
	cases := []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"untrusted peer: header ignored", "203.0.113.5:4000", []string{"198.51.100.1"}, "203.0.113.5:4000"},
		{"trusted peer, no header", "127.0.0.1:4000", nil, "127.0.0.1:4000"},
		{"trusted peer", "127.0.0.1:4000", []string{"198.51.100.1"}, "198.51.100.1:0"},
		{"chain of proxies", "127.0.0.1:4000", []string{"198.51.100.1, 10.1.2.3"}, "198.51.100.1:0"},
		{"client-supplied hops before the real one", "10.0.0.9:4000", []string{"1.1.1.1, 198.51.100.1", "10.1.2.3"}, "198.51.100.1:0"},
		{"only proxies", "127.0.0.1:4000", []string{"10.1.2.3"}, "10.1.2.3:0"},
		{"garbage nearest hop", "127.0.0.1:4000", []string{"198.51.100.1, not-an-ip"}, "127.0.0.1:4000"},
		{"IPv6 client", "127.0.0.1:4000", []string{"2001:db8::7"}, "[2001:db8::7]:0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			h.ServeHTTP(httptest.NewRecorder(), r)
			if seen != tc.want {
				t.Errorf("client %q, want %q", seen, tc.want)
			}
		})
	}
}
