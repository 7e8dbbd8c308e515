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
	pmedia "github.com/pion/webrtc/v4/pkg/media"

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
	rd      *stream.Reader
	place   *hub.Place      // the viewer's place under the per-address limit
	pending []*media.Packet // read by probe, not sent yet
	video   *webrtc.TrackLocalStaticSample
	audio   *webrtc.TrackLocalStaticRTP // nil without audio
	sub     *opusSub                    // the stream's Opus; nil without audio
	senders []*webrtc.RTPSender
}

// start negotiates a session and starts sending pl's reader to it.
func (s *Server) start(ctx context.Context, name streamname.Name, offer string, pl *play, remote string) (string, *session, error) {
	rd := pl.rd
	var aac audioKnown
	pl.pending, aac = probe(ctx, rd)
	audio := s.whepAudio(name, offer, aac, pl)
	pc, err := s.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		if pl.sub != nil {
			pl.sub.unsubscribe()
		}
		return "", nil, err
	}
	fail := func(err error) (string, *session, error) {
		pc.Close()
		if pl.sub != nil {
			pl.sub.unsubscribe()
		}
		return "", nil, err
	}
	if pl.video, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000}, "video", "meshcast"); err != nil {
		return fail(err)
	}
	sender, err := pc.AddTrack(pl.video)
	if err != nil {
		return fail(err)
	}
	pl.senders = append(pl.senders, sender)
	if pl.sub != nil {
		// The same stream ID as the video: players sync them as one stream.
		if pl.audio, err = webrtc.NewTrackLocalStaticRTP(opusCodec, "audio", "meshcast"); err != nil {
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
// has AAC audio. The packets read are returned, to be sent.
func probe(ctx context.Context, rd *stream.Reader) ([]*media.Packet, audioKnown) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var pkts []*media.Packet
	for {
		var err error
		if pkts, err = rd.ReadPackets(ctx, pkts); err != nil {
			return pkts, audioUnknown
		}
		aac, frame := false, false
		for _, p := range pkts {
			aac = aac || p.SeqHeader && p.Codec == media.CodecAAC
			frame = frame || !p.SeqHeader && p.Kind != media.KindData
		}
		switch {
		case aac:
			return pkts, audioAAC
		case frame:
			return pkts, audioNone
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
	defer func() {
		ss.cancel()
		pl.rd.Close()
		pl.place.Release() // a session that never connected
		if pl.sub != nil {
			pl.sub.unsubscribe()
		}
		ss.pc.Close()
		s.unregister(ss)
	}()
	log := s.log.With("stream", ss.name, "remote", remote, "session", ss.id)
	// Read the viewer's RTCP, which the interceptors need; the reads end
	// when the connection closes.
	for _, sender := range pl.senders {
		go func() {
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
	var audioDone chan struct{}
	if pl.sub != nil {
		audioDone = make(chan struct{})
		go func() {
			defer close(audioDone)
			sendOpus(ctx, pl.sub, pl.audio)
		}()
	}
	err := feed(ctx, pl.rd, pl.pending, pl.video)
	ss.cancel()
	if audioDone != nil {
		<-audioDone
		log.Info("play ended", "err", err, "opus_dropped", pl.sub.drops.Load())
		return
	}
	log.Info("play ended", "err", err)
}

// sendOpus sends a session's share of its stream's Opus as RTP until ctx
// ends. RTP timestamps follow the packets' place on the stream's
// timeline, from a random start (RFC 3550 §5.1).
func sendOpus(ctx context.Context, sub *opusSub, track *webrtc.TrackLocalStaticRTP) {
	var r [6]byte
	rand.Read(r[:])
	seq, base := binary.BigEndian.Uint16(r[:2]), binary.BigEndian.Uint32(r[2:])
	var first int64
	started := false
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2}}
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-sub.ch:
			if !started {
				first, started = f.pts, true
				pkt.Marker = true // the start of a talkspurt (RFC 3551 §4.1)
			}
			pkt.SequenceNumber = seq
			pkt.Timestamp = base + uint32((f.pts-first)*opusClock/90000)
			pkt.Payload = f.data
			track.WriteRTP(pkt) // fails only for a closing connection, which ends ctx
			seq++
			pkt.Marker = false
		}
	}
}

// feed writes the stream's H.264 frames to track as Annex B access units,
// from a keyframe on, with parameter sets before every keyframe.
func feed(ctx context.Context, rd *stream.Reader, pending []*media.Packet, track *webrtc.TrackLocalStaticSample) error {
	var avc *media.VideoConfig
	started := false
	var last int64
	pkts := append(make([]*media.Packet, 0, 128), pending...)
	for {
		for _, p := range pkts {
			if p.Kind != media.KindVideo || p.Codec != media.CodecH264 {
				continue
			}
			if p.SeqHeader {
				if c, err := media.ParseVideoConfig(p.Codec, p.Payload); err == nil {
					avc = c
				}
				continue
			}
			if avc == nil || (!started && !p.Keyframe) {
				continue
			}
			nalus, err := media.AVCCToNALUs(p.Payload)
			if err != nil || len(nalus) == 0 {
				continue
			}
			nalus = avc.WithParamSets(nalus, p.Keyframe)
			d := 33 * time.Millisecond
			if started && p.DTS > last {
				d = time.Duration(p.DTS-last) * time.Millisecond
			}
			started, last = true, p.DTS
			if err := track.WriteSample(pmedia.Sample{Data: annexB(nalus), Duration: d}); err != nil {
				return err
			}
		}
		clear(pkts)
		var err error
		if pkts, err = rd.ReadPackets(ctx, pkts[:0]); err != nil {
			return err
		}
	}
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
