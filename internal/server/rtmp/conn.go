package rtmp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/connlimit"
	"github.com/meshcast/meshcast/internal/egress"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/amf0"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/rawio"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// ackWindow is the acknowledgement window meshcast announces and uses.
const ackWindow = 2500000

// errClose ends a session after its reason has been logged and sent.
var errClose = errors.New("session closed")

// conn is one RTMP session: the command phase, then publishing or playing.
type conn struct {
	srv    *Server
	key    net.Conn // as accepted: what the server releases
	nc     net.Conn // what is served: key, or key seen through a proxy
	log    connLog
	rw     net.Conn // nc with raw reads and writes, for the command phase
	remote string   // nc's remote address
	r      *rtmp.ChunkReader
	w      *rtmp.ChunkWriter
	ack    rtmp.AckState
	dl     time.Time // the deadline last set on nc

	slot         *connlimit.Slot // its place under MaxConnectionsPerIP while it waits
	handshakeEnd time.Time       // accepted + HandshakeTimeout: publish or play by then
	published    bool            // has published: HandshakeTimeout no longer applies
	ts           tsUnwrap        // the publisher's timestamps past 32 bits

	app       string
	appParams url.Values // parameters sent with the app: rtmp://HOST/APP?k=v/NAME
	urlStream string     // the stream named in tcUrl when the app was not sent
	pub       *stream.Publisher
	endPub    func() // ends the publishing session
}

// errPlaying ends the session loop of a connection handed to the sender.
var errPlaying = errors.New("playing")

func newConn(s *Server, key, nc net.Conn, accepted time.Time, slot *connlimit.Slot) *conn {
	id := s.nextID.Add(1)
	remote := nc.RemoteAddr().String()
	c := &conn{
		srv:    s,
		key:    key,
		nc:     nc,
		log:    connLog{l: s.log, attrs: []any{"conn", id, "remote", remote}},
		remote: remote,
		slot:   slot,
		rw:     rawio.New(nc, traceFirstPictures),
		ack:    rtmp.AckState{Window: ackWindow},
	}
	c.r = rtmp.NewChunkReader(c.rw)
	c.w = rtmp.NewChunkWriter(c.rw)
	c.handshakeEnd = accepted.Add(s.cfg.HandshakeTimeout)
	return c
}

// serve runs the session. It returns true once the connection is handed
// to the sender for playback, which then owns it and releases it when
// playback ends (playEnded); otherwise the session is over.
func (c *conn) serve() (playing bool) {
	defer func() {
		if c.r != nil {
			c.r.Release()
			c.r = nil
		}
	}()
	c.setDeadline()
	err := c.r.ReadHandshake(func(r io.Reader) error {
		return rtmp.ServerHandshake(readWriter{r, c.rw})
	})
	if err != nil {
		switch {
		case c.slot.Refused():
			// Closed for waiting past the per-address limit: logged then.
		case silent(err):
			// A health check or port scan: connected, sent nothing, left.
			c.log.Debug("connection closed before the handshake", "err", err)
		case c.handshakeTimedOut(err):
		default:
			c.limited("handshake-failed", "connection closed: handshake failed", "err", err)
		}
		return false
	}
	defer c.stopPublishing()
	for {
		// Reads and the writes answering them share the deadline.
		c.setDeadline()
		m, err := c.r.ReadMessage()
		if err != nil {
			if !c.handshakeTimedOut(err) {
				c.logEnd(err)
			}
			return false
		}
		if c.ack.Due(c.r.BytesRead()) {
			if err := c.control(rtmp.TypeAck, rtmp.AppendUint32(nil, c.r.BytesRead())); err != nil {
				return false
			}
		}
		err = c.handle(m)
		if errors.Is(err, errPlaying) {
			return true // the sender owns the connection now: touch nothing
		}
		// Everything said in answer to one message leaves in one write.
		if ferr := c.w.Flush(); err == nil {
			err = ferr
		}
		if err != nil {
			if !errors.Is(err, errClose) && !c.handshakeTimedOut(err) {
				c.log.Info("connection closed", "err", err)
			}
			return false
		}
	}
}

// readWriter joins a reader and a writer.
type readWriter struct {
	io.Reader
	io.Writer
}

// logEnd logs why the peer's side ended.
func (c *conn) logEnd(err error) {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		c.log.Debug("connection closed by peer")
	default:
		c.log.Info("connection closed", "err", err)
	}
}

// stopPublishing detaches the connection's publisher, if any.
func (c *conn) stopPublishing() {
	if c.pub != nil {
		c.pub.Close()
		c.endPub()
		c.log.Info("publish stopped")
		c.pub, c.endPub = nil, nil
	}
}

// admit takes a place for a session of the connection's client address
// (hub.Admit); a refusal has been logged.
func (c *conn) admit(action string, name streamname.Name) (*hub.Place, error) {
	place, err := c.srv.hub.Admit(c.srv.proto(), c.remote)
	if err != nil {
		c.limited("viewers-per-ip", action+" refused", "stream", name, "reason", err)
	}
	return place, err
}

// session records the connection as a session of kind on name, in place;
// an operator's kick closes the connection. The connection is admitted: it
// no longer counts against MaxConnectionsPerIP.
func (c *conn) session(kind hub.SessionKind, name streamname.Name, place *hub.Place) (end func()) {
	c.slot.Busy()
	_, end = c.srv.hub.StartSession(hub.Session{Kind: kind, Protocol: "rtmp", Stream: name, RemoteAddr: c.remote, Place: place},
		func() { c.nc.Close() })
	return end
}

func (c *conn) handle(m *rtmp.Message) error {
	switch m.Type {
	case rtmp.TypeCommandAMF0:
		return c.command(m)
	case rtmp.TypeCommandAMF3:
		if len(m.Payload) == 0 {
			return nil
		}
		m.Payload = m.Payload[1:]
		return c.command(m)
	case rtmp.TypeAudio, rtmp.TypeVideo:
		return c.media(m)
	case rtmp.TypeDataAMF0:
		return c.data(m)
	case rtmp.TypeWindowAckSize:
		if len(m.Payload) >= 4 {
			if w := binary.BigEndian.Uint32(m.Payload); w > 0 && w < c.ack.Window {
				c.ack.Window = w
			}
		}
	case rtmp.TypeUserControl:
		if len(m.Payload) >= 6 && binary.BigEndian.Uint16(m.Payload) == rtmp.EventPingRequest {
			return c.control(rtmp.TypeUserControl, rtmp.AppendUserControl(nil, rtmp.EventPingResponse, binary.BigEndian.Uint32(m.Payload[2:])))
		}
	}
	return nil
}

func (c *conn) command(m *rtmp.Message) error {
	cmd, err := rtmp.ParseCommand(m.Payload)
	if err != nil {
		return err
	}
	switch cmd.Name {
	case "connect":
		return c.connect(cmd)
	case "createStream":
		return c.reply(cmd.TxID, nil, float64(playStreamID))
	case "releaseStream", "FCPublish", "getStreamLength", "checkBandwidth", "_checkbw":
		if cmd.TxID == 0 {
			return nil
		}
		return c.reply(cmd.TxID, nil, amf0.Undefined)
	case "publish":
		return c.publish(cmd, m.StreamID)
	case "play":
		return c.play(cmd, m.StreamID)
	case "FCUnpublish", "deleteStream", "closeStream":
		c.stopPublishing()
		return nil
	}
	c.log.Debug("ignoring command", "command", truncate(cmd.Name))
	if cmd.TxID != 0 {
		return c.reply(cmd.TxID, nil, amf0.Undefined)
	}
	return nil
}

func (c *conn) connect(cmd *rtmp.Command) error {
	obj, _ := cmd.Object.(amf0.Object)
	app := strings.Trim(obj.String("app"), "/")
	// Some clients append a query string to the app ("live?token=...").
	c.app, c.appParams = auth.SplitName(app)
	// Some encoders and libraries send only tcUrl, or put the key in its
	// query: the app is its path's first segment, as SRS reads it, and its
	// parameters join the app's.
	urlApp, urlStream, urlParams := splitTcURL(obj.String("tcUrl"))
	if c.app == "" {
		c.app, c.urlStream = urlApp, urlStream
	}
	for k, v := range urlParams {
		if !c.appParams.Has(k) {
			c.appParams[k] = v
		}
	}
	if err := c.control(rtmp.TypeWindowAckSize, rtmp.AppendUint32(nil, ackWindow)); err != nil {
		return err
	}
	if err := c.control(rtmp.TypeSetPeerBandwidth, rtmp.AppendSetPeerBandwidth(nil, ackWindow, 2)); err != nil {
		return err
	}
	if err := c.w.SetChunkSize(playChunkSize); err != nil {
		return err
	}
	props := amf0.Object{{Key: "fmsVer", Value: "FMS/3,0,1,123"}, {Key: "capabilities", Value: 31.0}, {Key: "mode", Value: 1.0}}
	if _, ok := obj.Get("fourCcList"); ok {
		// An enhanced RTMP client (OBS, ffmpeg 6.1 and later) lists the
		// codecs it can send; the answer lists those meshcast takes.
		props = append(props, amf0.Property{Key: "fourCcList", Value: []any{"avc1", "hvc1", "av01"}})
	}
	status := append(rtmp.Status("status", "NetConnection.Connect.Success", "Connection succeeded."), amf0.Property{Key: "objectEncoding", Value: 0.0})
	return c.send(rtmp.CSIDCommand, 0, "_result", cmd.TxID, props, status)
}

// splitTcURL reads a connect's tcUrl, rtmp://HOST[:PORT]/APP[/STREAM][?QUERY]
// (the query may also follow APP): the app, the stream if the URL names
// one, and the query's parameters.
func splitTcURL(tcURL string) (app, stream string, params url.Values) {
	_, rest, ok := strings.Cut(tcURL, "://")
	if !ok {
		return "", "", url.Values{}
	}
	_, path, _ := strings.Cut(rest, "/") // past the host
	path, params = auth.SplitName(path)
	app, stream, _ = strings.Cut(strings.Trim(path, "/"), "/")
	return app, stream, params
}

// streamName validates the name a client gave to publish or play. OBS and
// ffmpeg send the stream key, possibly with a query string: its parameters
// (key, expires, sig, ...) join those sent with the app, and win. A client
// that named the stream in tcUrl alone may send an empty name.
func (c *conn) streamName(raw string) (streamname.Name, url.Values, error) {
	key, params := auth.SplitName(raw)
	if key == "" {
		key = c.urlStream
	}
	for k, v := range c.appParams {
		if !params.Has(k) {
			params[k] = v
		}
	}
	name, err := streamname.New(c.app, key)
	return name, params, err
}

// authorize asks the server's Authorizer whether the client may do action
// on name. A refusal has been logged; its reason is fit for the client.
func (c *conn) authorize(action auth.Action, name streamname.Name, params url.Values) (auth.Grant, error) {
	if c.srv.cfg.Auth == nil {
		return auth.Grant{}, nil
	}
	g, err := c.srv.cfg.Auth.Check(c.srv.ctx, auth.Request{
		Action: action, Name: name, Params: params,
		Remote: auth.RemoteAddr(c.remote), Protocol: "rtmp",
	})
	if err != nil {
		c.log.Info(string(action)+" refused", append([]any{"stream", name, "reason", err}, auth.Hint(err)...)...)
	}
	return g, err
}

func (c *conn) publish(cmd *rtmp.Command, sid uint32) error {
	if c.pub != nil {
		return c.status(sid, "error", "NetStream.Publish.BadName", "already publishing on this connection")
	}
	name, params, err := c.streamName(cmd.Arg(0))
	if err != nil {
		c.log.Info("publish refused: bad name", "err", err)
		c.status(sid, "error", "NetStream.Publish.BadName", "invalid stream name")
		return errClose
	}
	grant, err := c.authorize(auth.Publish, name, params)
	if err != nil {
		c.status(sid, "error", "NetStream.Publish.Unauthorized", err.Error())
		return errClose
	}
	place, err := c.admit("publish", name)
	if err != nil {
		c.status(sid, "error", "NetStream.Publish.Denied", err.Error())
		return errClose
	}
	pub, err := c.srv.hub.Publish(name, stream.PublisherInfo{Protocol: "rtmp", RemoteAddr: c.remote, Credential: grant.Credential})
	if err != nil {
		place.Release()
		c.log.Info("publish refused", "stream", name, "err", err)
		desc := "publish refused"
		if errors.Is(err, hub.ErrBusy) {
			desc = "stream is already being published"
		}
		c.status(sid, "error", "NetStream.Publish.BadName", desc)
		return errClose
	}
	c.pub = pub
	c.endPub = c.session(hub.KindPublish, name, place)
	c.log.attrs = append(c.log.attrs, "stream", name)
	return c.status(sid, "status", "NetStream.Publish.Start", "Start publishing")
}

func (c *conn) media(m *rtmp.Message) error {
	if c.pub == nil {
		return nil // media before publish: ignore, as other servers do
	}
	var p media.Packet
	var err error
	if m.Type == rtmp.TypeAudio {
		p, err = flv.ParseAudio(m.Timestamp, m.Payload)
	} else {
		p, err = flv.ParseVideo(m.Timestamp, m.Payload)
	}
	switch {
	case errors.Is(err, flv.ErrSkip):
		return nil
	case errors.Is(err, flv.ErrUnsupportedCodec):
		c.log.Warn("publish refused: unsupported codec", "err", err)
		c.status(m.StreamID, "error", "NetStream.Publish.Failed", "unsupported codec: meshcast accepts H.264 video and AAC audio")
		return errClose
	case err != nil:
		return fmt.Errorf("bad media message: %w", err)
	}
	p.DTS = c.ts.unwrap(m.Timestamp)
	return c.pub.WritePacket(&p)
}

// data keeps onMetaData (sent by encoders as @setDataFrame) for players.
func (c *conn) data(m *rtmp.Message) error {
	if c.pub == nil {
		return nil
	}
	vs, err := amf0.DecodeAll(m.Payload)
	if err != nil {
		c.log.Debug("ignoring undecodable data message", "err", err)
		return nil
	}
	if len(vs) > 0 && vs[0] == "@setDataFrame" {
		vs = vs[1:]
	}
	if len(vs) < 2 || vs[0] != "onMetaData" {
		return nil
	}
	payload, err := amf0.AppendAll(nil, vs[:2]...)
	if err != nil {
		return nil
	}
	p := &media.Packet{Kind: media.KindData, Codec: media.CodecAMF0, DTS: c.ts.unwrap(m.Timestamp), Payload: payload}
	return c.pub.WritePacket(p)
}

func (c *conn) play(cmd *rtmp.Command, sid uint32) error {
	var handled time.Time
	if traceFirstPictures {
		handled = time.Now()
	}
	name, params, err := c.streamName(cmd.Arg(0))
	if err != nil {
		c.log.Info("play refused: bad name", "err", err)
		c.status(sid, "error", "NetStream.Play.StreamNotFound", "invalid stream name")
		return errClose
	}
	if _, err := c.authorize(auth.Play, name, params); err != nil {
		c.status(sid, "error", "NetStream.Play.Failed", err.Error())
		return errClose
	}
	place, err := c.admit("play", name)
	if err != nil {
		c.status(sid, "error", "NetStream.Play.Failed", err.Error())
		return errClose
	}
	keep := false // the place goes to the session
	defer func() {
		if !keep {
			place.Release()
		}
	}()
	rd, err := c.srv.hub.NewReader(name, "rtmp")
	if err != nil {
		c.log.Info("play refused", "stream", name, "err", err)
		c.status(sid, "error", "NetStream.Play.StreamNotFound", "no such stream")
		return errClose
	}
	if err := c.control(rtmp.TypeUserControl, rtmp.AppendUserControl(nil, rtmp.EventStreamBegin, playStreamID)); err != nil {
		rd.Close()
		return err
	}
	c.status(sid, "status", "NetStream.Play.Reset", "Playing and resetting")
	if err := c.status(sid, "status", "NetStream.Play.Start", "Started playing"); err != nil {
		rd.Close()
		return err
	}
	access, _ := amf0.AppendAll(nil, "|RtmpSampleAccess", true, true)
	c.w.WriteMessage(rtmp.CSIDData, rtmp.TypeDataAMF0, playStreamID, 0, access)
	// The first picture (decoder configuration and keyframe) leaves with
	// the answer: one write, no wait for the sender during a burst of joins.
	first, err := rd.Ready(Format)
	if err == nil {
		c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
		err = c.w.FlushWith(first)
	}
	if err == nil {
		err = c.nc.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		rd.Close()
		return err
	}
	if traceFirstPictures && len(first) > 0 {
		traceFirstPicture(c.remote, rawio.Received(c.rw), handled, time.Now())
	}
	c.log.attrs = append(c.log.attrs, "stream", name)
	c.log.Info("play started")
	c.nc.SetReadDeadline(time.Time{})
	// The sender owns the socket from here: it writes the stream and drops
	// what the player sends (acknowledgements, buffer lengths; a player
	// ends by hanging up). The session's reader and buffers are not needed.
	c.r.Release()
	c.r = nil
	c.w.Release()
	cfg := stream.PumpConfig{WriteTimeout: c.srv.cfg.WriteTimeout, MergeWindow: c.srv.cfg.MergeWindow, Nagle: c.srv.cfg.Nagle}
	keep = true
	end := c.session(hub.KindPlay, name, place)
	c.srv.sender.Send(c.srv.ctx, rd, Format, c.nc, cfg, func(err error) { c.playEnded(rd, end, err) })
	return errPlaying
}

// playEnded runs once the sender is done with a player: it tells the player
// why when the stream ended, and releases the connection.
func (c *conn) playEnded(rd *stream.Reader, endSession func(), err error) {
	defer c.srv.release(c.key)
	defer endSession()
	rd.Close()
	switch {
	case errors.Is(err, io.EOF):
		c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
		c.status(playStreamID, "status", "NetStream.Play.UnpublishNotify", "stream ended")
		c.control(rtmp.TypeUserControl, rtmp.AppendUserControl(nil, rtmp.EventStreamEOF, playStreamID))
		c.w.Flush()
		c.log.Info("play ended: stream ended")
	case errors.Is(err, stream.ErrSlowReader):
		c.log.Warn("play ended: player too slow")
	case errors.Is(err, egress.ErrHungUp):
		c.log.Info("play ended: viewer left")
	case errors.Is(err, context.Canceled):
		c.log.Info("play ended: session closed")
	default:
		c.log.Info("play ended", "err", err)
	}
}

// control queues a protocol control message; the session loop flushes.
func (c *conn) control(typeID uint8, payload []byte) error {
	return c.w.WriteMessage(rtmp.CSIDControl, typeID, 0, 0, payload)
}

// send queues a command message; the session loop flushes.
func (c *conn) send(csid, sid uint32, name string, tx float64, obj any, args ...any) error {
	p, err := rtmp.AppendCommand(nil, name, tx, obj, args...)
	if err != nil {
		return err
	}
	return c.w.WriteMessage(csid, rtmp.TypeCommandAMF0, sid, 0, p)
}

func (c *conn) reply(tx float64, obj any, args ...any) error {
	return c.send(rtmp.CSIDCommand, 0, "_result", tx, obj, args...)
}

func (c *conn) status(sid uint32, level, code, desc string) error {
	return c.send(rtmp.CSIDCommand, sid, "onStatus", 0, nil, rtmp.Status(level, code, desc))
}

// connLog logs with a connection's attributes. Unlike slog.Logger.With it
// keeps the attributes unformatted, so thousands of idle players cost a few
// words each instead of a preformatted handler apiece.
type connLog struct {
	l     *slog.Logger
	attrs []any
}

func (l *connLog) log(level slog.Level, msg string, args []any) {
	if !l.l.Enabled(context.Background(), level) {
		return
	}
	l.l.Log(context.Background(), level, msg, append(append([]any(nil), l.attrs...), args...)...)
}

func (l *connLog) Debug(msg string, args ...any) { l.log(slog.LevelDebug, msg, args) }
func (l *connLog) Info(msg string, args ...any)  { l.log(slog.LevelInfo, msg, args) }
func (l *connLog) Warn(msg string, args ...any)  { l.log(slog.LevelWarn, msg, args) }

// silent reports whether err is a peer that left without sending a byte.
func silent(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// truncate keeps client-chosen strings short in logs.
func truncate(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.ToValidUTF8(s, "?")
}
