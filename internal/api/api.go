// Package api is meshcast's REST API under /api/v1.
package api

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/meshcast/meshcast/internal/stream"
)

// Hub is what the API needs from the node's stream table.
type Hub interface {
	Get(name stream.Name) *stream.Stream
	List() []*stream.Stream
}

// ViewerCounter counts a protocol's viewers where they are not stream
// readers of their own (HLS players share one muxer's reader).
type ViewerCounter interface {
	Viewers(name stream.Name) int
}

// API serves the REST endpoints.
type API struct {
	hub     Hub
	counted map[string]ViewerCounter
}

// New creates the API over hub. counted maps a protocol ("hls") to what
// counts its viewers.
func New(hub Hub, counted map[string]ViewerCounter) *API {
	return &API{hub: hub, counted: counted}
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/streams", a.listStreams)
	mux.HandleFunc("GET /api/v1/streams/{app}/{stream}", a.getStream)
}

// Stream is the JSON form of a live stream.
type Stream struct {
	Name          string         `json:"name"`
	App           string         `json:"app"`
	Stream        string         `json:"stream"`
	Live          bool           `json:"live"`
	Video         *Video         `json:"video,omitempty"`
	Audio         *Audio         `json:"audio,omitempty"`
	BitrateBPS    int64          `json:"bitrate_bps"`
	Publisher     *Publisher     `json:"publisher,omitempty"`
	Viewers       map[string]int `json:"viewers"`
	ViewersTotal  int            `json:"viewers_total"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	PublishedAt   *time.Time     `json:"published_at,omitempty"`
}

// Video describes the video track.
type Video struct {
	Codec   string  `json:"codec"`
	Width   int     `json:"width"`
	Height  int     `json:"height"`
	FPS     float64 `json:"fps,omitempty"`
	Profile string  `json:"profile,omitempty"`
	Level   string  `json:"level,omitempty"`
}

// Audio describes the audio track.
type Audio struct {
	Codec      string `json:"codec"`
	SampleRate int    `json:"sample_rate"`
	Channels   int    `json:"channels"`
	Profile    string `json:"profile,omitempty"`
}

// Publisher describes the publishing client.
type Publisher struct {
	Protocol   string `json:"protocol"`
	RemoteAddr string `json:"remote_addr"`
}

// protocols are always listed in viewers, even at zero.
var protocols = []string{"rtmp", "flv", "hls"}

func (a *API) toJSON(in stream.Info) Stream {
	out := Stream{
		Name:       string(in.Name),
		App:        in.Name.App(),
		Stream:     in.Name.Stream(),
		Live:       in.Live,
		BitrateBPS: in.BitrateBPS,
		Viewers:    make(map[string]int, len(protocols)),
	}
	for _, p := range protocols {
		out.Viewers[p] = 0
	}
	for p, n := range in.Readers {
		out.Viewers[p] = n
	}
	for p, c := range a.counted {
		out.Viewers[p] = c.Viewers(in.Name)
	}
	for _, n := range out.Viewers {
		out.ViewersTotal += n
	}
	if v := in.Video; v != nil {
		out.Video = &Video{Codec: v.Codec, Width: v.Width, Height: v.Height, FPS: v.FPS, Profile: v.Profile, Level: v.Level}
	}
	if a := in.Audio; a != nil {
		out.Audio = &Audio{Codec: a.Codec, SampleRate: a.SampleRate, Channels: a.Channels, Profile: a.Profile}
	}
	if in.Live {
		out.Publisher = &Publisher{Protocol: in.Publisher.Protocol, RemoteAddr: in.Publisher.RemoteAddr}
		t := in.PublishedAt.UTC()
		out.PublishedAt = &t
		out.UptimeSeconds = time.Since(in.PublishedAt).Seconds()
	}
	return out
}

func (a *API) listStreams(w http.ResponseWriter, r *http.Request) {
	list := a.hub.List()
	out := struct {
		Streams []Stream `json:"streams"`
	}{Streams: make([]Stream, 0, len(list))}
	for _, s := range list {
		out.Streams = append(out.Streams, a.toJSON(s.Info()))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) getStream(w http.ResponseWriter, r *http.Request) {
	name, err := stream.NewName(r.PathValue("app"), r.PathValue("stream"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_name", err.Error())
		return
	}
	s := a.hub.Get(name)
	if s == nil {
		writeError(w, http.StatusNotFound, "stream_not_found", "no live stream named "+string(name))
		return
	}
	writeJSON(w, http.StatusOK, a.toJSON(s.Info()))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// Error is the JSON body of every API error.
type Error struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var e Error
	e.Error.Code, e.Error.Message = code, msg
	writeJSON(w, status, e)
}
