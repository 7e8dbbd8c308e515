// Package vod runs meshcast's on-demand side end to end: the library
// (progressive MP4, HLS, uploads), recording live streams, transcoding
// ladders, and on-demand assets spread over a cluster with its caches. The
// tests run on Unix only.
package vod
