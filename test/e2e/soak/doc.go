// Package soak runs one meshcast process for a long while under the
// churn of a real audience: publishers that restart, viewers of every
// protocol arriving and leaving, API and Socket.IO clients coming and
// going, and two viewers that stay throughout. It checks that nothing
// stalls and that the server's goroutines, open files, ffmpeg children
// and heap are back at their baseline once the churn is over. The short
// version runs in the normal suite; MESHCAST_LONG_TESTS=1 (make soak)
// runs the 30-minute one. The tests run on Unix only.
package soak
