// Package httpfront is the node's HTTP front door: the route table every
// HTTP-facing component registers its routes on (Mux), and the middleware
// every request passes before them: path checks (SafePaths), the client's
// address from trusted proxies (ForwardedFor) and the CORS policy (CORS).
// It knows no server; each server parses its own URLs and asks the
// node's authorizer itself.
package httpfront

import (
	"net/http"
	"net/netip"
)

// Config is the front door's policy.
type Config struct {
	// CORSOrigins are the origins whose pages may read responses in a
	// browser; "*" is any origin. Defaults to none.
	CORSOrigins []string
	// Origins, when set, is a policy that may change while the node runs,
	// used instead of CORSOrigins.
	Origins *Origins
	// TrustedProxies are the peers whose X-Forwarded-For header gives the
	// client's address. Defaults to none.
	TrustedProxies []netip.Prefix
}

// Wrap puts h behind the front door: SafePaths first, then ForwardedFor
// (with trusted proxies only), then CORS.
func Wrap(h http.Handler, cfg Config) http.Handler {
	if cfg.Origins != nil {
		h = cors(cfg.Origins.Get, h)
	} else {
		h = CORS(cfg.CORSOrigins, h)
	}
	if len(cfg.TrustedProxies) > 0 {
		h = ForwardedFor(cfg.TrustedProxies, h)
	}
	return SafePaths(h)
}
