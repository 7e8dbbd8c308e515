package web

import (
	"fmt"
	"net"
	"strings"
)

// Ports are the ports of a node's listeners; empty for one it does not
// have (RTMPS and HTTPS without TLS, SRT, RTSP or WebRTC turned off).
type Ports struct {
	RTMP, RTMPS, HTTP, HTTPS string
	SRT, RTSP                string
	WebRTC                   bool // WHIP and WHEP, on the HTTP port
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
	var srtURL, rtspURL string
	if ports.SRT != "" {
		srtURL = "srt://" + net.JoinHostPort(host, ports.SRT)
	}
	if ports.RTSP != "" {
		rtspURL = "rtsp://" + net.JoinHostPort(host, ports.RTSP)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Dashboard:\n  %s/\n", httpURL)
	fmt.Fprintf(&b, "Publish:\n")
	fmt.Fprintf(&b, "  ffmpeg -re -i input.mp4 -c:v libx264 -preset veryfast -b:v 2000k -g 60 -c:a aac -b:a 128k -f flv %s/live/%s\n", rtmpURL, key)
	fmt.Fprintf(&b, "  OBS: server %s/live, stream key %s\n", rtmpURL, key)
	if rtmpsURL != "" {
		fmt.Fprintf(&b, "  RTMPS: %s/live/%s (OBS: server %s/live)\n", rtmpsURL, key, rtmpsURL)
	}
	if srtURL != "" {
		fmt.Fprintf(&b, "  SRT:   %s?streamid=publish:live/%s\n", srtURL, key)
	}
	if rtspURL != "" {
		fmt.Fprintf(&b, "  RTSP:  %s/live/%s\n", rtspURL, key)
	}
	if ports.WebRTC {
		fmt.Fprintf(&b, "  WHIP:  %s/live/%s/whip\n", httpURL, key)
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
	fmt.Fprintf(&b, "  WS-FLV:   %s/live/%s.flv\n", "ws"+strings.TrimPrefix(httpURL, "http"), key)
	fmt.Fprintf(&b, "  HLS:      %s/live/%s.m3u8\n", httpURL, key)
	if httpsURL != "" {
		fmt.Fprintf(&b, "            %s/live/%s.m3u8\n", httpsURL, key)
	}
	if srtURL != "" {
		fmt.Fprintf(&b, "  SRT:      %s?streamid=read:live/%s\n", srtURL, key)
	}
	if rtspURL != "" {
		fmt.Fprintf(&b, "  RTSP:     %s/live/%s\n", rtspURL, key)
	}
	if ports.WebRTC {
		fmt.Fprintf(&b, "  WHEP:     %s/live/%s/whep\n", httpURL, key)
	}
	fmt.Fprintf(&b, "API:\n")
	fmt.Fprintf(&b, "  %s/api/v1/streams\n", httpURL)
	if httpsURL != "" {
		fmt.Fprintf(&b, "  %s/api/v1/streams\n", httpsURL)
	}
	return b.String()
}
