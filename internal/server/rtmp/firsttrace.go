//go:build ttfftrace

package rtmp

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Built with -tags ttfftrace, the server stamps its command-phase reads
// with the kernel's receive time and writes a line per play that got its
// first picture to the file named by MESHCAST_FIRST_PICTURES:
// "REMOTEADDR ARRIVED HANDLED WRITTEN" (Unix nanoseconds): when the play
// command reached the socket, when the session took it up, and when the
// answer carrying the first picture was written. Matched with
// `meshcast bench --first-frames`, it splits time to first frame between
// the server and the load generator (bench/ttff-split.sh).
const traceFirstPictures = true

var firstTrace struct {
	sync.Mutex
	w io.Writer
}

func init() {
	if name := os.Getenv("MESHCAST_FIRST_PICTURES"); name != "" {
		f, err := os.Create(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "MESHCAST_FIRST_PICTURES:", err)
			return
		}
		firstTrace.w = f
	}
}

func traceFirstPicture(remote string, arrived, handled, written time.Time) {
	firstTrace.Lock()
	defer firstTrace.Unlock()
	if firstTrace.w != nil {
		fmt.Fprintf(firstTrace.w, "%s %d %d %d\n", remote, arrived.UnixNano(), handled.UnixNano(), written.UnixNano())
	}
}
