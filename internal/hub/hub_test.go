package hub

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
)

const cam = streamname.Name("live/cam")

// events records a hub's events, in order.
type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) record(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, ev.Type+" "+string(ev.Name))
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.got)
}

func newHub(t *testing.T, cfg Config) (*Hub, *events) {
	t.Helper()
	h := New(cfg)
	ev := &events{}
	h.Subscribe(ev.record)
	t.Cleanup(h.Close)
	return h, ev
}

// keyframe writes a video keyframe at ts to pub.
func keyframe(t *testing.T, pub *stream.Publisher, ts int64) {
	t.Helper()
	if err := pub.WritePacket(&media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, Keyframe: true, DTS: ts, Payload: []byte{0, 0, 0, 1, 0x65}}); err != nil {
		t.Fatal(err)
	}
}

// next reads rd's next packets within a second.
func next(t *testing.T, rd *stream.Reader) ([]*media.Packet, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return rd.ReadPackets(ctx, nil)
}

// One publisher per name; the same credentials take the stream over and
// kick the old publisher's session.
func TestPublishTakeover(t *testing.T) {
	h, _ := newHub(t, Config{})
	owner := stream.PublisherInfo{Protocol: "rtmp", Credential: "digest-a"}
	first, err := h.Publish(cam, owner)
	if err != nil {
		t.Fatal(err)
	}
	kicked := make(chan struct{})
	_, end := h.StartSession(Session{Kind: KindPublish, Protocol: "rtmp", Stream: cam}, func() { close(kicked) })
	defer end()
	for _, info := range []stream.PublisherInfo{{Protocol: "rtmp"}, {Protocol: "rtmp", Credential: "digest-b"}} {
		if _, err := h.Publish(cam, info); !errors.Is(err, ErrBusy) {
			t.Fatalf("a second publisher with credential %q: %v, want ErrBusy", info.Credential, err)
		}
	}
	rd, err := h.NewReader(cam, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	second, err := h.Publish(cam, owner)
	if err != nil {
		t.Fatalf("the owner again: %v", err)
	}
	select {
	case <-kicked:
	case <-time.After(5 * time.Second):
		t.Fatal("the old publisher's session was not kicked")
	}
	if err := first.WritePacket(&media.Packet{Kind: media.KindVideo}); !errors.Is(err, stream.ErrClosed) {
		t.Fatalf("the replaced publisher wrote: %v", err)
	}
	// The reader goes on with the new publisher.
	keyframe(t, second, 0)
	if pkts, err := next(t, rd); err != nil || len(pkts) == 0 {
		t.Fatalf("reader after the takeover: %d packets, %v", len(pkts), err)
	}
}

// A stream outlives its publisher for the grace period: a publisher back
// in time resumes it for the same readers; otherwise it ends.
func TestPublisherGrace(t *testing.T) {
	const grace = 200 * time.Millisecond
	h, ev := newHub(t, Config{PublisherGrace: grace})
	pub, err := h.Publish(cam, stream.PublisherInfo{Protocol: "rtmp"})
	if err != nil {
		t.Fatal(err)
	}
	rd, err := h.NewReader(cam, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	s := h.Get(cam)
	pub.Close()
	if h.Get(cam) != s {
		t.Fatal("the stream ended with its publisher, within the grace")
	}
	back, err := h.Publish(cam, stream.PublisherInfo{Protocol: "rtmp"})
	if err != nil {
		t.Fatal(err)
	}
	if back.Stream() != s {
		t.Fatal("the returning publisher got a new stream")
	}
	keyframe(t, back, 0)
	if pkts, err := next(t, rd); err != nil || len(pkts) == 0 {
		t.Fatalf("reader after the publisher came back: %d packets, %v", len(pkts), err)
	}
	// Gone for longer than the grace: the stream ends, its reader sees EOF.
	time.Sleep(2 * grace) // past a grace that must not have started yet
	if h.Get(cam) != s {
		t.Fatal("the stream ended while its publisher was live")
	}
	back.Close()
	testutil.WaitFor(t, 5*time.Second, "the stream to end", func() bool { return h.Get(cam) == nil })
	if _, err := next(t, rd); !errors.Is(err, io.EOF) {
		t.Fatalf("reader of an ended stream: %v, want EOF", err)
	}
	want := []string{"publish live/cam", "unpublish live/cam", "publish live/cam", "unpublish live/cam", "end live/cam"}
	testutil.WaitFor(t, 5*time.Second, "the events", func() bool { return len(ev.list()) == len(want) })
	if got := ev.list(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// owner is an Owner that records its claims.
type owner struct {
	mu       sync.Mutex
	fail     error
	claims   int
	releases int
	prior    *stream.Position // the timeline each claim hands back
}

func (o *owner) Claim(streamname.Name, string) (func(), *stream.Position, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fail != nil {
		return nil, nil, o.fail
	}
	o.claims++
	return func() { o.mu.Lock(); o.releases++; o.mu.Unlock() }, o.prior, nil
}

func (o *owner) counts() (claims, releases int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.claims, o.releases
}

// A published stream is claimed while it lives here, released when it
// ends, and ended when the claim is lost (Revoke).
func TestOwnerClaims(t *testing.T) {
	o := &owner{fail: errors.New("owned by node-b")}
	h, _ := newHub(t, Config{Owner: o})
	if _, err := h.Publish(cam, stream.PublisherInfo{Protocol: "rtmp"}); err == nil || h.Get(cam) != nil {
		t.Fatalf("published without a claim: %v", err)
	}
	o.fail = nil
	pub, err := h.Publish(cam, stream.PublisherInfo{Protocol: "rtmp"})
	if err != nil {
		t.Fatal(err)
	}
	pub.Close() // no grace: ends at once
	testutil.WaitFor(t, 5*time.Second, "the claim to be released", func() bool { _, r := o.counts(); return r == 1 })
	if _, err := h.Publish(cam, stream.PublisherInfo{Protocol: "rtmp"}); err != nil {
		t.Fatal(err)
	}
	rd, err := h.NewReader(cam, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	h.Revoke(cam)
	if h.Get(cam) != nil {
		t.Fatal("a revoked stream lives on")
	}
	if _, err := next(t, rd); !errors.Is(err, ErrMoved) {
		t.Fatalf("reader of a revoked stream: %v, want ErrMoved (not the end of the stream)", err)
	}
	if c, _ := o.counts(); c != 2 {
		t.Fatalf("%d claims, want 2", c)
	}
}

// A stream new on this node continues the timeline its claim hands back
// (the last owner's, elsewhere): a publisher starting from zero is rebased
// to follow it by the time since it was seen. A stream that has packets
// here keeps its own.
func TestClaimContinuesPriorTimeline(t *testing.T) {
	const prior = 600_000
	o := &owner{prior: &stream.Position{DTS: prior, At: time.Now().Add(-time.Second)}}
	h, _ := newHub(t, Config{Owner: o})
	pub, err := h.Publish(cam, stream.PublisherInfo{Protocol: "rtmp"})
	if err != nil {
		t.Fatal(err)
	}
	rd, err := h.NewReader(cam, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	keyframe(t, pub, 0)
	pkts, err := next(t, rd)
	if err != nil {
		t.Fatal(err)
	}
	first := pkts[0].DTS
	if d := first - prior; d < 1000 || d > 1500 {
		t.Fatalf("first timestamp %d, %d ms after the prior %d; want about the second since it was seen", first, d, prior)
	}

	// A stream relayed here that a local publisher takes over has packets:
	// it keeps its own timeline, whatever the claim hands back.
	const relayed = streamname.Name("live/relayed")
	u := &upstream{h: h}
	h.cfg.Upstream = u
	rrd, err := h.NewReader(relayed, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rrd.Close()
	keyframe(t, u.relay, 5000)
	if _, err := next(t, rrd); err != nil {
		t.Fatal(err)
	}
	o.prior = &stream.Position{DTS: 50 * prior, At: time.Now()}
	local, err := h.Publish(relayed, stream.PublisherInfo{Protocol: "rtmp"})
	if err != nil {
		t.Fatal(err)
	}
	keyframe(t, local, 0)
	if pkts, err = next(t, rrd); err != nil {
		t.Fatal(err)
	}
	if got := pkts[0].DTS; got <= 5000 || got > 6000 {
		t.Fatalf("taken over from the relay at %d, want just after the relay's 5000", got)
	}
}

// upstream is an Upstream that opens a relay in the hub it is given.
type upstream struct {
	h     *Hub
	fail  error
	pulls int
	relay *stream.Publisher
}

func (u *upstream) Pull(name streamname.Name, _ []string) error {
	u.pulls++
	if u.fail != nil {
		return u.fail
	}
	pub, err := u.h.OpenRelay(name, "node-a")
	u.relay = pub
	return err
}

// A reader of a stream held elsewhere opens one relay; a local publisher
// takes the stream over from it with its readers; a relay that gives up
// ends its stream.
func TestRelays(t *testing.T) {
	u := &upstream{fail: errors.New("no node has it")}
	h, ev := newHub(t, Config{Upstream: u})
	u.h = h
	if _, err := h.NewReader(cam, "test"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("reader of a stream nobody has: %v, want ErrNotFound", err)
	}
	u.fail = nil
	rd, err := h.NewReader(cam, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	rd2, err := h.NewReader(cam, "test")
	if err != nil {
		t.Fatal(err)
	}
	rd2.Close()
	if u.pulls != 2 {
		t.Fatalf("%d pulls, want one failed and one for both readers", u.pulls)
	}
	if _, err := h.OpenRelay(cam, "node-c"); !errors.Is(err, ErrBusy) {
		t.Fatalf("a second relay of the stream: %v, want ErrBusy", err)
	}
	// A local publisher takes over; the relay is detached.
	pub, err := h.Publish(cam, stream.PublisherInfo{Protocol: "rtmp"})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.relay.WritePacket(&media.Packet{Kind: media.KindVideo}); !errors.Is(err, stream.ErrClosed) {
		t.Fatalf("the replaced relay wrote: %v", err)
	}
	keyframe(t, pub, 0)
	if pkts, err := next(t, rd); err != nil || len(pkts) == 0 {
		t.Fatalf("reader after the takeover from the relay: %d packets, %v", len(pkts), err)
	}
	pub.Close()
	testutil.WaitFor(t, 5*time.Second, "the stream to end", func() bool { return h.Get(cam) == nil })
	// A relay that gives up ends its stream for its readers.
	other := streamname.Name("live/other")
	rd3, err := h.NewReader(other, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer rd3.Close()
	u.relay.Close()
	if h.Get(other) != nil {
		t.Fatal("the stream of a closed relay lives on")
	}
	if _, err := next(t, rd3); !errors.Is(err, io.EOF) {
		t.Fatalf("reader of an ended relay: %v, want EOF", err)
	}
	if got := ev.list(); !slices.Contains(got, "end live/other") {
		t.Fatalf("events %q, want the relayed stream's end", got)
	}
}
