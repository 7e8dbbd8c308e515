package httpfront

import (
	"net/http"
	"net/netip"
	"strings"
)

// ForwardedFor takes the client's address from X-Forwarded-For on requests
// from trusted proxies: the nearest address in it that is not a proxy,
// set as the request's RemoteAddr with port 0. Requests from other peers
// keep their own address, whatever the header says.
func ForwardedFor(trusted []netip.Prefix, next http.Handler) http.Handler {
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a.Unmap()) {
				return true
			}
		}
		return false
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, err := netip.ParseAddrPort(r.RemoteAddr)
		xff := r.Header.Values("X-Forwarded-For")
		if err != nil || len(xff) == 0 || !isTrusted(peer.Addr()) {
			next.ServeHTTP(w, r)
			return
		}
		hops := strings.Split(strings.Join(xff, ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break // a forged or garbled hop: trust nothing before it
			}
			if !isTrusted(a) || i == 0 {
				r.RemoteAddr = netip.AddrPortFrom(a.Unmap(), 0).String()
				break
			}
		}
		next.ServeHTTP(w, r)
	})
}
