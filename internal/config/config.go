// Package config builds meshcast's typed configuration from four layers,
// lowest to highest precedence: built-in defaults, a YAML file, MESHCAST_*
// environment variables and command-line flags.
//
// Every setting is one field of [Config]. Its YAML key is the field's yaml
// tag, its flag name is that key with underscores turned to dashes
// (max_lag → --max-lag) and its environment variable is MESHCAST_ followed by
// the key in upper case (MESHCAST_MAX_LAG). The YAML file is named by
// --config or MESHCAST_CONFIG.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/transcode"
)

// EnvPrefix starts the name of every environment variable read by [Load].
const EnvPrefix = "MESHCAST_"

// ConfigEnv names the environment variable holding the YAML file path when
// --config is not given.
const ConfigEnv = EnvPrefix + "CONFIG"

// Config is the server configuration. The yaml tag of each field is its YAML
// key and determines its flag and environment variable names; the usage tag
// is its help text. A field tagged secret:"true" is hidden by
// [Config.Redacted].
type Config struct {
	// RTMPAddr is the RTMP listen address. Defaults to ":1935".
	RTMPAddr string `yaml:"rtmp_addr" usage:"RTMP listen address"`

	// HTTPAddr is the HTTP listen address serving HTTP-FLV, HLS and the API.
	// Defaults to ":8080".
	HTTPAddr string `yaml:"http_addr" usage:"HTTP listen address (HTTP-FLV, HLS, API)"`

	// LogLevel is the minimum level logged: debug, info, warn or error.
	// Defaults to "info".
	LogLevel string `yaml:"log_level" reload:"live" usage:"minimum log level: debug, info, warn or error"`

	// LogFormat is the log output format: text or json. Defaults to "text".
	LogFormat string `yaml:"log_format" usage:"log format: text or json"`

	// PublisherGrace is how long viewers stay connected after their publisher
	// leaves, waiting for it to return. Zero disconnects them at once.
	// Defaults to 5s.
	PublisherGrace time.Duration `yaml:"publisher_grace" usage:"how long viewers wait for a departed publisher to return"`

	// WriteTimeout closes a viewer whose socket accepts nothing for this
	// long. Defaults to 10s.
	WriteTimeout time.Duration `yaml:"write_timeout" usage:"close a viewer whose socket accepts nothing for this long"`

	// ReadTimeout closes a publisher or handshake that sends nothing for this
	// long. Defaults to 30s.
	ReadTimeout time.Duration `yaml:"read_timeout" usage:"close a publisher or handshake that sends nothing for this long"`

	// MaxLag is how far behind live a viewer may fall before it skips to the
	// newest keyframe. Defaults to 5s.
	MaxLag time.Duration `yaml:"max_lag" usage:"a viewer further behind live than this skips to the newest keyframe"`

	// MergeWindow is the least time between two writes to a viewer: packets
	// arriving meanwhile go out in one write. It trades up to this much added
	// latency for less CPU per viewer; at most 1s. Defaults to 100ms.
	MergeWindow time.Duration `yaml:"merge_window" usage:"least time between writes to a viewer; packets arriving meanwhile share one write (0 to 1s)"`

	// LowLatency writes each packet to viewers as soon as it arrives,
	// ignoring MergeWindow. Defaults to false.
	LowLatency bool `yaml:"low_latency" usage:"write each packet to viewers at once (more CPU per viewer, least latency)"`

	// TCPNoDelay says whether RTMP and HTTP-FLV viewers' sockets send each
	// write at once ("on", TCP_NODELAY) or let Nagle's algorithm join small
	// writes while earlier data is unacknowledged ("off"). "auto", the
	// default, is on with a merge window, whose writes are joined already,
	// and off in low-latency mode, where joining costs a third less CPU per
	// viewer but can hold a write up to a round trip on a long path
	// (BENCHMARKS.md): "on" there gives the least latency.
	TCPNoDelay string `yaml:"tcp_nodelay" usage:"send viewers' writes at once (TCP_NODELAY): auto (off only in low-latency mode), on (least latency over long paths) or off"`

	// MaxConnections limits concurrent RTMP connections. Defaults to 10000.
	MaxConnections int `yaml:"max_connections" usage:"maximum concurrent RTMP connections"`

	// HLSSegmentDuration is the target HLS segment duration; at least 100ms.
	// Defaults to 1s.
	HLSSegmentDuration time.Duration `yaml:"hls_segment_duration" usage:"target HLS segment duration (at least 100ms)"`

	// HLSSegmentCount is the number of segments kept in the HLS playlist; at
	// least 7, as low-latency HLS requires. Defaults to 7.
	HLSSegmentCount int `yaml:"hls_segment_count" usage:"HLS segments kept in the playlist (at least 7)"`

	// HLSLowLatency serves low-latency HLS: partial segments of about
	// 200 ms, blocking playlist reloads and preload hints, for a live edge
	// about a second behind. Players without LL-HLS play it as HLS.
	// Defaults to false.
	HLSLowLatency bool `yaml:"hls_low_latency" usage:"serve low-latency HLS (partial segments, blocking playlist reload)"`

	// HLSIdleTimeout closes a stream's HLS muxer that no player has asked
	// anything of for this long: until then it is a reader of the stream,
	// which keeps a relay or an on-demand source going. At least 1s.
	// Defaults to 60s.
	HLSIdleTimeout time.Duration `yaml:"hls_idle_timeout" usage:"close a stream's HLS muxer after this long without requests (at least 1s)"`

	// Record is what this node records of the streams published to it, as
	// FLV files in RecordDir: "off" or "all". An app's own record setting
	// under Apps wins. Defaults to "off".
	Record string `yaml:"record" reload:"live" usage:"record the streams published here as FLV files in --record-dir: off or all (apps: in the YAML file overrides it per app)"`

	// RecordDir is the directory recordings are written to; it is created
	// when any app is recorded. Defaults to "recordings".
	RecordDir string `yaml:"record_dir" usage:"directory of recordings (created when recording is on)"`

	// Transcode runs a transcoding ladder (Ladder, by default
	// transcode.DefaultLadder) for the streams of every app: renditions
	// published as APP/STREAM_NAME and listed in APP/STREAM/master.m3u8.
	// An app's own transcode setting under Apps wins. Defaults to false.
	Transcode bool `yaml:"transcode" reload:"live" usage:"transcode every app's streams into the default ladder (720p, 480p, 360p; never above the source), served in /APP/STREAM/master.m3u8"`

	// TranscodeMax bounds the transcoding jobs (ffmpeg processes) of this
	// node; a stream beyond it is served without renditions, and the API
	// says why. Defaults to 2.
	TranscodeMax int `yaml:"transcode_max" usage:"transcoding jobs (ffmpeg processes) this node runs at most"`

	// TranscodeCPUMax is the CPU use, in percent of the node's cores,
	// above which a node hands new transcoding jobs to the least busy node
	// of the cluster below it. Defaults to 80.
	TranscodeCPUMax int `yaml:"transcode_cpu_max" usage:"CPU use (percent) above which new transcoding jobs go to a less busy node"`

	// FFmpeg is the ffmpeg binary transcoding runs. Defaults to "ffmpeg".
	FFmpeg string `yaml:"ffmpeg" usage:"ffmpeg binary for transcoding"`

	// WebRTCOpus transcodes audio between AAC and Opus with ffmpeg for
	// WebRTC: WHEP viewers of AAC streams hear Opus, and the Opus of WHIP
	// publishers reaches the stream as AAC. Off, WebRTC sessions are
	// video-only and say why. Defaults to true.
	WebRTCOpus bool `yaml:"webrtc_opus" usage:"transcode audio between AAC and Opus (with --ffmpeg) for WebRTC viewers and publishers (false: WebRTC is video-only)"`

	// WebRTCUDPAddr is the one UDP address of every WebRTC session's
	// media: HOST:PORT, or :PORT for the addresses of every interface
	// WebRTCInterfaces keeps. Empty gives each session ports of its own
	// (any UDP port). Defaults to ":8189".
	WebRTCUDPAddr string `yaml:"webrtc_udp_addr" usage:"UDP address every WebRTC session's media shares (empty: a port of its own per session)"`

	// WebRTCTCPAddr is the ICE-TCP listen address, for WebRTC clients
	// whose UDP is blocked. Empty: none. Defaults to "".
	WebRTCTCPAddr string `yaml:"webrtc_tcp_addr" usage:"ICE-TCP listen address for WebRTC clients without UDP, e.g. :8189 (empty: none)"`

	// WebRTCNATIPs are the addresses WebRTC clients are given instead of
	// the host's own, behind a 1:1 NAT (cloud VMs, Kubernetes host
	// ports): an IP replaces every local address of its family,
	// EXTERNAL/LOCAL replaces LOCAL alone. Defaults to none.
	WebRTCNATIPs []string `yaml:"webrtc_nat_ips" usage:"addresses WebRTC clients reach this node at instead of its own, behind 1:1 NAT: IP or EXTERNAL/LOCAL"`

	// WebRTCInterfaces are the names or patterns (eth*) of the network
	// interfaces whose addresses WebRTC clients are given. Empty: every
	// interface but container and VM bridges (docker*, br-*, veth*,
	// virbr*, cni*, flannel*, cali*, lxcbr*). Link-local addresses never
	// are. Defaults to none.
	WebRTCInterfaces []string `yaml:"webrtc_interfaces" usage:"interfaces (names or patterns such as eth*) whose addresses WebRTC clients are given (empty: all but docker*, br-*, veth*, virbr* and other bridges)"`

	// WebRTCICEServers are STUN and TURN URLs given to WebRTC clients in
	// the WHEP and WHIP answers' Link headers (stun:HOST:PORT,
	// turn:HOST:PORT?transport=udp). TURN URLs need WebRTCTURNSecret.
	// Defaults to none.
	WebRTCICEServers []string `yaml:"webrtc_ice_servers" usage:"STUN and TURN URLs given to WebRTC clients in Link headers, e.g. stun:stun.example.net:3478,turn:turn.example.net:3478?transport=udp"`

	// WebRTCTURNSecret is the secret shared with the TURN servers
	// (coturn's static-auth-secret): each session gets time-limited
	// credentials made from it. Required with a TURN URL. Defaults to "".
	WebRTCTURNSecret string `yaml:"webrtc_turn_secret" secret:"true" usage:"secret shared with the TURN servers (coturn use-auth-secret): each WebRTC session gets time-limited TURN credentials"`

	// WebRTCTURNTTL is how long a session's TURN credentials last.
	// Defaults to 24h.
	WebRTCTURNTTL time.Duration `yaml:"webrtc_turn_ttl" usage:"how long a WebRTC session's TURN credentials last"`

	// Apps holds settings of single apps by app name. Being a map, it is
	// set in the YAML file only. Defaults to none.
	Streams map[string]StreamConfig `yaml:"streams" reload:"live" usage:"settings of single streams by APP/STREAM (YAML only): push"`
	// Sources are streams pulled from sources that do not push, by
	// APP/STREAM (YAML only); publishers of those names are refused.
	Sources map[string]SourceConfig `yaml:"sources" usage:"streams pulled from sources that do not push, by APP/STREAM (YAML only): url, mode, rtsp_transport"`
	// PushAllowPrivate lets push targets be loopback and link-local
	// addresses (tests, a server beside the node). Defaults to false.
	PushAllowPrivate bool `yaml:"push_allow_private" usage:"let push targets resolve to loopback and link-local addresses"`

	Apps map[string]AppConfig `yaml:"apps" reload:"live" usage:"settings of single apps by app name, e.g. apps: {live: {record: all}}"`

	// Pprof serves Go's profiles at /debug/pprof/ on the HTTP address, for
	// performance work; never enable it on an address the public can reach.
	// Defaults to false.
	Pprof bool `yaml:"pprof" usage:"serve Go profiles at /debug/pprof/ on the HTTP address (not for public addresses)"`

	// PublicHost is the host name used in the URLs shown at start-up; empty
	// means localhost. Defaults to "".
	PublicHost string `yaml:"public_host" usage:"host name shown in start-up URLs (empty means localhost)"`

	// Redis is the URL of the Redis holding the cluster registry
	// (redis://HOST:6379/0; several hosts for Redis Cluster; ?master=NAME
	// for Sentinel). Empty keeps the registry in memory: a single node.
	// Defaults to "".
	Redis string `yaml:"redis" secret:"true" usage:"Redis URL of the cluster registry, e.g. redis://HOST:6379/0 (empty: in memory, single node)"`

	// RedisPrefix starts every key meshcast writes in Redis. Defaults to
	// "meshcast:".
	RedisPrefix string `yaml:"redis_prefix" usage:"prefix of every Redis key meshcast writes"`

	// NodeID names this node in the cluster; keep it across restarts.
	// Empty derives it from the host name and the listen ports. Defaults
	// to "".
	NodeID string `yaml:"node_id" usage:"this node's name in the cluster (empty: host name and ports)"`

	// AdvertiseHost is the host peers and redirected clients reach this
	// node at. Empty means the host name. Defaults to "".
	AdvertiseHost string `yaml:"advertise_host" usage:"host that peers and clients reach this node at (empty: the host name)"`

	// Region is this node's region; relays prefer peers of their own
	// region. Defaults to "".
	Region string `yaml:"region" usage:"this node's region (relays prefer peers of the same region)"`

	// Capacity is how many viewers this node takes; 0 means
	// MaxConnections. Defaults to 0.
	Capacity int `yaml:"capacity" usage:"viewers this node takes at most (0: --max-connections)"`

	// NodeTimeout is how long a node counts as alive after its last
	// heartbeat (sent every second), and how long a stream's claim lasts
	// without renewal. Defaults to 5s.
	NodeTimeout time.Duration `yaml:"node_timeout" usage:"a node without a heartbeat this long is dead, and its streams may be taken over"`

	// ClusterSecret authenticates nodes pulling streams from each other.
	// Required with Redis. Defaults to "".
	ClusterSecret string `yaml:"cluster_secret" secret:"true" usage:"shared secret of the cluster's nodes (required with --redis)"`

	// RelayIdle closes a relayed stream that has had no viewers this long.
	// Defaults to 30s.
	RelayIdle time.Duration `yaml:"relay_idle" usage:"close a relayed stream after this long without viewers"`

	// Parent lists the nodes this node pulls streams through instead of
	// from their owners (a tree); the first live one is used. Defaults to
	// none.
	Parent []string `yaml:"parent" usage:"node IDs to pull streams through instead of their owners (tree topology)"`

	// Mesh lets this node pull a stream from a peer already relaying it,
	// same region first, instead of from its owner. Defaults to false.
	Mesh bool `yaml:"mesh" usage:"pull streams from peers already relaying them, same region first (mesh topology)"`

	// Balance is how the route API and /play/ redirects pick a node:
	// least-loaded, p2c (the less loaded of two random nodes), affinity
	// (a node that has the stream already, while under its load cap) or
	// hash (rendezvous hashing on the stream name). Defaults to
	// "least-loaded".
	Balance string `yaml:"balance" usage:"how to pick a node for a viewer: least-loaded, p2c, affinity or hash"`

	// TrustedProxies are the addresses (CIDR or single IP) of load
	// balancers whose word on the client's address is taken: a PROXY
	// protocol header (v1 or v2) on RTMP, X-Forwarded-For on HTTP.
	// Defaults to none.
	TrustedProxies []string `yaml:"trusted_proxies" usage:"CIDRs of proxies whose PROXY protocol header (RTMP) or X-Forwarded-For (HTTP) gives the client's address"`

	// DrainGrace is how long a node told to stop (SIGTERM) keeps serving
	// its viewers while it is marked draining; a second SIGTERM stops it at
	// once. Defaults to 30s.
	DrainGrace time.Duration `yaml:"drain_grace" usage:"after SIGTERM, serve current viewers this long while draining (a second SIGTERM stops at once)"`

	// AdminToken is the bearer token the admin API (endpoints that change
	// what the node serves, and session listings) requires. Empty leaves
	// those endpoints to clients on the node's own machine. Defaults to "".
	AdminToken string `yaml:"admin_token" reload:"live" secret:"true" usage:"bearer token required by the admin API (empty: admin API on loopback only)"`

	// WebhookURLs receive every on_publish, on_publish_done, on_play,
	// on_stop and on_record_done event as a signed JSON POST. Defaults to
	// none.
	WebhookURLs []string `yaml:"webhook_urls" reload:"live" usage:"URLs that receive on_publish, on_publish_done, on_play, on_stop and on_record_done as signed JSON POSTs"`

	// WebhookSecret signs webhook deliveries (HMAC-SHA256). Required with
	// WebhookURLs. Defaults to "".
	WebhookSecret string `yaml:"webhook_secret" reload:"live" secret:"true" usage:"key that signs webhook deliveries (required with --webhook-urls)"`

	// MetricsMaxStreams caps the streams with series of their own in
	// /metrics: those with the most viewers; the rest are summed under
	// stream="_other". 0 sums them all. Defaults to 100.
	MetricsMaxStreams int `yaml:"metrics_max_streams" usage:"streams with their own series in /metrics, most viewers first (the rest are summed as _other)"`

	// EventsMaxClients bounds the Socket.IO clients of the real-time
	// events (/socket.io/); more connections are refused. Defaults to
	// 10000.
	EventsMaxClients int `yaml:"events_max_clients" usage:"maximum connected Socket.IO clients of the real-time events"`

	// WebModules is the node_modules directory the Socket.IO client
	// library (/socket.io/socket.io.js) is served from, read at each
	// request; "npm ci" fills it. Defaults to "node_modules".
	WebModules string `yaml:"web_modules" usage:"node_modules directory serving /socket.io/socket.io.js (filled by npm ci)"`

	// PublishAuth says who may publish without credentials: "loopback"
	// (clients on this machine; everyone else needs a key, a signed token
	// or the admission hook's consent), "always" (nobody) or "open"
	// (everybody: only for closed networks). Defaults to "loopback".
	PublishAuth string `yaml:"publish_auth" reload:"live" usage:"who may publish without credentials: loopback, always (nobody) or open (everybody)"`

	// PublishTrustedNetworks publish without credentials under
	// --publish-auth loopback, as this machine does: CIDRs or addresses,
	// e.g. 172.16.0.0/12 for a container's host on Docker's bridge
	// networks. Defaults to none.
	PublishTrustedNetworks []string `yaml:"publish_trusted_networks" reload:"live" usage:"CIDRs that publish without credentials under --publish-auth loopback, as this machine does (e.g. 172.16.0.0/12: the host of a Docker container)"`

	// PublishKeys are static publish keys, each PATTERN=KEY. PATTERN is an
	// app ("live", every stream in it), APP/STREAM, or a pattern with *
	// ("live/cam*", "*"). Publishers send the key as OBS users type it:
	// stream key NAME?key=KEY. Defaults to none.
	PublishKeys []string `yaml:"publish_keys" reload:"live" secret:"true" usage:"static publish keys as PATTERN=KEY (PATTERN: APP, APP/STREAM or a * pattern); publishers send NAME?key=KEY"`

	// URLSecret signs publish tokens and play URLs (HMAC-SHA256 over the
	// action, APP/STREAM and expiry; see "meshcast sign"). Defaults to "".
	URLSecret string `yaml:"url_secret" reload:"live" secret:"true" usage:"key of signed publish tokens and play URLs (HMAC-SHA256; see meshcast sign)"`

	// SignedPlayApps are the apps whose players need a signed URL
	// (?expires=UNIX&sig=HEX); "*" means every app. Defaults to none: play
	// is open.
	SignedPlayApps []string `yaml:"signed_play_apps" reload:"live" usage:"apps whose players need a signed URL (?expires=...&sig=...); * for every app"`

	// AuthHook is asked before every publish and play: a signed JSON POST;
	// any answer but 2xx refuses, and so does no answer within
	// AuthHookTimeout. Defaults to "" (no hook).
	AuthHook string `yaml:"auth_hook" reload:"live" usage:"URL asked before every publish and play (signed JSON POST; non-2xx or no answer refuses)"`

	// AuthHookSecret signs the admission hook's requests. Required with
	// AuthHook. Defaults to "".
	AuthHookSecret string `yaml:"auth_hook_secret" reload:"live" secret:"true" usage:"key that signs admission hook requests (required with --auth-hook)"`

	// AuthHookTimeout is how long the admission hook may take; no answer
	// in time refuses. Defaults to 2s.
	AuthHookTimeout time.Duration `yaml:"auth_hook_timeout" reload:"live" usage:"how long the admission hook may take before the request is refused"`

	// CORSOrigins are the web origins whose pages may read from this node
	// in a browser (media and API, never with cookies); "*" allows any,
	// none allows only the node's own pages. Defaults to "*".
	CORSOrigins []string `yaml:"cors_origins" reload:"live" usage:"web origins allowed to read from this node in a browser (* for any; empty: same origin only)"`

	// TLSCert and TLSKey are PEM files of the certificate and key that
	// turn on HTTPS (HTTPSAddr) and RTMPS (RTMPSAddr); both files are read
	// again when they change. Default to "".
	TLSCert string `yaml:"tls_cert" usage:"PEM certificate file: turns on HTTPS and RTMPS (reloaded when it changes)"`
	TLSKey  string `yaml:"tls_key" usage:"PEM private key file of --tls-cert"`

	// HTTPSAddr is the HTTPS listen address, used with TLSCert. Defaults
	// to ":8443".
	HTTPSAddr string `yaml:"https_addr" usage:"HTTPS listen address (with --tls-cert)"`

	// RTMPSAddr is the RTMPS listen address, used with TLSCert. Defaults
	// to ":1936".
	RTMPSAddr string `yaml:"rtmps_addr" usage:"RTMPS listen address (with --tls-cert)"`

	// SRTAddr is the UDP address SRT publishers connect to, with the
	// stream ID publish:APP/STREAM. Empty: no SRT. Defaults to ":8890".
	SRTAddr string `yaml:"srt_addr" usage:"SRT listen address (UDP) for publishers: srt://HOST:PORT?streamid=publish:APP/STREAM (empty: none)"`

	// RTSPAddr is the RTSP (TCP) listen address. Empty: no RTSP.
	// Defaults to ":8554".
	RTSPAddr string `yaml:"rtsp_addr" usage:"RTSP listen address (TCP): rtsp://HOST:PORT/APP/STREAM to play and publish (empty: none)"`
	// RTSPSAddr is the RTSPS listen address, used with TLSCert. Defaults
	// to ":8322".
	RTSPSAddr string `yaml:"rtsps_addr" usage:"RTSPS listen address (with --tls-cert; empty: none)"`
	// RTSPUDPRTPAddr and RTSPUDPRTCPAddr are RTSP's UDP addresses for RTP
	// and RTCP: an even port and the next. Empty: RTSP over TCP only.
	// Default to ":8000" and ":8001".
	RTSPUDPRTPAddr  string `yaml:"rtsp_udp_rtp_addr" usage:"UDP address of RTSP's RTP, an even port (empty: RTSP over TCP only)"`
	RTSPUDPRTCPAddr string `yaml:"rtsp_udp_rtcp_addr" usage:"UDP address of RTSP's RTCP: the RTP port + 1"`

	// MaxConnectionsPerIP limits the waiting connections of one client
	// address: not yet publishing or playing (handshake, command phase,
	// request headers), or HTTP keep-alive connections idle for longer
	// than twice the HLS segment duration. Each counts once it has waited
	// connlimit.Grace(HandshakeTimeout); publishers and viewers never do.
	// Counted separately for RTMP, RTMPS and HTTP; 0 means no limit.
	// Defaults to 256.
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip" reload:"live" usage:"maximum waiting connections (handshake or request headers unfinished, or idle keep-alive) from one address, for RTMP, RTMPS and HTTP each; publishers and viewers do not count (0: no limit)"`

	// MaxViewersPerIP limits the publishing and playing sessions of one
	// client address at once, over every protocol together (RTMP, RTMPS,
	// HTTP-FLV, WebSocket-FLV, SRT, WebRTC); 0 means no limit. Defaults to
	// 0: thousands of viewers may share one address behind carrier-grade
	// NAT.
	MaxViewersPerIP int `yaml:"max_viewers_per_ip" reload:"live" usage:"maximum publishers and viewers playing at once from one address, all protocols together (0: no limit)"`

	// HandshakeTimeout is how long an RTMP client has from connecting to
	// starting to publish or play, and an HTTP client to send its request
	// headers. Defaults to 10s.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout" usage:"time a client has from connecting to publishing or playing (RTMP) or to sending its request headers (HTTP)"`

	// VODDir is the directory of the on-demand library: its MP4 files are
	// served at /vod/NAME.mp4 and listed at /api/v1/vod. Empty serves no
	// library. Defaults to "".
	VODDir string `yaml:"vod_dir" usage:"directory of on-demand MP4 and FLV files, served as /vod/NAME.mp4 and /vod/NAME/index.m3u8 (empty: none)"`

	// VODReplicas is how many nodes own each on-demand asset (rendezvous
	// hashing on its name); uploads and finished recordings are copied to
	// them. Defaults to 2.
	VODReplicas int `yaml:"vod_replicas" usage:"nodes that keep a copy of each on-demand asset in a cluster"`

	// VODMaxUpload bounds an upload to the library, as a size ("8GiB").
	// Defaults to "8GiB".
	VODMaxUpload string `yaml:"vod_max_upload" usage:"largest upload to the on-demand library (e.g. 8GiB, 500MB)"`

	// VODSegmentDuration is the shortest on-demand HLS segment; segments
	// start at keyframes. Defaults to 4s.
	VODSegmentDuration time.Duration `yaml:"vod_segment_duration" usage:"shortest on-demand HLS segment (segments start at keyframes)"`

	// CacheSize bounds the node's cache of on-demand segments and of
	// objects fetched from other nodes, as a size. Defaults to "256MB".
	CacheSize string `yaml:"cache_size" usage:"memory for cached on-demand segments and objects fetched from other nodes (e.g. 256MB, 1GiB)"`

	// CacheL2 is a second-level cache the nodes share: redis://HOST:PORT/DB
	// or memcached://HOST:PORT[,HOST:PORT]. Empty: none. Defaults to "".
	CacheL2 string `yaml:"cache_l2" secret:"true" usage:"shared second-level cache: redis://... or memcached://... (empty: none)"`

	// The *File settings name files that hold a secret setting instead of
	// the configuration itself (Kubernetes secrets and systemd credentials
	// arrive as files). A file's content, without its trailing newline, is
	// the setting (publish keys: one per line, blank lines and "#" comments
	// skipped). Setting both a secret and its file is an error. Files are
	// read again on every reload. Default to "".
	AdminTokenFile     string `yaml:"admin_token_file" fileof:"admin_token" reload:"live" usage:"file holding --admin-token (read again on reload)"`
	ClusterSecretFile  string `yaml:"cluster_secret_file" fileof:"cluster_secret" usage:"file holding --cluster-secret"`
	URLSecretFile      string `yaml:"url_secret_file" fileof:"url_secret" reload:"live" usage:"file holding --url-secret (read again on reload)"`
	PublishKeysFile    string `yaml:"publish_keys_file" fileof:"publish_keys" reload:"live" usage:"file holding --publish-keys, one PATTERN=KEY per line (read again on reload)"`
	WebhookSecretFile  string `yaml:"webhook_secret_file" fileof:"webhook_secret" reload:"live" usage:"file holding --webhook-secret (read again on reload)"`
	AuthHookSecretFile string `yaml:"auth_hook_secret_file" fileof:"auth_hook_secret" reload:"live" usage:"file holding --auth-hook-secret (read again on reload)"`
	RedisFile          string `yaml:"redis_file" fileof:"redis" usage:"file holding --redis (its URL may carry a password)"`
}

// AppConfig is the settings of one app, under apps: in the YAML file.
type AppConfig struct {
	// Record overrides Config.Record for the app's streams: "off" or
	// "all"; empty follows Config.Record.
	Record string `yaml:"record" json:"record"`
	// Transcode overrides Config.Transcode for the app's streams: "on" or
	// "off"; empty follows Config.Transcode.
	Transcode string `yaml:"transcode" json:"transcode,omitempty"`
	// Ladder replaces the default transcoding ladder for the app's
	// streams. Empty: transcode.DefaultLadder.
	Ladder []transcode.Rendition `yaml:"ladder" json:"ladder,omitempty"`
	// Push lists the URLs the app's streams are restreamed to
	// (rtmp://HOST/APP/STREAM, rtmps://... or srt://HOST:PORT?streamid=...),
	// where {app} and {stream} stand for the stream's name. They carry
	// stream keys: secret.
	Push []string `yaml:"push" json:"-"`
}

// SourceConfig is a stream pulled from a source that does not push
// (Config.Sources).
type SourceConfig struct {
	// URL is the source: rtsp://, rtsps://, rtmp://, rtmps://,
	// http(s)://....flv, http(s)://....m3u8 (HLS) or
	// srt://HOST:PORT?streamid=...&passphrase=.... It may carry
	// credentials: never shown.
	URL string `yaml:"url" json:"-"`
	// Mode is "on-demand" (the default: the first viewer starts it) or
	// "always".
	Mode string `yaml:"mode" json:"mode,omitempty"`
	// RTSPTransport is "tcp" (the default) or "udp", for RTSP sources.
	RTSPTransport string `yaml:"rtsp_transport" json:"rtsp_transport,omitempty"`
}

// StreamConfig is a single stream's own settings (Config.Streams).
type StreamConfig struct {
	// Push lists URLs the stream is restreamed to, beside its app's.
	Push []string `yaml:"push" json:"-"`
}

// PushTargets returns the URLs stream name is restreamed to: its app's and
// its own, {app} and {stream} replaced.
func (c *Config) PushTargets(name streamname.Name) []string {
	var out []string
	r := strings.NewReplacer("{app}", name.App(), "{stream}", name.Stream())
	for _, u := range append(slices.Clone(c.Apps[name.App()].Push), c.Streams[string(name)].Push...) {
		out = append(out, r.Replace(u))
	}
	return out
}

// TranscodeModes are the values of AppConfig.Transcode.
var TranscodeModes = []string{"on", "off"}

// Transcodes reports whether the streams of app get a transcoding ladder:
// the app's own setting if it has one, else Transcode.
func (c *Config) Transcodes(app string) bool {
	if ac, ok := c.Apps[app]; ok && ac.Transcode != "" {
		return ac.Transcode == "on"
	}
	return c.Transcode
}

// Ladder is the transcoding ladder of app's streams.
func (c *Config) Ladder(app string) []transcode.Rendition {
	if ac, ok := c.Apps[app]; ok && len(ac.Ladder) > 0 {
		return ac.Ladder
	}
	return transcode.DefaultLadder()
}

// RecordModes are the values of Config.Record and AppConfig.Record.
var RecordModes = []string{"off", "all"}

// Records reports whether the streams of app are recorded: the app's own
// record setting if it has one, else Record.
func (c *Config) Records(app string) bool {
	if ac, ok := c.Apps[app]; ok && ac.Record != "" {
		return ac.Record == "all"
	}
	return c.Record == "all"
}

// Recording reports whether the streams of any app are recorded.
func (c *Config) Recording() bool {
	if c.Record == "all" {
		return true
	}
	for _, ac := range c.Apps {
		if ac.Record == "all" {
			return true
		}
	}
	return false
}

// PublishAuthModes are the values of Config.PublishAuth.
var PublishAuthModes = []string{"loopback", "always", "open"}

// Balancers are the values of Config.Balance.
var Balancers = []string{"least-loaded", "p2c", "affinity", "hash"}

// TrustedNets parses TrustedProxies; Validate has checked them.
func (c *Config) TrustedNets() []netip.Prefix { return prefixes(c.TrustedProxies) }

// PublishTrustedNets parses PublishTrustedNetworks; Validate has checked
// them.
func (c *Config) PublishTrustedNets() []netip.Prefix { return prefixes(c.PublishTrustedNetworks) }

func prefixes(list []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := parsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// parsePrefix reads a CIDR or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// Default returns the built-in configuration.
func Default() Config {
	return Config{
		RTMPAddr:               ":1935",
		HTTPAddr:               ":8080",
		LogLevel:               "info",
		LogFormat:              "text",
		PublisherGrace:         5 * time.Second,
		WriteTimeout:           10 * time.Second,
		ReadTimeout:            30 * time.Second,
		MaxLag:                 5 * time.Second,
		MergeWindow:            100 * time.Millisecond,
		MaxConnections:         10000,
		HLSSegmentDuration:     time.Second,
		HLSSegmentCount:        7,
		HLSIdleTimeout:         60 * time.Second,
		Record:                 "off",
		RecordDir:              "recordings",
		Apps:                   map[string]AppConfig{},
		PublicHost:             "",
		RedisPrefix:            "meshcast:",
		NodeTimeout:            5 * time.Second,
		RelayIdle:              30 * time.Second,
		Parent:                 []string{},
		Balance:                "least-loaded",
		TrustedProxies:         []string{},
		PublishTrustedNetworks: []string{},
		DrainGrace:             30 * time.Second,
		WebhookURLs:            []string{},
		MetricsMaxStreams:      100,
		EventsMaxClients:       10000,
		WebModules:             "node_modules",
		PublishAuth:            "loopback",
		TCPNoDelay:             "auto",
		PublishKeys:            []string{},
		SignedPlayApps:         []string{},
		AuthHookTimeout:        2 * time.Second,
		CORSOrigins:            []string{"*"},
		HTTPSAddr:              ":8443",
		RTMPSAddr:              ":1936",
		MaxConnectionsPerIP:    256,
		HandshakeTimeout:       10 * time.Second,
		VODReplicas:            2,
		VODMaxUpload:           "8GiB",
		VODSegmentDuration:     4 * time.Second,
		CacheSize:              "256MB",
		TranscodeMax:           2,
		TranscodeCPUMax:        80,
		FFmpeg:                 "ffmpeg",
		WebRTCOpus:             true,
		WebRTCUDPAddr:          ":8189",
		WebRTCNATIPs:           []string{},
		WebRTCInterfaces:       []string{},
		WebRTCICEServers:       []string{},
		WebRTCTURNTTL:          24 * time.Hour,
		SRTAddr:                ":8890",
		RTSPAddr:               ":8554",
		RTSPSAddr:              ":8322",
		RTSPUDPRTPAddr:         ":8000",
		RTSPUDPRTCPAddr:        ":8001",
	}
}

// TCPNoDelayModes are the values of Config.TCPNoDelay.
var TCPNoDelayModes = []string{"auto", "on", "off"}

// Nagle reports whether viewers' sockets run Nagle's algorithm
// (TCP_NODELAY off), from TCPNoDelay.
func (c *Config) Nagle() bool {
	switch c.TCPNoDelay {
	case "on":
		return false
	case "off":
		return true
	}
	return c.LowLatency
}

// WriteMerge returns the merge window in force: zero in low-latency mode.
func (c *Config) WriteMerge() time.Duration {
	if c.LowLatency {
		return 0
	}
	return c.MergeWindow
}

// Allowed values of LogLevel and LogFormat.
var (
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"text", "json"}
)

const (
	minHLSSegmentCount    = 7
	minHLSSegmentDuration = 100 * time.Millisecond
	minSecretLen          = 16
)

// validID reports whether s is a usable node ID: it appears in Redis keys,
// URLs and logs.
func validID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// Load builds the configuration from the defaults, the YAML file, the
// environment and the command-line arguments, then validates it.
//
// args are the arguments after the subcommand; both --flag value and
// --flag=value are accepted. env is in [os.Environ] form; MESHCAST_*
// variables set to the empty string are ignored. The YAML file is named by
// --config, or else by MESHCAST_CONFIG; unknown keys in it are an error. On
// -h or --help Load returns [flag.ErrHelp].
func Load(args []string, env []string) (Config, error) {
	// Flags are parsed first, into values held aside, so that --help and
	// malformed flags are reported before any file is read; they are applied
	// last, above the file and the environment.
	fs := flag.NewFlagSet("meshcast", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var configPath string
	configSet := false
	fs.Func("config", "", func(s string) error {
		configPath, configSet = s, true
		return nil
	})
	var fromFlags []pending
	for _, f := range configFields {
		if f.fileOnly {
			continue
		}
		fs.Var(&flagValue{f: f, out: &fromFlags}, f.flag, f.usage)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, flag.ErrHelp
		}
		return Config{}, unknownFlag(err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("config: unexpected argument %q", fs.Arg(0))
	}

	vars := envMap(env)
	if !configSet {
		configPath = vars[ConfigEnv]
	}

	cfg := Default()
	if configPath != "" {
		if err := loadFile(&cfg, configPath); err != nil {
			return Config{}, err
		}
	}
	rv := reflect.ValueOf(&cfg).Elem()
	for _, f := range configFields {
		s, ok := vars[f.env]
		if !ok || f.fileOnly {
			continue
		}
		v, err := f.parse(s)
		if err != nil {
			return Config{}, fmt.Errorf("config: %s: %w", f.env, err)
		}
		rv.Field(f.index).Set(v)
	}
	for _, p := range fromFlags {
		rv.Field(p.f.index).Set(p.v)
	}
	if err := readSecretFiles(&cfg); err != nil {
		return Config{}, err
	}

	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// loadFile decodes the YAML file at path over cfg.
func loadFile(cfg *Config, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	return nil
}

// envMap returns the non-empty MESHCAST_* variables of env; a later entry
// overrides an earlier one, as in the process environment.
func envMap(env []string) map[string]string {
	m := make(map[string]string)
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) {
			continue
		}
		if v == "" {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	return m
}

// FlagTakesValue reports whether serve's flag name (without dashes) reads
// the next argument as its value when given without "=": false for a
// boolean setting, which stands alone, and for a name that is no flag.
func FlagTakesValue(name string) bool {
	if name == "config" {
		return true
	}
	for _, f := range configFields {
		if f.flag == name && !f.fileOnly {
			return f.kind != "bool"
		}
	}
	return false
}

// Redacted returns the effective configuration keyed by YAML key. Durations
// are given in Go syntax ("5s"), and fields tagged secret:"true" as
// "REDACTED".
func (c Config) Redacted() map[string]any {
	return configFields.redacted(reflect.ValueOf(c))
}

// sizeUnits are the suffixes ParseSize takes, longest first.
var sizeUnits = []struct {
	suffix string
	n      int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// ParseSize reads a size in bytes: a whole number, optionally followed by
// a unit (B, KB, MB, GB, TB in powers of 1000; KiB, MiB, GiB, TiB, K, M, G
// in powers of 1024).
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(v), u.n
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("config: %q is not a size", s)
	}
	return n * mult, nil
}
