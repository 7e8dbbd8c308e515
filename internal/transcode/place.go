package transcode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Placement timing.
const (
	// videoWait bounds the wait for a new stream's video configuration,
	// which says how tall the source is and so which renditions it gets.
	videoWait = 10 * time.Second
	// registryWait bounds one question to the cluster's registry.
	registryWait = 2 * time.Second
)

// Job is what the API and the events say of a stream's transcoding: run
// here, handed to another node, or not run, and why.
type Job struct {
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

// Job states beyond a Supervisor's.
const (
	StateRemote  = "remote"  // handed to another node
	StateSkipped = "skipped" // run nowhere; Reason says why
)

// Streams is what placement needs of the node's stream table (hub.Hub).
type Streams interface {
	Get(name streamname.Name) *stream.Stream
}

var _ Streams = (*hub.Hub)(nil)

// Registry is what placement needs of the cluster's registry.
type Registry interface {
	Nodes(ctx context.Context) ([]cluster.Node, error)
	Owner(ctx context.Context, name streamname.Name) (cluster.Claim, error)
}

// PlacerConfig configures a Placer.
type PlacerConfig struct {
	// FFmpeg is the ffmpeg binary. Defaults to "ffmpeg", looked up in PATH.
	FFmpeg string
	// Max bounds the jobs this node runs (--transcode-max); <= 0: no limit.
	Max int
	// CPUMax is the CPU use, in percent of the node's cores, from which
	// this node runs no new job (--transcode-cpu-max).
	CPUMax int
	// Transcodes reports whether the streams of an app get a ladder.
	Transcodes func(app string) bool
	// Ladder is an app's renditions.
	Ladder func(app string) []Rendition
	// RTMPAddr is the node's RTMP listener, bound by the time a job
	// starts: jobs read their source from it and publish their
	// renditions to it.
	RTMPAddr func() net.Addr
	// Self is this node's ID once it has started.
	Self func() cluster.NodeID
	// Streams are the node's streams.
	Streams Streams
	// Registry lists the cluster's nodes and streams.
	Registry Registry
	// Peers sends and verifies requests between nodes. Nil (a node
	// without a cluster secret): jobs are neither handed to other nodes
	// nor taken from them.
	Peers *cluster.PeerClient
	// Selector picks, among the other serving nodes, the next to ask to
	// run a job this node cannot. Defaults to cluster.LeastCPU.
	Selector cluster.Selector
	// Announce is told of every change of a job; it must not block long.
	// May be nil.
	Announce func(Job)
	// Metrics, if set, gets meshcast_transcode_jobs and
	// meshcast_transcode_restarts_total.
	Metrics prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Placer runs the ladders of the streams published on this node, or hands
// them to a less busy node of the cluster, and runs the jobs other nodes
// hand to it.
type Placer struct {
	cfg PlacerConfig
	sup *Supervisor
	log *slog.Logger

	mu     sync.Mutex
	notes  map[streamname.Name]Job    // streams whose job is not run here: remote or skipped
	remote map[streamname.Name]string // the node's URL a job was handed to

	restarts atomic.Int64
	wg       sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc
}

// NewPlacer returns a Placer, which acts on the hub events it is given
// (HubEvent) from then on.
func NewPlacer(cfg PlacerConfig) *Placer {
	if cfg.Selector == nil {
		cfg.Selector = cluster.LeastCPU{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Placer{cfg: cfg, log: cfg.Logger, notes: map[streamname.Name]Job{}, remote: map[streamname.Name]string{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.sup = New(Config{FFmpeg: cfg.FFmpeg, Max: cfg.Max, Logger: cfg.Logger, OnChange: p.changed})
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "meshcast_transcode_jobs",
				Help: "Transcoding jobs (ffmpeg processes) this node runs.",
			}, func() float64 { return float64(p.sup.Running()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "meshcast_transcode_restarts_total",
				Help: "Restarts of transcoding ffmpeg processes that exited while their source was live.",
			}, func() float64 { return float64(p.restarts.Load()) }),
		)
	}
	return p
}

// Close stops every job and waits.
func (p *Placer) Close() {
	p.cancel()
	p.wg.Wait()
	p.sup.Close()
}

// HubEvent starts a job when a stream gets a publisher here, and ends it
// when the stream ends. Both run off the hub's goroutine: placing waits
// for the source's video, and stopping ffmpeg may take seconds.
func (p *Placer) HubEvent(ev hub.Event) {
	switch {
	case ev.Type == hub.EventSessionStart && ev.Session.Kind == hub.KindPublish:
		if p.cfg.Transcodes(ev.Name.App()) && !p.isRendition(ev.Name) {
			p.goTracked(func() { p.place(ev.Name) })
		}
	case ev.Type == "end":
		p.goTracked(func() { p.ended(ev.Name) })
	}
}

// goTracked runs f in a goroutine Close waits for, unless closing.
func (p *Placer) goTracked(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx.Err() != nil {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
}

// isRendition reports whether name is a rendition of another stream of
// its app's ladder, which is never transcoded again.
func (p *Placer) isRendition(name streamname.Name) bool {
	for _, r := range p.cfg.Ladder(name.App()) {
		if strings.HasSuffix(name.Stream(), "_"+r.Name) {
			return true
		}
	}
	return false
}

// ended stops the job of a stream that ended, here or on the node it was
// handed to.
func (p *Placer) ended(name streamname.Name) {
	p.sup.Stop(name)
	p.mu.Lock()
	node, handed := p.remote[name]
	delete(p.remote, name)
	_, noted := p.notes[name]
	delete(p.notes, name)
	p.mu.Unlock()
	if handed {
		p.ask(context.Background(), methodStop, node, name, "")
	}
	if noted || handed {
		p.announce(Job{Stream: string(name), State: string(StateStopped), Renditions: []string{}})
	}
}

// place runs name's job here if this node has room, else asks the other
// nodes, in the order the selector picks them, until one takes it, else
// notes why it is not run.
func (p *Placer) place(name streamname.Name) {
	renditions, err := p.fit(name)
	if err != nil {
		p.skip(name, err.Error())
		return
	}
	self, nodes := p.nodes()
	var why []string
	if busy := p.busy(self); busy != "" {
		why = append(why, "this node: "+busy)
	} else if err := p.run(name, renditions); err == nil {
		return
	} else {
		why = append(why, "this node: "+err.Error())
	}
	if p.cfg.Peers != nil {
		if n, ok := p.handOff(name, others(self.ID, nodes), &why); ok {
			p.handed(name, n, renditions, why)
			return
		}
	}
	p.skip(name, "no node can run it: "+strings.Join(why, "; "))
}

// others are the serving nodes other than self, as a selector's
// candidates.
func others(self cluster.NodeID, nodes []cluster.Node) []cluster.Candidate {
	var out []cluster.Candidate
	for _, n := range nodes {
		if n.ID != self && n.State == cluster.StateServing {
			out = append(out, cluster.Candidate{Node: n})
		}
	}
	return out
}

// handOff asks the candidates, in the order the selector picks them, to
// run name's job, until one takes it. Each refusal is added to why.
func (p *Placer) handOff(name streamname.Name, cands []cluster.Candidate, why *[]string) (cluster.Node, bool) {
	req := cluster.RouteRequest{Stream: name}
	for len(cands) > 0 {
		c := p.cfg.Selector.Select(req, cands)
		cands = slices.DeleteFunc(cands, func(x cluster.Candidate) bool { return x.ID == c.ID })
		// Each node judges its own load against its own
		// --transcode-cpu-max, and refuses when busy.
		if err := p.ask(p.ctx, methodRun, nodeURL(c.Node), name, p.sourceSize(name)); err != nil {
			*why = append(*why, string(c.ID)+": "+err.Error())
			continue
		}
		return c.Node, true
	}
	return cluster.Node{}, false
}

// nodeURL is the base URL of a node's HTTP listener.
func nodeURL(n cluster.Node) string { return "http://" + n.HTTPAddr }

// handed notes that node n runs name's job.
func (p *Placer) handed(name streamname.Name, n cluster.Node, renditions []Rendition, why []string) {
	p.mu.Lock()
	p.remote[name] = nodeURL(n)
	job := Job{Stream: string(name), Node: string(n.ID), State: StateRemote, Renditions: renditionNames(name, renditions),
		Reason: strings.Join(append(why, "handed to "+string(n.ID)), "; ")}
	p.notes[name] = job
	p.mu.Unlock()
	p.log.Info("transcode: job handed to another node", "stream", name, "node", n.ID, "why", strings.Join(why, "; "))
	p.announce(job)
}

// fit waits for name's video configuration and returns the renditions
// its ladder allows: none taller than the source.
func (p *Placer) fit(name streamname.Name) ([]Rendition, error) {
	deadline := time.Now().Add(videoWait)
	for {
		if s := p.cfg.Streams.Get(name); s != nil {
			if v := s.Info().Video; v != nil && v.Height > 0 {
				if v.Codec != media.CodecH264.String() {
					// ffmpeg reads the source as FLV, and before 6.1 it
					// knows no enhanced RTMP codec.
					return nil, fmt.Errorf("the source is %s: transcoding takes H.264 sources", v.Codec)
				}
				r := Fit(p.cfg.Ladder(name.App()), v.Width, v.Height)
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
		case <-p.ctx.Done():
			return nil, p.ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// nodes returns this node's registry record and every live node's.
func (p *Placer) nodes() (cluster.Node, []cluster.Node) {
	ctx, cancel := context.WithTimeout(p.ctx, registryWait)
	defer cancel()
	self := cluster.Node{ID: p.cfg.Self()}
	nodes, _ := p.cfg.Registry.Nodes(ctx)
	for _, n := range nodes {
		if n.ID == self.ID {
			self = n
		}
	}
	return self, nodes
}

// busy says why a node takes no new job, from its registry record: its
// CPU over --transcode-cpu-max.
func (p *Placer) busy(n cluster.Node) string {
	limit := float64(p.cfg.CPUMax) / 100
	if n.Load.CPU >= limit {
		return fmt.Sprintf("CPU %.0f%% at or above --transcode-cpu-max %d%%", n.Load.CPU*100, p.cfg.CPUMax)
	}
	return ""
}

// run starts name's job on this node, reading the source from the node's
// own RTMP listener and publishing the renditions back to it.
func (p *Placer) run(name streamname.Name, renditions []Rendition) error {
	base := "rtmp://" + net.JoinHostPort("127.0.0.1", port(p.cfg.RTMPAddr())) + "/"
	err := p.sup.Start(Spec{
		Source:     name,
		Input:      base + string(name),
		OutputURL:  func(n streamname.Name) string { return base + string(n) },
		Renditions: renditions,
		Alive:      func() bool { return p.exists(p.ctx, name) },
	})
	switch {
	case errors.Is(err, ErrFull):
		return fmt.Errorf("--transcode-max %d reached: %d jobs running", p.cfg.Max, p.sup.Running())
	case errors.Is(err, ErrRunning):
		return nil
	case err != nil:
		return err
	}
	p.mu.Lock()
	delete(p.notes, name)
	p.mu.Unlock()
	return nil
}

// port is addr's port, "0" when it has none.
func port(addr net.Addr) string {
	_, p, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "0"
	}
	return p
}

// sourceSize is the query telling another node the source's size, so it
// fits the ladder before it has the stream itself.
func (p *Placer) sourceSize(name streamname.Name) string {
	if s := p.cfg.Streams.Get(name); s != nil {
		if v := s.Info().Video; v != nil {
			return fmt.Sprintf("?width=%d&height=%d", v.Width, v.Height)
		}
	}
	return ""
}

// exists reports whether a stream is live: here, or (a job's source
// handed over by its origin, a rendition made elsewhere) anywhere in the
// cluster.
func (p *Placer) exists(ctx context.Context, name streamname.Name) bool {
	if s := p.cfg.Streams.Get(name); s != nil && s.Info().Live {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, registryWait)
	defer cancel()
	_, err := p.cfg.Registry.Owner(ctx, name)
	return err == nil
}

// LiveRenditions returns the renditions of name's ladder that are live
// here or anywhere in the cluster, in ladder order.
func (p *Placer) LiveRenditions(ctx context.Context, name streamname.Name) []streamname.Name {
	var out []streamname.Name
	for _, r := range p.cfg.Ladder(name.App()) {
		if n, err := RenditionName(name, r); err == nil && p.exists(ctx, n) {
			out = append(out, n)
		}
	}
	return out
}

// skip notes why name is served without renditions.
func (p *Placer) skip(name streamname.Name, why string) {
	job := Job{Stream: string(name), State: StateSkipped, Reason: why, Renditions: []string{}}
	p.mu.Lock()
	p.notes[name] = job
	p.mu.Unlock()
	p.log.Warn("transcode: stream served without renditions", "stream", name, "why", why)
	p.announce(job)
}

// changed follows the supervisor's jobs.
func (p *Placer) changed(st Status) {
	if st.State == StateRestarting {
		p.restarts.Add(1)
	}
	p.announce(p.view(st))
}

// view is the API's description of a job run here.
func (p *Placer) view(st Status) Job {
	r := st.Renditions
	if r == nil {
		r = []string{}
	}
	return Job{Stream: st.Stream, Node: string(p.cfg.Self()), State: string(st.State), Renditions: r, Restarts: st.Restarts,
		FPS: st.FPS, Speed: st.Speed, PID: st.PID, LastError: st.LastError}
}

// announce tells Announce of a job's change.
func (p *Placer) announce(job Job) {
	if p.cfg.Announce != nil {
		p.cfg.Announce(job)
	}
}

// Jobs lists the jobs run here and the notes of those that are not, by
// stream.
func (p *Placer) Jobs() []Job {
	var out []Job
	for _, st := range p.sup.Jobs() {
		out = append(out, p.view(st))
	}
	p.mu.Lock()
	for _, j := range p.notes {
		out = append(out, j)
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(x, y Job) int { return strings.Compare(x.Stream, y.Stream) })
	if out == nil {
		out = []Job{}
	}
	return out
}

// renditionNames are the stream names of a source's renditions.
func renditionNames(source streamname.Name, rs []Rendition) []string {
	out := []string{}
	for _, r := range rs {
		if n, err := RenditionName(source, r); err == nil {
			out = append(out, string(n))
		}
	}
	return out
}
