//go:build unix

package cluster

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// Every node lists the whole cluster's streams (GET /api/v1/streams?scope=
// cluster) from the registry: owner, codecs and size from the owner's
// record, relays, and viewers summed over the nodes. Three meshcast
// processes on a real Redis.
func TestClusterListing(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	t.Parallel()
	testutil.Need(t, "ffmpeg")
	nodes := startRedisNodes(t, nil, "node-a", "node-b", "node-c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/one", a.RTMPPort))
	e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://127.0.0.1:%d/live/two", b.RTMPPort))
	e2eutil.WaitLiveHTTP(t, a.HTTPURL, "live/one")
	e2eutil.WaitLiveHTTP(t, b.HTTPURL, "live/two")
	for range 2 {
		e2eutil.PlayRTMP(t, c.RTMPAddr, "live/one").WaitFrames(t, 10, 20*time.Second)
	}
	flv := e2eutil.PlayFLV(t, b.HTTPURL+"/live/one.flv")
	defer flv.Close()

	type listed struct {
		Name  string `json:"name"`
		Video *struct {
			Codec string `json:"codec"`
			Width int    `json:"width"`
		} `json:"video"`
		Owner *struct {
			Node string `json:"node"`
		} `json:"owner"`
		Relays []struct {
			Node     string `json:"node"`
			Upstream string `json:"upstream"`
		} `json:"relays"`
		Viewers      map[string]int `json:"viewers"`
		ViewersTotal int            `json:"viewers_total"`
	}
	for _, n := range nodes {
		var last string
		testutil.WaitFor(t, 15*time.Second, n.HTTPURL+" to list both streams with their viewers", func() bool {
			code, body := e2eutil.HTTPGet(t, n.HTTPURL+"/api/v1/streams?scope=cluster")
			last = strings.Join(strings.Fields(string(body)), " ")
			var out struct{ Streams []listed }
			if code != 200 || json.Unmarshal(body, &out) != nil || len(out.Streams) != 2 {
				return false
			}
			one, two := out.Streams[0], out.Streams[1]
			if one.Name != "live/one" || two.Name != "live/two" {
				return false
			}
			return one.Owner != nil && one.Owner.Node == "node-a" && two.Owner != nil && two.Owner.Node == "node-b" &&
				one.Video != nil && one.Video.Codec == "h264" && one.Video.Width == 640 &&
				two.Video != nil && two.Video.Codec == "h264" &&
				one.Viewers["rtmp"] == 2 && one.Viewers["flv"] == 1 && one.ViewersTotal == 3 &&
				len(one.Relays) == 2 && two.ViewersTotal == 0
		})
		if t.Failed() {
			t.Logf("%s listed: %s", n.HTTPURL, last)
		}
	}
	if code, _ := e2eutil.HTTPGet(t, a.HTTPURL+"/api/v1/streams?scope=galaxy"); code != 400 {
		t.Errorf("scope=galaxy: %d, want 400", code)
	}
}
