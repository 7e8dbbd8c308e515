package rtsp

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/bluenviron/gortsplib/v5/pkg/base"
	"github.com/bluenviron/gortsplib/v5/pkg/headers"

	"github.com/meshcast/meshcast/internal/streamname"
)

// errBadPath refuses a request whose URL names no stream.
var errBadPath = errors.New("rtsp: the URL must be rtsp://HOST:PORT/APP/STREAM")

// ParsePath reads the stream a request names: its URL's path
// "/APP/STREAM" (a trailing slash, which some clients add, is dropped)
// and its query, whose parameters (key, expires, sig...) are credentials,
// never part of the name.
func ParsePath(path, query string) (streamname.Name, url.Values, error) {
	p := strings.TrimSuffix(strings.TrimPrefix(path, "/"), "/")
	app, key, ok := strings.Cut(p, "/")
	if !ok {
		return "", nil, fmt.Errorf("%w, not %q", errBadPath, clip(path))
	}
	name, err := streamname.New(app, key)
	if err != nil {
		return "", nil, err
	}
	params, err := url.ParseQuery(query)
	if err != nil {
		return "", nil, fmt.Errorf("rtsp: query of %q: bad encoding", clip(path))
	}
	return name, params, nil
}

// clip bounds what an error quotes of a client's input.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

// withPassword returns params with the Basic authentication password of
// req as the key, when the query carries none: publishers that cannot put
// the key in the URL give it as their password (any user name). Digest
// authentication never reveals the password, so only Basic is offered.
func withPassword(params url.Values, req *base.Request) (url.Values, bool) {
	given := false
	if v, ok := req.Header["Authorization"]; ok && len(v) > 0 {
		given = true
		var a headers.Authorization
		if a.Unmarshal(v) == nil && a.Method == headers.AuthMethodBasic && a.BasicPass != "" && params.Get("key") == "" {
			params = cloneValues(params)
			params.Set("key", a.BasicPass)
		}
	}
	return params, given
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v)+1)
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}
