//go:build unix

package live

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// testCert is a certificate for 127.0.0.1 and localhost issued by a CA made
// for the test, in PEM files.
type testCert struct {
	certFile, keyFile string
	leaf              *x509.Certificate
	roots             *x509.CertPool // the CA
}

func newTestCert(t *testing.T) testCert {
	t.Helper()
	ca := testutil.NewCA(t)
	leaf := testutil.NewCert(t, "meshcast test", time.Now().UnixNano(), &ca)
	dir := t.TempDir()
	c := testCert{certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem"), leaf: leaf.Leaf, roots: x509.NewCertPool()}
	c.roots.AddCert(ca.Leaf)
	if err := os.WriteFile(c.certFile, leaf.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.keyFile, leaf.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// client is an HTTPS client trusting the test CA only, speaking HTTP/2
// as browsers do.
func (c testCert) client() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.roots}, ForceAttemptHTTP2: true}}
}

// needRTMPS skips the test when ffmpeg was built without TLS.
func needRTMPS(t *testing.T) {
	t.Helper()
	testutil.Need(t, "ffmpeg", "ffprobe")
	out, err := exec.Command("ffmpeg", "-hide_banner", "-protocols").Output()
	if err != nil {
		t.Fatalf("ffmpeg -protocols: %v", err)
	}
	if !slices.Contains(strings.Fields(string(out)), "rtmps") {
		t.Skip("this ffmpeg has no rtmps protocol (built without TLS support)")
	}
}

// probeLive reads packets of a live URL with ffprobe and returns the codecs
// of its streams and the packets it read of each kind.
func probeLive(t *testing.T, url string, packets int) (codecs []string, video, audio int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-rw_timeout", "10000000", "-analyzeduration", "500000",
		"-read_intervals", fmt.Sprintf("%%+#%d", packets),
		"-show_entries", "stream=codec_name,codec_type:packet=codec_type", "-of", "json", url).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", url, err)
	}
	var res struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
		} `json:"streams"`
		Packets []struct {
			CodecType string `json:"codec_type"`
		} `json:"packets"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", url, err, out)
	}
	for _, s := range res.Streams {
		codecs = append(codecs, s.CodecName)
	}
	for _, p := range res.Packets {
		switch p.CodecType {
		case "video":
			video++
		case "audio":
			audio++
		}
	}
	return codecs, video, audio
}

// TestTLSListeners runs the meshcast binary with a certificate: ffmpeg
// publishes over RTMPS, ffprobe plays over HTTPS and RTMPS, a Go client
// checks the certificate served, and plain RTMP and HTTP go on working.
func TestTLSListeners(t *testing.T) {
	t.Parallel()
	needRTMPS(t)
	cert := newTestCert(t)
	httpsAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	rtmpsAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	p := e2eutil.StartProcess(t, "--tls-cert", cert.certFile, "--tls-key", cert.keyFile,
		"--https-addr", httpsAddr, "--rtmps-addr", rtmpsAddr)

	// HTTPS, with the certificate given, verified against the test CA.
	resp, err := cert.client().Get("https://" + httpsAddr + "/healthz")
	if err != nil {
		t.Fatalf("GET https://%s/healthz: %v", httpsAddr, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("https /healthz: %d %q, want 200 ok", resp.StatusCode, body)
	}
	if got := resp.TLS.PeerCertificates[0]; !got.Equal(cert.leaf) {
		t.Errorf("HTTPS presented %q serial %v, want ours, serial %v", got.Subject, got.SerialNumber, cert.leaf.SerialNumber)
	}
	if resp.TLS.Version < tls.VersionTLS12 {
		t.Errorf("TLS version %x, want 1.2 or newer", resp.TLS.Version)
	}
	_, rtmpsPort, _ := net.SplitHostPort(rtmpsAddr)
	_, httpsPort, _ := net.SplitHostPort(httpsAddr)
	for _, want := range []string{"rtmps://localhost:" + rtmpsPort + "/live/stream", "https://localhost:" + httpsPort + "/live/stream.flv"} {
		if out := p.Stdout.String(); !strings.Contains(out, want) {
			t.Errorf("start-up message lacks %s:\n%s", want, out)
		}
	}

	e2eutil.PublishFFmpeg(t, "rtmps://"+rtmpsAddr+"/live/tls")
	e2eutil.WaitLiveHTTP(t, p.HTTPURL, "live/tls") // plain HTTP

	codecs, video, audio := probeLive(t, "https://"+httpsAddr+"/live/tls.flv", 60)
	if !slices.Contains(codecs, "h264") || !slices.Contains(codecs, "aac") || video == 0 || audio == 0 {
		t.Errorf("HTTPS-FLV: codecs %v, %d video and %d audio packets; want h264 and aac with packets of both", codecs, video, audio)
	}
	// A browser's HTTP/2 request is answered through the response writer.
	resp, err = cert.client().Get("https://" + httpsAddr + "/live/tls.flv")
	if err != nil {
		t.Fatalf("HTTP/2 GET of the FLV stream: %v", err)
	}
	head := make([]byte, 3)
	_, err = io.ReadFull(resp.Body, head)
	resp.Body.Close()
	if err != nil || resp.ProtoMajor != 2 || string(head) != "FLV" {
		t.Errorf("HTTP/2 FLV stream: %s, starts %q, %v; want HTTP/2 and FLV", resp.Proto, head, err)
	}
	codecs, video, _ = probeLive(t, "rtmps://"+rtmpsAddr+"/live/tls", 60)
	if !slices.Contains(codecs, "h264") || video == 0 {
		t.Errorf("RTMPS: codecs %v, %d video packets; want h264 video", codecs, video)
	}

	// Plain RTMP and HTTP-FLV alongside.
	e2eutil.PlayRTMP(t, p.RTMPAddr, "live/tls").WaitFrames(t, 10, 10*time.Second)
	codecs, video, _ = probeLive(t, p.HTTPURL+"/live/tls.flv", 30)
	if !slices.Contains(codecs, "h264") || video == 0 {
		t.Errorf("HTTP-FLV: codecs %v, %d video packets; want h264 video", codecs, video)
	}
}

// TestTLSFailsWithoutCertificate checks that the binary refuses to start
// when the certificate does not load, saying why.
func TestTLSFailsWithoutCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	bin := e2eutil.MeshcastBinary(t) // built first: the timeout is the run's
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "serve", "--rtmp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--srt-addr", "127.0.0.1:0",
		"--webrtc-udp-addr", "127.0.0.1:0", "--rtsp-addr", "127.0.0.1:0", "--rtsps-addr", "127.0.0.1:0", "--rtsp-udp-rtp-addr=", "--rtsp-udp-rtcp-addr=",
		"--tls-cert", missing, "--tls-key", missing, "--https-addr", "127.0.0.1:0", "--rtmps-addr", "127.0.0.1:0").CombinedOutput()
	if err == nil {
		t.Fatalf("meshcast started with a missing certificate:\n%s", out)
	}
	if !strings.Contains(string(out), missing) {
		t.Errorf("the error does not name the certificate file:\n%s", out)
	}
}

// startTLSNode starts an in-process node with a certificate and RTMPS and
// HTTPS on loopback.
func startTLSNode(t *testing.T, cert testCert, mod func(*config.Config)) *e2eutil.Node {
	t.Helper()
	return e2eutil.StartNode(t, func(c *config.Config) {
		c.TLSCert, c.TLSKey = cert.certFile, cert.keyFile
		c.HTTPSAddr, c.RTMPSAddr = "127.0.0.1:0", "127.0.0.1:0"
		if mod != nil {
			mod(c)
		}
	})
}

// An RTMPS client that never finishes its TLS handshake is closed after the
// read timeout.
func TestTLSHandshakeTimeout(t *testing.T) {
	n := startTLSNode(t, newTestCert(t), func(c *config.Config) { c.ReadTimeout = 500 * time.Millisecond })
	conn, err := net.DialTimeout("tcp", n.RTMPSAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Fatalf("connection not closed by the server: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %v, want about the read timeout", d)
	}
}

// Behind a trusted proxy, the PROXY protocol header comes before TLS, and
// the publisher is known by the address in it.
func TestTLSBehindProxy(t *testing.T) {
	t.Parallel()
	cert := newTestCert(t)
	n := startTLSNode(t, cert, func(c *config.Config) {
		c.TrustedProxies = []string{"127.0.0.0/8"}
		c.PublishKeys = []string{"live=proxy-test-key"} // the proxied client is not on this machine
	})
	conn, err := net.DialTimeout("tcp", n.RTMPSAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "PROXY TCP4 203.0.113.9 127.0.0.1 40000 1936\r\n"); err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(conn, &tls.Config{RootCAs: cert.roots, ServerName: "localhost"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake after a PROXY header: %v", err)
	}
	c, err := rtmp.NewClient(tc)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect("live", "rtmps://localhost/live"); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish("proxied?key=proxy-test-key"); err != nil {
		t.Fatalf("publish over RTMPS through a trusted proxy: %v", err)
	}
	s := n.Hub.Get(streamname.Name("live/proxied"))
	if s == nil {
		t.Fatal("the stream published through the proxy does not exist")
	}
	if got := s.Info().Publisher.RemoteAddr; got != "203.0.113.9:40000" {
		t.Errorf("publisher address %q, want the proxied client 203.0.113.9:40000", got)
	}
}
