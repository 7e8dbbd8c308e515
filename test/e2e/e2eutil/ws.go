package e2eutil

import (
	"bytes"
	"fmt"

	"github.com/gorilla/websocket"
)

// WSReader reads a WebSocket's binary messages as one byte stream, as a
// WebSocket-FLV player does; a message of another type is an error.
type WSReader struct {
	Conn *websocket.Conn
	buf  bytes.Reader
}

// Read implements io.Reader.
func (r *WSReader) Read(p []byte) (int, error) {
	for r.buf.Len() == 0 {
		typ, b, err := r.Conn.ReadMessage()
		if err != nil {
			return 0, err
		}
		if typ != websocket.BinaryMessage {
			return 0, fmt.Errorf("a WebSocket message of type %d", typ)
		}
		r.buf.Reset(b)
	}
	return r.buf.Read(p)
}
