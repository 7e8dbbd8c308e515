package stream

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/media"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	avcC = []byte{1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 2, 0x68, 0xeb}
	asc  = []byte{0x11, 0x90}
)

func vcfg(dts int64) *media.Packet {
	return &media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: dts, SeqHeader: true, Payload: avcC}
}
func acfg(dts int64) *media.Packet {
	return &media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: dts, SeqHeader: true, Payload: asc}
}
func vframe(dts int64, key bool, size int) *media.Packet {
	return &media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: dts, Keyframe: key, Payload: make([]byte, size)}
}
func aframe(dts int64) *media.Packet {
	return &media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: dts, Payload: make([]byte, 300)}
}

func newPublished(t *testing.T, cfg Config) (*Stream, *Publisher) {
	t.Helper()
	s := New("live/test", cfg)
	p, err := s.Attach(PublisherInfo{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return s, p
}

func write(t *testing.T, p *Publisher, pkts ...*media.Packet) {
	t.Helper()
	for _, pkt := range pkts {
		if err := p.WritePacket(pkt); err != nil {
			t.Fatal(err)
		}
	}
}

// gop writes a keyframe at dts and n-1 inter frames 33 ms apart, with audio.
func gop(t *testing.T, p *Publisher, dts int64, n int) int64 {
	t.Helper()
	for i := 0; i < n; i++ {
		write(t, p, vframe(dts, i == 0, 1000), aframe(dts))
		dts += 33
	}
	return dts
}

// read waits for packets, then takes everything else already logged (a
// joining reader gets its keyframe in a batch of its own).
func read(t *testing.T, r *Reader) []*media.Packet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	pkts, err := r.ReadPackets(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		more, err := r.ReadPackets(ctx, nil)
		cancel()
		if err != nil {
			return pkts
		}
		pkts = append(pkts, more...)
	}
}

func TestReaderStartsAtNewestKeyframeWithConfigFirst(t *testing.T) {
	s, p := newPublished(t, Config{})
	write(t, p, vcfg(0), acfg(0))
	dts := gop(t, p, 0, 10)
	keyDTS := dts
	gop(t, p, dts, 5)

	r, err := s.NewReader("test")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// The first batch is the decoder configuration and the keyframe alone,
	// so a crowd of joining viewers each get a first frame quickly.
	first, err := r.ReadPackets(context.Background(), nil)
	if err != nil || len(first) != 3 || !first[2].Keyframe {
		t.Fatalf("first batch: %d packets, %v; want configuration and keyframe", len(first), err)
	}
	pkts := append(first, read(t, r)...)
	if len(pkts) != 2+10 {
		t.Fatalf("got %d packets, want 2 config + 10 from the newest keyframe", len(pkts))
	}
	if !pkts[0].SeqHeader || pkts[0].Kind != media.KindVideo || !pkts[1].SeqHeader || pkts[1].Kind != media.KindAudio {
		t.Fatalf("config not first: %+v %+v", pkts[0], pkts[1])
	}
	if pkts[0].DTS != keyDTS || pkts[1].DTS != keyDTS {
		t.Errorf("config restamped to %d/%d, want the join point %d", pkts[0].DTS, pkts[1].DTS, keyDTS)
	}
	if !pkts[2].Keyframe || pkts[2].DTS != keyDTS {
		t.Errorf("first frame %+v, want the keyframe at %d", pkts[2], keyDTS)
	}
}

func TestReaderWaitsForKeyframeWithoutGOPCache(t *testing.T) {
	s, p := newPublished(t, Config{})
	write(t, p, vcfg(0), acfg(0))
	r, _ := s.NewReader("test")
	defer r.Close()
	write(t, p, vframe(0, true, 10)) // session's first keyframe
	pkts := read(t, r)
	if len(pkts) != 3 || !pkts[2].Keyframe {
		t.Fatalf("got %d packets, want config then keyframe", len(pkts))
	}
}

func TestPublisherNeverWaitsAndLogIsBounded(t *testing.T) {
	s, p := newPublished(t, Config{MaxPackets: 256, MaxBytes: 1 << 20})
	r, _ := s.NewReader("test") // never reads
	defer r.Close()
	write(t, p, vcfg(0), acfg(0))
	done := make(chan struct{})
	go func() {
		defer close(done)
		dts := int64(0)
		for i := 0; i < 200; i++ {
			dts = gop(t, p, dts, 60)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("publisher blocked")
	}
	st := s.Stats()
	if st.LogPackets > 256 || st.LogBytes > 1<<20 {
		t.Errorf("log holds %d packets, %d bytes; bounds are 256 and 1 MiB", st.LogPackets, st.LogBytes)
	}
}

func TestSlowReaderSkipsThenCloses(t *testing.T) {
	s, p := newPublished(t, Config{MaxLag: time.Second, MaxSkips: 2})
	write(t, p, vcfg(0), acfg(0))
	dts := gop(t, p, 0, 30)
	r, _ := s.NewReader("test")
	defer r.Close()
	read(t, r)
	for skip := 1; skip <= 3; skip++ {
		dts = gop(t, p, dts, 30) // two GOPs, 2 s of media, ahead of the reader
		dts = gop(t, p, dts, 30)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		pkts, err := r.ReadPackets(ctx, nil)
		cancel()
		if skip <= 2 {
			if err != nil {
				t.Fatalf("skip %d: %v", skip, err)
			}
			if got := s.Stats().Skips; got != uint64(skip) {
				t.Fatalf("skips %d, want %d", got, skip)
			}
			// After a skip the reader is at the newest keyframe.
			var first *media.Packet
			for _, pk := range pkts {
				if !pk.SeqHeader {
					first = pk
					break
				}
			}
			if first == nil || !first.Keyframe || dts-first.DTS > 30*33 {
				t.Fatalf("skip %d resumed at %+v", skip, first)
			}
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
				_, err := r.ReadPackets(ctx, nil)
				cancel()
				if err != nil {
					break
				}
			}
			continue
		}
		if !errors.Is(err, ErrSlowReader) {
			t.Fatalf("third lag: %v, want ErrSlowReader", err)
		}
	}
}

func TestTimestampsContinueAcrossPublisherSessions(t *testing.T) {
	s, p := newPublished(t, Config{})
	write(t, p, vcfg(0), acfg(0))
	gop(t, p, 5000, 30)
	r, _ := s.NewReader("test")
	defer r.Close()
	pkts := read(t, r)
	last := pkts[len(pkts)-1].DTS
	p.Close()

	p2, err := s.Attach(PublisherInfo{})
	if err != nil {
		t.Fatal(err)
	}
	// A new encoder starts from zero, and may send an inter frame first.
	write(t, p2, vcfg(0), acfg(0), vframe(0, false, 10), vframe(0, true, 10), aframe(0), vframe(33, false, 10))
	pkts = read(t, r)
	var frames []*media.Packet
	for _, pk := range pkts {
		if pk.Kind == media.KindVideo && !pk.SeqHeader {
			frames = append(frames, pk)
		}
	}
	if len(frames) != 2 || !frames[0].Keyframe {
		t.Fatalf("after reconnect got %d frames, first key=%v; want to resume at the keyframe", len(frames), len(frames) > 0 && frames[0].Keyframe)
	}
	for _, pk := range pkts {
		if pk.DTS <= last-1 {
			t.Fatalf("timestamp %d after reconnect is not after %d", pk.DTS, last)
		}
	}
}

// TestRelayResumeKeepsUpstreamTimestamps: a relay's resumed pull keeps
// its new upstream's timestamps when they come after the stream's newest,
// so that the relay's timeline stays its owner's; one behind is rebased
// to follow, by at least the time that passed.
func TestRelayResumeKeepsUpstreamTimestamps(t *testing.T) {
	s, p := newPublished(t, Config{})
	write(t, p, vcfg(0), acfg(0))
	end := gop(t, p, 1000, 10) - 33 // the newest timestamp
	r, _ := s.NewReader("test")
	defer r.Close()
	read(t, r)

	// The new owner continued the timeline 1.5 s later.
	p.Restart()
	write(t, p, vcfg(end+1500), vframe(end+1500, true, 10), vframe(end+1533, false, 10))
	pkts := read(t, r)
	if first := pkts[0].DTS; first != end+1500 {
		t.Fatalf("resumed pull starts at %d, want the upstream's %d", first, end+1500)
	}
	end += 1533

	// An upstream that started again from zero: rebased after the newest.
	time.Sleep(20 * time.Millisecond)
	p.Restart()
	write(t, p, vcfg(0), vframe(0, true, 10), vframe(33, false, 10))
	pkts = read(t, r)
	if first := pkts[0].DTS; first < end+20 || first > end+1000 {
		t.Fatalf("rebased pull starts at %d, want 20 ms or a little more after %d", first, end)
	}

	// A publisher's new session is rebased even when ahead: its encoder's
	// clock is its own.
	end = pkts[len(pkts)-1].DTS
	p.Close()
	p2, err := s.Attach(PublisherInfo{})
	if err != nil {
		t.Fatal(err)
	}
	write(t, p2, vcfg(end+60_000), vframe(end+60_000, true, 10))
	if first := read(t, r)[0].DTS; first <= end || first > end+1000 {
		t.Fatalf("new publisher session starts at %d, want just after %d", first, end)
	}
}

// TestFollowContinuesAnotherTimeline: a stream without packets told to
// follow a position (a previous owner's, from the registry) starts its
// first session after it by the time that passed, at least 1 ms and at
// most ResumeWindow whatever the clocks say; a stream with packets keeps
// its own timeline.
func TestFollowContinuesAnotherTimeline(t *testing.T) {
	window := ResumeWindow.Milliseconds()
	for _, tc := range []struct {
		name     string
		ago      time.Duration // how long before now the position was seen
		min, max int64         // the first timestamp's distance from it
	}{
		{"seconds ago", 2 * time.Second, 2000, 2500},
		{"in the future (a clock ahead)", -10 * time.Second, 1, 1},
		{"long ago", 5 * time.Minute, window, window},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New("live/test", Config{})
			const prior = 90_000
			s.Follow(Position{DTS: prior, At: time.Now().Add(-tc.ago)})
			if pos, ok := s.Position(); !ok || pos.DTS != prior {
				t.Fatalf("position %+v, %v before the first packet; want the followed %d", pos, ok, prior)
			}
			p, err := s.Attach(PublisherInfo{})
			if err != nil {
				t.Fatal(err)
			}
			r, _ := s.NewReader("test")
			defer r.Close()
			// A new encoder, from zero.
			write(t, p, vcfg(0), acfg(0), vframe(0, true, 10), vframe(33, false, 10))
			pkts := read(t, r)
			if d := pkts[0].DTS - prior; d < tc.min || d > tc.max {
				t.Fatalf("first timestamp %d, %d ms after the followed %d; want %d to %d", pkts[0].DTS, d, prior, tc.min, tc.max)
			}
			if last := pkts[len(pkts)-1].DTS; last != pkts[0].DTS+33 {
				t.Fatalf("last timestamp %d, want the session's own spacing after %d", last, pkts[0].DTS)
			}
			pos, ok := s.Position()
			if !ok || pos.DTS != pkts[len(pkts)-1].DTS || time.Since(pos.At) > time.Second {
				t.Fatalf("position %+v after writing; want the newest timestamp, just now", pos)
			}

			// Once it has packets, a stream keeps its own timeline.
			s.Follow(Position{DTS: 10 * prior, At: time.Now()})
			if again, _ := s.Position(); again != pos {
				t.Fatalf("position %+v after following another, want %+v kept", again, pos)
			}
		})
	}
}

// The two whole GOPs a rewound reader may start with are kept only
// within twice MaxLag: with 4 s GOPs and MaxLag 3 s, the GOP from 8000 is
// 7960 ms older than the newest frame, so the log keeps the newest GOP
// alone, as it always did, and a rewound reader starts there.
func TestHistoryBoundedByTwiceMaxLag(t *testing.T) {
	s, p := newPublished(t, Config{MaxLag: 3 * time.Second})
	write(t, p, vcfg(0), acfg(0))
	for dts := int64(0); dts < 16000; dts += 4000 {
		gop(t, p, dts, 121) // 4 s GOPs, newest timestamp 15960
	}
	rw, _ := s.NewReader("test")
	defer rw.Close()
	rw.Rewind()
	var firstVideo int64 = -1
	for _, pk := range read(t, rw) {
		if pk.Kind == media.KindVideo && !pk.SeqHeader {
			firstVideo = pk.DTS
			break
		}
	}
	if firstVideo != 12000 {
		t.Fatalf("rewound reader starts at %d, want 12000: history past twice MaxLag is not kept", firstVideo)
	}
	s.mu.RLock()
	oldest := s.at(s.tail).pkt.DTS
	s.mu.RUnlock()
	if oldest != 12000 {
		t.Errorf("the log holds from %d: want the newest GOP only, from 12000 (the one before is older than MaxLag)", oldest)
	}
}

// TestRewindStartsWithRecentPast: a rewound reader starts at the oldest
// keyframe the log holds, which keeps the two whole GOPs before the newest
// (within twice MaxLag), and one that waits for a keyframe at the first of
// several that come at once; other readers start, or wait, for the newest.
func TestRewindStartsWithRecentPast(t *testing.T) {
	s, p := newPublished(t, Config{})
	write(t, p, vcfg(0), acfg(0))
	for dts := int64(0); dts < 8000; dts += 2000 {
		gop(t, p, dts, 60) // newest timestamp 7980
	}
	first := func(r *Reader) int64 {
		t.Helper()
		for _, pk := range read(t, r) {
			if pk.Kind == media.KindVideo && !pk.SeqHeader {
				if !pk.Keyframe {
					t.Fatalf("first frame at %d is not a keyframe", pk.DTS)
				}
				return pk.DTS
			}
		}
		t.Fatal("no video")
		return 0
	}
	// The log keeps the two whole GOPs before the newest (from 2000,
	// 5980 ms back: past MaxLag, within twice it), and not the one
	// before; a rewound reader starts there, and is not taken for a
	// lagging one while it catches up.
	rw, _ := s.NewReader("test")
	defer rw.Close()
	rw.Rewind()
	if got := first(rw); got != 2000 {
		t.Fatalf("rewound reader starts at %d, want the keyframe at 2000 (two whole GOPs before the newest)", got)
	}
	r, _ := s.NewReader("test")
	defer r.Close()
	if got := first(r); got != 6000 {
		t.Fatalf("reader starts at %d, want the newest keyframe, 6000", got)
	}

	// An empty stream (a relay's new one) gets the recent past at once.
	s2 := New("live/relayed", Config{})
	p2, err := s2.Attach(PublisherInfo{})
	if err != nil {
		t.Fatal(err)
	}
	waiting, _ := s2.NewReader("test")
	defer waiting.Close()
	rewound, _ := s2.NewReader("test")
	defer rewound.Close()
	rewound.Rewind()
	write(t, p2, vcfg(10_000), acfg(10_000))
	for dts := int64(10_000); dts < 14_000; dts += 2000 {
		gop(t, p2, dts, 60) // an upstream's recent past: within MaxLag
	}
	if got := first(rewound); got != 10_000 {
		t.Fatalf("rewound waiting reader starts at %d, want the first keyframe, 10000", got)
	}
	if got := first(waiting); got != 12_000 {
		t.Fatalf("waiting reader starts at %d, want the newest keyframe, 12000", got)
	}
}

func TestLastDTSBoundsASession(t *testing.T) {
	s, p := newPublished(t, Config{})
	if _, ok := s.LastDTS(); ok {
		t.Fatal("LastDTS of an empty stream is set")
	}
	write(t, p, vcfg(0), acfg(0))
	end := gop(t, p, 1000, 10) - 33
	if got, ok := s.LastDTS(); !ok || got != end {
		t.Fatalf("LastDTS = %d, %v; want %d", got, ok, end)
	}
	p.Close()
	p2, err := s.Attach(PublisherInfo{})
	if err != nil {
		t.Fatal(err)
	}
	bound, _ := s.LastDTS()
	r, _ := s.NewReader("test")
	defer r.Close()
	write(t, p2, vcfg(0), acfg(0))
	gop(t, p2, 0, 5)
	var fresh int
	for _, pk := range read(t, r) {
		if pk.DTS > bound {
			fresh++
		}
	}
	// Every packet of the second session is after the bound.
	if fresh != 12 {
		t.Fatalf("%d packets after the bound, want the second session's 12", fresh)
	}
}

func TestSecondPublisherBusy(t *testing.T) {
	s, _ := newPublished(t, Config{})
	if _, err := s.Attach(PublisherInfo{}); !errors.Is(err, ErrBusy) {
		t.Fatalf("second attach: %v, want ErrBusy", err)
	}
}

func TestCloseDrainsThenEOF(t *testing.T) {
	s, p := newPublished(t, Config{})
	write(t, p, vcfg(0), acfg(0))
	gop(t, p, 0, 3)
	r, _ := s.NewReader("test")
	defer r.Close()
	s.Close()
	if err := p.WritePacket(aframe(1000)); !errors.Is(err, ErrClosed) {
		t.Errorf("write after close: %v", err)
	}
	if pkts := read(t, r); len(pkts) != 2+6 {
		t.Errorf("drained %d packets, want 8", len(pkts))
	}
	if first, _ := r.ReadPackets(context.Background(), nil); len(first) != 0 {
		t.Errorf("read %d packets after draining", len(first))
	}
	if _, err := r.ReadPackets(context.Background(), nil); !errors.Is(err, io.EOF) {
		t.Errorf("after drain: %v, want io.EOF", err)
	}
}

// discard is a DeadlineWriter that counts writes.
type discard struct {
	mu     sync.Mutex
	writes int
	bytes  int
}

func (d *discard) Write(p []byte) (int, error) {
	d.mu.Lock()
	d.writes++
	d.bytes += len(p)
	d.mu.Unlock()
	return len(p), nil
}
func (d *discard) SetWriteDeadline(time.Time) error { return nil }

var testFormat = NewFormat("test", func(p *media.Packet) []byte { return append([]byte{byte(p.Kind)}, p.Payload...) })

func TestPumpSharesEncodedBytes(t *testing.T) {
	s, p := newPublished(t, Config{})
	write(t, p, vcfg(0), acfg(0))
	gop(t, p, 0, 5)
	var ws [3]discard
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	for i := range ws {
		r, _ := s.NewReader("test")
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			r.Pump(ctx, testFormat, &ws[i], PumpConfig{WriteTimeout: time.Second, MergeWindow: 20 * time.Millisecond})
		}()
	}
	want := (1 + len(avcC)) + (1 + len(asc)) + 5*(1+1000) + 5*(1+300)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		done := true
		for i := range ws {
			ws[i].mu.Lock()
			if ws[i].bytes < want {
				done = false
			}
			ws[i].mu.Unlock()
		}
		if done {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	for i := range ws {
		if ws[i].bytes != want {
			t.Errorf("reader %d wrote %d bytes, want %d", i, ws[i].bytes, want)
		}
	}
	// Shared: each entry's wire form was built once.
	s.mu.RLock()
	e := s.at(s.tail + 2)
	b1 := e.encoded(testFormat)
	b2 := e.encoded(testFormat)
	s.mu.RUnlock()
	if &b1[0] != &b2[0] {
		t.Error("wire form rebuilt")
	}
}

// Readers counts every protocol's readers, and forgets closed ones.
func TestReaders(t *testing.T) {
	s, _ := newPublished(t, Config{})
	a, _ := s.NewReader("rtmp")
	b, _ := s.NewReader("hls")
	c, _ := s.NewReader("hls")
	if n := s.Readers(); n != 3 {
		t.Errorf("Readers() = %d with three readers, want 3", n)
	}
	b.Close()
	b.Close() // twice counts once
	if n := s.Readers(); n != 2 {
		t.Errorf("Readers() = %d after one closed, want 2", n)
	}
	a.Close()
	c.Close()
	if n := s.Readers(); n != 0 {
		t.Errorf("Readers() = %d after all closed, want 0", n)
	}
}
