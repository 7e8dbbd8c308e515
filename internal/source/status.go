package source

import (
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshcast/meshcast/internal/httpfront"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/streamname"
)

// States of a source on a node.
const (
	Idle       = "idle"       // not pulled here: on demand without viewers
	Connecting = "connecting" // pulled here, waiting for the source's first packet
	Pulling    = "pulling"    // pulled here, packets flowing
	Waiting    = "waiting"    // retrying after a failure, or an always-on source held elsewhere
)

// Status is one source as the admin API shows it: never its credentials.
type Status struct {
	Stream        streamname.Name `json:"stream"`
	URL           string          `json:"url"` // redacted: no user info, no query values
	Mode          string          `json:"mode"`
	State         string          `json:"state"`
	Node          string          `json:"node"` // this node's ID while it holds the source, else empty
	BytesReceived uint64          `json:"bytes_received"`
	Restarts      int             `json:"restarts"`
	LastError     string          `json:"last_error"` // redacted
}

// tally is a source's counters on this node. Bytes and the time of the
// last packet are counted on the packet path, without a lock.
type tally struct {
	bytes atomic.Uint64

	mu       sync.Mutex
	state    string
	held     bool // this node holds the source's claim
	restarts int
	lastErr  string
}

func (t *tally) set(state string, held bool) {
	t.mu.Lock()
	t.state, t.held = state, held
	t.mu.Unlock()
}

// restart counts a new session after a failure.
func (t *tally) restart() {
	t.mu.Lock()
	t.state = Connecting
	t.restarts++
	t.mu.Unlock()
}

// fail records a session's end; msg is already redacted.
func (t *tally) fail(msg string) {
	t.mu.Lock()
	t.state, t.lastErr = Waiting, msg
	t.mu.Unlock()
}

func (t *tally) pulling() {
	t.mu.Lock()
	if t.state == Connecting {
		t.state = Pulling
	}
	t.mu.Unlock()
}

// countingWriter counts a session's packets into its source's tally.
type countingWriter struct {
	w       PacketWriter
	t       *tally
	last    atomic.Int64 // Unix nanoseconds of the last packet, or the session's start
	started atomic.Bool  // a packet came
}

func (c *countingWriter) WritePacket(p *media.Packet) error {
	n := len(p.Payload)
	if err := c.w.WritePacket(p); err != nil {
		return err
	}
	c.t.bytes.Add(uint64(n))
	c.last.Store(time.Now().UnixNano())
	if !c.started.Load() && c.started.CompareAndSwap(false, true) {
		c.t.pulling()
	}
	return nil
}

// List returns the status of every source on this node, by name.
func (m *Manager) List() []Status {
	node := ""
	if m.cfg.NodeID != nil {
		node = m.cfg.NodeID()
	}
	out := make([]Status, 0, len(m.cfg.Sources))
	for name, src := range m.cfg.Sources {
		t := m.tallies[name]
		st := Status{Stream: name, URL: Redact(src.URL), Mode: src.Mode, BytesReceived: t.bytes.Load()}
		if st.Mode == "" {
			st.Mode = OnDemand
		}
		t.mu.Lock()
		st.State, st.Restarts, st.LastError = t.state, t.restarts, t.lastErr
		if t.held {
			st.Node = node
		}
		t.mu.Unlock()
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b Status) int {
		switch {
		case a.Stream < b.Stream:
			return -1
		case a.Stream > b.Stream:
			return 1
		}
		return 0
	})
	return out
}

// Routes is the admin API of the node's sources.
type Routes struct {
	M *Manager
	// Admin guards a route as the admin API does (api.API.Admin).
	Admin func(http.HandlerFunc) http.HandlerFunc
}

// Register adds GET /api/v1/sources.
func (rt Routes) Register(mux *httpfront.Mux) {
	mux.HandleFunc("GET /api/v1/sources", rt.Admin(rt.list))
}

func (rt Routes) list(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(map[string]any{"sources": rt.M.List()})
}
