package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/server/hls"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/transcode"
)

// Transcoding timing.
const (
	// videoWait bounds the wait for a new stream's video configuration,
	// which says how tall the source is and so which renditions it gets.
	videoWait = 10 * time.Second
	// variantWait bounds the wait for each variant's playlist when a
	// master playlist is made.
	variantWait = 8 * time.Second
	// transcodePath prefixes the route by which a node asks another to
	// run a stream's transcoding job.
	transcodePath = "/internal/transcode/"
)

// TranscodeJob is what the API and the events say of a stream's
// transcoding: run here, handed to another node, or not run, and why.
type TranscodeJob struct {
	Stream     string   `json:"stream"`
	Node       string   `json:"node"`  // the node running it, if any
	State      string   `json:"state"` // starting, running, restarting, stopped, remote, skipped
	Reason     string   `json:"reason,omitempty"`
	Renditions []string `json:"renditions"`
	Restarts   int      `json:"restarts"`
	FPS        float64  `json:"fps"`
	Speed      float64  `json:"speed"`
	PID        int      `json:"pid,omitempty"`
	LastError  string   `json:"last_error,omitempty"`
}

// transcoder runs the ladders of the streams published here, or hands
// them to a less busy node of the cluster.
type transcoder struct {
	a   *App
	sup *transcode.Supervisor

	mu     sync.Mutex
	notes  map[streamname.Name]TranscodeJob // streams whose job is not run here: remote or skipped
	remote map[streamname.Name]string       // the node's URL a job was handed to

	restarts atomic.Int64
	wg       sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc
}

// initTranscoder builds the node's transcoder; it acts on hub events once
// the node has started.
func (a *App) initTranscoder(reg prometheus.Registerer) {
	t := &transcoder{a: a, notes: map[streamname.Name]TranscodeJob{}, remote: map[streamname.Name]string{}}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.sup = transcode.New(transcode.Config{
		FFmpeg:   a.cfg.FFmpeg,
		Max:      a.cfg.TranscodeMax,
		Logger:   a.log,
		OnChange: t.changed,
	})
	a.trans = t
	a.Hub.Subscribe(t.hubEvent)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshcast_transcode_jobs",
			Help: "Transcoding jobs (ffmpeg processes) this node runs.",
		}, func() float64 { return float64(t.sup.Running()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "meshcast_transcode_restarts_total",
			Help: "Restarts of transcoding ffmpeg processes that exited while their source was live.",
		}, func() float64 { return float64(t.restarts.Load()) }),
	)
}

// close stops every job and waits.
func (t *transcoder) close() {
	t.cancel()
	t.wg.Wait()
	t.sup.Close()
}

// hubEvent starts a job when a stream gets a publisher here, and ends it
// when the stream ends. Both run off the hub's goroutine: placing waits
// for the source's video, and stopping ffmpeg may take seconds.
func (t *transcoder) hubEvent(ev hub.Event) {
	switch {
	case ev.Type == hub.EventSessionStart && ev.Session.Kind == hub.KindPublish:
		if t.a.cfg.Transcodes(ev.Name.App()) && !t.isRendition(ev.Name) {
			t.goTracked(func() { t.place(ev.Name) })
		}
	case ev.Type == "end":
		t.goTracked(func() { t.ended(ev.Name) })
	}
}

// goTracked runs f in a goroutine close waits for, unless closing.
func (t *transcoder) goTracked(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ctx.Err() != nil {
		return
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		f()
	}()
}

// isRendition reports whether name is a rendition of another stream of
// its app's ladder, which is never transcoded again.
func (t *transcoder) isRendition(name streamname.Name) bool {
	for _, r := range t.a.cfg.Ladder(name.App()) {
		if strings.HasSuffix(name.Stream(), "_"+r.Name) {
			return true
		}
	}
	return false
}

// ended stops the job of a stream that ended, here or on the node it was
// handed to.
func (t *transcoder) ended(name streamname.Name) {
	t.sup.Stop(name)
	t.mu.Lock()
	node, handed := t.remote[name]
	delete(t.remote, name)
	_, noted := t.notes[name]
	delete(t.notes, name)
	t.mu.Unlock()
	if handed {
		t.ask(context.Background(), http.MethodDelete, node, name, "")
	}
	if noted || handed {
		t.announce(TranscodeJob{Stream: string(name), State: string(transcode.StateStopped), Renditions: []string{}})
	}
}

// place runs name's job here if this node has room, else asks the other
// nodes, least busy first, until one takes it, else notes why it is not
// run.
func (t *transcoder) place(name streamname.Name) {
	renditions, err := t.fit(name)
	if err != nil {
		t.skip(name, err.Error())
		return
	}
	self, nodes := t.nodes()
	var why []string
	if busy := t.busy(self); busy != "" {
		why = append(why, "this node: "+busy)
	} else if err := t.run(name, renditions); err == nil {
		return
	} else {
		why = append(why, "this node: "+err.Error())
	}
	if t.a.cfg.ClusterSecret != "" {
		slices.SortFunc(nodes, func(x, y cluster.Node) int { return int((x.Load.CPU - y.Load.CPU) * 1e6) })
		for _, n := range nodes {
			if n.ID == self.ID || n.State != cluster.StateServing {
				continue
			}
			// Each node judges its own load against its own
			// --transcode-cpu-max, and refuses when busy.
			url := "http://" + n.HTTPAddr
			if err := t.ask(t.ctx, http.MethodPost, url, name, t.sourceSize(name)); err != nil {
				why = append(why, string(n.ID)+": "+err.Error())
				continue
			}
			t.mu.Lock()
			t.remote[name] = url
			job := TranscodeJob{Stream: string(name), Node: string(n.ID), State: "remote", Renditions: renditionNames(name, renditions),
				Reason: strings.Join(append(why, "handed to "+string(n.ID)), "; ")}
			t.notes[name] = job
			t.mu.Unlock()
			t.a.log.Info("transcode: job handed to another node", "stream", name, "node", n.ID, "why", strings.Join(why, "; "))
			t.announce(job)
			return
		}
	}
	t.skip(name, "no node can run it: "+strings.Join(why, "; "))
}

// fit waits for name's video configuration and returns the renditions
// its ladder allows: none taller than the source.
func (t *transcoder) fit(name streamname.Name) ([]transcode.Rendition, error) {
	deadline := time.Now().Add(videoWait)
	for {
		if s := t.a.Hub.Get(name); s != nil {
			if v := s.Info().Video; v != nil && v.Height > 0 {
				if v.Codec != media.CodecH264.String() {
					// ffmpeg reads the source as FLV, and before 6.1 it
					// knows no enhanced RTMP codec.
					return nil, fmt.Errorf("the source is %s: transcoding takes H.264 sources", v.Codec)
				}
				r := transcode.Fit(t.a.cfg.Ladder(name.App()), v.Width, v.Height)
				if len(r) == 0 {
					return nil, fmt.Errorf("the source (%dx%d) is smaller than every rendition of the ladder", v.Width, v.Height)
				}
				return r, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, errors.New("the source has sent no video configuration")
		}
		select {
		case <-t.ctx.Done():
			return nil, t.ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// nodes returns this node's registry record and every live node's.
func (t *transcoder) nodes() (cluster.Node, []cluster.Node) {
	ctx, cancel := context.WithTimeout(t.ctx, 2*time.Second)
	defer cancel()
	var self cluster.Node
	if m := t.a.member.Load(); m != nil {
		self.ID = m.ID()
	}
	nodes, _ := t.a.registry.Nodes(ctx)
	for _, n := range nodes {
		if n.ID == self.ID {
			self = n
		}
	}
	return self, nodes
}

// busy says why a node takes no new job, from its registry record: its
// CPU over --transcode-cpu-max.
func (t *transcoder) busy(n cluster.Node) string {
	limit := float64(t.a.cfg.TranscodeCPUMax) / 100
	if n.Load.CPU >= limit {
		return fmt.Sprintf("CPU %.0f%% at or above --transcode-cpu-max %d%%", n.Load.CPU*100, t.a.cfg.TranscodeCPUMax)
	}
	return ""
}

// run starts name's job on this node, reading the source from the node's
// own RTMP listener and publishing the renditions back to it.
func (t *transcoder) run(name streamname.Name, renditions []transcode.Rendition) error {
	base := "rtmp://" + net.JoinHostPort("127.0.0.1", port(t.a.RTMPAddr())) + "/"
	err := t.sup.Start(transcode.Spec{
		Source:     name,
		Input:      base + string(name),
		OutputURL:  func(n streamname.Name) string { return base + string(n) },
		Renditions: renditions,
		Alive:      func() bool { return t.alive(name) },
	})
	switch {
	case errors.Is(err, transcode.ErrFull):
		return fmt.Errorf("--transcode-max %d reached: %d jobs running", t.a.cfg.TranscodeMax, t.sup.Running())
	case errors.Is(err, transcode.ErrRunning):
		return nil
	case err != nil:
		return err
	}
	t.mu.Lock()
	delete(t.notes, name)
	t.mu.Unlock()
	return nil
}

// sourceSize is the query telling another node the source's size, so it
// fits the ladder before it has the stream itself.
func (t *transcoder) sourceSize(name streamname.Name) string {
	if s := t.a.Hub.Get(name); s != nil {
		if v := s.Info().Video; v != nil {
			return fmt.Sprintf("?width=%d&height=%d", v.Width, v.Height)
		}
	}
	return ""
}

// alive reports whether a source is still live: here, or (for a job
// handed over by its origin) anywhere in the cluster.
func (t *transcoder) alive(name streamname.Name) bool {
	if s := t.a.Hub.Get(name); s != nil && s.Info().Live {
		return true
	}
	ctx, cancel := context.WithTimeout(t.ctx, 2*time.Second)
	defer cancel()
	_, err := t.a.registry.Owner(ctx, name)
	return err == nil
}

// skip notes why name is served without renditions.
func (t *transcoder) skip(name streamname.Name, why string) {
	job := TranscodeJob{Stream: string(name), State: "skipped", Reason: why, Renditions: []string{}}
	t.mu.Lock()
	t.notes[name] = job
	t.mu.Unlock()
	t.a.log.Warn("transcode: stream served without renditions", "stream", name, "why", why)
	t.announce(job)
}

// changed follows the supervisor's jobs.
func (t *transcoder) changed(st transcode.Status) {
	if st.State == transcode.StateRestarting {
		t.restarts.Add(1)
	}
	t.announce(t.view(st))
}

// view is the API's description of a job run here.
func (t *transcoder) view(st transcode.Status) TranscodeJob {
	var node string
	if m := t.a.member.Load(); m != nil {
		node = string(m.ID())
	}
	r := st.Renditions
	if r == nil {
		r = []string{}
	}
	return TranscodeJob{Stream: st.Stream, Node: node, State: string(st.State), Renditions: r, Restarts: st.Restarts,
		FPS: st.FPS, Speed: st.Speed, PID: st.PID, LastError: st.LastError}
}

// announce sends a job's change to the dashboard's clients.
func (t *transcoder) announce(job TranscodeJob) {
	if srv := t.a.events.Load(); srv != nil {
		srv.Broadcast("transcode", job)
	}
}

// jobs lists the jobs run here and the notes of those that are not.
func (t *transcoder) jobs() []TranscodeJob {
	var out []TranscodeJob
	for _, st := range t.sup.Jobs() {
		out = append(out, t.view(st))
	}
	t.mu.Lock()
	for _, j := range t.notes {
		out = append(out, j)
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(x, y TranscodeJob) int { return strings.Compare(x.Stream, y.Stream) })
	if out == nil {
		out = []TranscodeJob{}
	}
	return out
}

// ask sends a signed job request (POST: run it, DELETE: stop it) to
// another node.
func (t *transcoder) ask(ctx context.Context, method, nodeURL string, name streamname.Name, query string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, nodeURL+transcodePath+string(name)+query, nil)
	if err != nil {
		return err
	}
	resp, err := t.a.peers.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&e)
		if e.Error.Message != "" {
			return errors.New(e.Error.Message)
		}
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// serveJob answers POST and DELETE /internal/transcode/APP/STREAM from
// another node: run (or stop) that stream's job here.
func (t *transcoder) serveJob(w http.ResponseWriter, r *http.Request) {
	from, err := cluster.VerifyPull(r, t.a.cfg.ClusterSecret, time.Now())
	if err != nil {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	name, err := streamname.New(r.PathValue("app"), r.PathValue("stream"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.Method == http.MethodDelete {
		t.sup.Stop(name)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	self, _ := t.nodes()
	if busy := t.busy(self); busy != "" {
		writeAPIError(w, http.StatusConflict, "busy", busy)
		return
	}
	// The source plays here through the cluster; its configuration comes
	// with it.
	renditions := transcode.Fit(t.a.cfg.Ladder(name.App()), 0, 0)
	if s := t.a.Hub.Get(name); s != nil {
		if v := s.Info().Video; v != nil && v.Height > 0 {
			renditions = transcode.Fit(renditions, v.Width, v.Height)
		}
	}
	if h := r.URL.Query().Get("height"); h != "" {
		var width, height int
		fmt.Sscanf(r.URL.Query().Get("width"), "%d", &width)
		fmt.Sscanf(h, "%d", &height)
		renditions = transcode.Fit(renditions, width, height)
	}
	if err := t.run(name, renditions); err != nil {
		writeAPIError(w, http.StatusConflict, "full", err.Error())
		return
	}
	t.a.log.Info("transcode: running a job for another node", "stream", name, "from", from)
	w.WriteHeader(http.StatusCreated)
}

// writeAPIError answers with the API's error shape.
func writeAPIError(w http.ResponseWriter, code int, kind, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": kind, "message": msg}})
}

// serveJobs answers GET /api/v1/transcode.
func (t *transcoder) serveJobs(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(struct {
		Jobs []TranscodeJob `json:"jobs"`
	}{t.jobs()})
}

// renditionNames are the stream names of a source's renditions.
func renditionNames(source streamname.Name, rs []transcode.Rendition) []string {
	out := []string{}
	for _, r := range rs {
		if n, err := transcode.RenditionName(source, r); err == nil {
			out = append(out, string(n))
		}
	}
	return out
}

// serveMaster answers /APP/STREAM/master.m3u8: the stream's own HLS
// variants and those of every rendition that is live in the cluster, in
// one multivariant playlist.
func (a *App) serveMaster(w http.ResponseWriter, r *http.Request, name streamname.Name) {
	names := []streamname.Name{name}
	for _, rn := range a.cfg.Ladder(name.App()) {
		if n, err := transcode.RenditionName(name, rn); err == nil && a.streamExists(r.Context(), n) {
			names = append(names, n)
		}
	}
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

// streamExists reports whether a stream is live here or owned anywhere
// in the cluster.
func (a *App) streamExists(ctx context.Context, name streamname.Name) bool {
	if s := a.Hub.Get(name); s != nil && s.Info().Live {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := a.registry.Owner(ctx, name)
	return err == nil
}
