//go:build unix

package transcode

import (
	"context"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/httpfront"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

const placeSecret = "a-cluster-secret-of-some-length"

// table is a stream table of fixed streams.
type table map[streamname.Name]*stream.Stream

func (s table) Get(name streamname.Name) *stream.Stream { return s[name] }

// liveH264 is a live stream whose H.264 configuration says 1280x720.
func liveH264(t *testing.T, name streamname.Name) *stream.Stream {
	t.Helper()
	sps, _ := hex.DecodeString("6764001facd9405005bb0110000003001000000303c0f1831960")
	pps, _ := hex.DecodeString("68ebe3cb22c0")
	avcC := (&media.AVCConfig{Profile: 0x64, Level: 0x1f, LengthSize: 4, SPS: [][]byte{sps}, PPS: [][]byte{pps}}).Marshal()
	s := stream.New(name, stream.Config{})
	pub, err := s.Attach(stream.PublisherInfo{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.WritePacket(&media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, SeqHeader: true, Payload: avcC}); err != nil {
		t.Fatal(err)
	}
	if v := s.Info().Video; v == nil || v.Height != 720 {
		t.Fatalf("video %+v, want 1280x720", v)
	}
	t.Cleanup(func() { pub.Close(); s.Close() })
	return s
}

// placeLadder is the ladder of every app in these tests.
var placeLadder = []Rendition{
	{Name: "480p", Width: 854, Height: 480, VideoBitrate: "1000k", Preset: "veryfast", GOP: 60, AudioBitrate: "128k"},
	{Name: "360p", Width: 640, Height: 360, VideoBitrate: "500k", Preset: "veryfast", GOP: 60, AudioBitrate: "128k"},
}

// testNode is one node of a test cluster: its placer, serving its routes.
type testNode struct {
	id     cluster.NodeID
	placer *Placer
	srv    *httptest.Server

	mu    sync.Mutex
	asked []string // the job requests it received: "POST live/cam"
}

// startNode starts a placer as node id of reg, running a stand-in ffmpeg,
// with CPU use cpu (a share of its cores) against its limit cpuMax (%).
func startNode(t *testing.T, reg *cluster.Memory, id cluster.NodeID, cpu float64, cpuMax int, st table, state cluster.NodeState, secret bool) *testNode {
	t.Helper()
	ffmpeg, _ := fakeFFmpeg(t, "exec sleep 600")
	n := &testNode{id: id}
	var peers *cluster.PeerClient
	if secret {
		peers = cluster.NewPeerClient(placeSecret, func() cluster.NodeID { return id })
		t.Cleanup(peers.HTTP().CloseIdleConnections)
	}
	n.placer = NewPlacer(PlacerConfig{
		FFmpeg:     ffmpeg,
		Max:        2,
		CPUMax:     cpuMax,
		Transcodes: func(string) bool { return true },
		Ladder:     func(string) []Rendition { return placeLadder },
		RTMPAddr:   func() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1935} },
		Self:       func() cluster.NodeID { return id },
		Streams:    st,
		Registry:   reg,
		Peers:      peers,
		Logger:     quietLogger(),
	})
	t.Cleanup(n.placer.Close)
	mux := httpfront.NewMux()
	n.placer.Register(mux)
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, JobPath) {
			n.mu.Lock()
			n.asked = append(n.asked, r.Method+" "+strings.TrimPrefix(r.URL.Path, JobPath))
			n.mu.Unlock()
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(n.srv.Close)
	err := reg.Heartbeat(context.Background(), cluster.Node{ID: id, HTTPAddr: n.srv.Listener.Addr().String(), Capacity: 100,
		State: state, Load: cluster.Load{CPU: cpu}})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *testNode) requests() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.asked)
}

// jobOf returns the node's job for name.
func (n *testNode) jobOf(name streamname.Name) (Job, bool) {
	for _, j := range n.placer.Jobs() {
		if j.Stream == string(name) {
			return j, true
		}
	}
	return Job{}, false
}

// A node with room runs the job itself, with the renditions that fit the
// source, reading from its own RTMP listener.
func TestPlaceHere(t *testing.T) {
	const name = streamname.Name("live/cam")
	reg := cluster.NewMemory(cluster.MemoryConfig{})
	defer reg.Close()
	self := startNode(t, reg, "self", 0.1, 80, table{name: liveH264(t, name)}, cluster.StateServing, true)
	other := startNode(t, reg, "other", 0, 80, table{}, cluster.StateServing, true)
	self.placer.place(name)
	job, ok := self.jobOf(name)
	if !ok || job.Node != "self" || job.State == StateSkipped || job.State == StateRemote ||
		!slices.Equal(job.Renditions, []string{"live/cam_480p", "live/cam_360p"}) {
		t.Fatalf("job %+v (listed %v), want run here with both renditions", job, ok)
	}
	if got := other.requests(); len(got) != 0 {
		t.Errorf("another node was asked: %v", got)
	}
	// A stream whose rendition is live is listed with it.
	if got := self.placer.LiveRenditions(context.Background(), name); len(got) != 0 {
		t.Errorf("live renditions %v before any is published", got)
	}
	if _, err := reg.Claim(context.Background(), "live/cam_360p", "self", ""); err != nil {
		t.Fatal(err)
	}
	if got := self.placer.LiveRenditions(context.Background(), name); !slices.Equal(got, []streamname.Name{"live/cam_360p"}) {
		t.Errorf("live renditions %v, want [live/cam_360p]", got)
	}
}

// A busy node asks the other serving nodes, least busy CPU first, until
// one takes the job; when the stream ends, that node is told to stop.
func TestPlaceHandsOff(t *testing.T) {
	const name = streamname.Name("live/cam")
	reg := cluster.NewMemory(cluster.MemoryConfig{})
	defer reg.Close()
	var announced []Job
	var amu sync.Mutex
	self := startNode(t, reg, "self", 0.9, 80, table{name: liveH264(t, name)}, cluster.StateServing, true)
	self.placer.cfg.Announce = func(j Job) { amu.Lock(); announced = append(announced, j); amu.Unlock() }
	idleButStrict := startNode(t, reg, "a", 0.2, 10, table{}, cluster.StateServing, true) // refuses: busy for its own limit
	takes := startNode(t, reg, "b", 0.5, 80, table{}, cluster.StateServing, true)
	never := startNode(t, reg, "c", 0.7, 80, table{}, cluster.StateServing, true) // after b: never asked
	draining := startNode(t, reg, "d", 0, 80, table{}, cluster.StateDraining, true)

	self.placer.place(name)
	job, ok := self.jobOf(name)
	if !ok || job.State != StateRemote || job.Node != "b" ||
		!slices.Equal(job.Renditions, []string{"live/cam_480p", "live/cam_360p"}) {
		t.Fatalf("job %+v (listed %v), want handed to b", job, ok)
	}
	for _, want := range []string{"this node: CPU 90% at or above --transcode-cpu-max 80%", "a: CPU 20% at or above --transcode-cpu-max 10%", "handed to b"} {
		if !strings.Contains(job.Reason, want) {
			t.Errorf("reason %q lacks %q", job.Reason, want)
		}
	}
	if got := idleButStrict.requests(); !slices.Equal(got, []string{"POST live/cam"}) {
		t.Errorf("a was asked %v", got)
	}
	if got := takes.requests(); !slices.Equal(got, []string{"POST live/cam"}) {
		t.Errorf("b was asked %v", got)
	}
	if got := append(never.requests(), draining.requests()...); len(got) != 0 {
		t.Errorf("c or the draining node was asked: %v", got)
	}
	// b fitted the ladder to the size it was told, without the stream.
	if j, ok := takes.jobOf(name); !ok || j.Node != "b" || len(j.Renditions) != 2 {
		t.Errorf("b's job %+v (listed %v), want run there with both renditions", j, ok)
	}

	self.placer.ended(name)
	if got := takes.requests(); !slices.Equal(got, []string{"POST live/cam", "DELETE live/cam"}) {
		t.Errorf("b was asked %v, want the job, then its end", got)
	}
	testutil.WaitFor(t, 10*time.Second, "b's job to stop", func() bool { _, ok := takes.jobOf(name); return !ok })
	if _, ok := self.jobOf(name); ok {
		t.Error("the job is still listed after its stream ended")
	}
	amu.Lock()
	defer amu.Unlock()
	if n := len(announced); n != 2 || announced[0].State != StateRemote || announced[1].State != string(StateStopped) {
		t.Errorf("announced %+v, want remote, then stopped", announced)
	}
}

// Without a cluster secret a busy node keeps its job to itself, and no
// node takes jobs from others; nor does a node take an unsigned request.
func TestPlaceWithoutPeers(t *testing.T) {
	const name = streamname.Name("live/cam")
	reg := cluster.NewMemory(cluster.MemoryConfig{})
	defer reg.Close()
	self := startNode(t, reg, "self", 0.9, 80, table{name: liveH264(t, name)}, cluster.StateServing, false)
	other := startNode(t, reg, "other", 0, 80, table{}, cluster.StateServing, false)
	self.placer.place(name)
	job, ok := self.jobOf(name)
	if !ok || job.State != StateSkipped || !strings.HasPrefix(job.Reason, "no node can run it: this node: CPU 90%") {
		t.Fatalf("job %+v (listed %v), want skipped for this node's CPU", job, ok)
	}
	if got := other.requests(); len(got) != 0 {
		t.Errorf("another node was asked: %v", got)
	}
	signed := startNode(t, reg, "signed", 0, 80, table{}, cluster.StateServing, true)
	for _, n := range []*testNode{other, signed} {
		resp, err := http.Post(n.srv.URL+JobPath+"live/cam", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: unsigned job request answered %d, want 403", n.id, resp.StatusCode)
		}
	}
}

// A source smaller than every rendition is served without any, and says
// why; a rendition is never transcoded again.
func TestPlaceSkips(t *testing.T) {
	reg := cluster.NewMemory(cluster.MemoryConfig{})
	defer reg.Close()
	st := table{"live/cam": liveH264(t, "live/cam")}
	self := startNode(t, reg, "self", 0, 80, st, cluster.StateServing, true)
	self.placer.cfg.Ladder = func(string) []Rendition {
		return []Rendition{{Name: "1080p", Width: 1920, Height: 1080, VideoBitrate: "5000k", Preset: "veryfast", GOP: 60, AudioBitrate: "128k"}}
	}
	self.placer.place("live/cam")
	if job, _ := self.jobOf("live/cam"); job.State != StateSkipped || !strings.Contains(job.Reason, "smaller than every rendition") {
		t.Errorf("job %+v, want skipped: the source is smaller than the ladder", job)
	}
	if !self.placer.isRendition("live/cam_1080p") || self.placer.isRendition("live/cam") {
		t.Error("renditions are not told from sources")
	}
	// A rendition's publisher starts no job.
	self.placer.HubEvent(hub.Event{Type: hub.EventSessionStart, Name: "live/cam_1080p", Session: hub.Session{Kind: hub.KindPublish}})
	time.Sleep(50 * time.Millisecond)
	if _, ok := self.jobOf("live/cam_1080p"); ok {
		t.Error("a rendition got a job")
	}
}
