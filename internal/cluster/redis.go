package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/meshcast/meshcast/internal/streamname"
)

// RedisConfig configures a Redis registry.
type RedisConfig struct {
	// URL locates the store:
	//
	//	redis://[user:pass@]host:port[/db]      one server
	//	rediss://...                            the same over TLS
	//	redis://h1:p1,h2:p2                     Redis Cluster (seed nodes)
	//	redis://h1:p1,h2:p2/db?master=NAME      Sentinel: the hosts are sentinels
	//	                                        (port 26379 when left out)
	//
	// Query options that redis.ParseURL knows (dial_timeout, pool_size,
	// ...) apply to every host. With Sentinel, user and password are the
	// data servers'; the sentinels are asked without them.
	URL string
	// Prefix starts every key, so several clusters can share a store.
	// Empty means "meshcast:". In Redis Cluster it is wrapped in a hash tag
	// ("{meshcast:}") unless it already holds one: the Lua scripts read the
	// owner's node key, so every key must live in the same slot.
	Prefix string
	// NodeTimeout is how long a node stays alive, a claim held and a relay
	// recorded without being refreshed. Every node of a cluster must use
	// the same value. Zero or negative means DefaultNodeTimeout.
	NodeTimeout time.Duration
	// OpTimeout bounds each call to the store. Zero or negative means
	// half the NodeTimeout, at least 1s and at most 3s (DefaultOpTimeout).
	OpTimeout time.Duration
}

// DefaultRedisPrefix is RedisConfig.Prefix when none is given.
const DefaultRedisPrefix = "meshcast:"

// DefaultOpTimeout is RedisConfig.OpTimeout when none is given, for a
// registry whose node timeout is nodeTimeout: half of it, at least 1 s and
// at most 3 s (2.5 s for the default 5 s).
//
// A call on a new connection to a store far away takes several round
// trips: HELLO, the command, and a script's first load (NOSCRIPT, then
// EVAL). With the store 500 ms away that is up to 2 s, which a 1 s bound
// refused: the node could not join. A beat that waits half a lease still
// leaves the other half for the next one, which comes a second later.
// Above 3 s a publish would wait too long for a store that does not answer.
func DefaultOpTimeout(nodeTimeout time.Duration) time.Duration {
	return min(max(nodeTimeout/2, time.Second), 3*time.Second)
}

// Redis is a Registry kept in Redis (one server, Sentinel or Cluster), shared
// by every node of a cluster. Liveness and leases are key expiries (PX), so
// they run on the store's clock; claims are compare-and-set in Lua scripts.
//
// Key layout, each key starting with the prefix:
//
//	node:ID              string, JSON Node record; PX NodeTimeout. The node is alive while it exists.
//	nodes                set of node IDs that may have a record, for listing
//	claim:NAME           string "EPOCH:NODE", the current claim; PX NodeTimeout (the lease)
//	epoch:NAME           integer, the last epoch handed out for NAME (INCR); never expires, never deleted
//	claims               set of stream names that may have a claim, for listing
//	relay:NAME:NODE      string, NODE's upstream for NAME; PX RelayLife NodeTimeouts; counts while node:NODE exists
//	relays:NAME          set of node IDs that may relay NAME, for listing; PX RelayLife NodeTimeouts
//	info:NAME            string, JSON StreamInfo, the owner's record of NAME; PX NodeTimeout
//	infos                set of stream names that may have an info key, for listing
//	timeline:NAME        string "DTS:AT", the Timeline of NAME's last record; PX TimelineTTL, read by claims
//
// Every index set ("nodes", "claims", "relays:NAME") obeys one invariant: a
// record key that exists has its member in the set. Writers add the member
// in the same transaction or script that writes the key; listing removes a
// member only with pruneScript, which checks that its key is gone in the
// same atomic step. Each set's PEXPIRE is refreshed to its records' life with
// every write, so a set outlives all its records but not by more than that
// (the relays of a stream that ended go away without anyone listing them).
// Stream names cannot hold ':' (streamname.Name), so "relay:NAME:NODE" is
// unambiguous.
type Redis struct {
	client redis.UniversalClient
	// prefix starts every key; hash-tagged in Redis Cluster.
	prefix    string
	timeout   time.Duration
	opTimeout time.Duration

	// waitReplica makes a claim wait until a replica has it (WAIT 1),
	// when the master has one connected: through Sentinel, so that a
	// failover right after a claim cannot lose its epoch and hand it out
	// again. replicaWait bounds the wait.
	waitReplica bool
	replicaWait time.Duration

	feed claimFeed
	// The claims channel's subscription, open while Claimed has readers.
	subMu     sync.Mutex
	subs      int
	subCancel context.CancelFunc
	subDone   chan struct{}
	closed    bool
}

var _ Registry = (*Redis)(nil)

// nodeKey holds id's JSON Node record, PX NodeTimeout. nodeKey("") is the
// prefix of all node keys, which claimScript needs to test an owner's
// liveness.
func (r *Redis) nodeKey(id NodeID) string { return r.prefix + "node:" + string(id) }

// nodesKey is the set of node IDs that may have a node key.
func (r *Redis) nodesKey() string { return r.prefix + "nodes" }

// claimKey holds name's current claim as "EPOCH:NODE", PX NodeTimeout.
func (r *Redis) claimKey(name streamname.Name) string { return r.prefix + "claim:" + string(name) }

// epochKey holds the last epoch handed out for name. It is only ever
// incremented or raised, never expires and is never deleted: an epoch must
// not be handed out twice.
func (r *Redis) epochKey(name streamname.Name) string { return r.prefix + "epoch:" + string(name) }

// claimsKey is the set of stream names that may have a claim key.
func (r *Redis) claimsKey() string { return r.prefix + "claims" }

// relayKey holds the upstream node ID of node's relay of name, PX
// NodeTimeout.
func (r *Redis) relayKey(name streamname.Name, node NodeID) string {
	return r.prefix + "relay:" + string(name) + ":" + string(node)
}

// relaysKey is the set of node IDs that may have a relay key for name.
func (r *Redis) relaysKey(name streamname.Name) string { return r.prefix + "relays:" + string(name) }

// infoKey holds the owner's StreamInfo of name (JSON), PX NodeTimeout.
func (r *Redis) infoKey(name streamname.Name) string { return r.prefix + "info:" + string(name) }

// infosKey is the set of names that may have an info key.
func (r *Redis) infosKey() string { return r.prefix + "infos" }

// timelineKey holds the Timeline of name's last record as "DTS:AT", PX
// TimelineTTL: it outlives the record, and the claim, for the next claim.
func (r *Redis) timelineKey(name streamname.Name) string {
	return r.prefix + "timeline:" + string(name)
}

// timelineValue is how timelineKey stores t.
func timelineValue(t Timeline) string {
	return strconv.FormatInt(t.DTS, 10) + ":" + strconv.FormatInt(t.At, 10)
}

// parseTimeline reads a timelineKey value.
func parseTimeline(v string) (Timeline, error) {
	d, a, ok := strings.Cut(v, ":")
	dts, err1 := strconv.ParseInt(d, 10, 64)
	at, err2 := strconv.ParseInt(a, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return Timeline{}, fmt.Errorf("bad timeline %.64q", v)
	}
	return Timeline{DTS: dts, At: at}, nil
}

// claimsChannel is the pub/sub channel every claim is published on.
func (r *Redis) claimsChannel() string { return r.prefix + "claimed" }

// claimScript is Claim's compare-and-set. It refuses only when a claim is
// current, held by another node, and that node's record is alive; otherwise
// it takes the next epoch and sets the claim for one lease.
//
// The owner's node key is built here from ARGV[3] rather than passed in
// KEYS, because only the script knows who the owner is. In Redis Cluster
// the hash-tagged prefix keeps it in the same slot as the declared keys.
//
// The epoch counter lives EpochTTL past the name's last claim or renewal. A
// name without one starts from the store's clock in milliseconds, which has
// moved on by more than any counter could have counted since: epochs only
// grow, across expiry and across a store that restarted empty.
//
// A claimant presenting the current claim's credential (ARGV[6], not
// empty) takes the claim over from a live owner; the claim records the
// credential after its node ("EPOCH:NODE|CRED"). Each claim is published
// on the claims channel as "EPOCH:NODE|CRED" and the name, the node taken
// from last ("EPOCH:NODE|CRED NAME FROM"). The stream's last timeline is
// read in the same step, for the new owner to continue.
//
// KEYS[1] claim key, KEYS[2] epoch key, KEYS[3] claims set, KEYS[4]
// timeline key.
// ARGV[1] claimant node, ARGV[2] lease (ms), ARGV[3] node key prefix,
// ARGV[4] stream name, ARGV[5] the epoch counter's life (ms),
// ARGV[6] credential, ARGV[7] claims channel, ARGV[8] "1" to return the
// master's replicas in sync too (Sentinel: see Redis.waitReplica).
// Returns {1, epoch, from, timeline or ""} on success ({1, epoch, from,
// timeline, replicas} with ARGV[8]), {0, owner} when claimed.
var claimScript = redis.NewScript(`
local cur = redis.call("GET", KEYS[1])
local from = ""
if cur then
	local owner, cred = string.match(cur, "^%d+:([^|]*)|?(.*)$")
	if owner and owner ~= ARGV[1] and redis.call("EXISTS", ARGV[3] .. owner) == 1 then
		if ARGV[6] == "" or cred ~= ARGV[6] then
			return {0, owner}
		end
		from = owner
	end
end
local epoch
if redis.call("EXISTS", KEYS[2]) == 1 then
	epoch = redis.call("INCR", KEYS[2])
else
	local t = redis.call("TIME")
	epoch = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
	redis.call("SET", KEYS[2], string.format("%.0f", epoch))
end
redis.call("PEXPIRE", KEYS[2], ARGV[5])
local value = string.format("%.0f:%s", epoch, ARGV[1])
if ARGV[6] ~= "" then
	value = value .. "|" .. ARGV[6]
end
redis.call("SET", KEYS[1], value, "PX", ARGV[2])
redis.call("SADD", KEYS[3], ARGV[4])
redis.call("PEXPIRE", KEYS[3], ARGV[2])
redis.call("PUBLISH", ARGV[7], value .. " " .. ARGV[4] .. " " .. from)
local timeline = redis.call("GET", KEYS[4]) or ""
if ARGV[8] == "1" then
	-- Replicas in sync only: one still loading its first copy acknowledges nothing.
	local online = 0
	for _ in string.gmatch(redis.call("INFO", "replication"), "state=online") do
		online = online + 1
	end
	return {1, epoch, from, timeline, online}
end
return {1, epoch, from, timeline}
`)

// luaFence defines fence(), which places a claim against the store for
// Renew, Release and Beat. held: the claim is the current one. vacant: no
// claim is current and no higher epoch was handed out, so the claim is
// still the newest the store knows of (its lease ran out, or the store
// lost it). older: a claim of a lower epoch is current, which only data
// loss allows.
//
// ckey claim key, ekey epoch key, value the claim as stored
// ("EPOCH:NODE|CRED"), epoch its epoch.
const luaFence = `
local function fence(ckey, ekey, value, epoch)
	local cur = redis.call("GET", ckey)
	local held = cur == value
	local vacant = (not cur) and tonumber(redis.call("GET", ekey) or "0") <= tonumber(epoch)
	local older = false
	if cur and not held then
		local e = tonumber(string.match(cur, "^(%d+):"))
		older = e ~= nil and e < tonumber(epoch)
	end
	return held, vacant, older
end
`

// luaRenew defines renew(), Renew's compare-and-set: it extends a held
// claim, or restores one the store lost, when the name is vacant (the
// counter is at most the claim's epoch) or held at a lower epoch (which
// only data loss allows: the highest epoch wins), and raises the epoch
// counter to it, so the next claim numbers above it. The counter's life
// starts again. False when the claim is lost.
//
// csetkey claims set, name stream name, lease (ms), ttl the epoch
// counter's life (ms); the rest as fence().
const luaRenew = luaFence + `
local function renew(ckey, ekey, csetkey, value, epoch, name, lease, ttl)
	local held, vacant, older = fence(ckey, ekey, value, epoch)
	if not held and not vacant and not older then
		return false
	end
	if tonumber(redis.call("GET", ekey) or "0") < tonumber(epoch) then
		redis.call("SET", ekey, epoch)
	end
	redis.call("PEXPIRE", ekey, ttl)
	redis.call("SET", ckey, value, "PX", lease)
	redis.call("SADD", csetkey, name)
	redis.call("PEXPIRE", csetkey, lease)
	return true
end
`

// renewScript is Renew: renew() of one claim.
//
// KEYS[1] claim key, KEYS[2] epoch key, KEYS[3] claims set.
// ARGV[1] the claim as stored, ARGV[2] its epoch, ARGV[3] stream name,
// ARGV[4] lease (ms), ARGV[5] the epoch counter's life (ms).
// Returns 1 on success, 0 when lost.
var renewScript = redis.NewScript(luaRenew + `
if renew(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]) then
	return 1
end
return 0
`)

// releaseScript deletes a held claim. A vacant one is already gone and
// nobody claimed since, and one replaced by a lower epoch was lost by the
// store: both count as released.
//
// KEYS and ARGV[1..3] as renewScript's.
// Returns 1 on success, 0 when lost.
var releaseScript = redis.NewScript(luaFence + `
local held, vacant, older = fence(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
if held then
	redis.call("DEL", KEYS[1])
	redis.call("SREM", KEYS[3], ARGV[3])
	return 1
end
if vacant or older then
	return 1
end
return 0
`)

// beatScript is Beat: a node's heartbeat, the renewal of each of its
// claims (renew()), the stream record of each claim renewed, and its relay
// records, in one atomic step and one round trip however many streams the
// node has. Every key is declared.
//
// KEYS[1] node key, KEYS[2] nodes set, KEYS[3] claims set, KEYS[4] infos
// set; then for claim i (from 0), at 4+4i: +1 claim key, +2 epoch key,
// +3 info key, +4 timeline key; then for relay j, at 4+4n: +2j+1 relay
// key, +2j+2 relays set.
// ARGV[1] node record, ARGV[2] node ID, ARGV[3] lease (ms), ARGV[4] the
// epoch counter's life (ms), ARGV[5] n claims, ARGV[6] relays, ARGV[7]
// TimelineTTL (ms); then for claim i, at 7+5i: +1 the claim as stored,
// +2 its epoch, +3 stream name, +4 stream record ("" for none), +5 its
// timeline ("" for none); then for relay j, at 7+5n: +j+1 its upstream.
// Returns the indexes (from 0) of the claims lost.
var beatScript = redis.NewScript(luaRenew + `
local lease, ttl = ARGV[3], ARGV[4]
local n, nr = tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call("SET", KEYS[1], ARGV[1], "PX", lease)
redis.call("SADD", KEYS[2], ARGV[2])
redis.call("PEXPIRE", KEYS[2], lease)
local lost = {}
local infos = false
for i = 0, n - 1 do
	local k, a = 4 + 4 * i, 7 + 5 * i
	if renew(KEYS[k + 1], KEYS[k + 2], KEYS[3], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], lease, ttl) then
		if ARGV[a + 4] ~= "" then
			redis.call("SET", KEYS[k + 3], ARGV[a + 4], "PX", lease)
			redis.call("SADD", KEYS[4], ARGV[a + 3])
			infos = true
		end
		if ARGV[a + 5] ~= "" then
			redis.call("SET", KEYS[k + 4], ARGV[a + 5], "PX", ARGV[7])
		end
	else
		lost[#lost + 1] = i
	end
end
if infos then
	redis.call("PEXPIRE", KEYS[4], lease)
end
local kb, ab = 4 + 4 * n, 7 + 5 * n
local rlife = tonumber(lease) * ` + strconv.Itoa(RelayLife) + `
for j = 0, nr - 1 do
	redis.call("SET", KEYS[kb + 2 * j + 1], ARGV[ab + j + 1], "PX", rlife)
	redis.call("SADD", KEYS[kb + 2 * j + 2], ARGV[2])
	redis.call("PEXPIRE", KEYS[kb + 2 * j + 2], rlife)
end
return lost
`)

// listScript reads an index set and the record of each member in one
// round trip, and removes from the set the members whose record is gone,
// checking each key in the same atomic step: a plain SREM after a read
// could drop a member whose key a concurrent writer just set again.
//
// KEYS[1] the index set. A member's record key is ARGV[1] .. member ..
// ARGV[2]; in Redis Cluster the hash-tagged prefix keeps it in KEYS[1]'s
// slot.
// Returns member, record, member, record, ...
var listScript = redis.NewScript(`
local out = {}
for _, m in ipairs(redis.call("SMEMBERS", KEYS[1])) do
	local v = redis.call("GET", ARGV[1] .. m .. ARGV[2])
	if v then
		out[#out + 1] = m
		out[#out + 1] = v
	else
		redis.call("SREM", KEYS[1], m)
	end
end
return out
`)

// relaysScript is Relays: listScript on a stream's relays set, listing
// only the relays whose node is alive (its node key exists); a dead
// node's record stays until it expires, unlisted.
//
// KEYS[1] the relays set; ARGV[1] the relay key before the node ID;
// ARGV[2] the node key before the node ID.
// Returns node, upstream, node, upstream, ...
var relaysScript = redis.NewScript(`
local out = {}
for _, m in ipairs(redis.call("SMEMBERS", KEYS[1])) do
	local v = redis.call("GET", ARGV[1] .. m)
	if not v then
		redis.call("SREM", KEYS[1], m)
	elseif redis.call("EXISTS", ARGV[2] .. m) == 1 then
		out[#out + 1] = m
		out[#out + 1] = v
	end
end
return out
`)

// streamsScript is Streams: every current claim with its stream record
// and its relays (of live nodes), in one round trip. It prunes the claims set as
// listScript does.
//
// KEYS[1] claims set. ARGV[1] the key prefix.
// Returns {name, claim, record or nil, {node, upstream, ...}} per claim.
var streamsScript = redis.NewScript(`
local p = ARGV[1]
local out = {}
for _, name in ipairs(redis.call("SMEMBERS", KEYS[1])) do
	local c = redis.call("GET", p .. "claim:" .. name)
	if c then
		local relays = {}
		for _, node in ipairs(redis.call("SMEMBERS", p .. "relays:" .. name)) do
			local up = redis.call("GET", p .. "relay:" .. name .. ":" .. node)
			if up and redis.call("EXISTS", p .. "node:" .. node) == 1 then
				relays[#relays + 1] = node
				relays[#relays + 1] = up
			end
		end
		out[#out + 1] = {name, c, redis.call("GET", p .. "info:" .. name), relays}
	else
		redis.call("SREM", KEYS[1], name)
	end
end
return out
`)

// NewRedis returns a registry on the store at cfg.URL. It only checks the
// URL: the store may be down, and calls fail with ErrUnavailable until it
// is up, so a node can start before its store.
func NewRedis(cfg RedisConfig) (*Redis, error) {
	quietRedisClient.Do(func() { redis.SetLogger(redisDebugLog{}) })
	if cfg.NodeTimeout <= 0 {
		cfg.NodeTimeout = DefaultNodeTimeout
	}
	if cfg.NodeTimeout < time.Millisecond {
		// PX takes whole milliseconds.
		return nil, fmt.Errorf("cluster: redis node timeout %v is under 1ms", cfg.NodeTimeout)
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = DefaultOpTimeout(cfg.NodeTimeout)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultRedisPrefix
	}
	opts, err := RedisOptions(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("cluster: redis url: %w", err)
	}
	// Bound every socket read, write and dial by the call's context, which
	// carries OpTimeout: without this go-redis uses its own 3s/5s timeouts
	// and ignores the context's deadline.
	opts.ContextTimeoutEnabled = true
	if opts.DialTimeout == 0 {
		opts.DialTimeout = cfg.OpTimeout
	}
	// Dial once per command attempt. go-redis dials in the background,
	// five times by default with pauses between, which outlasts the call:
	// the caller would get a bare "context deadline exceeded" instead of
	// the cause (connection refused, say). Commands are retried
	// (MaxRetries) and the callers' own loops retry anyway.
	opts.DialerRetries = 1
	prefix := cfg.Prefix
	if isCluster(opts) && !hasHashTag(prefix) {
		prefix = "{" + prefix + "}"
	}
	return &Redis{
		client:      redis.NewUniversalClient(opts),
		prefix:      prefix,
		timeout:     cfg.NodeTimeout,
		opTimeout:   cfg.OpTimeout,
		waitReplica: opts.MasterName != "",
		replicaWait: cfg.OpTimeout / 4,
	}, nil
}

// RedisOptions maps a --redis URL (RedisConfig.URL) onto go-redis's
// options, for other parts of a node that use the same Redis. The host
// list is split before anything parses the URL (net/url takes
// "h1:1,h2" for a host with a bad port), then each host goes through
// redis.ParseURL on its own, so every form accepts the same user, password,
// database and query options as a single server does. Errors never quote
// the URL: it may hold a password.
func RedisOptions(rawURL string) (*redis.UniversalOptions, error) {
	if rawURL == "" {
		return nil, errors.New("empty")
	}
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, errors.New("not of the form redis://host:port")
	}
	if scheme != "redis" && scheme != "rediss" {
		return nil, fmt.Errorf("scheme %q is not redis or rediss", scheme)
	}
	// The authority runs to the path, query or fragment; the user info, if
	// any, to its last '@', as net/url reads it.
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	var userinfo string
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		userinfo, authority = authority[:at+1], authority[at+1:]
	}
	if authority == "" {
		return nil, errors.New("no host")
	}

	var first *redis.Options
	var addrs []string
	var master string
	for i, host := range strings.Split(authority, ",") {
		if host == "" {
			return nil, errors.New("empty host in host list")
		}
		u, err := url.Parse(scheme + "://" + userinfo + host + tail)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // ue.Error() repeats the URL, password and all
			}
			return nil, err
		}
		q := u.Query()
		if i == 0 {
			master = q.Get("master")
			if q.Has("master") && master == "" {
				return nil, errors.New("empty master name")
			}
		}
		q.Del("master") // ours, not redis.ParseURL's
		u.RawQuery = q.Encode()
		if master != "" && u.Port() == "" {
			// Sentinels listen on 26379; redis.ParseURL would default to
			// a data server's 6379.
			u.Host = net.JoinHostPort(u.Hostname(), "26379")
		}
		o, err := redis.ParseURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("host %q: %w", host, err)
		}
		addrs = append(addrs, o.Addr)
		if first == nil {
			first = o
		}
	}

	opts := &redis.UniversalOptions{
		Addrs:      addrs,
		MasterName: master,

		ClientName: first.ClientName,
		Protocol:   first.Protocol,
		Username:   first.Username,
		Password:   first.Password,
		DB:         first.DB,

		// Every option redis.ParseURL reads from the query.
		MaxRetries:              first.MaxRetries,
		MinRetryBackoff:         first.MinRetryBackoff,
		MaxRetryBackoff:         first.MaxRetryBackoff,
		DialTimeout:             first.DialTimeout,
		ReadTimeout:             first.ReadTimeout,
		WriteTimeout:            first.WriteTimeout,
		PoolFIFO:                first.PoolFIFO,
		PoolSize:                first.PoolSize,
		PoolTimeout:             first.PoolTimeout,
		MinIdleConns:            first.MinIdleConns,
		MaxIdleConns:            first.MaxIdleConns,
		MaxActiveConns:          first.MaxActiveConns,
		MaxConcurrentDials:      first.MaxConcurrentDials,
		PipelinePoolSize:        first.PipelinePoolSize,
		PipelineReadBufferSize:  first.PipelineReadBufferSize,
		PipelineWriteBufferSize: first.PipelineWriteBufferSize,
		ConnMaxIdleTime:         first.ConnMaxIdleTime,
		ConnMaxLifetime:         first.ConnMaxLifetime,
		ConnMaxLifetimeJitter:   first.ConnMaxLifetimeJitter,
		TLSConfig:               first.TLSConfig,

		// A new connection costs one round trip (HELLO) before its first
		// command, not three: CLIENT SETINFO only names the library, and
		// maintenance notifications are a Redis Enterprise feature. Over
		// a slow link each round trip counts against a call's timeout,
		// and a call that times out costs its connection.
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if (len(addrs) > 1 || master != "") && opts.TLSConfig != nil {
		// redis.ParseURL named the first host as the TLS server name.
		// With several hosts, or with the servers Sentinel points to,
		// each must be checked against its own name, which crypto/tls
		// does when ServerName is empty.
		opts.TLSConfig = opts.TLSConfig.Clone()
		opts.TLSConfig.ServerName = ""
	}
	if isCluster(opts) && opts.DB != 0 {
		return nil, fmt.Errorf("database %d: Redis Cluster has only database 0", opts.DB)
	}
	return opts, nil
}

// isCluster tells whether redis.NewUniversalClient makes a Cluster client
// of opts.
func isCluster(opts *redis.UniversalOptions) bool {
	return opts.MasterName == "" && len(opts.Addrs) > 1
}

// hasHashTag tells whether Redis Cluster would hash only part of keys that
// start with prefix: a '{' followed later by '}' with something between.
func hasHashTag(prefix string) bool {
	open := strings.IndexByte(prefix, '{')
	if open < 0 {
		return false
	}
	return strings.IndexByte(prefix[open+1:], '}') > 0
}

// op bounds one call by OpTimeout, on top of the caller's deadline.
func (r *Redis) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.opTimeout)
}

// unavailable wraps a store failure: callers branch on ErrUnavailable, and
// the cause (and a caller's context error) stays in the chain and the
// message.
func unavailable(op string, err error) error {
	return fmt.Errorf("cluster: %s: %w: %w", op, ErrUnavailable, err)
}

// Heartbeat implements Registry.
func (r *Redis) Heartbeat(ctx context.Context, n Node) error {
	if n.ID == "" {
		return errEmptyNode("heartbeat")
	}
	// Seen is the heartbeating node's clock: it is only informative.
	// Liveness is the key's expiry, on the store's clock.
	n.Seen = time.Now().UTC().Round(0)
	rec, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("cluster: heartbeat %s: %w", n.ID, err)
	}
	ctx, cancel := r.op(ctx)
	defer cancel()
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, r.nodeKey(n.ID), rec, r.timeout)
		p.SAdd(ctx, r.nodesKey(), string(n.ID))
		p.PExpire(ctx, r.nodesKey(), r.timeout)
		return nil
	})
	if err != nil {
		return unavailable("heartbeat "+string(n.ID), err)
	}
	return nil
}

// Leave implements Registry.
func (r *Redis) Leave(ctx context.Context, id NodeID) error {
	ctx, cancel := r.op(ctx)
	defer cancel()
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, r.nodeKey(id))
		p.SRem(ctx, r.nodesKey(), string(id))
		return nil
	})
	if err != nil {
		return unavailable("leave "+string(id), err)
	}
	return nil
}

// Nodes implements Registry.
func (r *Redis) Nodes(ctx context.Context) ([]Node, error) {
	ctx, cancel := r.op(ctx)
	defer cancel()
	_, recs, err := r.list(ctx, r.nodesKey(), r.nodeKey(""), "")
	if err != nil {
		return nil, unavailable("nodes", err)
	}
	nodes := make([]Node, 0, len(recs))
	for _, rec := range recs {
		var n Node
		if err := json.Unmarshal([]byte(rec), &n); err != nil {
			return nil, fmt.Errorf("cluster: nodes: bad record %.64q: %w", rec, err)
		}
		nodes = append(nodes, n)
	}
	slices.SortFunc(nodes, func(a, b Node) int { return cmp.Compare(a.ID, b.ID) })
	return nodes, nil
}

// Node implements Registry.
func (r *Redis) Node(ctx context.Context, id NodeID) (Node, error) {
	ctx, cancel := r.op(ctx)
	defer cancel()
	rec, err := r.client.Get(ctx, r.nodeKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return Node{}, fmt.Errorf("cluster: node %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Node{}, unavailable("node "+string(id), err)
	}
	var n Node
	if err := json.Unmarshal([]byte(rec), &n); err != nil {
		return Node{}, fmt.Errorf("cluster: node %s: bad record: %w", id, err)
	}
	return n, nil
}

// list reads the index set at index and the record keyPrefix+member+
// keySuffix of each member, in one round trip (listScript), and returns
// the members whose record exists with their records, pruning the others
// from the set.
func (r *Redis) list(ctx context.Context, index, keyPrefix, keySuffix string) (members, recs []string, err error) {
	flat, err := listScript.Run(ctx, r.client, []string{index}, keyPrefix, keySuffix).StringSlice()
	if err != nil {
		return nil, nil, err
	}
	for i := 0; i+1 < len(flat); i += 2 {
		members = append(members, flat[i])
		recs = append(recs, flat[i+1])
	}
	return members, recs, nil
}

// claimValue is how claimKey stores c ("EPOCH:NODE", then "|CRED" with a
// credential); the fencing scripts compare it whole.
func claimValue(c Claim) string {
	v := strconv.FormatUint(c.Epoch, 10) + ":" + string(c.Node)
	if c.Cred != "" {
		v += "|" + string(c.Cred)
	}
	return v
}

// parseClaim reads a claimKey value.
func parseClaim(name streamname.Name, v string) (Claim, error) {
	e, rest, ok := strings.Cut(v, ":")
	epoch, err := strconv.ParseUint(e, 10, 64)
	if !ok || err != nil || epoch == 0 {
		return Claim{}, fmt.Errorf("cluster: claim of %s: bad record %.64q", name, v)
	}
	node, cred, _ := strings.Cut(rest, "|")
	return Claim{Stream: name, Node: NodeID(node), Epoch: epoch, Cred: Credential(cred)}, nil
}

// parseClaimMessage reads a claims channel message.
func parseClaimMessage(msg string) (Claim, error) {
	value, rest, ok := strings.Cut(msg, " ")
	name, from, _ := strings.Cut(rest, " ")
	if !ok || name == "" {
		return Claim{}, fmt.Errorf("cluster: bad claim message %.64q", msg)
	}
	c, err := parseClaim(streamname.Name(name), value)
	c.From = NodeID(from)
	return c, err
}

// claimKeys are the KEYS of the claim scripts.
func (r *Redis) claimKeys(name streamname.Name) []string {
	return []string{r.claimKey(name), r.epochKey(name), r.claimsKey()}
}

// leaseMS is the lease as PX takes it.
func (r *Redis) leaseMS() int64 { return r.timeout.Milliseconds() }

// Claim implements Registry.
func (r *Redis) Claim(ctx context.Context, name streamname.Name, node NodeID, cred Credential) (Claim, error) {
	if node == "" {
		return Claim{}, errEmptyNode("claim " + string(name))
	}
	if len(cred) > maxCredLen || strings.ContainsAny(string(cred), "| ") {
		return Claim{}, fmt.Errorf("cluster: claim %s: bad credential", name)
	}
	ctx, cancel := r.op(ctx)
	defer cancel()
	var scripter redis.Scripter = r.client
	wantReplicas := ""
	var conn *redis.Conn
	if c, ok := r.client.(*redis.Client); ok && r.waitReplica {
		// WAIT counts the writes of its own connection: the claim and
		// the wait go on one.
		conn = c.Conn()
		defer conn.Close()
		scripter, wantReplicas = conn, "1"
	}
	res, err := claimScript.Run(ctx, scripter, append(r.claimKeys(name), r.timelineKey(name)),
		string(node), r.leaseMS(), r.nodeKey(""), string(name), EpochTTL.Milliseconds(),
		string(cred), r.claimsChannel(), wantReplicas).Slice()
	if err != nil {
		return Claim{}, unavailable("claim "+string(name), err)
	}
	if len(res) < 2 {
		return Claim{}, fmt.Errorf("cluster: claim %s: unexpected script reply %v", name, res)
	}
	if won, _ := res[0].(int64); won != 1 {
		return Claim{}, fmt.Errorf("cluster: claim %s: %w: owner %v", name, ErrClaimed, res[1])
	}
	epoch, _ := res[1].(int64)
	if epoch <= 0 || len(res) != 4+len(wantReplicas) {
		return Claim{}, fmt.Errorf("cluster: claim %s: unexpected reply %v", name, res)
	}
	from, _ := res[2].(string)
	var prior *Timeline
	if v, _ := res[3].(string); v != "" {
		// A record this node cannot read only costs the stream its
		// continuity: it starts a timeline of its own.
		if t, err := parseTimeline(v); err == nil {
			prior = &t
		}
	}
	if conn != nil {
		if replicas, _ := res[4].(int64); replicas > 0 {
			if err := r.awaitReplica(ctx, conn); err != nil {
				return Claim{}, unavailable("claim "+string(name), err)
			}
		}
	}
	return Claim{Stream: name, Node: node, Epoch: uint64(epoch), Cred: cred, From: NodeID(from), Prior: prior}, nil
}

// errNotReplicated fails a claim no replica acknowledged in time.
var errNotReplicated = errors.New("no replica acknowledged the claim in time")

// awaitReplica waits, within replicaWait, until a replica has every write
// made on conn (WAIT 1).
//
// Redis replicates asynchronously. Without the wait, a master killed right
// after a claim can take the claim and its epoch counter's increment with
// it; the promoted replica then hands the same epoch to the next claimant,
// and two nodes hold one fencing token until the first renews (and learns
// it lost). With it, a claim is answered only once a replica has it, and
// Sentinel promotes the replica furthest ahead. A claim no replica
// acknowledged fails (ErrUnavailable): its node does not serve the stream,
// and the publisher's retry claims again. A master without a replica in
// sync is not waited for (there is nothing to wait for, or to promote
// without loss anyway); set min-replicas-to-write on it to refuse writes
// in that state too.
func (r *Redis) awaitReplica(ctx context.Context, conn *redis.Conn) error {
	n, err := conn.Wait(ctx, 1, r.replicaWait).Result()
	if err != nil {
		return err
	}
	if n < 1 {
		return errNotReplicated
	}
	return nil
}

// Renew implements Registry.
func (r *Redis) Renew(ctx context.Context, c Claim) error {
	if err := checkClaim("renew", c); err != nil {
		return err
	}
	ctx, cancel := r.op(ctx)
	defer cancel()
	ok, err := renewScript.Run(ctx, r.client, r.claimKeys(c.Stream),
		claimValue(c), c.Epoch, string(c.Stream), r.leaseMS(), EpochTTL.Milliseconds()).Int()
	if err != nil {
		return unavailable("renew "+string(c.Stream), err)
	}
	if ok != 1 {
		return fmt.Errorf("cluster: renew %s epoch %d: %w", c.Stream, c.Epoch, ErrLost)
	}
	return nil
}

// Beat implements Registry: beatScript, one round trip.
func (r *Redis) Beat(ctx context.Context, b BeatRecord) ([]Claim, error) {
	if err := checkBeat(b); err != nil {
		return nil, err
	}
	id := b.Node.ID
	n := b.Node
	n.Seen = time.Now().UTC().Round(0) // informative, as in Heartbeat
	rec, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("cluster: beat of %s: %w", id, err)
	}
	keys := make([]string, 0, 4+4*len(b.Claims)+2*len(b.Relays))
	keys = append(keys, r.nodeKey(id), r.nodesKey(), r.claimsKey(), r.infosKey())
	args := make([]any, 0, 7+5*len(b.Claims)+len(b.Relays))
	args = append(args, rec, string(id), r.leaseMS(), EpochTTL.Milliseconds(), len(b.Claims), len(b.Relays), TimelineTTL.Milliseconds())
	for _, c := range b.Claims {
		info, timeline := "", ""
		if si, ok := b.StreamInfos[c.Stream]; ok {
			js, err := json.Marshal(si)
			if err != nil {
				return nil, fmt.Errorf("cluster: beat of %s: info of %s: %w", id, c.Stream, err)
			}
			info = string(js)
			if si.Timeline != nil {
				timeline = timelineValue(*si.Timeline)
			}
		}
		keys = append(keys, r.claimKey(c.Stream), r.epochKey(c.Stream), r.infoKey(c.Stream), r.timelineKey(c.Stream))
		args = append(args, claimValue(c), c.Epoch, string(c.Stream), info, timeline)
	}
	for name, up := range b.Relays {
		keys = append(keys, r.relayKey(name, id), r.relaysKey(name))
		args = append(args, string(up))
	}
	ctx, cancel := r.op(ctx)
	defer cancel()
	idx, err := beatScript.Run(ctx, r.client, keys, args...).Int64Slice()
	if err != nil {
		return nil, unavailable("beat of "+string(id), err)
	}
	var lost []Claim
	for _, i := range idx {
		if i < 0 || int(i) >= len(b.Claims) {
			return nil, fmt.Errorf("cluster: beat of %s: unexpected script reply %v", id, idx)
		}
		lost = append(lost, b.Claims[i])
	}
	return lost, nil
}

// Streams implements Registry: streamsScript, one round trip.
func (r *Redis) Streams(ctx context.Context) ([]StreamRecord, error) {
	ctx, cancel := r.op(ctx)
	defer cancel()
	res, err := streamsScript.Run(ctx, r.client, []string{r.claimsKey()}, r.prefix).Slice()
	if err != nil {
		return nil, unavailable("streams", err)
	}
	out := make([]StreamRecord, 0, len(res))
	for _, item := range res {
		f, ok := item.([]any)
		if !ok || len(f) != 4 {
			return nil, fmt.Errorf("cluster: streams: unexpected script reply %.64v", item)
		}
		name, _ := f[0].(string)
		value, _ := f[1].(string)
		c, err := parseClaim(streamname.Name(name), value)
		if err != nil {
			return nil, err
		}
		rec := StreamRecord{Claim: c, Relays: []Relay{}}
		if js, ok := f[2].(string); ok {
			var info StreamInfo
			if err := json.Unmarshal([]byte(js), &info); err != nil {
				return nil, fmt.Errorf("cluster: info of %s: bad record: %w", name, err)
			}
			rec.Info = &info
		}
		flat, _ := f[3].([]any)
		for i := 0; i+1 < len(flat); i += 2 {
			node, _ := flat[i].(string)
			up, _ := flat[i+1].(string)
			rec.Relays = append(rec.Relays, Relay{Node: NodeID(node), Upstream: NodeID(up)})
		}
		slices.SortFunc(rec.Relays, func(a, b Relay) int { return cmp.Compare(a.Node, b.Node) })
		out = append(out, rec)
	}
	slices.SortFunc(out, func(a, b StreamRecord) int { return cmp.Compare(a.Claim.Stream, b.Claim.Stream) })
	return out, nil
}

// Release implements Registry.
func (r *Redis) Release(ctx context.Context, c Claim) error {
	if err := checkClaim("release", c); err != nil {
		return err
	}
	ctx, cancel := r.op(ctx)
	defer cancel()
	ok, err := releaseScript.Run(ctx, r.client, r.claimKeys(c.Stream),
		claimValue(c), c.Epoch, string(c.Stream)).Int()
	if err != nil {
		return unavailable("release "+string(c.Stream), err)
	}
	if ok != 1 {
		return fmt.Errorf("cluster: release %s epoch %d: %w", c.Stream, c.Epoch, ErrLost)
	}
	return nil
}

// Owner implements Registry.
func (r *Redis) Owner(ctx context.Context, name streamname.Name) (Claim, error) {
	ctx, cancel := r.op(ctx)
	defer cancel()
	v, err := r.client.Get(ctx, r.claimKey(name)).Result()
	if errors.Is(err, redis.Nil) {
		return Claim{}, fmt.Errorf("cluster: owner of %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return Claim{}, unavailable("owner of "+string(name), err)
	}
	return parseClaim(name, v)
}

// Claims implements Registry.
func (r *Redis) Claims(ctx context.Context) ([]Claim, error) {
	ctx, cancel := r.op(ctx)
	defer cancel()
	names, vals, err := r.list(ctx, r.claimsKey(), r.claimKey(""), "")
	if err != nil {
		return nil, unavailable("claims", err)
	}
	claims := make([]Claim, 0, len(names))
	for i, name := range names {
		c, err := parseClaim(streamname.Name(name), vals[i])
		if err != nil {
			return nil, err
		}
		claims = append(claims, c)
	}
	slices.SortFunc(claims, func(a, b Claim) int { return cmp.Compare(a.Stream, b.Stream) })
	return claims, nil
}

// SetRelay implements Registry.
func (r *Redis) SetRelay(ctx context.Context, name streamname.Name, rl Relay) error {
	if rl.Node == "" {
		return errEmptyNode("set relay of " + string(name))
	}
	ctx, cancel := r.op(ctx)
	defer cancel()
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, r.relayKey(name, rl.Node), string(rl.Upstream), RelayLife*r.timeout)
		p.SAdd(ctx, r.relaysKey(name), string(rl.Node))
		p.PExpire(ctx, r.relaysKey(name), RelayLife*r.timeout)
		return nil
	})
	if err != nil {
		return unavailable("set relay of "+string(name), err)
	}
	return nil
}

// DeleteRelay implements Registry.
func (r *Redis) DeleteRelay(ctx context.Context, name streamname.Name, node NodeID) error {
	ctx, cancel := r.op(ctx)
	defer cancel()
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, r.relayKey(name, node))
		p.SRem(ctx, r.relaysKey(name), string(node))
		return nil
	})
	if err != nil {
		return unavailable("delete relay of "+string(name), err)
	}
	return nil
}

// Relays implements Registry.
func (r *Redis) Relays(ctx context.Context, name streamname.Name) ([]Relay, error) {
	ctx, cancel := r.op(ctx)
	defer cancel()
	flat, err := relaysScript.Run(ctx, r.client, []string{r.relaysKey(name)}, r.relayKey(name, ""), r.nodeKey("")).StringSlice()
	if err != nil {
		return nil, unavailable("relays of "+string(name), err)
	}
	var nodes, upstreams []string
	for i := 0; i+1 < len(flat); i += 2 {
		nodes = append(nodes, flat[i])
		upstreams = append(upstreams, flat[i+1])
	}
	relays := make([]Relay, len(nodes))
	for i, node := range nodes {
		relays[i] = Relay{Node: NodeID(node), Upstream: NodeID(upstreams[i])}
	}
	slices.SortFunc(relays, func(a, b Relay) int { return cmp.Compare(a.Node, b.Node) })
	return relays, nil
}

// SetStreamInfo implements Registry.
func (r *Redis) SetStreamInfo(ctx context.Context, name streamname.Name, info StreamInfo) error {
	if err := checkInfo(name, info); err != nil {
		return err
	}
	rec, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf("cluster: set info of %s: %w", name, err)
	}
	ctx, cancel := r.op(ctx)
	defer cancel()
	_, err = r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, r.infoKey(name), rec, r.timeout)
		p.SAdd(ctx, r.infosKey(), string(name))
		p.PExpire(ctx, r.infosKey(), r.timeout)
		if info.Timeline != nil {
			p.Set(ctx, r.timelineKey(name), timelineValue(*info.Timeline), TimelineTTL)
		}
		return nil
	})
	if err != nil {
		return unavailable("set info of "+string(name), err)
	}
	return nil
}

// StreamInfos implements Registry.
func (r *Redis) StreamInfos(ctx context.Context) (map[streamname.Name]StreamInfo, error) {
	ctx, cancel := r.op(ctx)
	defer cancel()
	names, recs, err := r.list(ctx, r.infosKey(), r.infoKey(""), "")
	if err != nil {
		return nil, unavailable("stream infos", err)
	}
	out := make(map[streamname.Name]StreamInfo, len(names))
	for i, name := range names {
		var info StreamInfo
		if err := json.Unmarshal([]byte(recs[i]), &info); err != nil {
			return nil, fmt.Errorf("cluster: info of %s: bad record: %w", name, err)
		}
		out[streamname.Name(name)] = info
	}
	return out, nil
}

// Close implements Registry: it closes the client's connections and
// leaves every key in place (the node's records expire on their own, or
// Leave removed them).
func (r *Redis) Close() error {
	r.subMu.Lock()
	r.closed = true
	r.stopListening()
	r.subMu.Unlock()
	if err := r.client.Close(); err != nil {
		return fmt.Errorf("cluster: close redis: %w", err)
	}
	return nil
}

// Claimed implements Registry: the claims channel, subscribed to while
// anyone reads it. The first reader waits (within OpTimeout) for the store
// to confirm the subscription. go-redis resubscribes after the store comes
// back; claims made meanwhile are not seen.
func (r *Redis) Claimed(ctx context.Context) <-chan Claim { return r.feed.subscribe(ctx, r.listeners) }

// listeners counts Claimed's readers, listening on the claims channel
// while there are any.
func (r *Redis) listeners(delta int) {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	r.subs += delta
	switch {
	case r.subs == 0 || r.closed:
		r.stopListening()
	case r.subCancel == nil:
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		r.subCancel, r.subDone = cancel, done
		ps := r.client.Subscribe(ctx, r.claimsChannel())
		confirm, stop := r.op(ctx)
		ps.Receive(confirm) // the subscription's confirmation, or a store that is away
		stop()
		go func() {
			defer close(done)
			defer ps.Close()
			msgs := ps.Channel()
			for {
				select {
				case <-ctx.Done():
					return
				case m, ok := <-msgs:
					if !ok {
						return
					}
					if c, err := parseClaimMessage(m.Payload); err == nil {
						r.feed.publish(c)
					}
				}
			}
		}()
	}
}

// stopListening ends the claims channel's subscription. Caller holds
// subMu.
func (r *Redis) stopListening() {
	if r.subCancel != nil {
		r.subCancel()
		<-r.subDone
		r.subCancel, r.subDone = nil, nil
	}
}

// quietRedisClient sends the Redis client's own log lines (one per failed
// dial while the store is away) to slog at debug level, once per process:
// nodes log the registry becoming unreachable and reachable again.
var quietRedisClient sync.Once

type redisDebugLog struct{}

func (redisDebugLog) Printf(ctx context.Context, format string, v ...any) {
	slog.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}
