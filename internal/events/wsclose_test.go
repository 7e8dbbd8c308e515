package events

import (
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// wsSession opens a Socket.IO session over a WebSocket only (as
// socket.io-client does with transports ["websocket"]), waits for hello,
// and returns the connection.
func wsSession(t *testing.T, srvURL string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, _, err := d.Dial(strings.Replace(srvURL, "http://", "ws://", 1)+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			c.Close()
			t.Fatalf("before hello: %v", err)
		}
		switch m := string(b); {
		case strings.HasPrefix(m, "0{"):
			c.WriteMessage(websocket.TextMessage, []byte("40"))
		case strings.HasPrefix(m, `42["hello"`):
			return c
		}
	}
}

// TestWebSocketClientLeaves: clients that leave over a WebSocket, by
// disconnecting from the namespace and closing the WebSocket, or by
// closing it at once, are forgotten, and the server closes their TCP
// connections (socket.io v3.0.4 left a connection closed by its peer
// open until the garbage collector found it).
func TestWebSocketClientLeaves(t *testing.T) {
	s, err := New(Config{Node: "n"}, &fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := startHTTP(t, s)

	for i, leave := range []string{"41 and a close frame", "a close frame", "41 and a close frame", "a close frame"} {
		c := wsSession(t, ts.URL)
		waitFor(t, "the client to be counted", func() bool { return s.Clients() == 1 })
		if strings.HasPrefix(leave, "41") {
			c.WriteMessage(websocket.TextMessage, []byte("41"))
		}
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		// The server answers the close and hangs up: after its close
		// frame, the connection ends (not a timeout).
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				break
			}
		}
		conn := c.NetConn()
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		var buf [512]byte
		for {
			_, err := conn.Read(buf[:])
			if err == nil {
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("client %d (%s): the server kept the connection open 3 s after the close", i, leave)
			}
			break
		}
		c.Close()
		waitFor(t, "the client to be forgotten", func() bool {
			return s.Clients() == 0 && s.io.Engine().ClientsCount() == 0
		})
	}
}

// TestWebSocketClientsLeaveNoMemory: a few hundred clients that come and
// go over WebSockets leave the heap as it was (socket.io v3.0.4 kept
// about 20 KB of each for good: its queues had finalizers and pointed to
// themselves, so the collector never freed them).
func TestWebSocketClientsLeaveNoMemory(t *testing.T) {
	s, err := New(Config{Node: "n"}, &fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := startHTTP(t, s)
	visit := func(n int) {
		for range n {
			c := wsSession(t, ts.URL)
			c.WriteMessage(websocket.TextMessage, []byte("41"))
			c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			c.Close()
		}
		waitFor(t, "the clients to be forgotten", func() bool {
			return s.Clients() == 0 && s.io.Engine().ClientsCount() == 0
		})
	}
	heap := func() uint64 {
		var m runtime.MemStats
		for range 3 { // finalizers run, then what they held is freed
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	visit(50)
	before := heap()
	visit(300)
	after := heap()
	t.Logf("heap %d KiB before 300 clients, %d KiB after", before>>10, after>>10)
	if after > before+1<<20 {
		t.Errorf("300 clients that left kept %d KiB of the heap", (after-before)>>10)
	}
}
