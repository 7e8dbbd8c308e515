package events

import (
	"encoding/json"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/streamname"
)

// fakeSource is a node whose streams and counts tests set; with churn,
// every read of a stream's counts returns new ones, as if viewers came
// and went with every packet.
type fakeSource struct {
	mu      sync.Mutex
	streams []streamname.Name
	counts  map[streamname.Name]Counts
	churn   bool
	reads   int
}

func (f *fakeSource) Streams() []streamname.Name {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.streams)
}

func (f *fakeSource) Viewers(name streamname.Name) Counts {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if f.churn {
		return Counts{RTMP: f.reads}
	}
	return f.counts[name]
}

func (f *fakeSource) set(name streamname.Name, c Counts) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.counts == nil {
		f.counts = make(map[streamname.Name]Counts)
	}
	f.counts[name] = c
}

func (f *fakeSource) setStreams(names ...streamname.Name) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.streams = names
}

func (f *fakeSource) setChurn(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.churn = on
}

// delivery is one event delivered to one client.
type delivery struct {
	to   *client
	ev   string
	at   time.Time
	data map[string]any
}

// recorder stands in for the sockets: it records what the server
// delivers.
type recorder struct {
	s   *Server // clients are registered with it, if set
	mu  sync.Mutex
	got []delivery
}

func (r *recorder) deliver(c *client, ev string, payload json.RawMessage) {
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil {
		panic(err)
	}
	r.mu.Lock()
	r.got = append(r.got, delivery{c, ev, time.Now(), m})
	r.mu.Unlock()
}

// client makes a connected client.
func (r *recorder) client(id string) *client {
	c := &client{id: id, rooms: make(map[streamname.Name]struct{})}
	if r.s != nil {
		addClient(r.s, c)
	}
	return c
}

func (r *recorder) reset() {
	r.mu.Lock()
	r.got = nil
	r.mu.Unlock()
}

// take returns and forgets what c got of ev.
func (r *recorder) take(c *client, ev string) []map[string]any {
	var out []map[string]any
	for _, d := range r.takeAll(c, ev) {
		out = append(out, d.data)
	}
	return out
}

func (r *recorder) takeAll(c *client, ev string) []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []delivery
	kept := r.got[:0]
	for _, d := range r.got {
		if d.to == c && d.ev == ev {
			out = append(out, d)
		} else {
			kept = append(kept, d)
		}
	}
	r.got = kept
	return out
}

func (r *recorder) count(ev string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, d := range r.got {
		if d.ev == ev {
			n++
		}
	}
	return n
}

// newTestServer is a server on src whose deliveries are recorded, with a
// poll interval of an hour: tests poll by hand, or start a faster loop.
func newTestServer(t *testing.T, src Source) (*Server, *recorder) {
	t.Helper()
	return newTestServerPoll(t, src, time.Hour)
}

func newTestServerPoll(t *testing.T, src Source, poll time.Duration) (*Server, *recorder) {
	t.Helper()
	s, err := New(Config{Node: "node-1", Version: "test", PollInterval: poll}, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	rec := &recorder{s: s}
	s.deliver = rec.deliver
	return s, rec
}

// addClient registers c as a connected socket.
func addClient(s *Server, c *client) {
	s.mu.Lock()
	s.clients[c] = struct{}{}
	s.mu.Unlock()
}

func total(m map[string]any) int {
	v, _ := m["total"].(float64)
	return int(v)
}

// TestViewersOnChange: a room gets "viewers" when its stream's count
// changes, and not otherwise; a joiner gets the current count at once.
func TestViewersOnChange(t *testing.T) {
	src := &fakeSource{}
	const name = streamname.Name("live/stream")
	src.set(name, Counts{RTMP: 1})
	s, rec := newTestServer(t, src)
	a, b := rec.client("a"), rec.client("b")

	s.onJoin(a, string(name))
	got := rec.take(a, "viewers")
	if len(got) != 1 || total(got[0]) != 1 || got[0]["stream"] != string(name) {
		t.Fatalf("joiner got %v, want one viewers event with total 1", got)
	}
	want := map[string]any{"rtmp": 1.0, "flv": 0.0, "hls": 0.0, "srt": 0.0, "webrtc": 0.0, "rtsp": 0.0}
	if v, _ := got[0]["viewers"].(map[string]any); !maps.Equal(v, want) {
		t.Errorf("viewers = %v, want %v", got[0]["viewers"], want)
	}

	s.pollViewers()
	if n := rec.count("viewers"); n != 0 {
		t.Errorf("unchanged count: %d viewers events", n)
	}

	s.onJoin(b, string(name))
	rec.take(b, "viewers")
	src.set(name, Counts{RTMP: 1, FLV: 2, HLS: 3})
	s.pollViewers()
	for _, c := range []*client{a, b} {
		got := rec.take(c, "viewers")
		if len(got) != 1 || total(got[0]) != 6 {
			t.Errorf("%s got %v, want one viewers event with total 6", c.id, got)
		}
	}
	s.pollViewers()
	if n := rec.count("viewers"); n != 0 {
		t.Errorf("unchanged count: %d viewers events", n)
	}

	s.onLeave(a, string(name))
	src.set(name, Counts{})
	s.pollViewers()
	if got := rec.take(a, "viewers"); len(got) != 0 {
		t.Errorf("a left but got %v", got)
	}
	if got := rec.take(b, "viewers"); len(got) != 1 || total(got[0]) != 0 {
		t.Errorf("b got %v, want total 0", got)
	}
}

// TestViewersThrottle: with the count changing on every read, as with a
// viewer per packet, each room gets at most one "viewers" event per poll
// interval, and the hub is read once per room per poll.
func TestViewersThrottle(t *testing.T) {
	const interval = 50 * time.Millisecond
	src := &fakeSource{}
	s, rec := newTestServerPoll(t, src, interval)
	a, b := rec.client("a"), rec.client("b")
	s.onJoin(a, "live/one")
	s.onJoin(b, "live/two")
	src.setChurn(true)
	src.mu.Lock()
	src.reads = 0
	src.mu.Unlock()
	rec.reset()

	start := time.Now()
	time.Sleep(20 * interval)
	elapsed := time.Since(start)
	s.Close()

	maxEvents := int(elapsed/interval) + 1
	for _, c := range []*client{a, b} {
		got := rec.takeAll(c, "viewers")
		if len(got) < 5 || len(got) > maxEvents {
			t.Errorf("%s got %d viewers events in %v, want 5 to %d", c.id, len(got), elapsed, maxEvents)
		}
		for i := 1; i < len(got); i++ {
			if gap := got[i].at.Sub(got[i-1].at); gap < interval {
				t.Errorf("%s: viewers events %v apart, under the %v interval", c.id, gap, interval)
			}
		}
	}
	src.mu.Lock()
	reads := src.reads
	src.mu.Unlock()
	if reads > 2*maxEvents {
		t.Errorf("%d reads of the counts for 2 rooms in %v: polled more than once an interval", reads, elapsed)
	}
}

// TestViewersIdleRooms: rooms without members are not polled.
func TestViewersIdleRooms(t *testing.T) {
	src := &fakeSource{}
	s, rec := newTestServer(t, src)
	a := rec.client("a")
	s.pollViewers()
	s.onJoin(a, "live/x")
	s.onLeave(a, "live/x")
	src.mu.Lock()
	src.reads = 0
	src.mu.Unlock()
	s.pollViewers()
	if src.reads != 0 {
		t.Errorf("%d reads with no room", src.reads)
	}
}

// TestJoinLeave: names are validated, a socket's rooms are bounded, and
// a disconnect leaves every room.
func TestJoinLeave(t *testing.T) {
	src := &fakeSource{}
	s, rec := newTestServer(t, src)
	a := rec.client("a")
	addClient(s, a)
	for _, bad := range []any{"", "live", "live/", "/x", "a/b/c", "../x", "socket.io/x", "live/a b", 42.0, nil, map[string]any{"stream": "live/x"}} {
		s.onJoin(a, bad)
	}
	if len(a.rooms) != 0 || len(s.rooms) != 0 || rec.count("viewers") != 0 || rec.count("error") != 0 {
		t.Fatalf("invalid joins: rooms %v, %d events", a.rooms, len(rec.got))
	}
	for i := range MaxRooms {
		s.onJoin(a, "live/s"+string(rune('a'+i)))
	}
	s.onJoin(a, "live/sa") // again: nothing changes
	if len(a.rooms) != MaxRooms || rec.count("viewers") != MaxRooms {
		t.Fatalf("rooms %d, viewers events %d, want %d", len(a.rooms), rec.count("viewers"), MaxRooms)
	}
	s.onJoin(a, "live/one-too-many")
	if errs := rec.take(a, "error"); len(errs) != 1 || errs[0]["code"] != "too_many_rooms" {
		t.Errorf("errors %v, want too_many_rooms", errs)
	}
	if _, in := a.rooms["live/one-too-many"]; in {
		t.Error("joined a room over the limit")
	}
	s.onLeave(a, "live/sa")
	s.onLeave(a, "live/never-joined")
	s.onLeave(a, 7.0)
	if len(a.rooms) != MaxRooms-1 {
		t.Errorf("after leave: %d rooms", len(a.rooms))
	}
	s.disconnect(a)
	if len(s.rooms) != 0 || len(s.clients) != 0 {
		t.Errorf("after disconnect: rooms %v, clients %d", s.rooms, len(s.clients))
	}
	s.onJoin(a, "live/late") // a join racing the disconnect
	if len(s.rooms) != 0 || len(a.rooms) != 0 {
		t.Errorf("a disconnected socket joined: rooms %v", s.rooms)
	}
}

// TestStreamEvents: "streams" follows the node's list, and stream:start
// and stream:end follow streams published here, resumes and relays not
// counting. Relays appear without a hub event: the poll finds them.
func TestStreamEvents(t *testing.T) {
	src := &fakeSource{}
	s, rec := newTestServerPoll(t, src, 20*time.Millisecond)
	a := rec.client("a")
	addClient(s, a)
	wait := func(ev string, n int) []map[string]any {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for rec.count(ev) < n {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %d %s events", n, ev)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return rec.take(a, ev)
	}

	src.setStreams("live/x")
	s.HubEvent(hub.Event{Type: "publish", Name: "live/x"})
	if got := wait("stream:start", 1); got[0]["stream"] != "live/x" || got[0]["node"] != "node-1" {
		t.Errorf("stream:start %v", got)
	}
	if got := wait("streams", 1); len(got[0]["streams"].([]any)) != 1 || got[0]["streams"].([]any)[0] != "live/x" {
		t.Errorf("streams %v", got)
	}

	// A publisher leaving and returning within its grace: no new start.
	s.HubEvent(hub.Event{Type: "unpublish", Name: "live/x"})
	s.HubEvent(hub.Event{Type: "publish", Name: "live/x"})
	// A relayed stream appears and ends: the list changes, nothing starts.
	src.setStreams("live/relayed", "live/x")
	s.HubEvent(hub.Event{Type: "session_start", Name: "live/relayed"}) // ignored
	if got := wait("streams", 1); len(got[0]["streams"].([]any)) != 2 {
		t.Errorf("streams %v", got)
	}
	src.setStreams("live/x")
	s.HubEvent(hub.Event{Type: "end", Name: "live/relayed"})
	wait("streams", 1)

	src.setStreams()
	s.HubEvent(hub.Event{Type: "end", Name: "live/x"})
	if got := wait("stream:end", 1); got[0]["stream"] != "live/x" {
		t.Errorf("stream:end %v", got)
	}
	if got := wait("streams", 1); len(got[0]["streams"].([]any)) != 0 {
		t.Errorf("streams %v", got)
	}
	if n := rec.count("stream:start"); n != 0 {
		t.Errorf("%d more stream:start events", n)
	}
}

// TestStatsSubscription: a subscriber gets "stats" at once and at every
// send, others never; after unsubscribing, no more; with nobody
// subscribed the source is not asked.
func TestStatsSubscription(t *testing.T) {
	calls := 0
	s, err := New(Config{Node: "node-1", PollInterval: time.Hour, StatsInterval: time.Hour, Stats: func() json.RawMessage {
		calls++
		return json.RawMessage(`{"node":"node-1","streams":[{"name":"live/a"}]}`)
	}}, &fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	rec := &recorder{s: s}
	s.deliver = rec.deliver
	sub, other := rec.client("sub"), rec.client("other")
	s.sendStats()
	if calls != 0 {
		t.Errorf("stats computed %d times with no subscriber", calls)
	}
	s.onStats(sub, true)
	s.onStats(sub, true) // again: no second immediate send
	s.sendStats()
	got := rec.take(sub, "stats")
	if len(got) != 2 || got[0]["node"] != "node-1" || rec.count("stats") != 0 {
		t.Errorf("subscriber got %v; others %d", got, len(rec.take(other, "stats")))
	}
	s.onStats(sub, false)
	s.sendStats()
	if n := rec.count("stats"); n != 0 {
		t.Errorf("%d stats after unsubscribing", n)
	}
}

// TestNotify: a note (a restream's new state) reaches the "stats"
// subscribers, and only them.
func TestNotify(t *testing.T) {
	s, err := New(Config{Node: "node-1", PollInterval: time.Hour, StatsInterval: time.Hour,
		Stats: func() json.RawMessage { return json.RawMessage(`{}`) }}, &fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	rec := &recorder{s: s}
	s.deliver = rec.deliver
	sub, other := rec.client("sub"), rec.client("other")
	s.onStats(sub, true)
	s.Notify("push", json.RawMessage(`{"id":"p1","state":"pushing"}`))
	deadline := time.Now().Add(5 * time.Second)
	for rec.count("push") == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := rec.take(sub, "push"); len(got) != 1 || got[0]["state"] != "pushing" {
		t.Errorf("the subscriber got %v, want the note", got)
	}
	if got := rec.take(other, "push"); len(got) != 0 {
		t.Errorf("a socket not subscribed to stats got %v", got)
	}
}
