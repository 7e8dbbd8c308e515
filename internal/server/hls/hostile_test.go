package hls

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/stream"
)

// TestGarbageFrames feeds the muxer frames of random NAL units and OBUs
// behind valid HEVC and AV1 configurations: gohlslib refuses them or
// writes them, the node neither panics nor stops answering.
func TestGarbageFrames(t *testing.T) {
	for _, tc := range []struct {
		codec  media.Codec
		config string
	}{
		{media.CodecH265, "../../media/testdata/x265.hvcC"},
		{media.CodecAV1, "../../media/testdata/svtav1.av1C"},
	} {
		t.Run(tc.codec.String(), func(t *testing.T) {
			cfg, err := os.ReadFile(tc.config)
			if err != nil {
				t.Fatal(err)
			}
			var logs syncBuffer
			f := newFixture(t, Config{Logger: slog.New(slog.NewTextHandler(io.MultiWriter(&logs, t.Output()), nil))})
			defer f.close()
			pub, err := f.st.Attach(stream.PublisherInfo{Protocol: "test"})
			if err != nil {
				t.Fatal(err)
			}
			defer pub.Close()
			if err := pub.WritePacket(&media.Packet{Kind: media.KindVideo, Codec: tc.codec, SeqHeader: true, Payload: cfg}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			go func() {
				defer close(done)
				rng := rand.New(rand.NewPCG(1, uint64(tc.codec)))
				for i := range 300 {
					if ctx.Err() != nil {
						return
					}
					// Timestamps that stall and step back now and then,
					// and random composition offsets, which AV1 cannot
					// have.
					dts := int64(i*40 - rng.IntN(3)*40)
					p := &media.Packet{Kind: media.KindVideo, Codec: tc.codec, DTS: dts, CTS: int32(rng.IntN(200)), Keyframe: i%25 == 0}
					p.Payload = garbageFrame(rng, tc.codec)
					if err := pub.WritePacket(p); err != nil {
						return
					}
					time.Sleep(2 * time.Millisecond)
				}
			}()
			// The playlist request starts the muxer while garbage flows.
			ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel2()
			req, _ := http.NewRequestWithContext(ctx2, "GET", f.url("index.m3u8"), nil)
			if resp, err := f.client.Do(req); err == nil {
				resp.Body.Close()
			}
			<-done
			if code, _, _ := f.get("nothing.txt"); code == 0 {
				t.Fatal("the server stopped answering")
			}
			if strings.Contains(logs.String(), "muxer panicked") {
				t.Error("gohlslib panicked on the frames")
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// garbageFrame is a frame of random units in the framing codec needs, so
// that it gets past ingest's checks: length-prefixed NAL units with random
// headers for HEVC, size-delimited OBUs of random types for AV1.
func garbageFrame(rng *rand.Rand, codec media.Codec) []byte {
	units := make([][]byte, 1+rng.IntN(4))
	for i := range units {
		u := make([]byte, 2+rng.IntN(64))
		for j := range u {
			u[j] = byte(rng.Uint32())
		}
		if codec == media.CodecH265 {
			u[0] &= 0x7e // forbidden_zero_bit clear, any type
			units[i] = u
		} else {
			u[0] = u[0]&0x78 | 0x02 // any type, no extension, with a size
			units[i] = append([]byte{u[0], byte(len(u) - 1)}, u[1:]...)
		}
	}
	if codec == media.CodecH265 {
		return media.NALUsToAVCC(units)
	}
	var b []byte
	for _, u := range units {
		b = append(b, u...)
	}
	return b
}
