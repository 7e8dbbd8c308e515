package app

import (
	"encoding/json"

	"github.com/meshcast/meshcast/internal/buildinfo"
	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/events"
	"github.com/meshcast/meshcast/internal/streamname"
)

// startEvents starts the node's Socket.IO events, reporting the hub's
// streams and viewers as node.
func (a *App) startEvents(node cluster.NodeID) {
	srv, err := events.New(events.Config{
		Node:         string(node),
		Version:      buildinfo.String(),
		MaxClients:   a.cfg.EventsMaxClients,
		Redis:        a.cfg.Redis,
		RedisPrefix:  a.cfg.RedisPrefix,
		Stats:        func() json.RawMessage { return a.api.StatsJSON(node) },
		ClusterStats: a.api.ClusterJSON,
		Logger:       a.log,
	}, eventSource{a})
	if err != nil {
		a.log.Error("real-time events disabled", "err", err)
		return
	}
	a.Hub.Subscribe(srv.HubEvent)
	a.events.Set(srv)
}

// stopEvents disconnects the events' clients and stops them.
func (a *App) stopEvents() {
	if srv := a.events.Server(); srv != nil {
		srv.Close()
	}
}

// eventSource shows the events the node's streams and viewers.
type eventSource struct{ a *App }

func (s eventSource) Streams() []streamname.Name {
	list := s.a.Hub.List()
	out := make([]streamname.Name, len(list))
	for i, st := range list {
		out[i] = st.Name()
	}
	return out
}

func (s eventSource) Viewers(name streamname.Name) events.Counts {
	st := s.a.Hub.Get(name)
	if st == nil {
		return events.Counts{}
	}
	rc := st.Stats().ReaderCount
	return events.Counts{RTMP: rc["rtmp"], FLV: rc["flv"], HLS: s.a.hls.Viewers(name),
		SRT: rc["srt"], WebRTC: rc["webrtc"], RTSP: rc["rtsp"]}
}
