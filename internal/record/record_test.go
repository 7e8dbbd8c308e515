package record

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/amf0"
	"github.com/meshcast/meshcast/internal/protocol/flv"
	"github.com/meshcast/meshcast/internal/stream"
	"github.com/meshcast/meshcast/internal/streamname"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	avcC = []byte{1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 2, 0x68, 0xeb}
	asc  = []byte{0x11, 0x90}
)

func metadata(dts int64) *media.Packet {
	b, err := amf0.AppendAll(nil, "onMetaData", amf0.Object{{Key: "width", Value: 640.0}, {Key: "height", Value: 360.0}})
	if err != nil {
		panic(err)
	}
	return &media.Packet{Kind: media.KindData, Codec: media.CodecAMF0, DTS: dts, Payload: b}
}

func vcfg(dts int64) *media.Packet {
	return &media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: dts, SeqHeader: true, Payload: avcC}
}

func acfg(dts int64) *media.Packet {
	return &media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: dts, SeqHeader: true, Payload: asc}
}

// vframe is an H.264 access unit of one NAL unit, in AVCC form, whose
// bytes tell its timestamp.
func vframe(dts int64, key bool, cts int32) *media.Packet {
	nal := make([]byte, 200)
	nal[0] = 0x41
	if key {
		nal[0] = 0x65
	}
	nal[1], nal[2] = byte(dts>>8), byte(dts)
	payload := append([]byte{0, 0, 0, byte(len(nal))}, nal...)
	return &media.Packet{Kind: media.KindVideo, Codec: media.CodecH264, DTS: dts, CTS: cts, Keyframe: key, Payload: payload}
}

func aframe(dts int64) *media.Packet {
	return &media.Packet{Kind: media.KindAudio, Codec: media.CodecAAC, DTS: dts, Payload: bytes.Repeat([]byte{0x21}, 100)}
}

// session is one publisher of a stream of a real hub, with its session.
type session struct {
	pub *stream.Publisher
	id  string
	end func()
}

func publish(t *testing.T, h *hub.Hub, name streamname.Name, credential string) *session {
	t.Helper()
	pub, err := h.Publish(name, stream.PublisherInfo{Protocol: "test", RemoteAddr: "127.0.0.1:1", Credential: credential})
	if err != nil {
		t.Fatal(err)
	}
	id, end := h.StartSession(hub.Session{Kind: hub.KindPublish, Protocol: "test", Stream: name, RemoteAddr: "127.0.0.1:1"}, func() {})
	return &session{pub: pub, id: id, end: end}
}

// leave ends the session as a publisher's connection does.
func (s *session) leave() {
	s.pub.Close()
	s.end()
}

func (s *session) write(t *testing.T, pkts ...*media.Packet) {
	t.Helper()
	for _, p := range pkts {
		if err := s.pub.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}
}

// gops writes n GOPs of 30 frames 33 ms apart from dts, with B-frame
// composition offsets and audio, and returns the next timestamp.
func (s *session) gops(t *testing.T, dts int64, n int) int64 {
	t.Helper()
	for range n {
		for i := range 30 {
			s.write(t, vframe(dts, i == 0, int32(i%3)*33), aframe(dts))
			dts += 33
		}
	}
	return dts
}

// dones collects what a Recorder reports.
type dones struct {
	mu   sync.Mutex
	list []Done
	ch   chan struct{}
}

func newDones() *dones { return &dones{ch: make(chan struct{}, 100)} }

func (d *dones) add(x Done) {
	d.mu.Lock()
	d.list = append(d.list, x)
	d.mu.Unlock()
	d.ch <- struct{}{}
}

// wait returns the nth report, waiting for it.
func (d *dones) wait(t *testing.T, n int) Done {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		d.mu.Lock()
		if len(d.list) >= n {
			x := d.list[n-1]
			d.mu.Unlock()
			return x
		}
		d.mu.Unlock()
		select {
		case <-d.ch:
		case <-deadline:
			t.Fatalf("no recording %d finished", n)
		}
	}
}

func (d *dones) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.list)
}

type fixture struct {
	dir   string
	hub   *hub.Hub
	rec   *Recorder
	dones *dones
}

// newFixture records app "live" of a real hub into a fresh directory.
func newFixture(t *testing.T, grace time.Duration) *fixture {
	t.Helper()
	f := &fixture{dir: filepath.Join(t.TempDir(), "rec"), dones: newDones()}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.hub = hub.New(hub.Config{PublisherGrace: grace, Logger: log})
	rec, err := New(Config{
		Dir:     f.dir,
		Enabled: func(app string) bool { return app == "live" },
		Hub:     f.hub,
		Logger:  log,
		OnDone:  f.dones.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.rec = rec
	t.Cleanup(func() {
		f.hub.Close()
		f.rec.Close()
	})
	return f
}

// files lists the directory.
func (f *fixture) files(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// tag is one tag of a recording, parsed back.
type tag struct {
	pkt media.Packet
	ts  uint32
}

// readFLV parses a whole FLV file with the FLV reader.
func readFLV(t *testing.T, path string) (hasVideo, hasAudio bool, tags []tag) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := flv.NewReader(f)
	if hasVideo, hasAudio, err = r.ReadHeader(); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := r.ReadPacket()
		if errors.Is(err, io.EOF) {
			return hasVideo, hasAudio, tags
		}
		if err != nil {
			t.Fatalf("%s: tag %d: %v", path, len(tags), err)
		}
		tags = append(tags, tag{pkt: p, ts: uint32(p.DTS)})
	}
}

// frames returns the video frames (not sequence headers) of tags.
func frames(tags []tag) []tag {
	var out []tag
	for _, tg := range tags {
		if tg.pkt.Kind == media.KindVideo && !tg.pkt.SeqHeader {
			out = append(out, tg)
		}
	}
	return out
}

var fileName = regexp.MustCompile(`^live-cam-\d{8}-\d{6}\.flv$`)

func TestRecordsAPublisherSession(t *testing.T) {
	f := newFixture(t, 0)
	s := publish(t, f.hub, "live/cam", "")
	// Not recorded: the app is not enabled.
	other := publish(t, f.hub, "other/cam", "")
	other.write(t, vcfg(0), vframe(0, true, 0))

	const start = 5000 // the publisher's clock does not start at 0
	s.write(t, metadata(start), vcfg(start), acfg(start))
	end := s.gops(t, start, 3)

	var active []Info
	deadline := time.Now().Add(5 * time.Second)
	for {
		active = f.rec.Active()
		if len(active) == 1 && active[0].Bytes > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(active) != 1 || active[0].Stream != "live/cam" || active[0].Session != s.id || active[0].Bytes == 0 ||
		filepath.Base(active[0].Path) != active[0].Name+PartExt {
		t.Fatalf("Active() = %+v, want live/cam being written", active)
	}
	if st := f.rec.Stats(); st.Active != 1 || st.Bytes == 0 {
		t.Errorf("Stats() = %+v while recording", st)
	}
	if _, err := os.Stat(active[0].Path); err != nil {
		t.Errorf("the file being written: %v", err)
	}

	s.leave()
	d := f.dones.wait(t, 1)
	if names := f.files(t); len(names) != 1 || !fileName.MatchString(names[0]) {
		t.Fatalf("directory holds %q, want one live-cam-YYYYMMDD-HHMMSS.flv", names)
	}
	path := filepath.Join(f.dir, f.files(t)[0])
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Done{
		Stream: "live/cam", Session: s.id, Protocol: "test", RemoteAddr: "127.0.0.1:1", Path: path, Name: active[0].Name, Bytes: st.Size(),
		Duration: time.Duration(end-33-start) * time.Millisecond, Started: d.Started, Ended: d.Ended,
	}
	if d != want {
		t.Errorf("Done = %+v, want %+v", d, want)
	}
	if d.Started.IsZero() || d.Ended.Before(d.Started) || filepath.Base(path) != baseName("live/cam", d.Started)+Ext {
		t.Errorf("Started %v, Ended %v, file %s", d.Started, d.Ended, filepath.Base(path))
	}
	if len(f.rec.Active()) != 0 {
		t.Errorf("Active() = %+v after the publisher left", f.rec.Active())
	}

	hasVideo, hasAudio, tags := readFLV(t, path)
	if !hasVideo || !hasAudio {
		t.Errorf("header: video %v, audio %v", hasVideo, hasAudio)
	}
	// Configuration first, at 0, then the first keyframe at 0.
	if len(tags) < 4 || tags[0].pkt.Kind != media.KindData || !tags[1].pkt.SeqHeader || !tags[2].pkt.SeqHeader {
		t.Fatalf("the file does not start with metadata and sequence headers: %d tags", len(tags))
	}
	for _, tg := range tags[:4] {
		if tg.ts != 0 {
			t.Errorf("%v tag at %d ms, want 0", tg.pkt.Kind, tg.ts)
		}
	}
	if !bytes.Equal(tags[1].pkt.Payload, avcC) && !bytes.Equal(tags[2].pkt.Payload, avcC) {
		t.Error("the AVC sequence header is not in the file")
	}
	vf := frames(tags)
	if len(vf) != 90 || !vf[0].pkt.Keyframe {
		t.Fatalf("%d video frames, first keyframe %v; want 90 starting at a keyframe", len(vf), len(vf) > 0 && vf[0].pkt.Keyframe)
	}
	for i, tg := range vf {
		if wantTS := uint32(i * 33); tg.ts != wantTS || tg.pkt.CTS != int32(i%3)*33 || tg.pkt.Keyframe != (i%30 == 0) {
			t.Fatalf("frame %d: ts %d cts %d key %v, want ts %d cts %d", i, tg.ts, tg.pkt.CTS, tg.pkt.Keyframe, wantTS, (i%3)*33)
		}
		if got := int64(tg.pkt.Payload[5])<<8 | int64(tg.pkt.Payload[6]); got != (start+int64(i)*33)&0xffff {
			t.Fatalf("frame %d holds the bytes of another frame", i)
		}
	}
	var audio int
	for _, tg := range tags {
		if tg.pkt.Kind == media.KindAudio && !tg.pkt.SeqHeader {
			audio++
		}
	}
	if audio != 90 {
		t.Errorf("%d audio frames, want 90", audio)
	}
	if st := f.rec.Stats(); st.Active != 0 || st.Finished != 1 || st.Failed != 0 || st.Bytes != uint64(d.Bytes) {
		t.Errorf("Stats() = %+v after one recording of %d bytes", st, d.Bytes)
	}
	other.leave()
}

// Every publisher session gets its own file, holding only its own media:
// not the end of the last session that a resumed stream still holds.
func TestEachSessionItsOwnFile(t *testing.T) {
	for _, tc := range []struct {
		name     string
		takeover bool // the second publisher takes over the live first one
	}{
		{"publisher returns within the grace period", false},
		{"publisher takes over its own stream", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, time.Minute)
			s1 := publish(t, f.hub, "live/cam", "secret-digest")
			s1.write(t, metadata(0), vcfg(0), acfg(0))
			s1.gops(t, 0, 2)
			if !tc.takeover {
				s1.leave()
				f.dones.wait(t, 1)
			}
			// A takeover kicks the first session as the second begins.
			s2 := publish(t, f.hub, "live/cam", "secret-digest")
			s2.write(t, metadata(0), vcfg(0), acfg(0))
			s2.gops(t, 0, 3)
			s2.leave()
			f.dones.wait(t, 2)
			// In a takeover the first recording may finish second.
			d1, d2 := f.dones.list[0], f.dones.list[1]
			if d1.Session == s2.id {
				d1, d2 = d2, d1
			}
			if d1.Session != s1.id || d2.Session != s2.id || d1.Path == d2.Path {
				t.Fatalf("recordings %+v and %+v, want one per session", d1, d2)
			}
			if !regexp.MustCompile(`^live-cam-\d{8}-\d{6}(-2)?$`).MatchString(d2.Name) {
				t.Errorf("second recording named %q", d2.Name)
			}
			for _, c := range []struct {
				d      Done
				frames int
			}{{d1, 60}, {d2, 90}} {
				_, _, tags := readFLV(t, c.d.Path)
				vf := frames(tags)
				if len(vf) != c.frames || !vf[0].pkt.Keyframe || vf[0].ts != 0 {
					t.Errorf("%s: %d frames, first key %v at %d ms; want %d from a keyframe at 0",
						c.d.Name, len(vf), len(vf) > 0 && vf[0].pkt.Keyframe, vf[0].ts, c.frames)
				}
				if tags[0].pkt.Kind != media.KindData || tags[0].ts != 0 {
					t.Errorf("%s does not start with metadata", c.d.Name)
				}
			}
		})
	}
}

func TestCloseFinishesRecordings(t *testing.T) {
	f := newFixture(t, 0)
	s := publish(t, f.hub, "live/cam", "")
	s.write(t, vcfg(0), acfg(0))
	s.gops(t, 0, 1)
	f.rec.Close()
	d := f.dones.wait(t, 1)
	if names := f.files(t); !slices.Equal(names, []string{d.Name + Ext}) {
		t.Errorf("directory holds %q after Close, want %s", names, d.Name+Ext)
	}
	_, _, tags := readFLV(t, d.Path)
	if n := len(frames(tags)); n != 30 {
		t.Errorf("%d frames, want 30", n)
	}
	// Nothing is recorded after Close.
	s.write(t, vframe(1000, true, 0))
	s.leave()
	s2 := publish(t, f.hub, "live/cam2", "")
	s2.gops(t, 0, 1)
	s2.leave()
	if len(f.rec.Active()) != 0 || f.dones.count() != 1 {
		t.Errorf("recorded after Close: %+v", f.rec.Active())
	}
}

// A session that sends no media leaves no file.
func TestSessionWithoutMedia(t *testing.T) {
	f := newFixture(t, 0)
	s := publish(t, f.hub, "live/cam", "")
	s.write(t, metadata(0), vcfg(0))
	s.leave()
	deadline := time.Now().Add(5 * time.Second)
	for len(f.rec.Active()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if names := f.files(t); len(names) != 0 || f.dones.count() != 0 {
		t.Errorf("directory holds %q, %d reported; want nothing", names, f.dones.count())
	}
}

func TestNames(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("X", 3600))
	for _, tc := range []struct {
		name streamname.Name
		want string
	}{
		{"live/cam", "live-cam-20260304-040607"},
		{"live/Cam_1.x-y", "live-Cam_1.x-y-20260304-040607"},
		{"li ve/c/m\x00ü", "li_ve-c_m__-20260304-040607"},
	} {
		if got := baseName(tc.name, at); got != tc.want {
			t.Errorf("baseName(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}

	r := &Recorder{dir: t.TempDir()}
	touch := func(name string) {
		if err := os.WriteFile(filepath.Join(r.dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	touch("a.flv")
	touch("a-2.flv.part")
	f, name, err := r.create("a")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if name != "a-3" {
		t.Errorf("create(a) with a.flv and a-2.flv.part there = %q, want a-3", name)
	}
	// A .flv that appeared meanwhile is not overwritten.
	touch("a-3.flv")
	final, err := r.finish("a-3")
	if err != nil {
		t.Fatal(err)
	}
	if final != "a-3-2" {
		t.Errorf("finish(a-3) with a-3.flv there = %q, want a-3-2", final)
	}

	for name, want := range map[string]time.Time{
		"live-cam-20260304-040607":   time.Date(2026, 3, 4, 4, 6, 7, 0, time.UTC),
		"live-cam-20260304-040607-2": time.Date(2026, 3, 4, 4, 6, 7, 0, time.UTC),
		"a-b-c-d-20991231-235959":    time.Date(2099, 12, 31, 23, 59, 59, 0, time.UTC),
	} {
		if got, ok := nameTime(name); !ok || !got.Equal(want) {
			t.Errorf("nameTime(%q) = %v, %v; want %v", name, got, ok, want)
		}
	}
	if _, ok := nameTime("live-cam"); ok {
		t.Error("nameTime of a name without a time succeeded")
	}
}
