package stream

// A Spool keeps a stream's wire form in one format outside the log, packet
// after packet, for an egress engine that sends batches from it rather than
// from memory (internal/egress keeps one in an in-memory file and sends from
// it with sendfile). The stream appends each packet's bytes as it logs the
// packet, says when packets leave the log, and closes the spool when it
// closes. Append and Evicted are called under the stream's lock: they must
// not wait on anything slow.
type Spool interface {
	// Append stores b at the spool's end and returns where it starts; ok
	// is false when the spool did not take it.
	Append(b []byte) (off int64, ok bool)
	// Evicted says the bytes before end belong to packets no longer in
	// the log.
	Evicted(end int64)
	// Close releases the spool. It is called once, when the stream closes
	// or when the spool arrived after another.
	Close()
}

// Span is a batch's bytes as one range of a spool: Len bytes from Off on.
// Its Spool is nil when the batch is not one range of a spool.
type Span struct {
	Spool Spool
	Off   int64
	Len   int64
}

// extend adds the next n bytes of a batch, found at off in sp, to the span;
// it reports false when they do not follow on from the span.
func (r *Span) extend(sp Spool, off int64, n int) bool {
	switch {
	case sp == nil:
		return false
	case r.Spool == nil:
		*r = Span{Spool: sp, Off: off}
	case sp != r.Spool || off != r.Off+r.Len:
		return false
	}
	r.Len += int64(n)
	return true
}

// UseSpool gives the stream a spool in format f, made by open, unless it
// already has one or is closed: the packets appended from then on are in it
// too. When open fails the stream goes on without one, and readers' batches
// have no Span.
func (s *Stream) UseSpool(f *Format, open func(*Format) (Spool, error)) {
	s.mu.RLock()
	has := s.closed || s.spools[f.id] != nil
	s.mu.RUnlock()
	if has {
		return
	}
	sp, err := open(f)
	if err != nil {
		return
	}
	s.mu.Lock()
	if s.closed || s.spools[f.id] != nil {
		s.mu.Unlock()
		sp.Close()
		return
	}
	s.spools[f.id], s.spoolFormat[f.id] = sp, f
	s.mu.Unlock()
}

// Spool returns the stream's spool in format f, or nil.
func (s *Stream) Spool(f *Format) Spool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.spools[f.id]
}
