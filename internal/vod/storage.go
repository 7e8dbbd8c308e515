package vod

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/meshcast/meshcast/internal/diskfull"
)

// Object is a file of a Storage.
type Object struct {
	Name    string // file name, extension included
	Size    int64
	ModTime time.Time
}

// File is an open object: read at any offset, as a local file or ranged
// requests to an object store can be.
type File interface {
	io.ReaderAt
	io.Closer
}

// Storage holds the library's files. Dir keeps them in a local directory
// (one node's, or a filesystem nodes share); an object store such as S3
// fits the same methods. Names are checked by the library before they get
// here: a file name is an asset name and an extension.
type Storage interface {
	// List returns the stored objects, in no particular order.
	List(ctx context.Context) ([]Object, error)
	// Stat describes one object; fs.ErrNotExist when there is none.
	Stat(ctx context.Context, name string) (Object, error)
	// Open opens one object for reading; fs.ErrNotExist when there is none.
	Open(ctx context.Context, name string) (File, Object, error)
	// Put stores what r yields as name, replacing any object of that name
	// at once and whole, or not at all. More than limit bytes fail with
	// ErrTooLarge and store nothing; so does an error of check, which is
	// given the whole file before it replaces anything. A non-zero modTime
	// is kept as the object's. A storage without room for the file fails
	// with ErrStorageFull, and keeps nothing of it.
	Put(ctx context.Context, name string, r io.Reader, limit int64, modTime time.Time, check func(File, int64) error) (Object, error)
	// Delete removes an object; fs.ErrNotExist when there is none.
	Delete(ctx context.Context, name string) error
}

// ErrTooLarge refuses an upload over the size limit.
var ErrTooLarge = errors.New("vod: file over the size limit")

// ErrStorageFull refuses an upload the storage has no room for (a full
// file system, a quota, a file size limit). Nothing of it is kept.
var ErrStorageFull = errors.New("vod: not enough storage for the file")

// storageErr wraps err, marking the errors of a storage without room with
// ErrStorageFull.
func storageErr(err error) error {
	if diskfull.Is(err) {
		return fmt.Errorf("%w: %w", ErrStorageFull, err)
	}
	return fmt.Errorf("vod: %w", err)
}

// Dir is a Storage in a local directory. Every file operation goes through
// an os.Root, so no name reaches outside the directory, symbolic links
// included. Uploads are written to a hidden temporary file and renamed.
type Dir struct {
	root *os.Root
}

// OpenDir opens the directory dir, which must exist.
func OpenDir(dir string) (*Dir, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("vod: %w", err)
	}
	return &Dir{root: root}, nil
}

// Close releases the directory.
func (d *Dir) Close() error { return d.root.Close() }

// List implements Storage: the regular files whose names do not start
// with a dot.
func (d *Dir) List(context.Context) ([]Object, error) {
	entries, err := fs.ReadDir(d.root.FS(), ".")
	if err != nil {
		return nil, fmt.Errorf("vod: %w", err)
	}
	var out []Object
	for _, e := range entries {
		if !e.Type().IsRegular() || e.Name()[0] == '.' {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, Object{Name: e.Name(), Size: info.Size(), ModTime: info.ModTime()})
	}
	return out, nil
}

// Stat implements Storage.
func (d *Dir) Stat(_ context.Context, name string) (Object, error) {
	info, err := d.root.Lstat(name)
	if err != nil {
		return Object{}, err
	}
	if !info.Mode().IsRegular() {
		return Object{}, fs.ErrNotExist
	}
	return Object{Name: name, Size: info.Size(), ModTime: info.ModTime()}, nil
}

// Open implements Storage.
func (d *Dir) Open(_ context.Context, name string) (File, Object, error) {
	f, err := d.root.Open(name)
	if err != nil {
		return nil, Object{}, err
	}
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() {
		f.Close()
		return nil, Object{}, fs.ErrNotExist
	}
	return f, Object{Name: name, Size: info.Size(), ModTime: info.ModTime()}, nil
}

// Put implements Storage.
func (d *Dir) Put(ctx context.Context, name string, r io.Reader, limit int64, modTime time.Time, check func(File, int64) error) (Object, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := ".upload-" + hex.EncodeToString(rnd[:])
	f, err := d.root.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return Object{}, storageErr(err)
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			d.root.Remove(tmp)
		}
	}()
	n, err := io.Copy(f, io.LimitReader(ctxReader{ctx, r}, limit+1))
	if err != nil {
		if diskfull.Is(err) {
			return Object{}, fmt.Errorf("%w: %d bytes written: %w", ErrStorageFull, n, err)
		}
		return Object{}, fmt.Errorf("vod: upload: %w", err)
	}
	if n > limit {
		return Object{}, ErrTooLarge
	}
	if check != nil {
		if err := check(f, n); err != nil {
			return Object{}, err
		}
	}
	if err := f.Sync(); err != nil {
		return Object{}, storageErr(err)
	}
	if err := f.Close(); err != nil {
		return Object{}, storageErr(err)
	}
	if !modTime.IsZero() {
		if err := d.root.Chtimes(tmp, modTime, modTime); err != nil {
			return Object{}, storageErr(err)
		}
	}
	if err := d.root.Rename(tmp, name); err != nil {
		return Object{}, storageErr(err)
	}
	done = true
	return d.Stat(ctx, name)
}

// Delete implements Storage.
func (d *Dir) Delete(_ context.Context, name string) error {
	if _, err := d.Stat(context.Background(), name); err != nil {
		return err
	}
	return d.root.Remove(name)
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
