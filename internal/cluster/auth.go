package cluster

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshcast/meshcast/internal/clock"
)

// Headers of a node's request to pull a stream from a peer.
const (
	// HeaderNode names the pulling node.
	HeaderNode = "X-Meshcast-Node"
	// HeaderAuth carries "UNIXTIME:HEXMAC", the HMAC-SHA256 under the
	// cluster secret of the node, the time and the request path, so the
	// secret never travels and a captured request goes stale. A request
	// with a HeaderVia has it signed too.
	HeaderAuth = "X-Meshcast-Auth"
	// HeaderVia lists, comma-separated, the nodes a relay pull passed
	// through before the one sending it, first asker first: a node that
	// finds itself there answers 508 (see ParseVia), so relays never pull
	// in a circle.
	HeaderVia = "X-Meshcast-Via"
)

// HeaderPath, on a pull's answer, lists the nodes the stream comes
// through to the answering node, its upstream first: empty from the owner.
// A puller keeps it, so that it too can refuse a pull from a node on it.
const HeaderPath = "X-Meshcast-Path"

// FormatPath is path as HeaderPath carries it.
func FormatPath(path []NodeID) string {
	ids := make([]string, len(path))
	for i, n := range path {
		ids[i] = string(n)
	}
	return strings.Join(ids, ",")
}

// parsePath reads a HeaderPath, keeping at most MaxVia nodes.
func parsePath(v string) []NodeID {
	var path []NodeID
	for id := range strings.SplitSeq(v, ",") {
		if id != "" && len(id) <= 64 && len(path) < MaxVia {
			path = append(path, NodeID(id))
		}
	}
	return path
}

// MaxVia bounds the nodes a pull's via chain lists: deeper trees are
// refused as loops.
const MaxVia = 16

// ErrLoop answers a pull whose via chain holds the node it reached.
var ErrLoop = errors.New("relay loop: the pull came back to a node it passed")

// ErrUnauthorized refuses a pull that is not signed with the cluster secret.
var ErrUnauthorized = errors.New("not signed with the cluster secret")

// SignPull signs req as a pull by node at now, with its via chain if it
// has one.
func SignPull(req *http.Request, secret string, node NodeID, now time.Time) {
	ts := strconv.FormatInt(now.Unix(), 10)
	req.Header.Set(HeaderNode, string(node))
	req.Header.Set(HeaderAuth, ts+":"+hex.EncodeToString(pullMAC(secret, string(node), ts, req.URL.EscapedPath(), req.Header.Get(HeaderVia))))
}

// SetVia sets req's via chain: the nodes before the sender, which
// PeerClient signs with the rest.
func SetVia(req *http.Request, via []NodeID) {
	if len(via) == 0 {
		req.Header.Del(HeaderVia)
		return
	}
	ids := make([]string, len(via))
	for i, n := range via {
		ids[i] = string(n)
	}
	req.Header.Set(HeaderVia, strings.Join(ids, ","))
}

// ParseVia returns the full chain of a signed pull r that reached self:
// its via chain and the node that sent it. It fails with ErrLoop when
// self is in it, or it is longer than MaxVia.
func ParseVia(r *http.Request, self NodeID) ([]NodeID, error) {
	var via []NodeID
	if v := r.Header.Get(HeaderVia); v != "" {
		for id := range strings.SplitSeq(v, ",") {
			via = append(via, NodeID(id))
		}
	}
	via = append(via, NodeID(r.Header.Get(HeaderNode)))
	if len(via) > MaxVia {
		return nil, fmt.Errorf("%w: %d nodes deep", ErrLoop, len(via))
	}
	for _, id := range via {
		if id == self {
			return nil, fmt.Errorf("%w: %s", ErrLoop, joinVia(via))
		}
	}
	return via, nil
}

func joinVia(via []NodeID) string {
	ids := make([]string, len(via))
	for i, n := range via {
		ids[i] = string(n)
	}
	return strings.Join(ids, " > ")
}

// VerifyPull checks r's signature at now and returns the pulling node. A
// request signed more than clock.MaxSkew before or after now is refused.
func VerifyPull(r *http.Request, secret string, now time.Time) (NodeID, error) {
	if secret == "" {
		return "", fmt.Errorf("%w: this node has no cluster secret", ErrUnauthorized)
	}
	node := r.Header.Get(HeaderNode)
	ts, mac, err := parseAuth(r.Header.Get(HeaderAuth))
	if err != nil {
		return "", err
	}
	if node == "" || len(node) > 64 {
		return "", fmt.Errorf("%w: bad %s", ErrUnauthorized, HeaderNode)
	}
	// The time is the signer's wall clock, in whole seconds: it may be
	// clock.MaxSkew from ours either way, and a captured request goes
	// stale past it. (Both are positive: the difference cannot overflow.)
	if d, limit := now.Unix()-ts, int64(clock.MaxSkew/time.Second); d > limit || d < -limit {
		return "", fmt.Errorf("%w: signed %v from now, more than the %v clocks may be apart", ErrUnauthorized, time.Duration(d)*time.Second, clock.MaxSkew)
	}
	want := pullMAC(secret, node, strconv.FormatInt(ts, 10), r.URL.EscapedPath(), r.Header.Get(HeaderVia))
	if !hmac.Equal(mac, want) {
		return "", fmt.Errorf("%w: signature mismatch", ErrUnauthorized)
	}
	return NodeID(node), nil
}

// parseAuth splits a HeaderAuth value into its time and MAC.
func parseAuth(v string) (unix int64, mac []byte, err error) {
	tsPart, macPart, ok := strings.Cut(v, ":")
	if !ok || len(tsPart) == 0 || len(tsPart) > 19 || len(macPart) != 2*sha256.Size {
		return 0, nil, fmt.Errorf("%w: malformed %s", ErrUnauthorized, HeaderAuth)
	}
	unix, err = strconv.ParseInt(tsPart, 10, 64)
	if err != nil || unix < 0 {
		return 0, nil, fmt.Errorf("%w: malformed %s time", ErrUnauthorized, HeaderAuth)
	}
	mac, err = hex.DecodeString(macPart)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: malformed %s MAC", ErrUnauthorized, HeaderAuth)
	}
	return unix, mac, nil
}

func pullMAC(secret, node, ts, path, via string) []byte {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(node + "\n" + ts + "\n" + path))
	if via != "" {
		h.Write([]byte("\n" + via))
	}
	return h.Sum(nil)
}
