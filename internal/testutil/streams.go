package testutil

import (
	"errors"
	"sync"

	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Streams is a node's stream table reduced to a map: what a server under
// test reads streams from.
type Streams struct {
	mu sync.Mutex
	m  map[streamname.Name]*stream.Stream
}

// Put adds s under its name.
func (h *Streams) Put(s *stream.Stream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[streamname.Name]*stream.Stream{}
	}
	h.m[s.Name()] = s
}

// NewReader attaches a reader to the named stream.
func (h *Streams) NewReader(name streamname.Name, proto string) (*stream.Reader, error) {
	h.mu.Lock()
	s := h.m[name]
	h.mu.Unlock()
	if s == nil {
		return nil, errors.New("no such stream")
	}
	return s.NewReader(proto)
}
