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
)

// Headers of a node's request to pull a stream from a peer.
const (
	// HeaderNode names the pulling node.
	HeaderNode = "X-Meshcast-Node"
	// HeaderAuth carries "UNIXTIME:HEXMAC", the HMAC-SHA256 under the
	// cluster secret of the node, the time and the request path, so the
	// secret never travels and a captured request goes stale.
	HeaderAuth = "X-Meshcast-Auth"
)

// maxSkew is how far a pull request's time may be from the receiver's.
const maxSkew = time.Minute

// ErrUnauthorized refuses a pull that is not signed with the cluster secret.
var ErrUnauthorized = errors.New("not signed with the cluster secret")

// SignPull signs req as a pull by node at now.
func SignPull(req *http.Request, secret string, node NodeID, now time.Time) {
	ts := strconv.FormatInt(now.Unix(), 10)
	req.Header.Set(HeaderNode, string(node))
	req.Header.Set(HeaderAuth, ts+":"+hex.EncodeToString(pullMAC(secret, string(node), ts, req.URL.EscapedPath())))
}

// VerifyPull checks r's signature at now and returns the pulling node.
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
	if d := now.Sub(time.Unix(ts, 0)); d > maxSkew || d < -maxSkew {
		return "", fmt.Errorf("%w: signed %v from now", ErrUnauthorized, d.Round(time.Second))
	}
	want := pullMAC(secret, node, strconv.FormatInt(ts, 10), r.URL.EscapedPath())
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

func pullMAC(secret, node, ts, path string) []byte {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(node + "\n" + ts + "\n" + path))
	return h.Sum(nil)
}
