package webrtc

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

// serveWHEP answers POST /APP/STREAM/whep for an admitted player: an SDP
// offer in, the answer out (201, with the session's URL in Location).
func (s *Server) serveWHEP(w http.ResponseWriter, r *http.Request, name streamname.Name) {
	offer, ok := s.readOffer(w, r)
	if !ok {
		return
	}
	place, err := s.admit(w, r, name)
	if err != nil {
		return
	}
	rd, err := s.hub.NewReader(name, "webrtc")
	if err != nil {
		place.Release()
		http.Error(w, "stream not found", http.StatusNotFound)
		return
	}
	answer, ss, err := s.start(r.Context(), name, offer, &play{rd: rd, place: place}, r.RemoteAddr)
	if err != nil {
		rd.Close()
		place.Release()
		s.log.Info("whep refused", "stream", name, "remote", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.writeAnswer(w, ss, answer)
}

// play is what a WHEP session sends.
type play struct {
	// rd counts the viewer among its stream's readers, as the API and
	// the metrics count viewers; it reads only the stream's first
	// packets (probe). The video comes from the stream's feed.
	rd      *stream.Reader
	place   *hub.Place // the viewer's place under the per-address limit
	feed    *feed      // the stream's video, shared
	video   *videoSender
	audio   *webrtc.TrackLocalStaticRTP // nil without audio
	sub     *opusSub                    // the stream's Opus; nil without audio
	senders []*webrtc.RTPSender         // video first
}

// start negotiates a session and starts sending the stream to it.
func (s *Server) start(ctx context.Context, name streamname.Name, offer string, pl *play, remote string) (string, *session, error) {
	aac := probe(ctx, pl.rd)
	// The probe's packets are not kept: the reader holds nothing of the
	// stream while the session lasts.
	pl.rd.Release()
	f, err := s.acquireFeed(name)
	if err != nil {
		return "", nil, err
	}
	pl.feed = f
	audio := s.whepAudio(name, offer, aac, pl)
	pc, err := s.whepAPI.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		s.releaseFeed(f)
		if pl.sub != nil {
			pl.sub.unsubscribe()
		}
		return "", nil, err
	}
	fail := func(err error) (string, *session, error) {
		pc.Close()
		s.releaseFeed(f)
		if pl.sub != nil {
			pl.sub.unsubscribe()
		}
		return "", nil, err
	}
	track := &videoTrack{}
	pl.video = newVideoSender(f, track)
	sender, err := pc.AddTrack(track)
	if err != nil {
		return fail(err)
	}
	pl.senders = append(pl.senders, sender)
	if pl.sub != nil {
		// The same stream ID as the video: players sync them as one stream.
		if pl.audio, err = webrtc.NewTrackLocalStaticRTP(opusCodec, "audio", track.StreamID()); err != nil {
			return fail(err)
		}
		if sender, err = pc.AddTrack(pl.audio); err != nil {
			return fail(err)
		}
		pl.senders = append(pl.senders, sender)
	}
	answer, err := negotiate(pc, offer)
	if err != nil {
		return fail(err)
	}
	connected := make(chan struct{})
	var once sync.Once
	ss, sctx := s.newSession(name, "whep", pc, audio, func() { once.Do(func() { close(connected) }) })
	ss.video = pl.video
	if !s.register(ss) {
		return fail(errors.New("server closing"))
	}
	go s.run(sctx, ss, pl, connected, remote)
	return answer, ss, nil
}

// audioKnown is what a stream's first packets say about its audio.
type audioKnown int

const (
	audioUnknown audioKnown = iota // no packets yet
	audioAAC
	audioNone
)

// probe reads a new reader's first packets (decoder configuration, then
// the keyframe), for at most probeTimeout, to learn whether the stream
// has AAC audio.
func probe(ctx context.Context, rd *stream.Reader) audioKnown {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var pkts []*media.Packet
	for {
		var err error
		if pkts, err = rd.ReadPackets(ctx, pkts[:0]); err != nil {
			return audioUnknown
		}
		aac, frame := false, false
		for _, p := range pkts {
			aac = aac || p.SeqHeader && p.Codec == media.CodecAAC
			frame = frame || !p.SeqHeader && p.Kind != media.KindData
		}
		switch {
		case aac:
			return audioAAC
		case frame:
			return audioNone
		}
	}
}

// whepAudio decides a WHEP session's audio: the stream's Opus (pl.sub),
// when the offer takes Opus and the stream has AAC (or may have: its
// first packets are late), else none. It returns what the session says
// about its audio.
func (s *Server) whepAudio(name streamname.Name, offer string, aac audioKnown, pl *play) func() string {
	why := ""
	switch {
	case !offersOpus(offer):
		why = NoAudioOffer
	case aac == audioNone:
		why = NoAudioStream
	default:
		pl.sub, why = s.tc.subscribe(name)
	}
	if pl.sub != nil {
		return pl.sub.audio
	}
	return func() string { return why }
}

// offersOpus reports whether an SDP offer has an audio section with Opus.
func offersOpus(offer string) bool {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(offer); err != nil {
		return false
	}
	for _, md := range sd.MediaDescriptions {
		if md.MediaName.Media != "audio" || md.MediaName.Port.Value == 0 {
			continue
		}
		for _, a := range md.Attributes {
			if a.Key == "rtpmap" && strings.Contains(strings.ToLower(a.Value), "opus/48000") {
				return true
			}
		}
	}
	return false
}

// run sends the stream to a session until it ends.
func (s *Server) run(ctx context.Context, ss *session, pl *play, connected <-chan struct{}, remote string) {
	defer s.wg.Done()
	// Read the viewer's RTCP: the video's NACKs and keyframe requests,
	// and what the sender reports' interceptor and SRTP need drained.
	// The reads end when the connection closes.
	var rtcp sync.WaitGroup
	defer func() {
		ss.cancel()
		ss.pc.Close()
		rtcp.Wait()
		pl.rd.Close()
		pl.place.Release() // a session that never connected
		s.releaseFeed(pl.feed)
		if pl.sub != nil {
			pl.sub.unsubscribe()
		}
		s.unregister(ss)
	}()
	log := s.log.With("stream", ss.name, "remote", remote, "session", ss.id)
	for i, sender := range pl.senders {
		rtcp.Add(1)
		go func() {
			defer rtcp.Done()
			if i == 0 {
				pl.video.readRTCP(sender)
				return
			}
			buf := make([]byte, 1500)
			for {
				if _, _, err := sender.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	select {
	case <-connected:
	case <-ctx.Done():
		return
	case <-time.After(connectTimeout):
		log.Info("webrtc viewer never connected")
		return
	}
	_, endSession := s.hub.StartSession(hub.Session{Kind: hub.KindPlay, Protocol: "webrtc", Stream: ss.name, RemoteAddr: remote, Place: pl.place}, ss.cancel)
	defer endSession()
	log.Info("play started", "audio", ss.audio())
	var audio *opusSender
	if pl.sub != nil {
		audio = newOpusSender(pl.sub, pl.audio)
	}
	err := pl.video.send(ctx, audio)
	v := pl.video
	attrs := []any{"err", err, "skips", v.cur.skips, "nacked", v.nacked.Load(), "resent", v.resent.Load(), "plis", v.plis.Load(), "firs", v.firs.Load()}
	if audio != nil {
		attrs = append(attrs, "opus_dropped", pl.sub.drops.Load())
	}
	log.Info("play ended", attrs...)
}

// opusSender sends a session's share of its stream's Opus as RTP. RTP
// timestamps follow the packets' place on the stream's timeline, from a
// random start (RFC 3550 §5.1).
type opusSender struct {
	sub     *opusSub
	track   *webrtc.TrackLocalStaticRTP
	pkt     rtp.Packet
	base    uint32
	first   int64
	started bool
}

func newOpusSender(sub *opusSub, track *webrtc.TrackLocalStaticRTP) *opusSender {
	var r [6]byte
	rand.Read(r[:])
	o := &opusSender{sub: sub, track: track, base: binary.BigEndian.Uint32(r[2:])}
	o.pkt.Version, o.pkt.SequenceNumber = 2, binary.BigEndian.Uint16(r[:2])
	return o
}

// write sends a packet of the stream's Opus.
func (o *opusSender) write(f opusFrame) {
	if !o.started {
		o.first, o.started = f.pts, true
		o.pkt.Marker = true // the start of a talkspurt (RFC 3551 §4.1)
	}
	o.pkt.Timestamp = o.base + uint32((f.pts-o.first)*opusClock/90000)
	o.pkt.Payload = f.data
	o.track.WriteRTP(&o.pkt) // fails only for a closing connection, which ends the session
	o.pkt.SequenceNumber++
	o.pkt.Marker = false
}

// annexB joins NAL units with start codes.
func annexB(nalus [][]byte) []byte {
	n := 0
	for _, u := range nalus {
		n += 4 + len(u)
	}
	b := make([]byte, 0, n)
	for _, u := range nalus {
		b = append(b, 0, 0, 0, 1)
		b = append(b, u...)
	}
	return b
}
