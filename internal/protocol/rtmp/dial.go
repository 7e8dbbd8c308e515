package rtmp

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"strings"
	"time"
)

// DialURL connects to an rtmp:// or rtmps:// URL (ports 1935 and 443 by
// default) through dial, TLS for rtmps, and sends connect for the URL's
// app. It returns the client, its connection, whose deadline is timeout
// from now (the caller publishes or plays, then clears it), and the
// stream name to publish or play: the path after the app, with the URL's
// query, which servers read as the name's.
func DialURL(ctx context.Context, u *url.URL, dial func(ctx context.Context, network, addr string) (net.Conn, error), timeout time.Duration) (*Client, net.Conn, string, error) {
	if u.Scheme != "rtmp" && u.Scheme != "rtmps" {
		return nil, nil, "", errors.New("rtmp: not an rtmp:// or rtmps:// URL")
	}
	app, key := SplitURL(u)
	host := u.Host
	if u.Port() == "" {
		port := "1935"
		if u.Scheme == "rtmps" {
			port = "443"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dial(dctx, "tcp", host)
	if err != nil {
		return nil, nil, "", err
	}
	if u.Scheme == "rtmps" {
		tc := tls.Client(conn, &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(dctx); err != nil {
			conn.Close()
			return nil, nil, "", err
		}
		conn = tc
	}
	conn.SetDeadline(time.Now().Add(timeout))
	c, err := NewClient(conn)
	if err == nil {
		err = c.Connect(app, u.Scheme+"://"+host+"/"+app)
	}
	if err != nil {
		conn.Close()
		return nil, nil, "", err
	}
	return c, conn, key, nil
}

// SplitURL returns an RTMP URL's app and stream name, with the URL's query,
// which servers read as the name's.
func SplitURL(u *url.URL) (app, name string) {
	app, name, _ = strings.Cut(strings.Trim(u.Path, "/"), "/")
	if name != "" && u.RawQuery != "" {
		name += "?" + u.RawQuery
	}
	return app, name
}
