package stream

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/flv"
)

var flvFormat = NewFormat("flv-bench", func(p *media.Packet) []byte {
	return flv.AppendTag(make([]byte, 0, flv.TagSize(p)), p)
})

// countingWriter acknowledges each packet written to it. net.Buffers writes
// one buffer per packet to a plain writer, so each Write is one packet.
type countingWriter struct {
	wg    *sync.WaitGroup
	bytes int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.bytes += int64(len(p))
	w.wg.Done()
	return len(p), nil
}
func (w *countingWriter) SetWriteDeadline(time.Time) error { return nil }

// realisticPackets is one second of a 2 Mbit/s 30 fps H.264 + AAC stream:
// a 40 KB keyframe every 2 s, ~8 KB inter frames, 47 AAC frames of ~370 B.
func realisticPackets() []*media.Packet {
	var pkts []*media.Packet
	for i := 0; i < 60; i++ {
		size := 7800
		if i == 0 {
			size = 40000
		}
		dts := int64(i) * 33
		pkts = append(pkts, &media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: dts, Keyframe: i == 0, Payload: make([]byte, size)})
		if i%30 < 23 || i%30 == 29 { // ~47 audio frames per second, interleaved
			pkts = append(pkts, &media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: dts, Payload: make([]byte, 370)})
		}
	}
	return pkts
}

// BenchmarkFanout measures the cost of delivering one packet to one reader:
// one publisher, N readers each pumping FLV tags through a vectored write.
// The publisher waits for every reader after each burst, so readers never
// skip; burst=1 wakes every reader for every packet (the worst case).
func BenchmarkFanout(b *testing.B) {
	for _, readers := range []int{1000} {
		for _, burst := range []int{1, 8} {
			b.Run(fmt.Sprintf("readers=%d/burst=%d", readers, burst), func(b *testing.B) {
				benchFanout(b, readers, burst)
			})
		}
	}
}

func benchFanout(b *testing.B, readers, burst int) {
	s := New("live/bench", Config{})
	pub, _ := s.Attach(PublisherInfo{})
	cfg := []*media.Packet{
		{Kind: media.KindVideo, Codec: media.CodecH264, SeqHeader: true, Payload: avcC},
		{Kind: media.KindAudio, Codec: media.CodecAAC, SeqHeader: true, Payload: asc},
	}
	src := realisticPackets()
	var wg sync.WaitGroup
	wg.Add(readers * 3) // config + first keyframe
	for _, p := range cfg {
		pub.WritePacket(p)
	}
	first := *src[0]
	pub.WritePacket(&first)
	ctx, cancel := context.WithCancel(context.Background())
	var done sync.WaitGroup
	for i := 0; i < readers; i++ {
		r, _ := s.NewReader("bench")
		done.Add(1)
		go func() {
			defer done.Done()
			defer r.Close()
			r.Pump(ctx, flvFormat, &countingWriter{wg: &wg}, PumpConfig{WriteTimeout: time.Minute})
		}()
	}
	wg.Wait()

	// Packets are immutable once written: make the copies up front.
	pkts := make([]media.Packet, b.N)
	var payload int64
	for i := range pkts {
		pkts[i] = *src[(i+1)%len(src)]
		pkts[i].DTS = int64(1000 + i*14)
		payload += int64(len(pkts[i].Payload))
	}
	runtime.GC()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	for i := 0; i < b.N; i += burst {
		n := min(burst, b.N-i)
		wg.Add(readers * n)
		for k := 0; k < n; k++ {
			pub.WritePacket(&pkts[i+k])
		}
		wg.Wait()
	}
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	cancel()
	s.Close()
	done.Wait()
	perPktReader := float64(b.Elapsed().Nanoseconds()) / float64(b.N) / float64(readers)
	b.ReportMetric(perPktReader, "ns/pkt/reader")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(b.N)/float64(readers), "allocs/pkt/reader")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(b.N), "allocs/pkt")
	b.SetBytes(payload / int64(b.N) * int64(readers))
}
