// Package api is meshcast's REST API under /api/v1.
package api

import (
	"context"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/httpfront"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/push"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Hub is what the API needs from the node's stream table.
type Hub interface {
	Get(name streamname.Name) *stream.Stream
	List() []*stream.Stream
	Sessions() []hub.Session
	Kick(id string) bool
	KickPublisher(name streamname.Name) bool
}

// ViewerCounter counts a protocol's viewers where they are not stream
// readers of their own (HLS players share one muxer's reader).
type ViewerCounter interface {
	Viewers(name streamname.Name) int
}

// Cluster is what the API shows of the cluster's registry.
type Cluster interface {
	Nodes(ctx context.Context) ([]cluster.Node, error)
	Owner(ctx context.Context, name streamname.Name) (cluster.Claim, error)
	Relays(ctx context.Context, name streamname.Name) ([]cluster.Relay, error)
	// Streams is the cluster's stream listing, one call to the store.
	Streams(ctx context.Context) ([]cluster.StreamRecord, error)
}

// registryTimeout bounds the registry look-ups of one API request.
const registryTimeout = 2 * time.Second

// Router picks the node a viewer should play a stream from.
type Router interface {
	Route(ctx context.Context, req cluster.RouteRequest) (cluster.Node, error)
}

// API serves the REST endpoints and the /play/ redirects.
type API struct {
	hub        Hub
	counted    map[string]ViewerCounter
	cluster    Cluster
	router     Router
	adminToken atomic.Pointer[string]
	settings   atomic.Pointer[map[string]any] // GET /api/v1/config
	// Reload, when set, re-reads the node's configuration and applies
	// what can change live (POST /api/v1/reload).
	Reload func() (any, error)
	// Pushes, when set, returns the restreams of a stream running on this
	// node, for its record.
	Pushes func(name streamname.Name) []push.Status
}

// New creates the API over hub, the cluster's registry and a router.
// counted maps a protocol ("hls") to what counts its viewers; config is the
// effective configuration with secrets redacted. adminToken guards the
// admin endpoints; empty leaves them to the node's own machine.
func New(hub Hub, counted map[string]ViewerCounter, c Cluster, router Router, config map[string]any, adminToken string) *API {
	a := &API{hub: hub, counted: counted, cluster: c, router: router}
	a.SetConfig(config, adminToken)
	return a
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *httpfront.Mux) {
	mux.HandleFunc("GET /api/v1/streams", a.listStreams)
	mux.HandleFunc("GET /api/v1/streams/{app}/{stream}", a.getStream)
	mux.HandleFunc("GET /api/v1/nodes", a.listNodes)
	mux.HandleFunc("GET /api/v1/cluster", a.clusterView)
	mux.HandleFunc("GET /api/v1/route", a.route)
	mux.HandleFunc("GET /play/{app}/{file}", a.play)
	mux.HandleFunc("GET /api/v1/sessions", a.admin(a.listSessions))
	mux.HandleFunc("DELETE /api/v1/sessions/{id}", a.admin(a.kickSession))
	mux.HandleFunc("DELETE /api/v1/streams/{app}/{stream}", a.admin(a.kickPublisher))
	mux.HandleFunc("POST /api/v1/reload", a.admin(a.serveReload))
	mux.HandleFunc("GET /api/v1/config", a.getConfig)
	mux.HandleFunc("GET /api/v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPI)
	})
}

// openAPI describes the API (OpenAPI 3.0).
//
//go:embed openapi.json
var openAPI []byte

// admin guards an endpoint that changes what the node serves or lists its
// clients: it needs "Authorization: Bearer TOKEN" with the admin token, or,
// when the node has none, a client on the node's own machine.
func (a *API) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case a.isAdmin(r):
			h(w, r)
		case a.token() == "":
			writeError(w, http.StatusForbidden, "forbidden", "without --admin-token this endpoint answers only on the node's own machine")
		default:
			w.Header().Set("WWW-Authenticate", `Bearer realm="meshcast"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "this endpoint needs the admin token: Authorization: Bearer TOKEN")
		}
	}
}

// Admin guards h as an admin endpoint, for routes mounted by other
// packages.
func (a *API) Admin(h http.HandlerFunc) http.HandlerFunc { return a.admin(h) }

// isAdmin reports whether r carries the admin token or, when the node has
// none, comes from the node's own machine.
func (a *API) isAdmin(r *http.Request) bool {
	if a.token() == "" {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		return err == nil && ap.Addr().IsLoopback()
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(token), []byte(a.token())) == 1
}

// token is the admin token in force.
func (a *API) token() string { return *a.adminToken.Load() }

// SetConfig replaces the configuration GET /api/v1/config shows and the
// admin token (a reload).
func (a *API) SetConfig(config map[string]any, adminToken string) {
	a.settings.Store(&config)
	a.adminToken.Store(&adminToken)
}

// serveReload answers POST /api/v1/reload: what the reload applied and
// what needs a restart, or why the new configuration was refused (422:
// nothing changed).
func (a *API) serveReload(w http.ResponseWriter, r *http.Request) {
	if a.Reload == nil {
		writeError(w, http.StatusNotImplemented, "no_reload", "this node cannot reload its configuration")
		return
	}
	res, err := a.Reload()
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid_config", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (a *API) listSessions(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Sessions []hub.Session `json:"sessions"`
	}{a.hub.Sessions()})
}

func (a *API) kickSession(w http.ResponseWriter, r *http.Request) {
	if !a.hub.Kick(r.PathValue("id")) {
		writeError(w, http.StatusNotFound, "session_not_found", "no session with that ID")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) kickPublisher(w http.ResponseWriter, r *http.Request) {
	name, err := streamname.New(r.PathValue("app"), r.PathValue("stream"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_name", err.Error())
		return
	}
	if !a.hub.KickPublisher(name) {
		writeError(w, http.StatusNotFound, "stream_not_found", "nobody publishes "+string(name)+" on this node")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) getConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, *a.settings.Load())
}

// Route is the route API's answer: the node to play from and the URL.
type Route struct {
	Node cluster.Node `json:"node"`
	URL  string       `json:"url"`
}

// playURL is where a viewer plays name over proto from node n.
func playURL(n cluster.Node, name streamname.Name, proto string) (string, bool) {
	switch proto {
	case "rtmp":
		return "rtmp://" + n.RTMPAddr + "/" + string(name), true
	case "flv":
		return "http://" + n.HTTPAddr + "/" + string(name) + ".flv", true
	case "hls":
		return "http://" + n.HTTPAddr + "/" + string(name) + "/index.m3u8", true
	}
	return "", false
}

// routeTo picks the node for a viewer of name over proto, answering the
// request itself when it cannot.
func (a *API) routeTo(w http.ResponseWriter, r *http.Request, name streamname.Name, proto string) (Route, bool) {
	if proto == "webrtc" {
		writeError(w, http.StatusNotImplemented, "unsupported_proto", "this node does not serve WebRTC yet")
		return Route{}, false
	}
	if _, ok := playURL(cluster.Node{}, name, proto); !ok {
		writeError(w, http.StatusBadRequest, "bad_proto", "proto must be rtmp, flv, hls or webrtc")
		return Route{}, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), registryTimeout)
	defer cancel()
	n, err := a.router.Route(ctx, cluster.RouteRequest{Stream: name, Region: r.URL.Query().Get("region")})
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "no_node", err.Error())
		return Route{}, false
	}
	u, _ := playURL(n, name, proto)
	return Route{Node: n, URL: u}, true
}

func (a *API) route(w http.ResponseWriter, r *http.Request) {
	name, err := streamname.Parse(r.URL.Query().Get("stream"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_name", err.Error())
		return
	}
	if rt, ok := a.routeTo(w, r, name, r.URL.Query().Get("proto")); ok {
		writeJSON(w, http.StatusOK, rt)
	}
}

// play redirects /play/APP/STREAM.flv and .m3u8 to the chosen node.
func (a *API) play(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	proto := ""
	switch {
	case strings.HasSuffix(file, ".flv"):
		proto, file = "flv", strings.TrimSuffix(file, ".flv")
	case strings.HasSuffix(file, ".m3u8"):
		proto, file = "hls", strings.TrimSuffix(file, ".m3u8")
	default:
		writeError(w, http.StatusNotFound, "not_found", "play URLs end in .flv or .m3u8")
		return
	}
	name, err := streamname.New(r.PathValue("app"), file)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_name", err.Error())
		return
	}
	if rt, ok := a.routeTo(w, r, name, proto); ok {
		if r.URL.RawQuery != "" {
			rt.URL += "?" + r.URL.RawQuery // tokens and options travel along
		}
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, rt.URL, http.StatusFound)
	}
}

// Stream is the JSON form of a live stream.
type Stream struct {
	Name          string         `json:"name"`
	App           string         `json:"app"`
	Stream        string         `json:"stream"`
	Live          bool           `json:"live"`
	Video         *Video         `json:"video,omitempty"`
	Audio         *Audio         `json:"audio,omitempty"`
	BitrateBPS    int64          `json:"bitrate_bps"`
	Publisher     *Publisher     `json:"publisher,omitempty"`
	Viewers       map[string]int `json:"viewers"`
	ViewersTotal  int            `json:"viewers_total"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	PublishedAt   *time.Time     `json:"published_at,omitempty"`
	// Owner is the node that owns the stream in the cluster and its claim's
	// epoch; Relays are the nodes relaying it and whom each pulls from.
	Owner  *cluster.Claim  `json:"owner,omitempty"`
	Relays []cluster.Relay `json:"relays"`
	// Pushes are the stream's restreams running on this node, their
	// targets redacted.
	Pushes []push.Status `json:"pushes,omitempty"`
}

// Video describes the video track.
type Video struct {
	Codec   string  `json:"codec"`
	Width   int     `json:"width"`
	Height  int     `json:"height"`
	FPS     float64 `json:"fps,omitempty"`
	Profile string  `json:"profile,omitempty"`
	Level   string  `json:"level,omitempty"`
}

// Audio describes the audio track.
type Audio struct {
	Codec      string `json:"codec"`
	SampleRate int    `json:"sample_rate"`
	Channels   int    `json:"channels"`
	Profile    string `json:"profile,omitempty"`
}

// Publisher describes the publishing client.
type Publisher struct {
	Protocol string `json:"protocol"`
	// RemoteAddr is shown to admin requests only.
	RemoteAddr string `json:"remote_addr,omitempty"`
}

// protocols are always listed in viewers, even at zero; relayProtocol
// counts the nodes pulling the stream from this one.
var protocols = []string{"rtmp", "flv", "hls", "srt", "webrtc", "rtsp", relayProtocol}

const relayProtocol = "relay"

// describe is a stream's JSON form with its place in the cluster.
func (a *API) describe(ctx context.Context, s *stream.Stream, admin bool) Stream {
	out := a.toJSON(s.Info())
	if !admin && out.Publisher != nil {
		out.Publisher.RemoteAddr = "" // client addresses are for admins
	}
	if a.Pushes != nil {
		out.Pushes = a.Pushes(s.Name())
	}
	out.Relays = []cluster.Relay{}
	if a.cluster == nil {
		return out
	}
	// Two look-ups at once: over a slow registry the answer takes one
	// round trip, not two.
	var wg sync.WaitGroup
	wg.Go(func() {
		if c, err := a.cluster.Owner(ctx, s.Name()); err == nil {
			out.Owner = &c
		}
	})
	rs, err := a.cluster.Relays(ctx, s.Name())
	wg.Wait()
	if err == nil {
		out.Relays = rs
	}
	return out
}

func (a *API) toJSON(in stream.Info) Stream {
	out := Stream{
		Name:       string(in.Name),
		App:        in.Name.App(),
		Stream:     in.Name.Stream(),
		Live:       in.Live,
		BitrateBPS: in.BitrateBPS,
		Viewers:    make(map[string]int, len(protocols)),
	}
	for _, p := range protocols {
		out.Viewers[p] = 0
	}
	for p, n := range in.Readers {
		if hub.Watching(p) { // a recording or a transcoder is nobody watching
			out.Viewers[p] = n
		}
	}
	for p, c := range a.counted {
		out.Viewers[p] = c.Viewers(in.Name)
	}
	for p, n := range out.Viewers {
		if p != relayProtocol { // other nodes, not people
			out.ViewersTotal += n
		}
	}
	if v := in.Video; v != nil {
		out.Video = &Video{Codec: v.Codec, Width: v.Width, Height: v.Height, FPS: v.FPS, Profile: v.Profile, Level: v.Level}
	}
	if a := in.Audio; a != nil {
		out.Audio = &Audio{Codec: a.Codec, SampleRate: a.SampleRate, Channels: a.Channels, Profile: a.Profile}
	}
	if in.Live {
		out.Publisher = &Publisher{Protocol: in.Publisher.Protocol, RemoteAddr: in.Publisher.RemoteAddr}
		t := in.PublishedAt.UTC()
		out.PublishedAt = &t
		out.UptimeSeconds = time.Since(in.PublishedAt).Seconds()
	}
	return out
}

func (a *API) listStreams(w http.ResponseWriter, r *http.Request) {
	var streams []Stream
	switch r.URL.Query().Get("scope") {
	case "", "node":
		streams = a.Streams(r.Context(), a.isAdmin(r))
	case "cluster":
		ctx, cancel := context.WithTimeout(r.Context(), registryTimeout)
		defer cancel()
		var err error
		if streams, err = a.ClusterStreams(ctx); err != nil {
			writeError(w, http.StatusServiceUnavailable, "registry_unavailable", "the cluster registry cannot be reached")
			return
		}
	default:
		writeError(w, http.StatusBadRequest, "bad_scope", "scope is node (the default) or cluster")
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Streams []Stream `json:"streams"`
	}{streams})
}

// Streams describes the node's streams as GET /api/v1/streams does, with
// publisher addresses for admin only.
func (a *API) Streams(ctx context.Context, admin bool) []Stream {
	list := a.hub.List()
	out := make([]Stream, 0, len(list))
	ctx, cancel := context.WithTimeout(ctx, registryTimeout)
	defer cancel()
	for _, s := range list {
		out = append(out, a.describe(ctx, s, admin))
	}
	return out
}

// ClusterStream is one stream of the cluster: its owner, and the nodes
// relaying it, each with the node it pulls from.
type ClusterStream struct {
	Name   string          `json:"name"`
	Owner  cluster.NodeID  `json:"owner"`
	Epoch  uint64          `json:"epoch"`
	Relays []cluster.Relay `json:"relays"`
}

// clusterView answers GET /api/v1/cluster: the live nodes and every
// stream's owner and relays, from the registry.
func (a *API) clusterView(w http.ResponseWriter, r *http.Request) {
	out := struct {
		Nodes   []cluster.Node  `json:"nodes"`
		Streams []ClusterStream `json:"streams"`
	}{Nodes: []cluster.Node{}, Streams: []ClusterStream{}}
	if a.cluster == nil {
		writeJSON(w, http.StatusOK, out)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), registryTimeout)
	defer cancel()
	nodes, err := a.cluster.Nodes(ctx)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "registry_unavailable", "the cluster registry cannot be reached")
		return
	}
	out.Nodes = nodes
	streams, err := a.cluster.Streams(ctx)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "registry_unavailable", "the cluster registry cannot be reached")
		return
	}
	for _, rec := range streams[:min(len(streams), maxClusterStreams)] {
		c := rec.Claim
		cs := ClusterStream{Name: string(c.Stream), Owner: c.Node, Epoch: c.Epoch, Relays: rec.Relays}
		if cs.Relays == nil {
			cs.Relays = []cluster.Relay{}
		}
		out.Streams = append(out.Streams, cs)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) listNodes(w http.ResponseWriter, r *http.Request) {
	out := struct {
		Nodes []cluster.Node `json:"nodes"`
	}{Nodes: []cluster.Node{}}
	if a.cluster != nil {
		ctx, cancel := context.WithTimeout(r.Context(), registryTimeout)
		defer cancel()
		nodes, err := a.cluster.Nodes(ctx)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "registry_unavailable", err.Error())
			return
		}
		out.Nodes = nodes
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) getStream(w http.ResponseWriter, r *http.Request) {
	name, err := streamname.New(r.PathValue("app"), r.PathValue("stream"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_name", err.Error())
		return
	}
	s := a.hub.Get(name)
	if s == nil {
		writeError(w, http.StatusNotFound, "stream_not_found", "no live stream named "+string(name))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), registryTimeout)
	defer cancel()
	writeJSON(w, http.StatusOK, a.describe(ctx, s, a.isAdmin(r)))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// Error is the JSON body of every API error.
type Error struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var e Error
	e.Error.Code, e.Error.Message = code, msg
	writeJSON(w, status, e)
}
