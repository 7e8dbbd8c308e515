//go:build unix

package e2eutil

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"
)

// APIStream is the part of the streams API (/api/v1/streams/NAME) the
// tests of clusters read.
type APIStream struct {
	Live    bool           `json:"live"`    // a publisher sends it
	Viewers map[string]int `json:"viewers"` // by protocol, relays included
	// Publisher is how the stream comes in: its protocol, "relay" on a
	// node that pulls it from another.
	Publisher struct {
		Protocol string `json:"protocol"`
	} `json:"publisher"`
	// Owner is the node holding the stream's claim, and the claim's epoch.
	Owner *struct {
		Node  string `json:"node"`
		Epoch uint64 `json:"epoch"`
	} `json:"owner"`
	// Relays are the nodes pulling the stream, each from its upstream.
	Relays []struct {
		Node     string `json:"node"`
		Upstream string `json:"upstream"`
	} `json:"relays"`
}

// GetStream reads stream name from a node's API; false when it cannot.
func GetStream(t *testing.T, httpURL, name string) (APIStream, bool) {
	t.Helper()
	code, body := HTTPGet(t, httpURL+"/api/v1/streams/"+name)
	var s APIStream
	if code != 200 || json.Unmarshal(body, &s) != nil {
		return s, false
	}
	return s, true
}

// NodeIDs lists the live nodes a node's API reports; none when it cannot.
func NodeIDs(httpURL string) []string {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(httpURL + "/api/v1/nodes")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var out struct {
		Nodes []struct {
			ID string `json:"id"`
		} `json:"nodes"`
	}
	if json.NewDecoder(resp.Body).Decode(&out) != nil {
		return nil
	}
	var ids []string
	for _, n := range out.Nodes {
		ids = append(ids, n.ID)
	}
	return ids
}

// HTTPGet fetches url with a timeout, returning status and body.
func HTTPGet(t *testing.T, url string) (int, []byte) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("GET %s: read: %v", url, err)
	}
	return resp.StatusCode, b
}

// HTTPNoRedirect is a client that reports redirects instead of following them.
func HTTPNoRedirect() *http.Client {
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// HTTPGetQuiet fetches url with a 2 s timeout and returns the status,
// leaving the body unread.
func HTTPGetQuiet(url string) (int, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
