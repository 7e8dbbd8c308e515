//go:build unix

package live

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// TestWebSocketFLV: the HTTP-FLV URL opened as a WebSocket carries the
// live FLV stream in binary messages; pages of origins outside
// --cors-origins are refused.
func TestWebSocketFLV(t *testing.T) {
	t.Parallel()
	n := e2eutil.StartNode(t, func(c *config.Config) { c.CORSOrigins = []string{"https://player.example"} })
	const name = "live/ws"
	e2eutil.PublishFFmpeg(t, n.RTMPURL(name))
	url := strings.Replace(n.HTTPURL, "http://", "ws://", 1) + "/" + name + ".flv"
	var conn *websocket.Conn
	testutil.WaitFor(t, 15*time.Second, "the WebSocket to open", func() bool {
		c, _, err := websocket.DefaultDialer.Dial(url, http.Header{"Origin": {"https://player.example"}})
		if err != nil {
			return false
		}
		conn = c
		return true
	})
	defer conn.Close()
	checkWSFLV(t, conn, 60)
	// Another origin's page is refused at the handshake.
	if _, resp, err := websocket.DefaultDialer.Dial(url, http.Header{"Origin": {"https://evil.example"}}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("a page of another origin: %v %v, want 403", err, resp)
	}
}

// checkWSFLV reads a WebSocket-FLV stream until it has seen frames video
// frames, and checks what a player needs: the FLV header, both decoder
// configurations, a keyframe first, audio, timestamps that never go back.
func checkWSFLV(t *testing.T, conn *websocket.Conn, frames int) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	r := flv.NewReader(&e2eutil.WSReader{Conn: conn})
	if hasVideo, hasAudio, err := r.ReadHeader(); err != nil || !hasVideo || !hasAudio {
		t.Fatalf("FLV header: video %v audio %v, %v", hasVideo, hasAudio, err)
	}
	var video, audio, keyframes int
	var avc, aac bool
	var last int64 = -1
	for video < frames {
		p, err := r.ReadPacket()
		if err != nil {
			t.Fatalf("after %d video frames: %v", video, err)
		}
		switch {
		case p.SeqHeader && p.Codec == media.CodecH264:
			avc = true
		case p.SeqHeader && p.Codec == media.CodecAAC:
			aac = true
		case p.Kind == media.KindVideo:
			if video == 0 && !p.Keyframe {
				t.Error("the first video frame is not a keyframe")
			}
			if p.Keyframe {
				keyframes++
			}
			if p.DTS < last {
				t.Errorf("video timestamps went back: %d after %d", p.DTS, last)
			}
			last = p.DTS
			video++
		case p.Kind == media.KindAudio:
			audio++
		}
	}
	if !avc || !aac || audio == 0 || keyframes == 0 {
		t.Errorf("avc config %v, aac config %v, %d audio frames, %d keyframes", avc, aac, audio, keyframes)
	}
}
