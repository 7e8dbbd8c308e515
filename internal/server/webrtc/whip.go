package webrtc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media/samplebuilder"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
)

// Publisher takes a stream's packets (stream.Publisher).
type Publisher interface {
	WritePacket(p *media.Packet) error
	Close()
}

// Publish starts a stream from a WHIP publisher and returns its writer;
// the node checks the publisher's credentials first.
type Publish func(name stream.Name, remote string) (Publisher, error)

// keyframeAsk is how often a publisher is asked for a keyframe (RTCP PLI)
// until it sends one.
const keyframeAsk = time.Second

// ServeWHIP answers POST /APP/STREAM/whip: a publisher's SDP offer (H.264
// video; audio is not taken: the streams carry AAC, which WebRTC lacks),
// the answer back with the session's URL in Location.
func (s *Server) ServeWHIP(w http.ResponseWriter, r *http.Request, name stream.Name, publish Publish) {
	offer, err := io.ReadAll(io.LimitReader(r.Body, MaxOfferBytes+1))
	if err != nil || len(offer) == 0 || len(offer) > MaxOfferBytes {
		http.Error(w, "the body must be an SDP offer of at most 64 KiB", http.StatusBadRequest)
		return
	}
	if s.Sessions() >= s.cfg.MaxSessions {
		http.Error(w, "too many WebRTC sessions", http.StatusServiceUnavailable)
		return
	}
	pc, err := s.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		http.Error(w, "webrtc unavailable", http.StatusInternalServerError)
		return
	}
	answer, err := negotiate(pc, string(offer))
	if err != nil {
		pc.Close()
		s.log.Info("whip refused", "stream", name, "remote", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	pub, err := publish(name, r.RemoteAddr)
	if err != nil {
		pc.Close()
		s.log.Info("whip refused", "stream", name, "remote", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	var id [8]byte
	rand.Read(id[:])
	ctx, cancel := context.WithCancel(s.ctx)
	ss := &session{id: hex.EncodeToString(id[:]), name: name, kind: "whip", started: time.Now(), pc: pc, cancel: cancel}
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateFailed || st == webrtc.PeerConnectionStateClosed || st == webrtc.PeerConnectionStateDisconnected {
			cancel()
		}
	})
	var once sync.Once
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if tr.Kind() != webrtc.RTPCodecTypeVideo {
			return // not taken: the stream's audio would be AAC
		}
		once.Do(func() {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				ingest(ctx, pc, tr, pub)
				cancel()
			}()
		})
	})
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		cancel()
		pc.Close()
		pub.Close()
		http.Error(w, "server closing", http.StatusServiceUnavailable)
		return
	}
	s.sessions[ss.id] = ss
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		_, endSession := s.hub.StartSession(hub.Session{Kind: hub.KindPublish, Protocol: "webrtc", Stream: name, RemoteAddr: r.RemoteAddr}, cancel)
		log := s.log.With("stream", name, "remote", r.RemoteAddr, "session", ss.id)
		log.Info("publish started", "transport", "whip")
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
		endSession()
		s.mu.Lock()
		delete(s.sessions, ss.id)
		s.mu.Unlock()
		log.Info("publish stopped")
	}()
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", SessionPath+ss.id)
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, answer)
}

// negotiate answers a publisher's offer, receiving its video.
func negotiate(pc *webrtc.PeerConnection, offer string) (string, error) {
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("bad offer: %w", err)
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("no answer to the offer (it must send H.264 video): %w", err)
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
func ingest(ctx context.Context, pc *webrtc.PeerConnection, tr *webrtc.TrackRemote, pub Publisher) {
	sb := samplebuilder.New(256, &codecs.H264Packet{}, tr.Codec().ClockRate)
	var z media.H264Packetizer
	var out []*media.Packet
	var first uint32
	started, gotKey := false, false
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
			if !started {
				first, started = smp.PacketTimestamp, true
			}
			ms := int64(smp.PacketTimestamp-first) * 1000 / int64(tr.Codec().ClockRate)
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
				out = append(out, b[start:end])
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
