// Package e2eutil is what meshcast's end-to-end tests (the packages under
// test/e2e) share: meshcast nodes in the test process and meshcast
// processes on loopback ports, the media the tests publish (made once per
// test process with ffmpeg), publishers and players (ffmpeg, Go RTMP,
// HTTP-FLV, WHEP, Node.js scripts in Chromium), ffprobe, and the HTTP API
// and metrics. Every end-to-end package's TestMain calls Main. It builds
// on Unix only, as the tests do.
package e2eutil
