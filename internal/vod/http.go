package vod

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshcast/meshcast/internal/diskfull"
	"github.com/meshcast/meshcast/internal/httpfront"
)

// Headers between nodes.
const (
	// HeaderLocal asks a node to answer from its own files only, so that a
	// request from a peer never travels further.
	HeaderLocal = "X-Meshcast-Vod-Local"
	// HeaderVersion carries the version of the asset a response is of.
	HeaderVersion = "X-Meshcast-Vod-Version"
	// headerModified carries a copied file's modification time.
	headerModified = "X-Meshcast-Vod-Modified"
)

// Register adds the library's routes to mux: its media under /vod/, its
// API under /api/v1/vod, and the copies and deletions of other nodes
// under InternalPath.
func (l *Library) Register(mux *httpfront.Mux) {
	mux.HandleFunc("GET /vod/{file}", l.serveFile)
	mux.HandleFunc("GET /vod/{name}/{file}", l.serveHLS)
	mux.HandleFunc("GET /api/v1/vod", l.serveList)
	mux.HandleFunc("GET /api/v1/vod/{name}", l.serveInfo)
	mux.HandleFunc("PUT /api/v1/vod/{file}", l.cfg.Admin(l.upload))
	mux.HandleFunc("POST /api/v1/vod", l.cfg.Admin(l.uploadForm))
	mux.HandleFunc("DELETE /api/v1/vod/{name}", l.cfg.Admin(l.delete))
	mux.HandleFunc("PUT "+InternalPath+"{file}", l.receiveCopy)
	mux.HandleFunc("DELETE "+InternalPath+"{name}", l.receiveDelete)
}

// InternalPath prefixes the routes nodes use to copy and delete assets on
// each other, signed with the cluster secret.
const InternalPath = "/internal/vod/"

// local reports whether r is a peer's request for this node's files only.
func local(r *http.Request) bool { return r.Header.Get(HeaderLocal) != "" }

// fail answers a media request with err's status.
func (l *Library) fail(w http.ResponseWriter, err error) {
	code, msg := status(err)
	if code >= 500 {
		l.log.Warn("vod: request failed", "err", err)
	}
	http.Error(w, msg, code)
}

// status maps an error to an HTTP status and a message for the client.
func status(err error) (int, string) {
	switch {
	case errors.Is(err, ErrBadName):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return http.StatusNotFound, "no such asset"
	case errors.Is(err, ErrUnsupported):
		return http.StatusUnsupportedMediaType, err.Error()
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge, err.Error()
	case errors.Is(err, ErrStorageFull):
		return http.StatusInsufficientStorage, "not enough storage for the file"
	case errors.Is(err, ErrTooLargeToRemux):
		return http.StatusUnprocessableEntity, err.Error()
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "timed out"
	case errors.Is(err, errPeers):
		return http.StatusBadGateway, err.Error()
	}
	return http.StatusInternalServerError, "the library cannot be read"
}

// serveFile answers GET and HEAD /vod/NAME.mp4 (the file, or an FLV
// recording remuxed) and /vod/NAME.flv (an FLV file as it is).
func (l *Library) serveFile(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	name, want, ok := splitFile(file)
	if !ok {
		if strings.HasSuffix(file, ".mp4") || strings.HasSuffix(file, ".flv") {
			http.Error(w, ErrBadName.Error(), http.StatusBadRequest)
			return
		}
		http.NotFound(w, r)
		return
	}
	s, o, k, err := l.find(r.Context(), name)
	switch {
	case errors.Is(err, ErrNotFound) && l.cfg.Peers != nil && !local(r):
		l.serveRemoteFile(w, r, name, want)
		return
	case err != nil:
		l.fail(w, err)
		return
	case k == want:
		// The file as it is: no index needed.
		f, o, err := s.Open(r.Context(), o.Name)
		if err != nil {
			l.fail(w, err)
			return
		}
		defer f.Close()
		l.served.WithLabelValues(string(want), "storage").Inc()
		l.fileHeaders(w, want, version(o))
		http.ServeContent(w, r, "", o.ModTime, io.NewSectionReader(f, 0, o.Size))
		return
	case want != KindMP4:
		http.NotFound(w, r)
		return
	}
	// An FLV recording, remuxed to MP4.
	a, s, err := l.open(r.Context(), name)
	if err != nil {
		l.fail(w, err)
		return
	}
	rm, err := a.remuxed()
	if err != nil {
		l.fail(w, err)
		return
	}
	f, _, err := l.storeOf(r.Context(), s, a)
	if err != nil {
		l.fail(w, err)
		return
	}
	defer f.Close()
	l.served.WithLabelValues(string(want), "storage").Inc()
	l.fileHeaders(w, want, a.Version)
	http.ServeContent(w, r, "", a.Modified, rm.reader(f))
}

// storeOf opens an asset's file in store s, or wherever it is now.
func (l *Library) storeOf(ctx context.Context, s Storage, a *asset) (File, Object, error) {
	if s == nil {
		var err error
		if s, _, _, err = l.find(ctx, a.Name); err != nil {
			return nil, Object{}, err
		}
	}
	f, o, err := s.Open(ctx, a.Name+"."+string(a.Kind))
	if err != nil {
		return nil, Object{}, err
	}
	if version(o) != a.Version {
		f.Close()
		return nil, Object{}, fs.ErrNotExist // replaced meanwhile: ask again
	}
	return f, o, nil
}

// fileHeaders sets the headers of a file response.
func (l *Library) fileHeaders(w http.ResponseWriter, k Kind, ver string) {
	ct := "video/mp4"
	if k == KindFLV {
		ct = "video/x-flv"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "public, max-age=60")
	w.Header().Set(HeaderVersion, ver)
}

// serveHLS answers /vod/NAME/index.m3u8 and /vod/NAME/VERSION-N.ts.
func (l *Library) serveHLS(w http.ResponseWriter, r *http.Request) {
	name, file := r.PathValue("name"), r.PathValue("file")
	if err := CheckName(name); err != nil {
		l.fail(w, err)
		return
	}
	isPlaylist := file == "index.m3u8"
	ver, n, isSeg := parseSegmentFile(file)
	if !isPlaylist && !isSeg {
		http.NotFound(w, r)
		return
	}
	a, s, err := l.open(r.Context(), name)
	if errors.Is(err, ErrNotFound) && l.cfg.Peers != nil && !local(r) {
		l.serveRemoteHLS(w, r, name, file)
		return
	}
	if err != nil {
		l.fail(w, err)
		return
	}
	w.Header().Set(HeaderVersion, a.Version)
	if isPlaylist {
		l.served.WithLabelValues("playlist", "storage").Inc()
		w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
		w.Header().Set("Cache-Control", "public, max-age=10")
		w.Write(playlist(a.segs, a.Version+"-", queryOf(r)))
		return
	}
	if ver != a.Version || n >= len(a.segs) {
		http.Error(w, "no such segment: the asset has changed, reload the playlist", http.StatusNotFound)
		return
	}
	key := "vod/" + name + "/" + file
	b, err := l.cfg.Cache.Get(r.Context(), key, func(ctx context.Context) ([]byte, error) {
		f, _, err := l.storeOf(ctx, s, a)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		l.served.WithLabelValues("segment", "storage").Inc()
		return segmentBytes(a.index, a.segs, n, f)
	})
	if err != nil {
		l.fail(w, err)
		return
	}
	segmentHeaders(w, len(b))
	w.Write(b)
}

// segmentHeaders sets the headers of an MPEG-TS segment response.
func segmentHeaders(w http.ResponseWriter, n int) {
	w.Header().Set("Content-Type", "video/mp2t")
	w.Header().Set("Cache-Control", "public, max-age=86400, immutable")
	w.Header().Set("Content-Length", strconv.Itoa(n))
}

// queryOf is r's query, to carry into the playlist's URIs (signatures).
func queryOf(r *http.Request) string {
	if r.URL.RawQuery == "" {
		return ""
	}
	return "?" + r.URL.RawQuery
}

// serveList answers GET /api/v1/vod with this node's assets.
func (l *Library) serveList(w http.ResponseWriter, r *http.Request) {
	assets, err := l.List(r.Context())
	if err != nil {
		l.log.Warn("vod: list failed", "err", err)
		writeJSONError(w, http.StatusInternalServerError, "vod_unavailable", "the library cannot be read")
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Assets []Asset `json:"assets"`
	}{assets})
}

// serveInfo answers GET /api/v1/vod/NAME: the asset, indexed.
func (l *Library) serveInfo(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	a, _, err := l.open(r.Context(), name)
	if errors.Is(err, ErrNotFound) && l.cfg.Peers != nil && !local(r) {
		info, err := l.remoteInfo(r.Context(), name)
		if err != nil {
			code, msg := status(err)
			writeJSONError(w, code, "vod_unavailable", msg)
			return
		}
		l.served.WithLabelValues("info", "peer").Inc()
		writeJSON(w, http.StatusOK, info)
		return
	}
	if err != nil {
		code, msg := status(err)
		writeJSONError(w, code, "vod_unavailable", msg)
		return
	}
	l.served.WithLabelValues("info", "storage").Inc()
	writeJSON(w, http.StatusOK, a.Asset)
}

// upload answers PUT /api/v1/vod/NAME.mp4 (or .flv): the body, streamed
// to storage, becomes the asset, replacing any of that name once it is
// whole and indexes. It is then copied to the asset's owners.
func (l *Library) upload(w http.ResponseWriter, r *http.Request) {
	l.store(w, r, r.PathValue("file"), r.Body)
}

// uploadForm answers POST /api/v1/vod with a multipart form whose "file"
// part carries the file and its name (curl -F file=@x.mp4).
func (l *Library) uploadForm(w http.ResponseWriter, r *http.Request) {
	mr, err := r.MultipartReader()
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad_request", "expected a multipart/form-data body with a part named \"file\"")
		return
	}
	for {
		p, err := mr.NextPart()
		if err != nil {
			writeJSONError(w, http.StatusBadRequest, "bad_request", "no part named \"file\" in the form")
			return
		}
		if p.FormName() == "file" {
			_, params, _ := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
			l.store(w, r, params["filename"], p)
			return
		}
	}
}

// store keeps what body yields as file.
func (l *Library) store(w http.ResponseWriter, r *http.Request, file string, body io.Reader) {
	name, k, ok := splitFile(file)
	if !ok {
		writeJSONError(w, http.StatusBadRequest, "bad_name", ErrBadName.Error()+", ending in .mp4 or .flv")
		return
	}
	dst := l.cfg.Stores[0]
	if dst == nil {
		writeJSONError(w, http.StatusServiceUnavailable, "no_library", "this node takes no uploads: start it with --vod-dir")
		return
	}
	if r.ContentLength > l.cfg.MaxUpload {
		writeJSONError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("uploads are limited to %d bytes", l.cfg.MaxUpload))
		return
	}
	o, err := dst.Put(r.Context(), file, body, l.cfg.MaxUpload, time.Time{}, checker(k))
	if err != nil {
		code, msg := status(err)
		if errors.Is(err, ErrTooLarge) {
			msg = fmt.Sprintf("uploads are limited to %d bytes", l.cfg.MaxUpload)
		}
		switch code {
		case http.StatusInternalServerError:
			l.log.Warn("vod: upload failed", "file", file, "err", err)
			msg = "the upload could not be stored"
		case http.StatusInsufficientStorage:
			l.log.Warn("vod: upload refused: disk full; nothing of it kept", "file", file, "errno", diskfull.Errno(err), "err", err)
		}
		writeJSONError(w, code, "upload_refused", msg)
		return
	}
	l.log.Info("vod: asset stored", "asset", name, "bytes", o.Size)
	a := describe(name, k, o)
	copies := l.replicate(r.Context(), file)
	writeJSON(w, http.StatusCreated, struct {
		Asset
		Copies []string `json:"copies,omitempty"`
	}{a, copies})
}

// checker returns the check an upload of kind k must pass: its index
// builds.
func checker(k Kind) func(File, int64) error {
	return func(f File, size int64) error {
		_, err := BuildIndex(k, f, size)
		return err
	}
}

// delete answers DELETE /api/v1/vod/NAME: the asset is removed from this
// node and every other.
func (l *Library) delete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := CheckName(name); err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad_name", err.Error())
		return
	}
	n, err := l.deleteLocal(r.Context(), name)
	if err != nil {
		l.log.Warn("vod: delete failed", "asset", name, "err", err)
		writeJSONError(w, http.StatusInternalServerError, "delete_failed", "the asset could not be deleted")
		return
	}
	n += l.deleteRemote(r.Context(), name)
	if n == 0 {
		writeJSONError(w, http.StatusNotFound, "not_found", "no such asset")
		return
	}
	l.log.Info("vod: asset deleted", "asset", name, "copies", n)
	w.WriteHeader(http.StatusNoContent)
}

// deleteLocal removes every file of name here and counts them.
func (l *Library) deleteLocal(ctx context.Context, name string) (int, error) {
	n := 0
	for _, s := range l.cfg.Stores {
		if s == nil {
			continue
		}
		for _, k := range exts {
			err := s.Delete(ctx, name+"."+string(k))
			switch {
			case err == nil:
				n++
			case !errors.Is(err, fs.ErrNotExist):
				return n, err
			}
		}
	}
	return n, nil
}

// writeJSON answers with v.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// writeJSONError answers with the API's error shape.
func writeJSONError(w http.ResponseWriter, code int, kind, msg string) {
	writeJSON(w, code, map[string]any{"error": map[string]string{"code": kind, "message": msg}})
}
