package events

// The messages clients get.

import (
	"encoding/json"

	"github.com/meshcast/meshcast/internal/streamname"
)

// timeFormat is RFC 3339 in UTC with milliseconds.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

type hello struct {
	Node    string   `json:"node"`
	Version string   `json:"version"`
	Streams []string `json:"streams"`
}

type streamList struct {
	Node    string   `json:"node"`
	Streams []string `json:"streams"`
}

type streamEvent struct {
	Stream string `json:"stream"`
	Node   string `json:"node,omitempty"`
}

type chatMessage struct {
	Stream string `json:"stream"`
	Text   string `json:"text"`
	From   string `json:"from"`
	Time   string `json:"time"`
}

type viewersMessage struct {
	Stream  string `json:"stream"`
	Viewers Counts `json:"viewers"`
	Total   int    `json:"total"`
}

func viewersPayload(name streamname.Name, c Counts) json.RawMessage {
	return mustJSON(viewersMessage{Stream: string(name), Viewers: c, Total: c.Total()})
}

type errorMessage struct {
	Code   string `json:"code"`
	Stream string `json:"stream,omitempty"`
}

func errorPayload(code string, name streamname.Name) json.RawMessage {
	return mustJSON(errorMessage{Code: code, Stream: string(name)})
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own plain structs are marshalled
	}
	return b
}

func names(ns []streamname.Name) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = string(n)
	}
	return out
}

func first(args []any) any {
	if len(args) == 0 {
		return nil
	}
	return args[0]
}
