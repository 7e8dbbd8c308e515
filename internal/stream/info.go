package stream

import (
	"time"

	"github.com/meshcast/meshcast/internal/media"

	"github.com/meshcast/meshcast/internal/streamname"
)

// Info describes a stream for the API: codecs, picture, bitrate, publisher.
type Info struct {
	Name        streamname.Name
	Publisher   PublisherInfo
	PublishedAt time.Time
	Live        bool // a publisher is attached
	Video       *VideoTrack
	Audio       *AudioTrack
	BitrateBPS  int64 // measured input bitrate, bits per second
	Readers     map[string]int
	Created     time.Time
}

// VideoTrack describes the video track from its decoder configuration.
type VideoTrack struct {
	Codec   string
	Width   int
	Height  int
	FPS     float64
	Profile string
	Level   string
}

// AudioTrack describes the audio track from its decoder configuration.
type AudioTrack struct {
	Codec      string
	SampleRate int
	Channels   int
	Profile    string
}

// Info returns a snapshot of the stream's description.
func (s *Stream) Info() Info {
	s.mu.RLock()
	defer s.mu.RUnlock()
	in := s.info
	in.Name = s.name
	in.Live = s.pub != nil
	in.Created = s.created
	in.BitrateBPS = s.rate.bitsPerSecond(time.Now())
	in.Readers = make(map[string]int, len(s.readers))
	for k, v := range s.readers {
		in.Readers[k] = v
	}
	if in.Video != nil {
		v := *in.Video
		in.Video = &v
	}
	if in.Audio != nil {
		a := *in.Audio
		in.Audio = &a
	}
	return in
}

// updateInfo refreshes track descriptions from a configuration packet.
// Caller holds s.mu.
func (s *Stream) updateInfo(p *media.Packet) {
	switch {
	case p.Kind == media.KindVideo:
		s.info.Video = &VideoTrack{Codec: p.Codec.String()}
		c, err := media.ParseVideoConfig(p.Codec, p.Payload)
		if err != nil {
			return
		}
		if vi, err := c.Info(); err == nil {
			s.info.Video = &VideoTrack{Codec: p.Codec.String(), Width: vi.Width, Height: vi.Height, FPS: vi.FPS, Profile: vi.Profile, Level: vi.Level}
		}
	case p.Kind == media.KindAudio && p.Codec == media.CodecAAC:
		cfg, err := media.ParseAACConfig(p.Payload)
		if err != nil {
			s.info.Audio = &AudioTrack{Codec: "aac"}
			return
		}
		s.info.Audio = &AudioTrack{Codec: "aac", SampleRate: cfg.SampleRate, Channels: cfg.Channels, Profile: cfg.Profile()}
	}
}

// rateMeter measures a byte rate over the last few whole seconds with
// per-second buckets; it allocates nothing.
type rateMeter struct {
	buckets [8]int64
	secs    [8]int64
}

const rateWindow = 5 // seconds averaged

func (m *rateMeter) add(now time.Time, n int) {
	sec := now.Unix()
	i := sec & 7
	if m.secs[i] != sec {
		m.secs[i] = sec
		m.buckets[i] = 0
	}
	m.buckets[i] += int64(n)
}

// bitsPerSecond averages the last rateWindow complete seconds.
func (m *rateMeter) bitsPerSecond(now time.Time) int64 {
	sec := now.Unix()
	var sum int64
	for k := int64(1); k <= rateWindow; k++ {
		i := (sec - k) & 7
		if m.secs[i] == sec-k {
			sum += m.buckets[i]
		}
	}
	return sum * 8 / rateWindow
}
