package web

import (
	"strings"
	"testing"
)

// TestURLs: the start-up message names the dashboard and a URL of every
// protocol the node serves, and none of one it does not.
func TestURLs(t *testing.T) {
	all := URLs("media.example", Ports{RTMP: "1935", RTMPS: "1936", HTTP: "8080", HTTPS: "8443", SRT: "8890", RTSP: "8554", WebRTC: true}, "cam")
	for _, want := range []string{
		"Dashboard:\n  http://media.example:8080/\n",
		"rtmp://media.example:1935/live/cam", "rtmps://media.example:1936/live/cam",
		"http://media.example:8080/live/cam.flv", "ws://media.example:8080/live/cam.flv",
		"http://media.example:8080/live/cam.m3u8", "https://media.example:8443/live/cam.m3u8",
		"srt://media.example:8890?streamid=publish:live/cam", "srt://media.example:8890?streamid=read:live/cam",
		"rtsp://media.example:8554/live/cam",
		"http://media.example:8080/live/cam/whip", "http://media.example:8080/live/cam/whep",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("URLs lacks %q:\n%s", want, all)
		}
	}
	bare := URLs("", Ports{RTMP: "1935", HTTP: "8080"}, "cam")
	for _, not := range []string{"rtmps://", "https://", "srt://", "rtsp://", "whep", "whip"} {
		if strings.Contains(bare, not) {
			t.Errorf("URLs of a node without it names %q:\n%s", not, bare)
		}
	}
	if !strings.Contains(bare, "rtmp://localhost:1935/live/cam") {
		t.Errorf("URLs without a host:\n%s", bare)
	}
}
