// Package webrtc plays and publishes meshcast streams over WebRTC end to
// end, with pion clients signalled by WHEP and WHIP. The tests run on Unix
// only.
package webrtc
