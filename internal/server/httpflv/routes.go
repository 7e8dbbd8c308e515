package httpflv

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/httpfront"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/streamname"
)

// errNoPeers refuses relay pulls on a server without Peers.
var errNoPeers = fmt.Errorf("%w: this node takes no relay pulls", cluster.ErrUnauthorized)

// Register adds the server's routes to mux: GET /APP/STREAM.flv
// (HTTP-FLV, and WebSocket-FLV on an upgrade) and the relay pulls of
// other nodes, cluster.PullPath+"APP/STREAM".
func (s *Server) Register(mux *httpfront.Mux) {
	mux.HandleStreamFile(".flv", s.serveFile)
	mux.HandleFunc("GET "+cluster.PullPath+"{app}/{stream}", s.servePull)
}

// serveFile answers GET /APP/STREAM.flv for a player the authorizer
// admits.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request) {
	name, err := streamname.New(r.PathValue("app"), strings.TrimSuffix(r.PathValue("file"), ".flv"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if _, err := auth.CheckHTTP(w, r, s.cfg.Auth, auth.Play, name, "http-flv"); err != nil {
		s.log.Debug("play refused", "stream", name, "protocol", "http-flv", "remote", r.RemoteAddr, "reason", err)
		return
	}
	s.ServeStream(w, r, name)
}

// servePull serves a stream to another node of the cluster, for requests
// signed with the cluster secret.
func (s *Server) servePull(w http.ResponseWriter, r *http.Request) {
	var from cluster.NodeID
	err := errNoPeers
	if s.cfg.Peers != nil {
		from, err = s.cfg.Peers.Verify(r)
	}
	if err != nil {
		s.log.Warn("pull refused", "remote", r.RemoteAddr, "err", err)
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	name, err := streamname.New(r.PathValue("app"), r.PathValue("stream"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var chain []cluster.NodeID // the nodes the pull passed, its sender last
	if s.cfg.Self != nil {
		if chain, err = cluster.ParseVia(r, s.cfg.Self()); err != nil {
			// This node is already in the pull's chain: relays configured
			// in a circle. The puller goes to the owner instead.
			s.log.Warn("pull refused: it came round to this node again", "stream", name, "node", from, "err", err)
			http.Error(w, err.Error(), http.StatusLoopDetected)
			return
		}
	}
	var path []cluster.NodeID // the nodes the stream comes through to here
	if s.cfg.Path != nil {
		path = s.cfg.Path(name)
	}
	for _, id := range path {
		if slices.Contains(chain, id) {
			// This node relays the stream from the puller, or through it.
			s.log.Warn("pull refused: this node gets the stream through the puller", "stream", name, "node", from, "path", cluster.FormatPath(path))
			http.Error(w, fmt.Sprintf("%v: the stream comes here through %s", cluster.ErrLoop, id), http.StatusLoopDetected)
			return
		}
	}
	w.Header().Set(cluster.HeaderPath, cluster.FormatPath(path))
	via := make([]string, len(chain))
	for i, id := range chain {
		via[i] = string(id)
	}
	s.log.Debug("pull", "stream", name, "node", from)
	s.ServePull(w, r, name, hub.RelayProtocol, cluster.EndTag(), via)
}
