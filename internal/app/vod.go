package app

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/vod"
)

// initVOD opens the on-demand library over --vod-dir and the recordings,
// shared with the cluster's other nodes when there is a cluster secret.
func (a *App) initVOD(reg prometheus.Registerer) error {
	cfg := a.cfg
	var recordings []string
	if a.recorder != nil {
		recordings = append(recordings, a.recorder.Dir())
	}
	var peers vod.Peers
	if cfg.ClusterSecret != "" {
		peers = vod.NewClusterPeers(a.registry, a.peers, func() cluster.NodeID { return cluster.NodeID(a.nodeID()) }, a.log)
	}
	size, _ := config.ParseSize(cfg.CacheSize) // validated
	maxUpload, _ := config.ParseSize(cfg.VODMaxUpload)
	var err error
	a.vod, err = vod.Open(vod.OpenConfig{
		UploadDir:  cfg.VODDir,
		Dirs:       recordings,
		CacheBytes: size,
		CacheL2:    cfg.CacheL2,
		Library: vod.Config{
			SegmentDuration: cfg.VODSegmentDuration,
			MaxUpload:       maxUpload,
			Peers:           peers,
			Replicas:        cfg.VODReplicas,
			Admin:           a.api.Admin,
			Metrics:         reg,
			Logger:          a.log,
		},
	})
	return err
}
