package events

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meshcast/meshcast/internal/cluster"
)

// Bounds of the Redis bus.
const (
	// busQueue bounds the messages waiting to be published; more are
	// dropped.
	busQueue = 1024
	// busTimeout bounds one PUBLISH and one connection attempt.
	busTimeout = time.Second
	// busInbox bounds the messages received and not yet delivered.
	busInbox = 256
	// maxBusMessage bounds one received message.
	maxBusMessage = 16 << 10
)

// busMessage is what nodes publish on the channel "<prefix>events".
type busMessage struct {
	Origin string `json:"origin"` // the publishing node, which skips its own
	Type   string `json:"type"`   // "chat", "stream:start" or "stream:end"
	Stream string `json:"stream"`
	Text   string `json:"text,omitempty"`
	From   string `json:"from,omitempty"`
	Time   string `json:"time,omitempty"`
}

// bus carries events between nodes over Redis pub/sub. Publishing never
// blocks (a bounded queue, dropped when full); one goroutine publishes
// with a timeout per message, one receives.
type bus struct {
	client  redis.UniversalClient
	channel string
	node    string
	log     *slog.Logger
	deliver func(busMessage)

	out    chan []byte
	drops  atomic.Int64
	failed atomic.Bool // the last publish failed: logged once per outage
	ctx    context.Context
	cancel context.CancelFunc
}

func newBus(rawURL, channel, node string, log *slog.Logger, deliver func(busMessage)) (*bus, error) {
	opts, err := cluster.RedisOptions(rawURL)
	if err != nil {
		return nil, fmt.Errorf("events: --redis: %w", err)
	}
	opts.ContextTimeoutEnabled = true // calls end at their context's deadline
	opts.DialTimeout = busTimeout
	opts.MaxRetries = 1
	opts.PoolSize = 4
	ctx, cancel := context.WithCancel(context.Background())
	return &bus{
		client:  redis.NewUniversalClient(opts),
		channel: channel,
		node:    node,
		log:     log,
		deliver: deliver,
		out:     make(chan []byte, busQueue),
		ctx:     ctx,
		cancel:  cancel,
	}, nil
}

// start runs the publisher and the subscriber until stop closes.
func (b *bus) start(wg *sync.WaitGroup, stop <-chan struct{}) {
	wg.Add(2)
	go func() { defer wg.Done(); b.publishLoop(stop) }()
	go func() { defer wg.Done(); b.subscribeLoop(stop) }()
}

// shutdown ends calls in flight; release closes the client once the loops
// have returned.
func (b *bus) shutdown() { b.cancel() }
func (b *bus) release()  { b.client.Close() }

// publish queues m for the other nodes, or drops it when the queue is full.
func (b *bus) publish(m busMessage) {
	m.Origin = b.node
	p, err := json.Marshal(m)
	if err != nil {
		return
	}
	select {
	case b.out <- p:
	default:
		if b.drops.Add(1) == 1 {
			b.log.Warn("events: Redis publish queue full: dropping events for other nodes")
		}
	}
}

func (b *bus) publishLoop(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case p := <-b.out:
			ctx, cancel := context.WithTimeout(b.ctx, busTimeout)
			err := b.client.Publish(ctx, b.channel, p).Err()
			cancel()
			switch {
			case err != nil && !b.failed.Swap(true):
				b.log.Warn("events: Redis publish failed: other nodes miss events until it recovers", "err", err)
			case err == nil && b.failed.Swap(false):
				b.log.Info("events: Redis publish recovered", "dropped", b.drops.Swap(0))
			}
		}
	}
}

func (b *bus) subscribeLoop(stop <-chan struct{}) {
	// Subscribe tries once, within the dial timeout; the channel's own
	// goroutine reconnects and resubscribes after that.
	ps := b.client.Subscribe(b.ctx, b.channel)
	defer ps.Close()
	ch := ps.Channel(redis.WithChannelSize(busInbox), redis.WithChannelSendTimeout(100*time.Millisecond))
	for {
		select {
		case <-stop:
			return
		case msg, ok := <-ch:
			if !ok {
				return
			}
			if len(msg.Payload) > maxBusMessage {
				continue
			}
			var m busMessage
			if json.Unmarshal([]byte(msg.Payload), &m) != nil || m.Origin == b.node {
				continue
			}
			b.deliver(m)
		}
	}
}
