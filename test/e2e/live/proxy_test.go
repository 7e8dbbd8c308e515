//go:build unix

package live

import (
	"strings"
	"testing"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// A publisher behind a trusted proxy is known by the address the proxy
// reports; from anyone else a PROXY header is not believed.
func TestProxyProtocol(t *testing.T) {
	t.Parallel()
	trusting := e2eutil.StartNode(t, func(c *config.Config) {
		c.TrustedProxies = []string{"127.0.0.0/8"}
		c.PublishKeys = []string{"live=proxy-test-key"} // the proxied client is not on this machine
	})
	const v1 = "PROXY TCP4 203.0.113.9 127.0.0.1 40000 1935\r\n"
	if err := e2eutil.TryPublish(t, trusting.RTMPAddr().String(), v1, "live/proxied"); err == nil {
		t.Fatal("a proxied client elsewhere published without a key")
	}
	if err := e2eutil.TryPublish(t, trusting.RTMPAddr().String(), v1, "live/proxied?key=proxy-test-key"); err != nil {
		t.Fatalf("publish through a trusted proxy: %v", err)
	}
	if got := trusting.Hub.Get(streamname.Name("live/proxied")).Info().Publisher.RemoteAddr; got != "203.0.113.9:40000" {
		t.Errorf("publisher address %q, want the proxied client 203.0.113.9:40000", got)
	}
	// Without a header, a trusted proxy's own connection still works.
	if err := e2eutil.TryPublish(t, trusting.RTMPAddr().String(), "", "live/direct"); err != nil {
		t.Fatalf("publish from a trusted address without a header: %v", err)
	}
	if got := trusting.Hub.Get(streamname.Name("live/direct")).Info().Publisher.RemoteAddr; !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("publisher address %q, want 127.0.0.1", got)
	}

	plain := e2eutil.StartNode(t, nil)
	if err := e2eutil.TryPublish(t, plain.RTMPAddr().String(), v1, "live/spoofed"); err == nil {
		t.Fatal("a node trusting no proxy accepted a PROXY header")
	}
	if plain.Hub.Get(streamname.Name("live/spoofed")) != nil {
		t.Error("the spoofed stream exists")
	}
}
