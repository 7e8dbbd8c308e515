package vod

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Peer is a node of the cluster.
type Peer struct {
	ID   string
	URL  string // http://host:port
	Self bool
}

// Peers is the library's view of the cluster.
type Peers interface {
	// Ranked returns the alive nodes, this one included, in the order of
	// rendezvous hashing on name: the first Config.Replicas own it.
	Ranked(ctx context.Context, name string) []Peer
	// Sign signs a request to another node with the cluster secret.
	Sign(r *http.Request)
	// Verify checks the signature of a request from another node.
	Verify(r *http.Request) error
	// Client makes the requests to other nodes.
	Client() *http.Client
}

// errPeers reports that no other node could answer.
var errPeers = errors.New("vod: no node holding the asset answered")

// peerTimeout bounds one request to another node.
const peerTimeout = 10 * time.Second

// blockSize is the unit in which files held elsewhere are fetched and
// cached: a range request costs at most two blocks more than it asks for.
const blockSize = 1 << 20

// Owners returns the nodes that own name, best first.
func (l *Library) Owners(ctx context.Context, name string) []Peer {
	if l.cfg.Peers == nil {
		return nil
	}
	ps := l.cfg.Peers.Ranked(ctx, name)
	return ps[:min(len(ps), l.cfg.Replicas)]
}

// others returns the other nodes to ask for name: its owners first.
func (l *Library) others(ctx context.Context, name string) []Peer {
	var out []Peer
	for _, p := range l.cfg.Peers.Ranked(ctx, name) {
		if !p.Self {
			out = append(out, p)
		}
	}
	return out
}

// fetchPeer GETs path from the first other node holding name that answers
// 200 (or 206), trying its owners first. check may refuse an answer (a
// different version), and the next node is asked.
func (l *Library) fetchPeer(ctx context.Context, name, path string, hdr http.Header, check func(*http.Response) error) ([]byte, error) {
	var errs []error
	for _, p := range l.others(ctx, name) {
		b, err := l.get(ctx, p, path, hdr, check)
		if err == nil {
			return b, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", p.ID, err))
	}
	if len(errs) == 0 {
		return nil, ErrNotFound
	}
	if allNotFound(errs) {
		return nil, ErrNotFound
	}
	return nil, fmt.Errorf("%w: %w", errPeers, errors.Join(errs...))
}

// errPeerNotFound is a peer's 404.
var errPeerNotFound = errors.New("not found")

func allNotFound(errs []error) bool {
	for _, e := range errs {
		if !errors.Is(e, errPeerNotFound) {
			return false
		}
	}
	return true
}

// get fetches path from p.
func (l *Library) get(ctx context.Context, p Peer, path string, hdr http.Header, check func(*http.Response) error) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+path, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set(HeaderLocal, "1")
	resp, err := l.cfg.Peers.Client().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK, http.StatusPartialContent:
	case http.StatusNotFound:
		return nil, errPeerNotFound
	default:
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	if check != nil {
		if err := check(resp); err != nil {
			return nil, err
		}
	}
	const limit = 64 << 20
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("answer over %d bytes", limit)
	}
	return b, nil
}

// remoteInfo describes an asset another node holds, through the metadata
// cache.
func (l *Library) remoteInfo(ctx context.Context, name string) (Asset, error) {
	b, err := l.cfg.Meta.Get(ctx, "vod-info/"+name, func(ctx context.Context) ([]byte, error) {
		return l.fetchPeer(ctx, name, "/api/v1/vod/"+name, nil, nil)
	})
	if err != nil {
		return Asset{}, err
	}
	var a Asset
	if err := json.Unmarshal(b, &a); err != nil || a.Name != name || a.Version == "" {
		return Asset{}, fmt.Errorf("%w: a bad description of %s", errPeers, name)
	}
	return a, nil
}

// sameVersion refuses an answer about another version of the asset.
func sameVersion(ver string) func(*http.Response) error {
	return func(resp *http.Response) error {
		if got := resp.Header.Get(HeaderVersion); got != ver {
			return fmt.Errorf("version %q, not %q: %w", got, ver, errPeerNotFound)
		}
		return nil
	}
}

// serveRemoteHLS serves the playlist or a segment of an asset another
// node holds, through the cache.
func (l *Library) serveRemoteHLS(w http.ResponseWriter, r *http.Request, name, file string) {
	a, err := l.remoteInfo(r.Context(), name)
	if err != nil {
		l.fail(w, err)
		return
	}
	kind := "segment"
	if file == "index.m3u8" {
		kind = "playlist"
	} else if ver, _, _ := parseSegmentFile(file); ver != a.Version {
		http.Error(w, "no such segment: the asset has changed, reload the playlist", http.StatusNotFound)
		return
	}
	path := "/vod/" + name + "/" + file
	key := "vod/" + name + "/" + file
	if kind == "playlist" {
		key = "vod/" + name + "/" + a.Version + "/index.m3u8"
	}
	b, err := l.cfg.Cache.Get(r.Context(), key, func(ctx context.Context) ([]byte, error) {
		return l.fetchPeer(ctx, name, path, nil, sameVersion(a.Version))
	})
	if err != nil {
		l.fail(w, err)
		return
	}
	l.served.WithLabelValues(kind, "peer").Inc()
	w.Header().Set(HeaderVersion, a.Version)
	if kind == "playlist" {
		w.Header().Set("Content-Type", "application/vnd.apple.mpegurl")
		w.Header().Set("Cache-Control", "public, max-age=10")
		if q := queryOf(r); q != "" {
			b = playlistWithQuery(b, q)
		}
		w.Write(b)
		return
	}
	segmentHeaders(w, len(b))
	w.Write(b)
}

// playlistWithQuery appends q to every URI of playlist b.
func playlistWithQuery(b []byte, q string) []byte {
	lines := bytes.Split(b, []byte("\n"))
	for i, ln := range lines {
		if len(ln) > 0 && ln[0] != '#' {
			lines[i] = append(append([]byte{}, ln...), q...)
		}
	}
	return bytes.Join(lines, []byte("\n"))
}

// serveRemoteFile serves a file of an asset another node holds, fetched
// in blocks through the cache, with Range support.
func (l *Library) serveRemoteFile(w http.ResponseWriter, r *http.Request, name string, want Kind) {
	a, err := l.remoteInfo(r.Context(), name)
	if err != nil {
		l.fail(w, err)
		return
	}
	size := a.MP4Size
	if want == KindFLV {
		if a.Kind != KindFLV {
			http.NotFound(w, r)
			return
		}
		size = a.Size
	}
	if size <= 0 {
		l.fail(w, fmt.Errorf("%w: %s has no %s form", ErrUnsupported, name, want))
		return
	}
	rf := &remoteFile{l: l, ctx: r.Context(), name: name, kind: want, ver: a.Version, size: size}
	l.served.WithLabelValues(string(want), "peer").Inc()
	l.fileHeaders(w, want, a.Version)
	http.ServeContent(w, r, "", a.Modified, io.NewSectionReader(rf, 0, size))
}

// remoteFile reads a file another node holds, block by block through the
// cache.
type remoteFile struct {
	l    *Library
	ctx  context.Context
	name string
	kind Kind
	ver  string
	size int64
}

func (f *remoteFile) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for len(p) > 0 {
		if off >= f.size {
			return n, io.EOF
		}
		blk := off / blockSize
		b, err := f.block(blk)
		if err != nil {
			return n, err
		}
		i := off - blk*blockSize
		if i >= int64(len(b)) {
			return n, io.ErrUnexpectedEOF
		}
		c := copy(p, b[i:])
		n, off, p = n+c, off+int64(c), p[c:]
	}
	return n, nil
}

// block returns block blk of the file.
func (f *remoteFile) block(blk int64) ([]byte, error) {
	key := "vod/" + f.name + "/" + f.ver + "/" + string(f.kind) + "/" + strconv.FormatInt(blk, 10)
	return f.l.cfg.Cache.Get(f.ctx, key, func(ctx context.Context) ([]byte, error) {
		first := blk * blockSize
		last := min(first+blockSize, f.size) - 1
		hdr := http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", first, last)}}
		b, err := f.l.fetchPeer(ctx, f.name, "/vod/"+f.name+"."+string(f.kind), hdr, sameVersion(f.ver))
		if err == nil && int64(len(b)) != last-first+1 {
			err = fmt.Errorf("%w: block %d of %s: %d bytes", errPeers, blk, f.name, len(b))
		}
		return b, err
	})
}

// Replicate copies file (a finished recording) from this node's stores to
// the owners of its asset, in the background. It returns at once.
func (l *Library) Replicate(file string) {
	if l.cfg.Peers == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		ctx, cancel := context.WithTimeout(l.ctx, 10*time.Minute)
		defer cancel()
		l.replicate(ctx, file)
	}()
}

// replicate copies file to the owners of its asset other than this node,
// and returns the IDs of the nodes that hold it now.
func (l *Library) replicate(ctx context.Context, file string) []string {
	name, _, ok := splitFile(file)
	if !ok || l.cfg.Peers == nil {
		return nil
	}
	var held []string
	for _, p := range l.Owners(ctx, name) {
		if p.Self {
			held = append(held, p.ID)
			continue
		}
		if err := l.push(ctx, p, name, file); err != nil {
			l.log.Warn("vod: copy to owner failed", "asset", name, "node", p.ID, "err", err)
			continue
		}
		held = append(held, p.ID)
	}
	l.log.Info("vod: asset copied to its owners", "asset", name, "nodes", held)
	return held
}

// push sends this node's copy of file to p.
func (l *Library) push(ctx context.Context, p Peer, name, file string) error {
	s, o, _, err := l.find(ctx, name)
	if err != nil {
		return err
	}
	f, o, err := s.Open(ctx, o.Name)
	if err != nil {
		return err
	}
	defer f.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, p.URL+InternalPath+url.PathEscape(o.Name), io.NewSectionReader(f, 0, o.Size))
	if err != nil {
		return err
	}
	req.ContentLength = o.Size
	req.Header.Set(headerModified, o.ModTime.UTC().Format(time.RFC3339Nano))
	l.cfg.Peers.Sign(req)
	resp, err := l.cfg.Peers.Client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// receiveCopy answers PUT /internal/vod/FILE: another node's copy of an
// asset this node owns.
func (l *Library) receiveCopy(w http.ResponseWriter, r *http.Request) {
	if l.cfg.Peers == nil || l.cfg.Peers.Verify(r) != nil {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	file := r.PathValue("file")
	name, k, ok := splitFile(file)
	if !ok {
		http.Error(w, ErrBadName.Error(), http.StatusBadRequest)
		return
	}
	dst := l.cfg.Stores[0]
	if dst == nil {
		http.Error(w, "this node keeps no library: start it with --vod-dir", http.StatusServiceUnavailable)
		return
	}
	mod, err := time.Parse(time.RFC3339Nano, r.Header.Get(headerModified))
	if err != nil {
		http.Error(w, "missing "+headerModified, http.StatusBadRequest)
		return
	}
	if s, o, _, err := l.find(r.Context(), name); err == nil && s == dst && o.Name == file && version(o) == version(Object{Size: r.ContentLength, ModTime: mod}) {
		w.WriteHeader(http.StatusCreated) // already here
		return
	}
	o, err := dst.Put(r.Context(), file, r.Body, l.cfg.MaxUpload, mod, checker(k))
	if err != nil {
		code, msg := status(err)
		http.Error(w, msg, code)
		return
	}
	l.log.Info("vod: asset copy received", "asset", name, "bytes", o.Size)
	w.WriteHeader(http.StatusCreated)
}

// deleteRemote asks every other node to delete name, and counts the
// copies deleted.
func (l *Library) deleteRemote(ctx context.Context, name string) int {
	if l.cfg.Peers == nil {
		return 0
	}
	n := 0
	for _, p := range l.others(ctx, name) {
		ctx, cancel := context.WithTimeout(ctx, peerTimeout)
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, p.URL+InternalPath+name, nil)
		if err == nil {
			l.cfg.Peers.Sign(req)
			var resp *http.Response
			if resp, err = l.cfg.Peers.Client().Do(req); err == nil {
				var got struct{ Deleted int }
				json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&got)
				resp.Body.Close()
				n += got.Deleted
			}
		}
		cancel()
		if err != nil {
			l.log.Warn("vod: delete on another node failed", "asset", name, "node", p.ID, "err", err)
		}
	}
	return n
}

// receiveDelete answers DELETE /internal/vod/NAME from another node.
func (l *Library) receiveDelete(w http.ResponseWriter, r *http.Request) {
	if l.cfg.Peers == nil || l.cfg.Peers.Verify(r) != nil {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	name := r.PathValue("name")
	if err := CheckName(name); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	n, err := l.deleteLocal(r.Context(), name)
	if err != nil {
		http.Error(w, "delete failed", http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"deleted": n})
}
