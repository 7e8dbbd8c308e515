package auth

import (
	"context"
	"sync/atomic"
)

// Live is an Authorizer whose Policy can be replaced while the node runs
// (a reload): each request asks the Policy in force when it comes, and
// publishers and players already admitted stay.
type Live struct{ p atomic.Pointer[Policy] }

var _ Authorizer = (*Live)(nil)

// NewLive returns a Live authorizer asking p.
func NewLive(p *Policy) *Live {
	l := &Live{}
	l.Set(p)
	return l
}

// Set makes p the policy of the requests that come from now on.
func (l *Live) Set(p *Policy) { l.p.Store(p) }

// Check asks the policy in force.
func (l *Live) Check(ctx context.Context, req Request) (Grant, error) {
	return l.p.Load().Check(ctx, req)
}
