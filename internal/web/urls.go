package web

import (
	"fmt"
	"net"
	"strings"
)

// Ports are the ports of a node's listeners; empty for one it does not
// have (RTMPS and HTTPS without TLS).
type Ports struct {
	RTMP, RTMPS, HTTP, HTTPS string
}

// URLs returns the publish and play URLs of the stream key of app "live"
// on a node reached at host (empty: localhost) on ports, for humans:
// printed at start-up and on the page of a binary built without the
// dashboard.
func URLs(host string, ports Ports, key string) string {
	if host == "" {
		host = "localhost"
	}
	rtmpURL := "rtmp://" + net.JoinHostPort(host, ports.RTMP)
	httpURL := "http://" + net.JoinHostPort(host, ports.HTTP)
	var rtmpsURL, httpsURL string // with TLS
	if ports.RTMPS != "" {
		rtmpsURL = "rtmps://" + net.JoinHostPort(host, ports.RTMPS)
	}
	if ports.HTTPS != "" {
		httpsURL = "https://" + net.JoinHostPort(host, ports.HTTPS)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Publish:\n")
	fmt.Fprintf(&b, "  ffmpeg -re -i input.mp4 -c:v libx264 -preset veryfast -b:v 2000k -g 60 -c:a aac -b:a 128k -f flv %s/live/%s\n", rtmpURL, key)
	fmt.Fprintf(&b, "  OBS: server %s/live, stream key %s\n", rtmpURL, key)
	if rtmpsURL != "" {
		fmt.Fprintf(&b, "  RTMPS: %s/live/%s (OBS: server %s/live)\n", rtmpsURL, key, rtmpsURL)
	}
	fmt.Fprintf(&b, "Play:\n")
	fmt.Fprintf(&b, "  RTMP:     %s/live/%s\n", rtmpURL, key)
	if rtmpsURL != "" {
		fmt.Fprintf(&b, "  RTMPS:    %s/live/%s\n", rtmpsURL, key)
	}
	fmt.Fprintf(&b, "  HTTP-FLV: %s/live/%s.flv\n", httpURL, key)
	if httpsURL != "" {
		fmt.Fprintf(&b, "            %s/live/%s.flv\n", httpsURL, key)
	}
	fmt.Fprintf(&b, "  HLS:      %s/live/%s.m3u8\n", httpURL, key)
	if httpsURL != "" {
		fmt.Fprintf(&b, "            %s/live/%s.m3u8\n", httpsURL, key)
	}
	fmt.Fprintf(&b, "API:\n")
	fmt.Fprintf(&b, "  %s/api/v1/streams\n", httpURL)
	if httpsURL != "" {
		fmt.Fprintf(&b, "  %s/api/v1/streams\n", httpsURL)
	}
	return b.String()
}
