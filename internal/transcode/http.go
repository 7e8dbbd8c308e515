package transcode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/meshcast/meshcast/internal/httpfront"
	"github.com/meshcast/meshcast/internal/streamname"
)

// JobPath prefixes the route by which a node asks another to run (POST)
// or stop (DELETE) a stream's transcoding job: JobPath+"APP/STREAM",
// signed with the cluster secret.
const JobPath = "/internal/v1/transcode/"

// The methods of a job request.
const (
	methodRun  = http.MethodPost
	methodStop = http.MethodDelete
)

// askTimeout bounds a job request to another node, answer included.
const askTimeout = 5 * time.Second

// Register adds the placer's routes to mux: GET /api/v1/transcode, and
// the job requests of other nodes.
func (p *Placer) Register(mux *httpfront.Mux) {
	mux.HandleFunc("GET /api/v1/transcode", p.serveJobs)
	mux.HandleFunc(methodRun+" "+JobPath+"{app}/{stream}", p.serveJob)
	mux.HandleFunc(methodStop+" "+JobPath+"{app}/{stream}", p.serveJob)
}

// ask sends a signed job request (methodRun or methodStop) to the node
// at nodeURL.
func (p *Placer) ask(ctx context.Context, method, nodeURL string, name streamname.Name, query string) error {
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, nodeURL+JobPath+string(name)+query, nil)
	if err != nil {
		return err
	}
	resp, err := p.cfg.Peers.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&e)
		if e.Error.Message != "" {
			return errors.New(e.Error.Message)
		}
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// serveJob answers POST and DELETE JobPath+APP/STREAM from another node:
// run (or stop) that stream's job here.
func (p *Placer) serveJob(w http.ResponseWriter, r *http.Request) {
	if p.cfg.Peers == nil {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	from, err := p.cfg.Peers.Verify(r)
	if err != nil {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	name, err := streamname.New(r.PathValue("app"), r.PathValue("stream"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.Method == methodStop {
		p.sup.Stop(name)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	self, _ := p.nodes()
	if busy := p.busy(self); busy != "" {
		writeError(w, http.StatusConflict, "busy", busy)
		return
	}
	if err := p.run(name, p.fitRequest(r, name)); err != nil {
		writeError(w, http.StatusConflict, "full", err.Error())
		return
	}
	p.log.Info("transcode: running a job for another node", "stream", name, "from", from)
	w.WriteHeader(http.StatusCreated)
}

// fitRequest returns the renditions of name's ladder that fit the source:
// as it plays here, if it does, and as the asking node says it is
// (?width=W&height=H).
func (p *Placer) fitRequest(r *http.Request, name streamname.Name) []Rendition {
	// The source plays here through the cluster; its configuration comes
	// with it.
	renditions := Fit(p.cfg.Ladder(name.App()), 0, 0)
	if s := p.cfg.Streams.Get(name); s != nil {
		if v := s.Info().Video; v != nil && v.Height > 0 {
			renditions = Fit(renditions, v.Width, v.Height)
		}
	}
	if h := r.URL.Query().Get("height"); h != "" {
		var width, height int
		fmt.Sscanf(r.URL.Query().Get("width"), "%d", &width)
		fmt.Sscanf(h, "%d", &height)
		renditions = Fit(renditions, width, height)
	}
	return renditions
}

// writeError answers with the API's error shape.
func writeError(w http.ResponseWriter, code int, kind, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": kind, "message": msg}})
}

// serveJobs answers GET /api/v1/transcode.
func (p *Placer) serveJobs(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(struct {
		Jobs []Job `json:"jobs"`
	}{p.Jobs()})
}
