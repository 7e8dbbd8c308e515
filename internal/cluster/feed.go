package cluster

import (
	"context"
	"sync"
)

// claimFeedBuffer is how many claims a Claimed channel holds for a slow
// reader before it loses some.
const claimFeedBuffer = 64

// claimFeed hands each claim to every Claimed channel open at the time,
// without waiting for any.
type claimFeed struct {
	mu   sync.Mutex
	subs map[chan Claim]struct{}
}

// subscribe returns a channel fed until ctx ends, then closed. count, if
// set, is called with +1 before it returns and with -1 once ctx ended (a
// store's own subscription follows the count).
func (f *claimFeed) subscribe(ctx context.Context, count func(int)) <-chan Claim {
	ch := make(chan Claim, claimFeedBuffer)
	f.mu.Lock()
	if f.subs == nil {
		f.subs = make(map[chan Claim]struct{})
	}
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	if count != nil {
		count(+1)
	}
	context.AfterFunc(ctx, func() {
		f.mu.Lock()
		delete(f.subs, ch)
		close(ch)
		f.mu.Unlock()
		if count != nil {
			count(-1)
		}
	})
	return ch
}

// publish hands c to every subscriber that has room for it.
func (f *claimFeed) publish(c Claim) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.subs {
		select {
		case ch <- c:
		default:
		}
	}
}
