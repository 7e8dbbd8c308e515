package webrtc

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/httpfront"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Register adds the server's routes to mux: POST /APP/STREAM/whep
// (playback), POST /APP/STREAM/whip (ingest), the sessions' own URLs
// under their stream's, /APP/STREAM/whep/ID and /APP/STREAM/whip/ID
// (DELETE ends one; PATCH, trickle ICE and ICE restarts, is answered 405),
// and under SessionPath the node's sessions: GET lists them, DELETE on
// SessionPath+ID ends one.
func (s *Server) Register(mux *httpfront.Mux) {
	mux.HandleFunc("POST /{app}/{stream}/whep", s.serveWHEPRoute)
	mux.HandleFunc("POST /{app}/{stream}/whip", s.serveWHIPRoute)
	for _, kind := range []string{"whep", "whip"} {
		mux.HandleFunc("DELETE /{app}/{stream}/"+kind+"/{id}", func(w http.ResponseWriter, r *http.Request) { s.serveSession(w, r, kind) })
		mux.HandleFunc("PATCH /{app}/{stream}/"+kind+"/{id}", func(w http.ResponseWriter, r *http.Request) { s.serveSession(w, r, kind) })
	}
	mux.HandleFunc("GET "+strings.TrimSuffix(SessionPath, "/"), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(struct {
			Sessions []SessionInfo `json:"sessions"`
		}{s.List()})
	})
	mux.HandleFunc("DELETE "+SessionPath+"{id}", func(w http.ResponseWriter, r *http.Request) { s.serveDelete(w, r, r.PathValue("id")) })
}

// serveSession answers a request on a session's URL: DELETE ends it, and
// PATCH (trickle ICE, ICE restarts) is not supported: 405, as WHIP and
// WHEP ask of a server without them. Only the URL the session was given
// names it: the same ID under another stream or kind is 404.
func (s *Server) serveSession(w http.ResponseWriter, r *http.Request, kind string) {
	name, err := streamname.New(r.PathValue("app"), r.PathValue("stream"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ss := s.session(name, kind, r.PathValue("id"))
	switch {
	case ss == nil:
		http.Error(w, "no such session", http.StatusNotFound)
	case r.Method == http.MethodDelete:
		ss.cancel()
		w.WriteHeader(http.StatusOK)
	default:
		w.Header().Set("Allow", "DELETE")
		http.Error(w, "trickle ICE and ICE restarts are not supported: send a new offer", http.StatusMethodNotAllowed)
	}
}

// serveWHEPRoute answers a WHEP offer for a stream the authorizer lets the
// client play, if its video is H.264.
func (s *Server) serveWHEPRoute(w http.ResponseWriter, r *http.Request) {
	name, err := streamname.New(r.PathValue("app"), r.PathValue("stream"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if _, err := auth.CheckHTTP(w, r, s.cfg.Auth, auth.Play, name, "webrtc"); err != nil {
		s.log.Debug("play refused", "stream", name, "protocol", "webrtc", "remote", r.RemoteAddr, "reason", err)
		return
	}
	if st := s.hub.Get(name); st != nil {
		if v := st.Info().Video; v != nil && v.Codec != media.CodecH264.String() {
			http.Error(w, "the stream's video is "+v.Codec+": WebRTC playback takes H.264; play it over HLS, RTMP or HTTP-FLV", http.StatusUnsupportedMediaType)
			return
		}
	}
	s.serveWHEP(w, r, name)
}

// serveWHIPRoute answers a WHIP offer: a WebRTC publisher, admitted like
// any other (publish keys as ?key=KEY, signed tokens, the hook).
func (s *Server) serveWHIPRoute(w http.ResponseWriter, r *http.Request) {
	name, err := streamname.New(r.PathValue("app"), r.PathValue("stream"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	grant, err := auth.CheckHTTP(w, r, s.cfg.Auth, auth.Publish, name, "webrtc")
	if err != nil {
		s.log.Info("publish refused", append([]any{"stream", name, "protocol", "webrtc", "remote", r.RemoteAddr, "reason", err}, auth.Hint(err)...)...)
		return
	}
	s.serveWHIP(w, r, name, func(name streamname.Name, remote string) (Publisher, error) {
		return s.hub.Publish(name, stream.PublisherInfo{Protocol: "webrtc", RemoteAddr: remote, Credential: grant.Credential})
	})
}
