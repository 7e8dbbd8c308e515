package push

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/protocol/mpegts"
	"github.com/meshcast/meshcast/internal/srtconn"
)

func TestSRTTargets(t *testing.T) {
	for raw, ok := range map[string]bool{
		"srt://h:9000?streamid=publish:live/x":                        true,
		"srt://h:9000":                                                true,
		"srt://[2001:db8::1]:9000?streamid=x&latency=200":             true,
		"srt://h:9000/?streamid=x&passphrase=0123456789":              true,
		"srt://h?streamid=x":                                          false, // no port
		"srt://:9000?streamid=x":                                      false,
		"srt://h:9000/app/key":                                        false,
		"srt://u:p@h:9000":                                            false,
		"srt://h:9000?streamid=#!::r=live/x":                          false, // # unescaped: a fragment
		"srt://h:9000?streamid=%23!::r=live/x,m=publish":              true,
		"srt://h:9000?passphrase=tiny-pw":                             false,
		"srt://h:9000?passphrase=" + strings.Repeat("p", 79):          true,
		"srt://h:9000?passphrase=" + strings.Repeat("p", 80):          false,
		"srt://h:9000?latency=-1":                                     false,
		"srt://h:9000?latency=2s":                                     false,
		"srt://h:9000?mode=listener":                                  false,
		"srt://h:9000?streamid=a&streamid=b":                          false,
		"srt://h:9000?streamid=" + strings.Repeat("x", 600):           false,
		"srt://h:70000?streamid=x":                                    false,
		"srt://h:9000?streamid=publish:live/x%3Fkey%3Dk&latency=1000": true,
	} {
		_, err := parseTarget(raw)
		if (err == nil) != ok {
			t.Errorf("parseTarget(%q): %v, want ok %v", raw, err, ok)
		}
		if err != nil && (strings.Contains(err.Error(), "tiny-pw") || strings.Contains(err.Error(), "xxxxx")) {
			t.Errorf("parseTarget(%q): the error %q shows a secret", raw, err)
		}
	}
	u, _ := url.Parse("srt://h:9000?streamid=publish:live/x&passphrase=0123456789abc&latency=300")
	c, err := srtConfig(u, 3*time.Second)
	if err != nil || c.StreamId != "publish:live/x" || c.Passphrase != "0123456789abc" || c.ReceiverLatency != 300*time.Millisecond ||
		c.ConnectionTimeout != 3*time.Second {
		t.Errorf("srtConfig: %+v %v", c, err)
	}
}

func TestSRTRedact(t *testing.T) {
	raw := "srt://h.example.com:9000?streamid=publish:live/x?key=the-key&passphrase=the-passphrase&latency=200"
	got := Redact(raw)
	if strings.Contains(got, "the-key") || strings.Contains(got, "the-passphrase") || strings.Contains(got, "publish") || !strings.HasPrefix(got, "srt://h.example.com:9000?") {
		t.Errorf("Redact(%q) = %q", raw, got)
	}
	msg := redactErr(errors.New("srt: connect: stream publish:live/x?key=the-key refused (the-passphrase)"), raw)
	if strings.Contains(msg, "the-key") || strings.Contains(msg, "the-passphrase") {
		t.Errorf("redactErr left a secret: %q", msg)
	}
}

// TestSRTAddressChecked: an srt:// target resolving to loopback is
// refused before anything is sent, unless private targets are allowed.
func TestSRTAddressChecked(t *testing.T) {
	m := &Manager{}
	if _, err := m.checkedAddr(context.Background(), "localhost:9000"); !errors.Is(err, ErrPrivate) {
		t.Errorf("localhost: %v, want ErrPrivate", err)
	}
	m.cfg.AllowPrivate = true
	if addr, err := m.checkedAddr(context.Background(), "127.0.0.1:9000"); err != nil || addr != "127.0.0.1:9000" {
		t.Errorf("allowed: %q %v", addr, err)
	}
}

// packetList is a reader of a stream that has ended.
type packetList struct {
	pkts []*media.Packet
	done bool
}

func (l *packetList) ReadPackets(ctx context.Context, into []*media.Packet) ([]*media.Packet, error) {
	if l.done {
		return into, io.EOF
	}
	l.done = true
	return append(into, l.pkts...), nil
}

type collect []media.Packet

func (c *collect) WritePacket(p *media.Packet) error { *c = append(*c, *p); return nil }

// TestSendTS: a stream sent to an SRT listener as a caller arrives as
// MPEG-TS with its H.264 and AAC tracks, and the bytes are counted.
func TestSendTS(t *testing.T) {
	data, err := os.ReadFile("../protocol/mpegts/testdata/tiny.ts")
	if err != nil {
		t.Fatal(err)
	}
	var in collect
	if err := mpegts.Demux(bytes.NewReader(data), &in, func() {}); !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	src := &packetList{}
	for i := range in {
		src.pkts = append(src.pkts, &in[i])
	}

	ln, err := gosrt.Listen("srt", "127.0.0.1:0", gosrt.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		streamID string
		data     []byte
	}
	got := make(chan result, 1)
	var want atomic.Int64 // set once sent; the listener reads until it has it all
	go func() {
		req, err := ln.Accept2()
		if err != nil {
			got <- result{}
			return
		}
		conn, err := req.Accept()
		if err != nil {
			got <- result{}
			return
		}
		defer conn.Close()
		var buf bytes.Buffer
		b := make([]byte, 2048)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && (want.Load() == 0 || int64(buf.Len()) < want.Load()) {
			conn.SetReadDeadline(time.Now().Add(time.Second))
			n, err := conn.Read(b)
			buf.Write(b[:n])
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
		}
		got <- result{req.StreamId(), buf.Bytes()}
	}()

	u, _ := url.Parse("srt://" + ln.Addr().String() + "?streamid=publish:live/x")
	cfg, err := srtConfig(u, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := gosrt.Dial("srt", ln.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srtconn.Close(conn)
	var sent atomic.Int64
	if err := sendTS(context.Background(), src, conn, &sent); !errors.Is(err, io.EOF) {
		t.Fatalf("sendTS: %v", err)
	}
	want.Store(sent.Load())
	var r result
	select {
	case r = <-got:
	case <-time.After(15 * time.Second):
		t.Fatal("the listener got nothing")
	}
	if r.streamID != "publish:live/x" || int64(len(r.data)) != sent.Load() || sent.Load()%188 != 0 {
		t.Fatalf("listener: stream ID %q, %d bytes; %d sent", r.streamID, len(r.data), sent.Load())
	}
	var out collect
	if err := mpegts.Demux(bytes.NewReader(r.data), &out, func() {}); !errors.Is(err, io.EOF) {
		t.Fatalf("demux what arrived: %v", err)
	}
	var avc, aac bool
	video := 0
	for _, p := range out {
		avc = avc || (p.SeqHeader && p.Codec == media.CodecH264)
		aac = aac || (p.SeqHeader && p.Codec == media.CodecAAC)
		if p.Kind == media.KindVideo && !p.SeqHeader {
			video++
		}
	}
	if !avc || !aac || video != 6 {
		t.Errorf("arrived: avc %v, aac %v, %d video frames (want 6)", avc, aac, video)
	}
}
