// Package srtconn holds what meshcast's SRT callers (a push to an SRT
// target, an SRT source) share about the connections gosrt.Dial makes.
package srtconn

import (
	"errors"
	"time"

	gosrt "github.com/datarhei/gosrt"
)

// Close closes conn, a connection gosrt.Dial made, and makes sure gosrt's
// socket reader goroutine ends. In gosrt (v0.9.0 to v0.11.0) that
// goroutine ends by sending on an unbuffered channel, which Close drains
// only when the send is already waiting: one that was handling a packet
// when Close came sends just after and would wait forever, a goroutine
// lost per connection. A Read after Close drains it; the send comes at
// once (Close also wakes the goroutine's socket read), so Close reads for
// at most a second.
func Close(conn gosrt.Conn) {
	conn.Close()
	b := make([]byte, 64<<10) // more than an SRT packet: each Read gets to the check
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := conn.Read(b); errors.Is(err, gosrt.ErrClientClosed) {
			return
		}
	}
}
