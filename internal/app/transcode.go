package app

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/server/hls"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/transcode"
)

// variantWait bounds the wait for each variant's playlist when a master
// playlist is made.
const variantWait = 8 * time.Second

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
		Transcodes: a.cfg.Transcodes,
		Ladder:     a.cfg.Ladder,
		RTMPAddr:   a.RTMPAddr,
		Self:       func() cluster.NodeID { return cluster.NodeID(a.nodeID()) },
		Streams:    a.Hub,
		Registry:   a.registry,
		Peers:      peers,
		Announce: func(job transcode.Job) {
			if srv := a.events.Load(); srv != nil {
				srv.Broadcast("transcode", job)
			}
		},
		Metrics: reg,
		Logger:  a.log,
	})
	a.Hub.Subscribe(a.trans.HubEvent)
}

// serveMaster answers /APP/STREAM/master.m3u8: the stream's own HLS
// variants and those of every rendition that is live in the cluster, in
// one multivariant playlist.
func (a *App) serveMaster(w http.ResponseWriter, r *http.Request, name streamname.Name) {
	names := append([]streamname.Name{name}, a.trans.LiveRenditions(r.Context(), name)...)
	variants := make([]hls.Variant, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(r.Context(), variantWait)
			defer cancel()
			req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/"+string(n)+"/index.m3u8?"+r.URL.RawQuery, nil)
			rec := httptest.NewRecorder()
			a.hls.ServeStream(rec, req, n, "index.m3u8")
			if rec.Code != http.StatusOK {
				return
			}
			v := hls.Variant{Name: "source", Playlist: rec.Body.Bytes()}
			if i > 0 {
				v.Name = strings.TrimPrefix(n.Stream(), name.Stream()+"_")
				v.Prefix = "../" + n.Stream() + "/"
			}
			variants[i] = v
		}()
	}
	wg.Wait()
	if variants[0].Playlist == nil {
		http.Error(w, "stream not found", http.StatusNotFound)
		return
	}
	var got []hls.Variant
	for _, v := range variants {
		if v.Playlist != nil {
			got = append(got, v)
		}
	}
	w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(hls.MergeMultivariant(got))
}
