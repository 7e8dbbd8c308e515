package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/meshcast/meshcast/internal/rawio"
)

// httpTimeout bounds one HTTP request of an HLS player, from sending it to
// its last byte. It covers an LL-HLS server holding a blocking request
// (meshcast holds one for at most 10 s).
const httpTimeout = 15 * time.Second

// httpConn is one keep-alive HTTP/1.1 connection of an HLS player, making
// one GET at a time as a browser's connection does. It allocates nothing
// per request: the request is written from a reused buffer, the status line
// and headers are read in place, and the body is handed to the caller's
// buffer. Reads are stamped with the kernel's receive time (rawio), so a
// response's last byte is timed by its arrival, not by when the load
// generator got round to reading it.
type httpConn struct {
	addr   string // host:port connected to
	tls    bool
	raw    net.Conn // the TCP connection (rawio)
	conn   net.Conn // raw, or TLS over it
	stop   func() bool
	br     *bufio.Reader
	wbuf   []byte
	served int // responses read on this connection

	// The response being read.
	status   int
	location string // of a redirect
	sent     time.Time
	left     int64 // body bytes left: of the whole body, or of the current chunk
	chunked  bool
	untilEOF bool // no length given: the body ends with the connection
	done     bool // the body has been read whole
	closing  bool // the server closes the connection after this response
}

type statusError struct{ code int }

func (e statusError) Error() string { return fmt.Sprintf("HTTP %d %s", e.code, httpStatusText(e.code)) }

func httpStatusText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 429:
		return "Too Many Requests"
	case 500:
		return "Internal Server Error"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	}
	return ""
}

// hostAddr returns the address to dial for an http or https URL's host.
func hostAddr(scheme, host string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	if scheme == "https" {
		return net.JoinHostPort(host, "443")
	}
	return net.JoinHostPort(host, "80")
}

// close closes the connection; the next request dials again.
func (c *httpConn) close() {
	if c.conn == nil {
		return
	}
	c.stop()
	c.conn.Close()
	c.conn, c.raw, c.stop = nil, nil, nil
}

func (c *httpConn) dial(ctx context.Context, scheme, host string) error {
	c.close()
	addr := hostAddr(scheme, host)
	conn, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	raw := rawio.New(conn, true)
	c.raw, c.conn, c.addr, c.tls = raw, raw, addr, scheme == "https"
	c.stop = context.AfterFunc(ctx, func() { raw.Close() })
	if c.tls {
		name, _, _ := net.SplitHostPort(addr)
		tc := tls.Client(raw, &tls.Config{ServerName: name})
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			c.close()
			return err
		}
		c.conn = tc
	}
	if c.br == nil {
		c.br = bufio.NewReaderSize(c.conn, 4<<10)
	} else {
		c.br.Reset(c.conn)
	}
	c.served = 0
	return nil
}

// start sends GET path to host and reads the answer's status line and
// headers. The body is then read with read, and the request ended with
// finish. A kept-alive connection the server has closed meanwhile is
// replaced once, as browsers do.
func (c *httpConn) start(ctx context.Context, scheme, host string, path []byte) error {
	if c.conn != nil && (c.addr != hostAddr(scheme, host) || c.tls != (scheme == "https")) {
		c.close()
	}
	for try := 0; ; try++ {
		fresh := c.conn == nil
		if fresh {
			if err := c.dial(ctx, scheme, host); err != nil {
				return err
			}
		}
		err := c.send(host, path)
		if err == nil {
			return nil
		}
		c.close()
		if fresh || try > 0 || ctx.Err() != nil || !errors.Is(err, errNoAnswer) {
			return err
		}
	}
}

// errNoAnswer is a connection that ended before any byte of an answer.
var errNoAnswer = errors.New("connection closed before an answer")

func (c *httpConn) send(host string, path []byte) error {
	c.wbuf = append(c.wbuf[:0], "GET "...)
	c.wbuf = append(c.wbuf, path...)
	c.wbuf = append(c.wbuf, " HTTP/1.1\r\nHost: "...)
	c.wbuf = append(c.wbuf, host...)
	c.wbuf = append(c.wbuf, "\r\nUser-Agent: meshcast-bench\r\nAccept: */*\r\n\r\n"...)
	c.conn.SetDeadline(time.Now().Add(httpTimeout))
	c.sent = time.Now()
	if _, err := c.conn.Write(c.wbuf); err != nil {
		if c.served > 0 {
			return fmt.Errorf("%w: %v", errNoAnswer, err)
		}
		return err
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		if len(line) == 0 && c.served > 0 && (err == io.EOF || errors.Is(err, net.ErrClosed) || isReset(err)) {
			return fmt.Errorf("%w: %v", errNoAnswer, err)
		}
		return err
	}
	// HTTP/1.1 200 OK
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return fmt.Errorf("bad HTTP status line %q", bytes.TrimSpace(line))
	}
	code := 0
	for _, d := range line[9:12] {
		if d < '0' || d > '9' {
			return fmt.Errorf("bad HTTP status line %q", bytes.TrimSpace(line))
		}
		code = code*10 + int(d-'0')
	}
	c.status, c.location = code, ""
	c.left, c.chunked, c.untilEOF, c.done = -1, false, false, false
	c.closing = line[7] == '0' // HTTP/1.0
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("bad Content-Length %q", value)
			}
			c.left = n
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			// The last coding is chunked or the body ends with the connection.
			c.chunked = len(value) >= 7 && bytes.EqualFold(value[len(value)-7:], []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			if bytes.EqualFold(value, []byte("close")) {
				c.closing = true
			}
		case bytes.EqualFold(name, []byte("Location")):
			c.location = string(value)
		}
	}
	switch {
	case code == 204 || code == 304 || code < 200:
		c.done = true
	case c.chunked:
		c.left = 0
	case c.left == 0:
		c.done = true
	case c.left < 0:
		c.untilEOF, c.closing = true, true
	}
	return nil
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// read reads body bytes into b; io.EOF ends the body.
func (c *httpConn) read(b []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	if c.chunked && c.left == 0 {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		size, _, _ := bytes.Cut(bytes.TrimSpace(line), []byte(";"))
		n, err := strconv.ParseInt(string(bytes.TrimSpace(size)), 16, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad chunk size %q", bytes.TrimSpace(line))
		}
		if n == 0 {
			for { // trailers, up to the blank line
				line, err := c.br.ReadSlice('\n')
				if err != nil {
					return 0, err
				}
				if len(bytes.TrimSpace(line)) == 0 {
					break
				}
			}
			c.done = true
			return 0, io.EOF
		}
		c.left = n
	}
	if !c.untilEOF && int64(len(b)) > c.left {
		b = b[:c.left]
	}
	n, err := c.br.Read(b)
	if c.untilEOF {
		if err == io.EOF {
			c.done = true
		}
		return n, err
	}
	c.left -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && c.left == 0 {
		if c.chunked {
			if _, err = c.br.ReadSlice('\n'); err != nil { // the CRLF after a chunk's data
				return n, err
			}
		} else {
			c.done = true
		}
	}
	return n, err
}

// finish reads what is left of the body into scratch and returns when its
// last byte arrived. The connection is kept for the next request unless
// the server closes it.
func (c *httpConn) finish(scratch []byte) (time.Time, error) {
	for !c.done {
		if _, err := c.read(scratch); err != nil && err != io.EOF {
			c.close()
			return time.Time{}, err
		}
	}
	done := rawio.Received(c.raw)
	if done.Before(c.sent) {
		done = c.sent
	}
	c.served++
	if c.closing {
		c.close()
	}
	return done, nil
}
