package egress

import (
	"runtime"
	"sync"

	"github.com/meshcast/meshcast/internal/stream"
)

// A wireFile is the stream.Spool a Sender gives each stream it writes in a
// format: it holds the stream's wire form in that format, packet after packet,
// in an anonymous in-memory file (memfd). A sender worker sends a viewer's
// batch of packets from it with one sendfile call: the socket takes
// references to the file's pages instead of copying the bytes, which is
// most of what a large write costs the kernel. The file is append-only;
// the pages of packets evicted from the log are released by punching
// holes, and pages still queued in some socket live on until that socket
// is done with them, whatever is punched.
//
// The log's entries keep their wire bytes in memory too: batches that are
// small, not contiguous in the file, or left over from a partial write are
// written from there.
type wireFile struct {
	fd int

	// Owned by the stream, under its lock.
	end    int64 // where the next packet goes
	dead   int64 // bytes before this belong to evicted packets
	broken bool  // a write failed: append no more

	// guard is held for reading while sending from the file, and for
	// writing while punching or closing it.
	guard   sync.RWMutex
	punched int64 // bytes before this may be holes
	closed  bool
	cleanup runtime.Cleanup
}

// punchUnit is how many dead bytes gather before a hole is punched, and
// holes start and end on multiples of it. Punching part of a page zeroes
// those bytes in place, and a socket still sending from the page would
// send the zeros: whole pages, and whole transparent huge pages where the
// system gives them to in-memory files, are released instead.
const punchUnit = 2 << 20

// maxUnpunched bounds the bytes of evicted packets a wire file holds
// while senders keep it busy.
const maxUnpunched = 8 * punchUnit

// minSendfile is the smallest batch sent from the file: below it, copying
// the bytes costs the kernel less than taking references to pages.
const minSendfile = 8 << 10

// openWireFile creates an empty wire file for format f.
func openWireFile(f *stream.Format) (stream.Spool, error) {
	wf, err := newWireFile(f)
	if err != nil {
		return nil, err // a nil *wireFile would make a non-nil Spool
	}
	return wf, nil
}

func newWireFile(f *stream.Format) (*wireFile, error) {
	fd, err := memfdCreate("meshcast-" + f.Name())
	if err != nil {
		return nil, err
	}
	wf := &wireFile{fd: fd}
	// A file no entry, reader or stream refers to any more is closed even
	// if its stream never was.
	wf.cleanup = runtime.AddCleanup(wf, func(fd int) { closeFd(fd) }, fd)
	return wf, nil
}

// Append writes b at the file's end and returns its offset; ok is false
// once a write failed. The stream calls it under its lock.
func (wf *wireFile) Append(b []byte) (off int64, ok bool) {
	if wf.broken {
		return 0, false
	}
	off = wf.end
	if err := pwriteAll(wf.fd, b, off); err != nil {
		wf.broken = true
		return 0, false
	}
	wf.end += int64(len(b))
	return off, true
}

// Evicted notes that the bytes before end belong to evicted packets, and
// releases them whole punchUnits at a time when no sender is using the
// file. The stream calls it under its lock. It waits for senders only when
// maxUnpunched bytes have gathered, and then only for the sendfile calls
// under way, each a non-blocking system call.
func (wf *wireFile) Evicted(end int64) {
	wf.dead = max(wf.dead, end)
	switch behind := wf.dead - wf.punched; {
	case behind < punchUnit:
		return
	case behind < maxUnpunched:
		if !wf.guard.TryLock() {
			return
		}
	default:
		wf.guard.Lock()
	}
	defer wf.guard.Unlock()
	if wf.closed {
		return
	}
	to := wf.dead &^ (punchUnit - 1)
	if to > wf.punched && punchHole(wf.fd, wf.punched, to-wf.punched) == nil {
		wf.punched = to
	}
}

// Close closes the file once no sender is using it. Senders holding its
// entries write them from memory from then on.
func (wf *wireFile) Close() {
	wf.guard.Lock()
	defer wf.guard.Unlock()
	if wf.closed {
		return
	}
	wf.closed = true
	wf.cleanup.Stop()
	closeFd(wf.fd)
}

// send sends n bytes from off on to sk from the file. It reports false,
// having sent nothing, when the file is closed or those pages were
// released.
func (wf *wireFile) send(io *sockIO, sk sock, off, n int64) (int64, bool, error) {
	wf.guard.RLock()
	defer wf.guard.RUnlock()
	if wf.closed || off < wf.punched {
		return 0, false, nil
	}
	sent, err := io.sendfile(sk, wf.fd, off, n)
	return sent, true, err
}
