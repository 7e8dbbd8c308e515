package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisL2 is an L2 on one Redis server: a string per value, PX the TTL.
// Give the server a maxmemory and an allkeys-lru (or volatile-lru, with a
// cache TTL) policy so that it evicts rather than refuses writes.
type redisL2 struct {
	client   *redis.Client
	prefix   string
	timeout  time.Duration
	maxValue int
}

// redisOptions parses a redis:// URL stripped of this package's options.
func redisOptions(rawURL string) (*redis.Options, error) {
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // ue.Error() quotes the URL
		}
		return nil, err
	}
	return opts, nil
}

func newRedis(cfg *l2URL, o L2Options) *redisL2 {
	quietRedisClient.Do(func() { redis.SetLogger(redisDebugLog{}) })
	opts, _ := redisOptions(cfg.redisURL) // parseL2URL checked it
	// Bound every socket read, write and dial by the call's context, which
	// carries the timeout, rather than go-redis's own 3s/5s.
	opts.ContextTimeoutEnabled = true
	if opts.DialTimeout == 0 {
		opts.DialTimeout = o.Timeout
	}
	// One dial per attempt and no retries unless the URL asks: a cache
	// takes a failure as a miss rather than wait.
	opts.DialerRetries = 1
	if opts.MaxRetries == 0 {
		opts.MaxRetries = -1
	}
	return &redisL2{
		client:   redis.NewClient(opts),
		prefix:   o.Prefix,
		timeout:  o.Timeout,
		maxValue: cfg.maxValue,
	}
}

// Get implements L2.
func (r *redisL2) Get(ctx context.Context, key string) ([]byte, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	b, err := r.client.Get(ctx, r.prefix+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("redis get: %w", err)
	}
	return b, true, nil
}

// Set implements L2.
func (r *redisL2) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if len(value) > r.maxValue {
		return nil
	}
	if ttl < 0 {
		ttl = 0 // not go-redis's KeepTTL
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if err := r.client.Set(ctx, r.prefix+key, value, ttl).Err(); err != nil {
		return fmt.Errorf("redis set: %w", err)
	}
	return nil
}

// maxValueBytes is the largest value Set stores.
func (r *redisL2) maxValueBytes() int { return r.maxValue }

// Close implements L2.
func (r *redisL2) Close() error { return r.client.Close() }

// quietRedisClient sends the Redis client's own log lines (one per failed
// dial while the server is away) to slog at debug level, once per process
// (as the cluster registry does): the cache logs L2 failures itself.
var quietRedisClient sync.Once

type redisDebugLog struct{}

func (redisDebugLog) Printf(ctx context.Context, format string, v ...any) {
	slog.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}
