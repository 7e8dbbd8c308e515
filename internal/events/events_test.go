package events

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/testutil"
)

// TestMain checks for leaked goroutines once the tests' idle HTTP
// client connections (http.DefaultTransport's keep-alives, whose reader
// goroutines end only with them) are closed.
func TestMain(m *testing.M) {
	code := m.Run()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// pollClient speaks Engine.IO 4 long-polling and Socket.IO 4 by hand, as
// socket.io-client does before upgrading to WebSocket.
type pollClient struct {
	t    *testing.T
	base string // http://host/socket.io/?EIO=4&transport=polling
	sid  string
	id   string // the Socket.IO socket ID
	http *http.Client
	got  []event // received, not yet taken
	want string  // the event next waits for
}

type event struct {
	name string
	arg  map[string]any
}

// dialPoll opens an Engine.IO session and connects to the main
// namespace; it returns the handshake's HTTP status when refused.
func dialPoll(t *testing.T, srvURL string) (*pollClient, int) {
	t.Helper()
	c := &pollClient{t: t, base: srvURL + "/socket.io/?EIO=4&transport=polling", http: &http.Client{Timeout: 10 * time.Second}}
	code, body := c.do("GET", c.base, "")
	if code != http.StatusOK {
		return nil, code
	}
	if !strings.HasPrefix(body, "0") {
		t.Fatalf("handshake: %q", body)
	}
	var open struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal([]byte(body[1:]), &open); err != nil || open.SID == "" {
		t.Fatalf("handshake %q: %v", body, err)
	}
	c.sid = open.SID
	c.send("40")
	for c.id == "" {
		c.poll()
	}
	return c, http.StatusOK
}

func (c *pollClient) do(method, url, body string) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s (waiting for %q): %v", method, url, c.want, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

func (c *pollClient) url() string { return c.base + "&sid=" + c.sid }

// send posts Engine.IO packets (already encoded).
func (c *pollClient) send(packets ...string) {
	c.t.Helper()
	if code, body := c.do("POST", c.url(), strings.Join(packets, "\x1e")); code != http.StatusOK {
		c.t.Fatalf("POST: %d %s", code, body)
	}
}

// emit sends a Socket.IO event.
func (c *pollClient) emit(name string, arg any) {
	c.t.Helper()
	b, err := json.Marshal([]any{name, arg})
	if err != nil {
		c.t.Fatal(err)
	}
	c.send("42" + string(b))
}

// poll runs one long-poll and keeps the events it brings.
func (c *pollClient) poll() {
	c.t.Helper()
	code, body := c.do("GET", c.url(), "")
	if code != http.StatusOK {
		c.t.Fatalf("poll: %d %s", code, body)
	}
	for _, p := range strings.Split(body, "\x1e") {
		switch {
		case strings.HasPrefix(p, "40"):
			var m struct {
				SID string `json:"sid"`
			}
			json.Unmarshal([]byte(p[2:]), &m)
			c.id = m.SID
		case strings.HasPrefix(p, "42"):
			var args []json.RawMessage
			if err := json.Unmarshal([]byte(p[2:]), &args); err != nil || len(args) == 0 {
				c.t.Fatalf("event %q: %v", p, err)
			}
			var e event
			json.Unmarshal(args[0], &e.name)
			if len(args) > 1 {
				json.Unmarshal(args[1], &e.arg)
			}
			c.got = append(c.got, e)
		case p == "2":
			c.send("3") // pong
		}
	}
}

// next waits for the next event called name, skipping others.
func (c *pollClient) next(name string) map[string]any {
	c.t.Helper()
	c.want = name
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for i, e := range c.got {
			if e.name == name {
				c.got = append(c.got[:i], c.got[i+1:]...)
				return e.arg
			}
		}
		c.poll()
	}
	c.t.Fatalf("no %s event", name)
	return nil
}

func (c *pollClient) close() { c.send("41", "1") }

func startHTTP(t *testing.T, s *Server) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/socket.io/{$}", s.Handler())
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts
}

// TestProtocol drives the server through the Socket.IO protocol: hello,
// join, viewers, chat, errors, the client limit and Close.
func TestProtocol(t *testing.T) {
	src := &fakeSource{}
	src.setStreams("live/stream")
	src.set("live/stream", Counts{RTMP: 2, HLS: 1})
	s, err := New(Config{Node: "node-1", Version: "v9", MaxClients: 2}, src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := startHTTP(t, s)

	a, _ := dialPoll(t, ts.URL)
	h := a.next("hello")
	if h["node"] != "node-1" || h["version"] != "v9" || fmt.Sprint(h["streams"]) != "[live/stream]" {
		t.Errorf("hello = %v", h)
	}
	a.emit("join", "live/stream")
	if v := a.next("viewers"); v["stream"] != "live/stream" || v["total"] != 3.0 {
		t.Errorf("viewers = %v", v)
	}
	b, _ := dialPoll(t, ts.URL)
	b.next("hello")
	b.emit("join", "live/stream")
	b.next("viewers")

	if _, code := dialPoll(t, ts.URL); code == http.StatusOK {
		t.Errorf("a third client was let in over MaxClients 2")
	}
	if n := s.Clients(); n != 2 {
		t.Errorf("Clients() = %d, want 2", n)
	}

	a.emit("chat", map[string]any{"stream": "live/stream", "text": "hello\tthere "})
	for _, c := range []*pollClient{a, b} {
		m := c.next("chat")
		if m["text"] != "hello there" || m["from"] != a.id || m["stream"] != "live/stream" {
			t.Errorf("chat = %v, want from %s", m, a.id)
		}
	}
	b.emit("chat", map[string]any{"stream": "live/other", "text": "x"})
	if e := b.next("error"); e["code"] != codeNotMember {
		t.Errorf("error = %v", e)
	}

	b.close()
	waitFor(t, "b to be gone", func() bool { return s.Clients() == 1 })
	c, code := dialPoll(t, ts.URL)
	if code != http.StatusOK {
		t.Fatalf("a client in b's place refused: %d", code)
	}
	c.next("hello")

	s.Close()
	if n := s.Clients(); n != 0 {
		t.Errorf("after Close: %d clients", n)
	}
	if code, _ := a.do("GET", ts.URL+"/socket.io/?EIO=4&transport=polling", ""); code != http.StatusServiceUnavailable {
		t.Errorf("handshake after Close: %d, want 503", code)
	}
}

// TestFastPolls: a client polling again the moment it gets an answer, as
// socket.io-client does on loopback, keeps its session over many rounds
// (the library alone loses it now and then: see Handler).
func TestFastPolls(t *testing.T) {
	s, err := New(Config{Node: "n"}, &fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := startHTTP(t, s)
	c, _ := dialPoll(t, ts.URL)
	c.next("hello")
	for i := range 200 {
		name := fmt.Sprintf("live/s%d", i%MaxRooms)
		c.emit("join", name)
		if v := c.next("viewers"); v["stream"] != name {
			t.Fatalf("round %d: viewers %v", i, v)
		}
		c.emit("leave", name)
	}
}

// TestSlowClientCut: a client that stops reading is disconnected once
// its backlog reaches the bound, instead of queueing without end.
func TestSlowClientCut(t *testing.T) {
	s, err := New(Config{Node: "n"}, &fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := startHTTP(t, s)
	slow, _ := dialPoll(t, ts.URL)
	slow.next("hello")
	fast, _ := dialPoll(t, ts.URL)
	fast.next("hello")
	// slow polls no more; the server keeps sending to both.
	for i := range maxBacklog + 10 {
		s.toAll("streams", mustJSON(streamList{Node: "n", Streams: []string{fmt.Sprint(i)}}))
		if i%50 == 0 {
			fast.next("streams")
			fast.got = nil
		}
	}
	waitFor(t, "the slow client to be cut off", func() bool { return s.Clients() == 1 })
	fast.emit("join", "live/stream")
	fast.next("viewers")
}

// TestCloseWithPendingPoll: Close answers a long-poll in progress and
// leaves no goroutine behind (TestMain checks).
func TestCloseWithPendingPoll(t *testing.T) {
	s, err := New(Config{Node: "n"}, &fakeSource{})
	if err != nil {
		t.Fatal(err)
	}
	ts := startHTTP(t, s)
	c, _ := dialPoll(t, ts.URL)
	c.next("hello")
	done := make(chan struct{})
	go func() {
		defer close(done)
		// blocks until Close ends the session
		if resp, err := c.http.Get(c.url()); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close() // else its connection outlives the server
		}
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	s.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("pending poll not answered after Close")
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Close took %v", d)
	}
}

func TestClientFiles(t *testing.T) {
	dir := t.TempDir()
	dist := filepath.Join(dir, "socket.io-client", "dist")
	if err := os.MkdirAll(dist, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dist, "socket.io.js"), []byte("/* client */"), 0o644)
	os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("secret"), 0o644)
	mux := http.NewServeMux()
	mux.Handle("GET /socket.io/{file}", ClientFiles(dir))
	mux.Handle("GET /missing/socket.io/{file}", ClientFiles(filepath.Join(dir, "nope")))
	mux.Handle("GET /events-demo", DemoPage())
	ts := httptest.NewServer(mux)
	defer ts.Close()

	tests := []struct {
		path  string
		code  int
		ctype string
		body  string
	}{
		{"/socket.io/socket.io.js", 200, "application/javascript; charset=utf-8", "/* client */"},
		{"/socket.io/socket.io.min.js", 404, "", "npm ci"},
		{"/missing/socket.io/socket.io.js", 404, "text/plain; charset=utf-8", "npm ci"},
		{"/socket.io/secret.txt", 404, "", ""},
		{"/socket.io/..%2fsecret.txt", 404, "", ""},
		{"/socket.io/socket.io.msgpack.min.js", 404, "", ""},
		{"/events-demo", 200, "text/html; charset=utf-8", `<script src="/socket.io/socket.io.js"></script>`},
	}
	for _, tt := range tests {
		resp, err := http.Get(ts.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.code || (tt.ctype != "" && resp.Header.Get("Content-Type") != tt.ctype) || !strings.Contains(string(b), tt.body) {
			t.Errorf("GET %s: %d %q %q, want %d %q containing %q", tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), b, tt.code, tt.ctype, tt.body)
		}
		if strings.Contains(string(b), "secret") && !strings.Contains(tt.path, "npm") {
			t.Errorf("GET %s served a file outside dist", tt.path)
		}
	}
	demo := string(demoPage)
	for _, want := range []string{"const socket = io();", "socket.on('hello'", "console.log('hello', JSON.stringify(msg))", "document.body.dataset.hello"} {
		if !strings.Contains(demo, want) {
			t.Errorf("demo page lacks %q", want)
		}
	}
}

// TestDeadRedis: with Redis unreachable, chat and stream events still
// reach this node's clients at once, and Close does not hang.
func TestDeadRedis(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	src := &fakeSource{}
	s, err := New(Config{Node: "n1", Redis: "redis://" + addr + "/0", RedisPrefix: "t:"}, src)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	s.deliver = rec.deliver
	var clients []*client
	for i := range 20 {
		c := rec.client(strconv.Itoa(i))
		addClient(s, c)
		s.onJoin(c, "live/stream")
		clients = append(clients, c)
	}
	start := time.Now()
	for range 3 {
		for _, c := range clients {
			s.onChat(c, map[string]any{"stream": "live/stream", "text": "hi"})
		}
	}
	for range 2000 { // more than the publish queue holds
		s.HubEvent(hub.Event{Type: "publish", Name: "live/stream"})
		s.HubEvent(hub.Event{Type: "end", Name: "live/stream"})
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("handlers took %v with Redis down", d)
	}
	if n := len(rec.take(clients[0], "chat")); n != 60 {
		t.Errorf("local delivery: %d chat messages, want 60", n)
	}
	start = time.Now()
	s.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v with Redis down", d)
	}
}

// TestRedisBus: two servers sharing a real Redis carry chat and stream
// start/end to each other, and skip their own.
func TestRedisBus(t *testing.T) {
	url := testutil.StartRedis(t, 0).URL()
	mk := func(node string) (*Server, *recorder, *client) {
		s, err := New(Config{Node: node, Redis: url, RedisPrefix: "test:"}, &fakeSource{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		rec := &recorder{}
		s.deliver = rec.deliver
		c := rec.client(node + "-client")
		addClient(s, c)
		s.onJoin(c, "live/stream")
		return s, rec, c
	}
	s1, rec1, c1 := mk("node-1")
	_, rec2, c2 := mk("node-2")

	// The subscriptions are up once a message gets through.
	waitFor(t, "chat across nodes", func() bool {
		s1.onChat(c1, map[string]any{"stream": "live/stream", "text": "ping"})
		time.Sleep(100 * time.Millisecond)
		return len(rec2.take(c2, "chat")) > 0
	})
	c1.chat = rateLimiter{}
	rec1.reset()
	s1.onChat(c1, map[string]any{"stream": "live/stream", "text": "across"})
	waitFor(t, "the message on node-2", func() bool {
		rec2.mu.Lock()
		defer rec2.mu.Unlock()
		for _, d := range rec2.got {
			if d.ev == "chat" && d.data["text"] == "across" && d.data["from"] == "node-1-client" {
				return true
			}
		}
		return false
	})
	s1.HubEvent(hub.Event{Type: "publish", Name: "live/stream"})
	waitFor(t, "stream:start on node-2", func() bool {
		for _, m := range rec2.take(c2, "stream:start") {
			if m["stream"] == "live/stream" && m["node"] == "node-1" {
				return true
			}
		}
		return false
	})
	time.Sleep(200 * time.Millisecond)
	if got := rec1.take(c1, "chat"); len(got) != 1 {
		t.Errorf("node-1's client got its message %d times, want once", len(got))
	}
	if got := rec1.take(c1, "stream:start"); len(got) != 1 {
		t.Errorf("node-1's client got stream:start %d times, want once", len(got))
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
