// Package webhook tells other systems what happens on a node: JSON POSTs
// of on_publish, on_publish_done, on_play, on_stop and on_record_done, signed with
// HMAC-SHA256, delivered in order per stream and retried with backoff.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Event names.
const (
	OnPublish     = "on_publish"
	OnPublishDone = "on_publish_done"
	OnPlay        = "on_play"
	OnStop        = "on_stop"
	// OnRecordDone reports a finished recording: its file is complete
	// under its .flv name.
	OnRecordDone = "on_record_done"
)

// Headers of a delivery.
const (
	// HeaderSignature is "sha256=" and the hex HMAC-SHA256, under the
	// webhook secret, of the timestamp header's value, a dot, and the body.
	HeaderSignature = "X-Meshcast-Signature"
	// HeaderTimestamp is the delivery attempt's Unix time.
	HeaderTimestamp = "X-Meshcast-Timestamp"
	// HeaderEvent names the event.
	HeaderEvent = "X-Meshcast-Event"
	// HeaderIdempotency is the event's ID, the same on every retry.
	HeaderIdempotency = "Idempotency-Key"
)

// Event is what a webhook receives, as JSON.
type Event struct {
	ID     string    `json:"id"` // the same on every retry: the idempotency key
	Event  string    `json:"event"`
	Stream string    `json:"stream"` // APP/STREAM
	Seq    uint64    `json:"seq"`    // grows with every event of the node: orders a stream's events
	Node   string    `json:"node"`
	Time   time.Time `json:"time"`
	// The client session the event is about.
	Session    string `json:"session"`
	Protocol   string `json:"protocol"`
	RemoteAddr string `json:"remote_addr"`
	// The recording of on_record_done: its file name without .flv, the
	// file's absolute path, size, and duration in seconds.
	Recording string  `json:"recording,omitempty"`
	Path      string  `json:"path,omitempty"`
	Bytes     int64   `json:"bytes,omitempty"`
	Duration  float64 `json:"duration,omitempty"`
}

// Config configures a Dispatcher.
type Config struct {
	// URLs receive every event.
	URLs []string
	// Secret signs deliveries.
	Secret string
	// Node is put in every event.
	Node string
	// Timeout bounds one delivery attempt. Defaults to 5s.
	Timeout time.Duration
	// MaxAttempts bounds the attempts of one delivery. Defaults to 8
	// (about two minutes with the backoff).
	MaxAttempts int
	// MaxPending bounds the events waiting, all streams together; past it
	// new events are dropped and logged. Defaults to 10000.
	MaxPending int
	// Backoff is the first retry's delay, doubled up to 30s. Defaults to
	// 500ms.
	Backoff time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Dispatcher delivers events. Notify never blocks.
type Dispatcher struct {
	cfg     Config
	log     *slog.Logger
	client  *http.Client
	targets atomic.Pointer[targets] // where events go, and their key

	mu      sync.Mutex
	queues  map[string]*queue // by stream
	pending int
	seq     uint64
	closed  bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// targets are the URLs events go to and the key that signs them.
type targets struct {
	urls   []string
	secret string
}

// SetTargets replaces the URLs events go to and the key that signs them,
// from the next event delivered on (a reload); none stops deliveries.
func (d *Dispatcher) SetTargets(urls []string, secret string) {
	d.targets.Store(&targets{urls: slices.Clone(urls), secret: secret})
}

// queue is a stream's events in order; a goroutine drains it while it has
// any.
type queue struct{ events []Event }

// New creates a dispatcher.
func New(cfg Config) *Dispatcher {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 8
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 10000
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "webhook"),
		client: &http.Client{Timeout: cfg.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		queues: make(map[string]*queue),
		ctx:    ctx,
		cancel: cancel,
	}
	d.SetTargets(cfg.URLs, cfg.Secret)
	return d
}

// Flush waits until every queued event is delivered or given up, or ctx
// ends.
func (d *Dispatcher) Flush(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		d.mu.Lock()
		n := d.pending
		d.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close stops delivering; events not yet delivered are dropped.
func (d *Dispatcher) Close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
}

// Notify queues ev for delivery after the stream's earlier events. It fills
// in the event's ID, sequence number, node and time.
func (d *Dispatcher) Notify(ev Event) {
	var id [12]byte
	rand.Read(id[:])
	ev.ID, ev.Node, ev.Time = hex.EncodeToString(id[:]), d.cfg.Node, time.Now().UTC()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	if d.pending >= d.cfg.MaxPending {
		d.log.Warn("webhook event dropped: too many waiting", "event", ev.Event, "stream", ev.Stream, "max", d.cfg.MaxPending)
		return
	}
	d.seq++
	ev.Seq = d.seq
	d.pending++
	q := d.queues[ev.Stream]
	if q != nil {
		q.events = append(q.events, ev)
		return
	}
	q = &queue{events: []Event{ev}}
	d.queues[ev.Stream] = q
	d.wg.Add(1)
	go d.drain(ev.Stream, q)
}

// drain delivers a stream's events in order until its queue is empty.
func (d *Dispatcher) drain(stream string, q *queue) {
	defer d.wg.Done()
	for {
		d.mu.Lock()
		if len(q.events) == 0 || d.ctx.Err() != nil {
			d.pending -= len(q.events)
			delete(d.queues, stream)
			d.mu.Unlock()
			return
		}
		ev := q.events[0]
		d.mu.Unlock()

		to := d.targets.Load()
		for _, u := range to.urls {
			d.deliver(u, to.secret, ev)
		}

		d.mu.Lock()
		q.events = q.events[1:]
		d.pending--
		d.mu.Unlock()
	}
}

// deliver posts ev to url, retrying with backoff until it is accepted (2xx),
// refused for good (4xx other than 408 and 429), or out of attempts.
func (d *Dispatcher) deliver(url, secret string, ev Event) {
	body, _ := json.Marshal(ev)
	wait := d.cfg.Backoff
	for attempt := 1; ; attempt++ {
		status, err := d.post(url, secret, ev, body)
		switch {
		case err == nil && status/100 == 2:
			return
		case d.ctx.Err() != nil:
			return
		case err == nil && status/100 == 4 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests:
			d.log.Warn("webhook refused; not retried", "event", ev.Event, "stream", ev.Stream, "url", url, "status", status)
			return
		case attempt >= d.cfg.MaxAttempts:
			d.log.Warn("webhook not delivered; giving up", "event", ev.Event, "stream", ev.Stream, "url", url, "attempts", attempt, "status", status, "err", err)
			return
		}
		d.log.Debug("webhook failed; retrying", "event", ev.Event, "stream", ev.Stream, "url", url, "status", status, "err", err, "in", wait)
		select {
		case <-d.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// post makes one attempt.
func (d *Dispatcher) post(url, secret string, ev Event, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(d.ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "meshcast-webhook")
	req.Header.Set(HeaderEvent, ev.Event)
	req.Header.Set(HeaderIdempotency, ev.ID)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(secret, ts, body))
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // lets the connection be reused
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Sign returns the signature header value for a delivery: receivers
// compute it over the timestamp header and the raw body and compare in
// constant time (hmac.Equal).
func Sign(secret, timestamp string, body []byte) string {
	h := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(h, "%s.", timestamp)
	h.Write(body)
	return "sha256=" + hex.EncodeToString(h.Sum(nil))
}
