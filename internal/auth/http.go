package auth

import (
	"net/http"

	"github.com/meshcast/meshcast/internal/streamname"
)

// CheckHTTP asks az whether the client of r may do action on name over
// proto ("http-flv", "hls", "webrtc"), the query of r's URL being the
// client's parameters (key, expires, sig, ...). A refusal is answered
// with its status (StatusOf) and reason, and returned for the caller to
// log. A nil az admits everybody.
func CheckHTTP(w http.ResponseWriter, r *http.Request, az Authorizer, action Action, name streamname.Name, proto string) (Grant, error) {
	if az == nil {
		return Grant{}, nil
	}
	g, err := az.Check(r.Context(), Request{
		Action: action, Name: name, Params: r.URL.Query(),
		Remote: RemoteAddr(r.RemoteAddr), Protocol: proto,
	})
	if err != nil {
		http.Error(w, err.Error(), StatusOf(err))
	}
	return g, err
}
