package push

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/meshcast/meshcast/internal/httpfront"
	"github.com/meshcast/meshcast/internal/streamname"
)

// Routes are the admin API of pushes, under a stream's API path.
type Routes struct {
	M *Manager
	// Admin guards a route as the admin API does (api.API.Admin).
	Admin func(http.HandlerFunc) http.HandlerFunc
}

// Register adds POST and GET /api/v1/streams/APP/STREAM/pushes and DELETE
// /api/v1/streams/APP/STREAM/pushes/ID.
func (rt Routes) Register(mux *httpfront.Mux) {
	const base = "/api/v1/streams/{app}/{stream}/pushes"
	mux.HandleFunc("POST "+base, rt.Admin(rt.add))
	mux.HandleFunc("GET "+base, rt.Admin(rt.list))
	mux.HandleFunc("DELETE "+base+"/{id}", rt.Admin(rt.remove))
}

func name(w http.ResponseWriter, r *http.Request) (streamname.Name, bool) {
	n, err := streamname.New(r.PathValue("app"), r.PathValue("stream"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return "", false
	}
	return n, true
}

func (rt Routes) add(w http.ResponseWriter, r *http.Request) {
	n, ok := name(w, r)
	if !ok {
		return
	}
	var req struct {
		URL string `json:"url"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 8<<10)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "the body is {\"url\": \"rtmp://...\"}"})
		return
	}
	st, err := rt.M.Add(n, req.URL)
	switch {
	case errors.Is(err, ErrTooMany):
		writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
	case errors.Is(err, ErrBadTarget) || errors.Is(err, ErrPrivate):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
	case err != nil:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the registry is unavailable: " + err.Error()})
	default:
		writeJSON(w, http.StatusCreated, st)
	}
}

func (rt Routes) list(w http.ResponseWriter, r *http.Request) {
	n, ok := name(w, r)
	if !ok {
		return
	}
	list, err := rt.M.List(n)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the registry is unavailable: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"pushes": list})
}

func (rt Routes) remove(w http.ResponseWriter, r *http.Request) {
	n, ok := name(w, r)
	if !ok {
		return
	}
	switch err := rt.M.Remove(n, r.PathValue("id")); {
	case errors.Is(err, ErrNotFound):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
		return
	case err != nil:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the registry is unavailable: " + err.Error()})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
