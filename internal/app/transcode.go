package app

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/transcode"
)

// initTranscoder builds the node's transcode placer; it acts on hub events
// once the node has started.
func (a *App) initTranscoder(reg prometheus.Registerer) {
	var peers *cluster.PeerClient // jobs move between nodes only with a cluster secret
	if a.cfg.ClusterSecret != "" {
		peers = a.peers
	}
	a.trans = transcode.NewPlacer(transcode.PlacerConfig{
		FFmpeg:     a.cfg.FFmpeg,
		Max:        a.cfg.TranscodeMax,
		CPUMax:     a.cfg.TranscodeCPUMax,
		Transcodes: func(app string) bool { c := a.current(); return c.Transcodes(app) },
		Ladder:     func(app string) []transcode.Rendition { c := a.current(); return c.Ladder(app) },
		RTMPAddr:   a.RTMPAddr,
		Self:       func() cluster.NodeID { return cluster.NodeID(a.nodeID()) },
		Streams:    a.Hub,
		Registry:   a.registry,
		Peers:      peers,
		Announce: func(job transcode.Job) {
			if srv := a.events.Server(); srv != nil {
				srv.Broadcast("transcode", job)
			}
		},
		Metrics: reg,
		Logger:  a.log,
	})
	a.Hub.Subscribe(a.trans.HubEvent)
}
