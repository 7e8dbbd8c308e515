package cluster

import (
	"net"
	"net/http"
	"time"

	"github.com/meshcast/meshcast/internal/clock"
)

// Connecting to another node is bounded by these; what follows is bounded
// by each caller's context, since a pull lasts as long as its stream and a
// copy as long as its file.
const (
	peerDialTimeout = 3 * time.Second
	peerTLSTimeout  = 5 * time.Second
)

// PeerClient sends the requests one node makes of another — relay pulls,
// on-demand copies and fetches, transcoding jobs — each signed with the
// cluster secret (SignPull), over one pool of connections.
type PeerClient struct {
	secret string
	self   func() NodeID
	client *http.Client
	clock  clock.Clock // the wall clock that signs and verifies
}

// NewPeerClient returns a client signing with secret as the node self
// names, asked at each request (a node's ID is settled when it starts).
func NewPeerClient(secret string, self func() NodeID) *PeerClient {
	return &PeerClient{secret: secret, self: self, clock: clock.Real, client: &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: peerDialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: peerTLSTimeout,
		DisableCompression:  true, // FLV and media files gain nothing
		IdleConnTimeout:     90 * time.Second,
	}}}
}

// Sign signs req as this node's.
func (c *PeerClient) Sign(req *http.Request) { SignPull(req, c.secret, c.self(), c.clock.Now()) }

// Do signs req and sends it.
func (c *PeerClient) Do(req *http.Request) (*http.Response, error) {
	c.Sign(req)
	return c.client.Do(req)
}

// Verify checks that r is signed by another node of the cluster and
// returns that node's ID (see VerifyPull).
func (c *PeerClient) Verify(r *http.Request) (NodeID, error) {
	return VerifyPull(r, c.secret, c.clock.Now())
}

// HTTP is the client underneath, for callers that sign their own requests.
func (c *PeerClient) HTTP() *http.Client { return c.client }
