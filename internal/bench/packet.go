package bench

import (
	"fmt"
	"net"
	"time"
)

// What packet players (WHEP, SRT) share: they see frames as packets
// arrive, not as whole FLV tags, and count the packets they never get.

// firstPicture records a player's first keyframe, which began arriving at
// now; local is its connection's address for cfg.FirstFrames (nil for
// none).
func (p *player) firstPicture(local net.Addr, now time.Time) {
	p.first = now
	p.t.ttff.add(now.Sub(p.playStart))
	if w := p.r.cfg.FirstFrames; w != nil && local != nil {
		p.r.firstMu.Lock()
		fmt.Fprintf(w, "%s %d %d\n", local, p.playStart.UnixNano(), now.UnixNano())
		p.r.firstMu.Unlock()
	}
}

// frame records a video frame that began arriving at now. marked tells
// whether its frame number, seq, was found.
func (p *player) frame(now time.Time, seq uint32, marked bool) {
	r := p.r
	if !p.last.IsZero() && now.Sub(p.last) > stallGap && r.inWindow(now) {
		p.t.stalls.Add(1)
	}
	p.gap(now)
	p.last = now
	if !marked {
		return
	}
	if sent, ok := r.pub.sent.sentAt(seq); ok && r.inWindow(sent) {
		p.t.windowFrames.Add(1)
		if p.probe {
			p.t.latency.add(now.Sub(sent))
		}
	}
}

// afterWindow reports whether t is past the end of the measuring window.
func (r *runner) afterWindow(t time.Time) bool {
	e := r.winEnd.Load()
	return e != 0 && t.UnixNano() > e
}

// lossWindow is how many sequence numbers back a late packet (a
// retransmission) still fills its gap.
const lossWindow = 1024

// lossCounter counts a player's packets expected and lost in the
// measuring window from their sequence numbers, unwrapped to 64 bits by
// the caller. A packet that arrives after the ones past it, as a
// retransmission does, takes its place back from the lost ones, even just
// after the window: it was sent in it. Duplicates count once. It belongs
// to the player's goroutine; what it counts goes to the player's tally.
type lossCounter struct {
	started bool  // a packet arrived in the window
	base    int64 // the first sequence number counted
	highest int64
	seen    [lossWindow / 64]uint64 // bit per sequence number, modulo lossWindow
}

// add counts packet seq, received at now.
func (l *lossCounter) add(p *player, seq int64, now time.Time) {
	r := p.r
	if !l.started {
		if !r.inWindow(now) {
			return
		}
		l.started, l.base, l.highest = true, seq, seq
		l.mark(seq)
		p.t.pktsExpected.Add(1)
		return
	}
	switch {
	case seq > l.highest:
		if r.afterWindow(now) {
			return
		}
		// The numbers skipped are lost until they arrive.
		for s := max(l.highest+1, seq-lossWindow+1); s <= seq; s++ {
			l.clear(s)
		}
		p.t.pktsExpected.Add(seq - l.highest)
		if seq > l.highest+1 {
			p.t.pktsLost.Add(seq - l.highest - 1)
		}
		l.highest = seq
		l.mark(seq)
	case seq >= l.base && seq > l.highest-lossWindow && !l.marked(seq):
		p.t.pktsLost.Add(-1)
		l.mark(seq)
	}
}

func (l *lossCounter) mark(seq int64) {
	i := uint64(seq) % lossWindow
	l.seen[i/64] |= 1 << (i % 64)
}

func (l *lossCounter) clear(seq int64) {
	i := uint64(seq) % lossWindow
	l.seen[i/64] &^= 1 << (i % 64)
}

func (l *lossCounter) marked(seq int64) bool {
	i := uint64(seq) % lossWindow
	return l.seen[i/64]&(1<<(i%64)) != 0
}
