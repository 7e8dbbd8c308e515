package rtsp

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/bluenviron/gortsplib/v5"
	"github.com/bluenviron/gortsplib/v5/pkg/base"

	"github.com/meshcast/meshcast/internal/connlimit"
)

// Client pulls streams from RTSP cameras and servers into meshcast.
type Client struct {
	// Transport is "tcp" (RTP interleaved in the RTSP connection, the
	// default) or "udp".
	Transport string
	// TLSConfig verifies rtsps:// servers; nil uses the system's roots.
	TLSConfig *tls.Config
	// Timeout bounds connecting, each request and each wait for the
	// source's packets. Defaults to 10s.
	Timeout time.Duration
	// FFmpeg transcodes a source's Opus audio to AAC; empty: Opus is not
	// taken.
	FFmpeg string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Pull reads the rtsp:// or rtsps:// URL with transport ("tcp", the
// default, or "udp") and writes its H.264, HEVC or AV1 video and AAC
// audio to w (a *stream.Publisher) until ctx ends, the source ends or
// fails, or w refuses a packet. Credentials in the URL authenticate with
// the source (Basic or Digest); no log line or error shows them.
func Pull(ctx context.Context, rawURL, transport string, w PacketWriter) error {
	return (&Client{Transport: transport}).Pull(ctx, rawURL, w)
}

// Pull reads rawURL into w; see the package function Pull. It returns
// ctx's error once ctx ends.
func (c *Client) Pull(ctx context.Context, rawURL string, w PacketWriter) (err error) {
	shown := Redact(rawURL)
	u, perr := base.ParseURL(rawURL)
	if perr != nil || (u.Scheme != "rtsp" && u.Scheme != "rtsps") || u.Host == "" {
		return fmt.Errorf("rtsp: pull %s: not an rtsp:// or rtsps:// URL", shown)
	}
	defer func() {
		if err != nil && ctx.Err() == nil {
			err = fmt.Errorf("rtsp: pull %s: %s", shown, redactIn(err.Error(), rawURL, (*url.URL)(u)))
		} else if ctx.Err() != nil {
			err = ctx.Err()
		}
	}()
	proto := gortsplib.ProtocolTCP
	switch strings.ToLower(c.Transport) {
	case "", "tcp":
	case "udp":
		proto = gortsplib.ProtocolUDP
	default:
		return fmt.Errorf("transport %q: use tcp or udp", c.Transport)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "rtsp-pull", "url", shown)
	var tlsConfig *tls.Config
	if u.Scheme == "rtsps" {
		// The server's certificate is checked against the URL's host.
		tlsConfig = &tls.Config{}
		if c.TLSConfig != nil {
			tlsConfig = c.TLSConfig.Clone()
		}
		if tlsConfig.ServerName == "" {
			tlsConfig.ServerName = (*url.URL)(u).Hostname()
		}
	}
	var logs connlimit.LogLimiter
	rc := &gortsplib.Client{
		Scheme:       u.Scheme,
		Host:         u.Host,
		Protocol:     &proto,
		TLSConfig:    tlsConfig,
		ReadTimeout:  timeout,
		WriteTimeout: timeout,
		DialContext:  (&net.Dialer{Timeout: timeout}).DialContext,
		OnPacketsLost: func(lost uint64) {
			logs.Log(log, slog.LevelInfo, "packets-lost", "rtsp pull: packets lost", "lost", lost)
		},
		OnDecodeError: func(err error) {
			logs.Log(log, slog.LevelInfo, "decode-error", "rtsp pull: damaged packet dropped", "err", err)
		},
		OnTransportSwitch: func(err error) {
			log.Info("rtsp pull: transport switched", "err", err)
		},
	}
	if err := rc.Start(); err != nil {
		return err
	}
	defer rc.Close()
	// Close unblocks whatever the client waits for.
	stop := context.AfterFunc(ctx, rc.Close)
	defer stop()

	desc, _, err := rc.Describe(u)
	if err != nil {
		return err
	}
	noOpus := ""
	if c.FFmpeg == "" {
		noOpus = "no ffmpeg to transcode it to AAC"
	}
	pl, err := planIngest(desc, noOpus)
	if err != nil {
		return err
	}
	if err := rc.SetupAll(desc.BaseURL, pl.medias()); err != nil {
		return err
	}
	failed := make(chan error, 1)
	in, err := newIngest(pl, w, rc.PacketPTS, c.FFmpeg, log, func(err error) {
		failed <- err
		go rc.Close() // not from the client's own callback
	})
	if err != nil {
		return err
	}
	in.attach(rc.OnPacketRTP)
	if err := in.start(ctx); err != nil {
		return err
	}
	defer in.close()
	if _, err := rc.Play(nil); err != nil {
		return err
	}
	args := []any{"tracks", pl.String(), "transport", proto.String()}
	if len(pl.skipped) > 0 {
		args = append(args, "not_taken", pl.skipped)
	}
	log.Info("pull started", args...)
	err = rc.Wait()
	select {
	case ferr := <-failed:
		err = fmt.Errorf("the stream refused a packet: %w", ferr)
	default:
	}
	if ctx.Err() == nil && err != nil {
		log.Info("pull ended", "err", redactIn(err.Error(), rawURL, (*url.URL)(u)))
	}
	return err
}

// Redact shows a URL without its user information and query, which carry
// credentials: "rtsp://host:554/path?REDACTED".
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	q := u.RawQuery != ""
	u.RawQuery, u.Fragment, u.RawFragment = "", "", ""
	out := u.String()
	if q {
		out += "?REDACTED"
	}
	return out
}

// redactIn removes a URL's credentials from a message: the URL itself,
// its user information (raw and decoded), password and query.
func redactIn(msg, raw string, u *url.URL) string {
	msg = strings.ReplaceAll(msg, raw, Redact(raw))
	if u != nil && u.User != nil {
		msg = strings.ReplaceAll(msg, u.User.String(), "REDACTED")
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "REDACTED")
		}
		if n := u.User.Username(); len(n) >= 4 {
			msg = strings.ReplaceAll(msg, n, "REDACTED")
		}
	}
	if u != nil && u.RawQuery != "" {
		msg = strings.ReplaceAll(msg, u.RawQuery, "REDACTED")
	}
	return msg
}
