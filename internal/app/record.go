package app

import (
	"fmt"
	"os"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshcast/meshcast/internal/record"
	"github.com/meshcast/meshcast/internal/webhook"
)

// recordHooks sends on_record_done for finished recordings. Recordings
// recovered at start-up finish before the webhooks start: they wait in
// pending until then.
type recordHooks struct {
	mu      sync.Mutex
	started bool
	d       *webhook.Dispatcher // nil without webhook URLs
	pending []record.Done
}

// initRecorder builds the recorder when any app is recorded. With
// recording off, a record dir that exists still gets the recordings a
// crash interrupted recovered, and nothing else.
func (a *App) initRecorder(reg prometheus.Registerer) error {
	if !a.cfg.Recording() {
		if st, err := os.Stat(a.cfg.RecordDir); a.cfg.RecordDir == "" || err != nil || !st.IsDir() {
			return nil
		}
	}
	rec, err := record.New(record.Config{
		Dir:     a.cfg.RecordDir,
		Enabled: func(app string) bool { c := a.current(); return c.Records(app) },
		Hub:     a.Hub,
		Logger:  a.log,
		OnDone:  a.recordDone,
	})
	if err != nil {
		return fmt.Errorf("--record-dir: %w", err)
	}
	a.recorder = rec
	reg.MustRegister(rec.Collectors()...)
	return nil
}

// Recorder returns the node's recorder, nil when nothing is recorded:
// its Dir holds the finished recordings (*.flv) and Active lists those
// being written.
func (a *App) Recorder() *record.Recorder { return a.recorder }

// recordDone sends on_record_done for a finished recording.
func (a *App) recordDone(d record.Done) {
	h := &a.recHooks
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.started {
		h.pending = append(h.pending, d)
		return
	}
	a.recordingFinished(h.d, d)
}

// recordingFinished announces a finished recording to the webhooks (d may
// be nil) and copies it to the owners of its asset in a cluster.
func (a *App) recordingFinished(hooks *webhook.Dispatcher, d record.Done) {
	if hooks != nil {
		hooks.Notify(recordEvent(d))
	}
	a.vod.Replicate(d.Name + record.Ext)
}

// startRecordHooks sends the events of recordings finished so far, and of
// every one from now on, to the webhooks, if there are any. Start calls
// it once the webhooks have started.
func (a *App) startRecordHooks() {
	h := &a.recHooks
	h.mu.Lock()
	defer h.mu.Unlock()
	h.started, h.d = true, a.hooks
	for _, d := range h.pending {
		a.recordingFinished(h.d, d)
	}
	h.pending = nil
}

// recordEvent is the webhook event of a finished recording.
func recordEvent(d record.Done) webhook.Event {
	return webhook.Event{
		Event:      webhook.OnRecordDone,
		Stream:     string(d.Stream),
		Session:    d.Session,
		Protocol:   d.Protocol,
		RemoteAddr: d.RemoteAddr,
		Recording:  d.Name,
		Path:       d.Path,
		Bytes:      d.Bytes,
		Duration:   d.Duration.Seconds(),
	}
}

// closeRecorder finishes the recordings still being written.
func (a *App) closeRecorder() {
	if a.recorder != nil {
		a.recorder.Close()
	}
}
