// Package vod serves the on-demand library: the MP4 files of a directory,
// as progressive downloads with HTTP Range support at /vod/NAME.mp4, and
// their list at /api/v1/vod.
//
// Files are opened through an os.Root on the library directory, so no name
// reaches outside it, and names are checked (letters, digits, '_', '-',
// '.', not starting with a dot) before any file system call.
package vod

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"
)

// Ext is the extension of the library's files.
const Ext = ".mp4"

// MaxNameLen bounds an asset name, extension excluded.
const MaxNameLen = 128

// ErrBadName is returned for a name that cannot be an asset's.
var ErrBadName = errors.New("vod: invalid asset name: use 1 to 128 letters, digits, '_', '-' or '.', not starting with '.'")

// Asset is one file of the library.
type Asset struct {
	Name     string    `json:"name"` // without the extension
	Size     int64     `json:"size"`
	Modified time.Time `json:"modified"`
	MP4      string    `json:"mp4"` // its progressive download path
}

// Library is a directory of MP4 files.
type Library struct {
	dir  string
	root *os.Root
}

// Open opens the library in dir, which must exist.
func Open(dir string) (*Library, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("vod: %w", err)
	}
	return &Library{dir: dir, root: root}, nil
}

// Close releases the library's directory.
func (l *Library) Close() error { return l.root.Close() }

// CheckName reports whether name (without extension) can name an asset.
func CheckName(name string) error {
	if name == "" || len(name) > MaxNameLen || name[0] == '.' {
		return ErrBadName
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return ErrBadName
		}
	}
	return nil
}

// List returns the library's assets by name. Files that are not regular,
// lack the extension or have names that could not be served are left out.
func (l *Library) List() ([]Asset, error) {
	entries, err := fs.ReadDir(l.root.FS(), ".")
	if err != nil {
		return nil, fmt.Errorf("vod: %w", err)
	}
	out := []Asset{}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), Ext)
		if !ok || !e.Type().IsRegular() || CheckName(name) != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, Asset{Name: name, Size: info.Size(), Modified: info.ModTime().UTC(), MP4: "/vod/" + name + Ext})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// open opens asset name's file, which must be a regular file.
func (l *Library) open(name string) (*os.File, fs.FileInfo, error) {
	if err := CheckName(name); err != nil {
		return nil, nil, err
	}
	f, err := l.root.Open(name + Ext)
	if err != nil {
		return nil, nil, err
	}
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() {
		f.Close()
		return nil, nil, fs.ErrNotExist
	}
	return f, info, nil
}

// ServeMP4 answers GET and HEAD /vod/{file} for file NAME.mp4, with Range,
// If-Modified-Since and If-Range as http.ServeContent handles them.
func (l *Library) ServeMP4(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutSuffix(r.PathValue("file"), Ext)
	if !ok {
		http.NotFound(w, r)
		return
	}
	f, info, err := l.open(name)
	switch {
	case errors.Is(err, ErrBadName):
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case err != nil:
		http.Error(w, "no such asset", http.StatusNotFound)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "video/mp4")
	w.Header().Set("Cache-Control", "public, max-age=60")
	http.ServeContent(w, r, "", info.ModTime(), f)
}

// ServeList answers GET /api/v1/vod with the library's assets.
func (l *Library) ServeList(w http.ResponseWriter, r *http.Request) {
	assets, err := l.List()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "vod_unavailable", "message": "the library cannot be read"}})
		return
	}
	json.NewEncoder(w).Encode(struct {
		Assets []Asset `json:"assets"`
	}{assets})
}
