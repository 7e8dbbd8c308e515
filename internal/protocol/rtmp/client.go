package rtmp

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/meshcast/meshcast/internal/protocol/amf0"
)

// ErrRefused is returned when the server answers a command with an error
// status; the error text carries the status code.
var ErrRefused = errors.New("refused by server")

// Client is the client side of an RTMP session over an established
// connection: connect, then play or publish. The caller sets deadlines on
// the connection; Client keeps no timers.
type Client struct {
	// FourCCs, set before Connect, makes the client announce itself as
	// enhanced RTMP, able to send and receive these codecs ("hvc1",
	// "av01", ...).
	FourCCs []string
	// ServerFourCCs is the server's fourCcList from its answer to
	// connect: the enhanced RTMP codecs it takes.
	ServerFourCCs []string
	// PlaySent is when Play sent its play command (taken just before the
	// write): a player's time to first frame counts from here.
	PlaySent time.Time

	rw       io.ReadWriter
	r        *ChunkReader
	w        *ChunkWriter
	tx       float64
	streamID uint32
	ack      AckState
	pending  []*Message // media that arrived while waiting for a reply
}

// NewClient performs the handshake on rw and returns a client session.
func NewClient(rw io.ReadWriter) (*Client, error) {
	if err := ClientHandshake(rw); err != nil {
		return nil, err
	}
	// Clients mostly receive media: read in large gulps.
	return &Client{rw: rw, r: NewChunkReaderSize(rw, 64<<10), w: NewChunkWriter(rw)}, nil
}

// Connect sends connect for app and waits for its result.
func (c *Client) Connect(app, tcURL string) error {
	if err := c.w.SetChunkSize(4096); err != nil {
		return err
	}
	obj := amf0.Object{
		{Key: "app", Value: app},
		{Key: "type", Value: "nonprivate"},
		{Key: "flashVer", Value: "FMLE/3.0 (compatible; meshcast)"},
		{Key: "tcUrl", Value: tcURL},
	}
	if len(c.FourCCs) > 0 {
		list := make([]any, len(c.FourCCs))
		for i, f := range c.FourCCs {
			list[i] = f
		}
		obj = append(obj, amf0.Property{Key: "fourCcList", Value: list})
	}
	res, err := c.call("connect", obj)
	if err != nil {
		return err
	}
	if props, ok := res.Object.(amf0.Object); ok {
		v, _ := props.Get("fourCcList")
		list, _ := v.([]any) // an AMF0 strict array
		for _, f := range list {
			if s, ok := f.(string); ok {
				c.ServerFourCCs = append(c.ServerFourCCs, s)
			}
		}
	}
	return nil
}

// Play creates a stream and plays name, waiting for NetStream.Play.Start.
func (c *Client) Play(name string) error {
	if err := c.createStream(); err != nil {
		return err
	}
	// Stamped before the write: a player descheduled after it could
	// otherwise date its request after the server's answer.
	c.PlaySent = time.Now()
	if err := c.send(c.streamID, "play", 0, nil, name, float64(-2000)); err != nil {
		return err
	}
	return c.waitStatus("NetStream.Play.Start")
}

// Publish creates a stream and publishes name ("live"), waiting for
// NetStream.Publish.Start.
func (c *Client) Publish(name string) error {
	c.tx++
	if err := c.send(0, "releaseStream", c.tx, nil, name); err != nil {
		return err
	}
	c.tx++
	if err := c.send(0, "FCPublish", c.tx, nil, name); err != nil {
		return err
	}
	if err := c.createStream(); err != nil {
		return err
	}
	if err := c.send(c.streamID, "publish", 0, nil, name, "live"); err != nil {
		return err
	}
	return c.waitStatus("NetStream.Publish.Start")
}

// WriteMedia sends one audio, video or data message on the published stream.
func (c *Client) WriteMedia(typeID uint8, ts uint32, payload []byte) error {
	csid := CSIDVideo
	switch typeID {
	case TypeAudio:
		csid = CSIDAudio
	case TypeDataAMF0:
		csid = CSIDData
	}
	return c.w.WriteMessage(csid, typeID, c.streamID, ts, payload)
}

// Flush sends buffered messages.
func (c *Client) Flush() error { return c.w.Flush() }

// Skim makes later audio and video messages carry only their first
// SkimPrefix bytes (see ChunkReader.Skim), for players that only count.
func (c *Client) Skim() { c.r.Skim = true }

// ReadMessage returns the next media, data or command message, answering
// pings and sending acknowledgements on the way.
func (c *Client) ReadMessage() (*Message, error) {
	if len(c.pending) > 0 {
		m := c.pending[0]
		c.pending = c.pending[1:]
		return m, nil
	}
	for {
		m, err := c.r.ReadMessage()
		if err != nil {
			return nil, err
		}
		if c.ack.Due(c.r.BytesRead()) {
			if err := c.w.WriteMessage(CSIDControl, TypeAck, 0, 0, AppendUint32(nil, c.r.BytesRead())); err != nil {
				return nil, err
			}
			if err := c.w.Flush(); err != nil {
				return nil, err
			}
		}
		switch m.Type {
		case TypeWindowAckSize:
			if ctl, err := ParseControl(m.Type, m.Payload); err == nil {
				c.ack.Window = ctl.Value
			}
		case TypeUserControl:
			if u, err := ParseUserControl(m.Payload); err == nil && u.Event == EventPingRequest {
				p := AppendUserControl(nil, EventPingResponse, u.Arg)
				if err := c.w.WriteMessage(CSIDControl, TypeUserControl, 0, 0, p); err != nil {
					return nil, err
				}
				if err := c.w.Flush(); err != nil {
					return nil, err
				}
			}
			return m, nil
		case TypeAck, TypeSetPeerBandwidth:
		default:
			return m, nil
		}
	}
}

func (c *Client) send(streamID uint32, name string, tx float64, obj any, args ...any) error {
	p, err := AppendCommand(nil, name, tx, obj, args...)
	if err != nil {
		return err
	}
	if err := c.w.WriteMessage(CSIDCommand, TypeCommandAMF0, streamID, 0, p); err != nil {
		return err
	}
	return c.w.Flush()
}

// call sends a command and waits for its _result.
func (c *Client) call(name string, obj any, args ...any) (*Command, error) {
	c.tx++
	tx := c.tx
	if err := c.send(0, name, tx, obj, args...); err != nil {
		return nil, err
	}
	for {
		cmd, err := c.readCommand()
		if err != nil {
			return nil, err
		}
		if cmd.TxID != tx {
			continue
		}
		switch cmd.Name {
		case "_result":
			return cmd, nil
		case "_error":
			return nil, fmt.Errorf("rtmp: %s: %s: %w", name, statusCode(cmd), ErrRefused)
		}
	}
}

func (c *Client) createStream() error {
	cmd, err := c.call("createStream", nil)
	if err != nil {
		return err
	}
	if len(cmd.Args) > 0 {
		if id, ok := cmd.Args[0].(float64); ok {
			c.streamID = uint32(id)
		}
	}
	return nil
}

// waitStatus reads until onStatus with code want, or fails on an error status.
func (c *Client) waitStatus(want string) error {
	for {
		cmd, err := c.readCommand()
		if err != nil {
			return err
		}
		if cmd.Name != "onStatus" {
			continue
		}
		code := statusCode(cmd)
		if code == want {
			return nil
		}
		if level(cmd) == "error" {
			return fmt.Errorf("rtmp: %s (%s): %w", code, truncateDesc(info(cmd).String("description")), ErrRefused)
		}
	}
}

// readCommand returns the next command message, keeping media for later.
func (c *Client) readCommand() (*Command, error) {
	for {
		m, err := c.ReadMessage()
		if err != nil {
			return nil, err
		}
		switch m.Type {
		case TypeCommandAMF0:
			return ParseCommand(m.Payload)
		case TypeCommandAMF3:
			if len(m.Payload) > 0 {
				return ParseCommand(m.Payload[1:])
			}
		case TypeAudio, TypeVideo, TypeDataAMF0:
			if len(c.pending) < 1024 {
				c.pending = append(c.pending, m)
			}
		}
	}
}

// info returns the status object of a reply: its first argument, or else the
// command object.
func info(cmd *Command) amf0.Object {
	for _, v := range append([]any{cmd.Object}, cmd.Args...) {
		if o, ok := v.(amf0.Object); ok {
			if _, has := o.Get("code"); has {
				return o
			}
		}
	}
	return nil
}

// truncateDesc keeps a server's status description short in errors.
func truncateDesc(s string) string {
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

func statusCode(cmd *Command) string { return info(cmd).String("code") }
func level(cmd *Command) string      { return info(cmd).String("level") }
