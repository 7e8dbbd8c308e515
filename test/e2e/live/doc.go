// Package live runs meshcast end to end with the tools users publish and
// play live streams with (ffmpeg, ffprobe, GStreamer and Go clients): RTMP,
// HTTP-FLV, WebSocket-FLV, HLS and LL-HLS, enhanced RTMP (HEVC, AV1), SRT,
// TLS (RTMPS, HTTPS), the PROXY protocol and TCP_NODELAY. The tests run on
// Unix only.
package live
