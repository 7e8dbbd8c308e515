package cluster

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// Every request a PeerClient sends is signed as the node its self function
// names at the time; the receiver's client verifies it with the cluster
// secret.
func TestPeerClient(t *testing.T) {
	const secret = "a-cluster-secret-of-some-length"
	var node NodeID
	recv := NewPeerClient(secret, func() NodeID { return "receiver" })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		from, err := recv.Verify(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		w.Write([]byte(from))
	}))
	defer srv.Close()
	c := NewPeerClient(secret, func() NodeID { return node })
	defer c.HTTP().CloseIdleConnections()
	get := func() (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+PullPath+"live/x", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b := make([]byte, 64)
		n, _ := resp.Body.Read(b)
		return resp.StatusCode, string(b[:n])
	}
	for _, id := range []NodeID{"node-a", "node-b"} {
		node = id
		if code, from := get(); code != 200 || from != string(id) {
			t.Fatalf("as %s: %d %q", id, code, from)
		}
	}
	// Another secret is refused.
	c = NewPeerClient("another-secret-of-some-length!!", func() NodeID { return "node-a" })
	defer c.HTTP().CloseIdleConnections()
	if code, _ := get(); code != http.StatusForbidden {
		t.Fatalf("signed with another secret: %d, want 403", code)
	}
}
