package webrtc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media/samplebuilder"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Publisher takes a stream's packets (stream.Publisher).
type Publisher interface {
	WritePacket(p *media.Packet) error
	Close()
}

// Publish starts a stream from a WHIP publisher, whose credentials were
// checked first, and returns its writer.
type Publish func(name streamname.Name, remote string) (Publisher, error)

// keyframeAsk is how often a publisher is asked for a keyframe (RTCP PLI)
// until it sends one.
const keyframeAsk = time.Second

// serveWHIP answers POST /APP/STREAM/whip for an admitted publisher: its
// SDP offer (H.264 video, and Opus audio, which is transcoded to the AAC
// streams carry), the answer back with the session's URL in Location.
func (s *Server) serveWHIP(w http.ResponseWriter, r *http.Request, name streamname.Name, publish Publish) {
	offer, ok := s.readOffer(w, r)
	if !ok {
		return
	}
	place, err := s.admit(w, r, name)
	if err != nil {
		return
	}
	// The publisher's Opus is taken when it can be transcoded; else the
	// answer declines it.
	api, ffmpeg, why := s.videoAPI, "", NoAudioOffer
	if offersOpus(offer) {
		if ffmpeg, why = s.tc.reserve(); why == "" {
			api, why = s.whipAPI, AudioAAC
		} else {
			why = noAudioWHIP + why
		}
	}
	release := func() {
		if ffmpeg != "" {
			s.tc.release()
		}
		place.Release()
	}
	refuse := func(pc *webrtc.PeerConnection, code int, err error) {
		pc.Close()
		release()
		s.log.Info("whip refused", "stream", name, "remote", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), code)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		release()
		http.Error(w, "webrtc unavailable", http.StatusInternalServerError)
		return
	}
	answer, err := negotiate(pc, offer)
	if err != nil {
		refuse(pc, http.StatusBadRequest, err)
		return
	}
	pub, err := publish(name, r.RemoteAddr)
	if err != nil {
		refuse(pc, http.StatusForbidden, err)
		return
	}
	var audio atomic.Pointer[string]
	audio.Store(&why)
	ss, ctx := s.newSession(name, "whip", pc, func() string { return *audio.Load() }, nil)
	cancel := ss.cancel
	clock := &whipClock{}
	var videoOnce, audioOnce sync.Once
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		switch {
		case tr.Kind() == webrtc.RTPCodecTypeVideo:
			videoOnce.Do(func() {
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					ingest(ctx, pc, tr, pub, clock)
					cancel()
				}()
			})
		case tr.Kind() == webrtc.RTPCodecTypeAudio && ffmpeg != "" && strings.EqualFold(tr.Codec().MimeType, webrtc.MimeTypeOpus):
			audioOnce.Do(func() {
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					s.ingestOpus(ctx, tr, pub, clock, ffmpeg, &audio, s.log.With("stream", name, "session", ss.id))
				}()
			})
		}
	})
	if !s.register(ss) {
		pc.Close()
		pub.Close()
		release()
		http.Error(w, "server closing", http.StatusServiceUnavailable)
		return
	}
	go func() {
		defer s.wg.Done()
		_, endSession := s.hub.StartSession(hub.Session{Kind: hub.KindPublish, Protocol: "webrtc", Stream: name, RemoteAddr: r.RemoteAddr, Place: place}, cancel)
		log := s.log.With("stream", name, "remote", r.RemoteAddr, "session", ss.id)
		log.Info("publish started", "transport", "whip", "audio", why)
		select {
		case <-ctx.Done():
		case <-time.After(connectTimeout):
			if pc.ConnectionState() != webrtc.PeerConnectionStateConnected {
				log.Info("whip publisher never connected")
				cancel()
			}
			<-ctx.Done()
		}
		pc.Close()
		pub.Close()
		release()
		endSession()
		s.unregister(ss)
		log.Info("publish stopped")
	}()
	s.writeAnswer(w, ss, answer)
}

// negotiate answers an offer with the tracks pc has (WHEP) or takes
// (WHIP), once the server's ICE candidates are gathered.
func negotiate(pc *webrtc.PeerConnection, offer string) (string, error) {
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("bad offer: %w", err)
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("no answer to the offer (it must carry H.264 video): %w", err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(ans); err != nil {
		return "", err
	}
	select {
	case <-gathered:
	case <-time.After(gatherTimeout):
		return "", errors.New("ICE gathering timed out")
	}
	return pc.LocalDescription().SDP, nil
}

// ingest reads a publisher's H.264 RTP, rebuilds its access units and
// writes them to pub, asking for a keyframe until one arrives.
func ingest(ctx context.Context, pc *webrtc.PeerConnection, tr *webrtc.TrackRemote, pub Publisher, clock *whipClock) {
	sb := samplebuilder.New(256, &codecs.H264Packet{}, tr.Codec().ClockRate)
	var z media.NALUPacketizer
	var out []*media.Packet
	rt := rtpTime{rate: int64(tr.Codec().ClockRate), clock: clock}
	gotKey := false
	lastAsk := time.Time{}
	ssrc := uint32(tr.SSRC())
	for ctx.Err() == nil {
		if !gotKey && time.Since(lastAsk) > keyframeAsk {
			pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
			lastAsk = time.Now()
		}
		p, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		sb.Push(p)
		for smp := sb.Pop(); smp != nil; smp = sb.Pop() {
			ms := rt.at(smp.PacketTimestamp, 1000)
			out = z.Packets(out[:0], ms, ms, splitAnnexB(smp.Data))
			for _, pkt := range out {
				gotKey = gotKey || pkt.Keyframe
				if err := pub.WritePacket(pkt); err != nil {
					return
				}
			}
		}
	}
}

// splitAnnexB splits an Annex B access unit into its NAL units.
func splitAnnexB(b []byte) [][]byte {
	var out [][]byte
	start := -1
	for i := 0; i+2 < len(b); i++ {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if start >= 0 {
				end := i
				if end > start && b[end-1] == 0 {
					end--
				}
				if end > start { // two start codes in a row hold no unit
					out = append(out, b[start:end])
				}
			}
			start = i + 3
			i += 2
		}
	}
	if start >= 0 && start < len(b) {
		out = append(out, b[start:])
	} else if start < 0 && len(b) > 0 {
		out = append(out, b) // a single NAL unit without a start code
	}
	return out
}
