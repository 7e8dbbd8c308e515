package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshcast/meshcast/internal/server/webrtc"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/transcode"
)

// Validate reports every invalid setting of c as one error joined with
// [errors.Join]; each problem names the offending flag.
func (c *Config) Validate() error {
	var v validator
	c.validateListeners(&v)
	c.validateDelivery(&v)
	c.validateApps(&v)
	c.validateCluster(&v)
	c.validateAccess(&v)
	c.validateWebhooks(&v)
	c.validateServices(&v)
	c.validateLimits(&v)
	return errors.Join(v.errs...)
}

// validator collects the problems Validate finds.
type validator struct{ errs []error }

// bad records a problem with the setting of Go field goName, named as its
// flag (or, for a file-only setting, its YAML key).
func (v *validator) bad(goName, format string, args ...any) {
	f := configFields.byGo(goName)
	name := "--" + f.flag
	if f.fileOnly {
		name = f.yaml
	}
	v.errs = append(v.errs, fmt.Errorf("config: %s: %s", name, fmt.Sprintf(format, args...)))
}

// addr checks a HOST:PORT listen address.
func (v *validator) addr(goName, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.bad(goName, "%v", err)
		return
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		v.bad(goName, "port %q in %q is not a number from 0 to 65535", port, addr)
	}
}

// positive checks a duration that must be more than zero.
func (v *validator) positive(goName string, d time.Duration) {
	if d <= 0 {
		v.bad(goName, "must be positive, got %v", d)
	}
}

// notNegative checks a duration that may be zero.
func (v *validator) notNegative(goName string, d time.Duration) {
	if d < 0 {
		v.bad(goName, "must not be negative, got %v", d)
	}
}

// httpURL checks a URL the node will call.
func (v *validator) httpURL(goName, u string) {
	if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		v.bad(goName, "%q is not an http or https URL", u)
	}
}

// oneOf checks a setting that takes one of a fixed set of words.
func (v *validator) oneOf(goName, got string, want []string) {
	if !slices.Contains(want, got) {
		v.bad(goName, "%q is not one of %s", got, strings.Join(want, ", "))
	}
}

// validateListeners checks the listen addresses and TLS.
func (c *Config) validateListeners(v *validator) {
	v.addr("RTMPAddr", c.RTMPAddr)
	v.addr("HTTPAddr", c.HTTPAddr)
	v.addr("HTTPSAddr", c.HTTPSAddr)
	v.addr("RTMPSAddr", c.RTMPSAddr)
	if c.SRTAddr != "" {
		v.addr("SRTAddr", c.SRTAddr)
	}
	c.validateRTSP(v)
	c.validatePush(v)
	c.validateSources(v)
	if (c.TLSCert == "") != (c.TLSKey == "") {
		v.bad("TLSKey", "--tls-cert and --tls-key go together")
	}
	c.validateWebRTC(v)
}

// validateWebRTC checks WebRTC's sockets, the addresses it offers and the
// STUN and TURN servers it hands out.
func (c *Config) validateWebRTC(v *validator) {
	if c.WebRTCUDPAddr != "" {
		v.addr("WebRTCUDPAddr", c.WebRTCUDPAddr)
	}
	if c.WebRTCTCPAddr != "" {
		v.addr("WebRTCTCPAddr", c.WebRTCTCPAddr)
	}
	for _, ip := range c.WebRTCNATIPs {
		if err := webrtc.CheckNATIP(ip); err != nil {
			v.bad("WebRTCNATIPs", "%v", err)
		}
	}
	for _, p := range c.WebRTCInterfaces {
		if err := webrtc.CheckInterface(p); err != nil {
			v.bad("WebRTCInterfaces", "%v", err)
		}
	}
	turn := false
	for _, u := range c.WebRTCICEServers {
		t, err := webrtc.CheckICEServer(u)
		if err != nil {
			v.bad("WebRTCICEServers", "%v", err)
		}
		turn = turn || t
	}
	switch {
	case turn && c.WebRTCTURNSecret == "":
		v.bad("WebRTCTURNSecret", "is required with a TURN URL in --webrtc-ice-servers: each session's TURN credentials are made from it (no static password is handed out)")
	case c.WebRTCTURNSecret != "" && len(c.WebRTCTURNSecret) < minSecretLen:
		v.bad("WebRTCTURNSecret", "must be at least %d characters", minSecretLen)
	}
	v.positive("WebRTCTURNTTL", c.WebRTCTURNTTL)
}

// validateDelivery checks logging and how streams reach viewers.
func (c *Config) validateDelivery(v *validator) {
	v.oneOf("LogLevel", c.LogLevel, logLevels)
	v.oneOf("LogFormat", c.LogFormat, logFormats)
	v.notNegative("PublisherGrace", c.PublisherGrace)
	v.positive("WriteTimeout", c.WriteTimeout)
	v.positive("ReadTimeout", c.ReadTimeout)
	v.positive("MaxLag", c.MaxLag)
	if c.MergeWindow < 0 || c.MergeWindow > time.Second {
		v.bad("MergeWindow", "must be from 0 to 1s, got %v", c.MergeWindow)
	}
	v.oneOf("TCPNoDelay", c.TCPNoDelay, TCPNoDelayModes)
	if c.HLSSegmentDuration < minHLSSegmentDuration {
		v.bad("HLSSegmentDuration", "must be at least %v, got %v", minHLSSegmentDuration, c.HLSSegmentDuration)
	}
	if c.HLSIdleTimeout < time.Second {
		v.bad("HLSIdleTimeout", "must be at least 1s, got %v", c.HLSIdleTimeout)
	}
	if c.HLSSegmentCount < minHLSSegmentCount {
		v.bad("HLSSegmentCount", "must be at least %d (required by low-latency HLS), got %d", minHLSSegmentCount, c.HLSSegmentCount)
	}
	if c.MetricsMaxStreams < 0 {
		v.bad("MetricsMaxStreams", "must not be negative, got %d", c.MetricsMaxStreams)
	}
	if c.EventsMaxClients < 1 {
		v.bad("EventsMaxClients", "must be at least 1, got %d", c.EventsMaxClients)
	}
	for _, o := range c.CORSOrigins {
		if o == "*" {
			continue
		}
		if p, err := url.Parse(o); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.Path != "" || p.RawQuery != "" {
			v.bad("CORSOrigins", "%q is not an origin such as https://example.com, nor *", o)
		}
	}
}

// validateApps checks recording and the settings of single apps.
func (c *Config) validateApps(v *validator) {
	v.oneOf("Record", c.Record, RecordModes)
	if c.Recording() && c.RecordDir == "" {
		v.bad("RecordDir", "is required when recording is on")
	}
	for _, app := range slices.Sorted(maps.Keys(c.Apps)) {
		if err := streamname.CheckApp(app); err != nil {
			v.bad("Apps", "%v", err)
		}
		if tc := c.Apps[app].Transcode; tc != "" && !slices.Contains(TranscodeModes, tc) {
			v.bad("Apps", "%s: transcode %q is not one of %s", app, tc, strings.Join(TranscodeModes, ", "))
		}
		if l := c.Apps[app].Ladder; len(l) > 0 {
			if err := transcode.ValidateLadder(l); err != nil {
				v.bad("Apps", "%s: ladder: %v", app, err)
			}
		}
		if r := c.Apps[app].Record; r != "" && !slices.Contains(RecordModes, r) {
			v.bad("Apps", "%s: record %q is not one of %s", app, r, strings.Join(RecordModes, ", "))
		}
	}
}

// validateCluster checks the node's identity, registry and relays.
func (c *Config) validateCluster(v *validator) {
	if c.Redis != "" && len(c.ClusterSecret) < minSecretLen {
		v.bad("ClusterSecret", "must be at least %d characters when --redis is set: nodes authenticate each other with it", minSecretLen)
	}
	if c.NodeID != "" && !validID(c.NodeID) {
		v.bad("NodeID", "%q must be 1 to 64 letters, digits, '_', '-' or '.'", c.NodeID)
	}
	for _, p := range c.Parent {
		if !validID(p) {
			v.bad("Parent", "%q is not a node ID", p)
		}
	}
	if c.Capacity < 0 {
		v.bad("Capacity", "must not be negative, got %d", c.Capacity)
	}
	if c.NodeTimeout < time.Second {
		v.bad("NodeTimeout", "must be at least 1s (heartbeats are sent every second), got %v", c.NodeTimeout)
	}
	v.positive("RelayIdle", c.RelayIdle)
	v.oneOf("Balance", c.Balance, Balancers)
	for _, p := range c.TrustedProxies {
		if _, err := parsePrefix(p); err != nil {
			v.bad("TrustedProxies", "%q is not a CIDR or an IP address", p)
		}
	}
	v.notNegative("DrainGrace", c.DrainGrace)
}

// validateAccess checks who may publish, play and administer.
func (c *Config) validateAccess(v *validator) {
	for _, p := range c.PublishTrustedNetworks {
		if _, err := parsePrefix(p); err != nil {
			v.bad("PublishTrustedNetworks", "%q is not a CIDR or an IP address", p)
		}
	}
	if c.AdminToken != "" && len(c.AdminToken) < minSecretLen {
		v.bad("AdminToken", "must be at least %d characters", minSecretLen)
	}
	v.oneOf("PublishAuth", c.PublishAuth, PublishAuthModes)
	for _, pk := range c.PublishKeys {
		pattern, key, ok := strings.Cut(pk, "=")
		if !ok || pattern == "" || key == "" {
			v.bad("PublishKeys", "an entry is not PATTERN=KEY")
			continue // the entry holds a key: never echo it
		}
		if len(key) < 8 {
			v.bad("PublishKeys", "the key for %q must be at least 8 characters", pattern)
		}
	}
	if c.URLSecret != "" && len(c.URLSecret) < minSecretLen {
		v.bad("URLSecret", "must be at least %d characters", minSecretLen)
	}
	if len(c.SignedPlayApps) > 0 && c.URLSecret == "" {
		v.bad("URLSecret", "is required with --signed-play-apps: it signs the play URLs")
	}
	if c.PublishAuth == "always" && len(c.PublishKeys) == 0 && c.URLSecret == "" && c.AuthHook == "" {
		v.bad("PublishAuth", "\"always\" needs --publish-keys, --url-secret or --auth-hook, or nobody could publish")
	}
	if c.AuthHook != "" {
		v.httpURL("AuthHook", c.AuthHook)
		if len(c.AuthHookSecret) < minSecretLen {
			v.bad("AuthHookSecret", "must be at least %d characters with --auth-hook: the hook checks the signature", minSecretLen)
		}
	}
	v.positive("AuthHookTimeout", c.AuthHookTimeout)
	if c.AuthHook != "" && c.AuthHookTimeout >= c.HandshakeTimeout {
		v.bad("AuthHookTimeout", "must be shorter than --handshake-timeout (%v): a publisher waits for the hook within it", c.HandshakeTimeout)
	}
}

// validateWebhooks checks where events are posted and how they are signed.
func (c *Config) validateWebhooks(v *validator) {
	for _, u := range c.WebhookURLs {
		v.httpURL("WebhookURLs", u)
	}
	if len(c.WebhookURLs) > 0 && c.WebhookSecret == "" {
		v.bad("WebhookSecret", "is required with --webhook-urls: receivers check the signature")
	}
}

// validateServices checks transcoding, on-demand files and the cache.
func (c *Config) validateServices(v *validator) {
	if c.TranscodeMax < 0 {
		v.bad("TranscodeMax", "must not be negative")
	}
	if c.TranscodeCPUMax < 0 || c.TranscodeCPUMax > 100 {
		v.bad("TranscodeCPUMax", "must be a percentage from 0 to 100")
	}
	if c.FFmpeg == "" {
		v.bad("FFmpeg", "must name the ffmpeg binary")
	}
	if c.VODReplicas < 1 {
		v.bad("VODReplicas", "must be at least 1")
	}
	if n, err := ParseSize(c.VODMaxUpload); err != nil || n <= 0 {
		v.bad("VODMaxUpload", "%q is not a size such as 8GiB or 500MB", c.VODMaxUpload)
	}
	v.positive("VODSegmentDuration", c.VODSegmentDuration)
	if n, err := ParseSize(c.CacheSize); err != nil || n < 1<<20 {
		v.bad("CacheSize", "%q is not a size of at least 1MiB, such as 256MB or 1GiB", c.CacheSize)
	}
	if c.CacheL2 != "" {
		if p, err := url.Parse(c.CacheL2); err != nil || (p.Scheme != "redis" && p.Scheme != "rediss" && p.Scheme != "memcached") || p.Host == "" {
			v.bad("CacheL2", "must be redis://HOST:PORT/DB or memcached://HOST:PORT")
		}
	}
}

// validateLimits checks the connection limits.
func (c *Config) validateLimits(v *validator) {
	if c.MaxConnections < 1 {
		v.bad("MaxConnections", "must be at least 1, got %d", c.MaxConnections)
	}
	if c.MaxConnectionsPerIP < 0 {
		v.bad("MaxConnectionsPerIP", "must not be negative, got %d", c.MaxConnectionsPerIP)
	}
	if c.MaxViewersPerIP < 0 {
		v.bad("MaxViewersPerIP", "must not be negative, got %d", c.MaxViewersPerIP)
	}
	v.positive("HandshakeTimeout", c.HandshakeTimeout)
}

// validateRTSP checks the RTSP listeners: the UDP pair is both or neither,
// an even RTP port and RTCP on the next.
func (c *Config) validateRTSP(v *validator) {
	for _, a := range [][2]string{{"RTSPAddr", c.RTSPAddr}, {"RTSPSAddr", c.RTSPSAddr},
		{"RTSPUDPRTPAddr", c.RTSPUDPRTPAddr}, {"RTSPUDPRTCPAddr", c.RTSPUDPRTCPAddr}} {
		if a[1] != "" {
			v.addr(a[0], a[1])
		}
	}
	if (c.RTSPUDPRTPAddr == "") != (c.RTSPUDPRTCPAddr == "") {
		v.bad("RTSPUDPRTCPAddr", "--rtsp-udp-rtp-addr and --rtsp-udp-rtcp-addr go together")
		return
	}
	if c.RTSPUDPRTPAddr == "" {
		return
	}
	_, rtp, err1 := net.SplitHostPort(c.RTSPUDPRTPAddr)
	_, rtcp, err2 := net.SplitHostPort(c.RTSPUDPRTCPAddr)
	p, err3 := strconv.Atoi(rtp)
	q, err4 := strconv.Atoi(rtcp)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return // v.addr said why
	}
	if p == 0 && q == 0 {
		return // both chosen by the system: the server pairs them
	}
	if p%2 != 0 || q != p+1 {
		v.bad("RTSPUDPRTCPAddr", "RTP needs an even port and RTCP the next (%d and %d)", p, q)
	}
}

// validatePush checks the push targets of apps and streams: RTMP or RTMPS
// URLs naming an app and a stream key, or SRT URLs naming a host and port,
// on streams with valid names.
func (c *Config) validatePush(v *validator) {
	check := func(where string, urls []string) {
		for _, raw := range urls {
			u, err := url.Parse(strings.NewReplacer("{app}", "app", "{stream}", "stream").Replace(raw))
			if err == nil && u.Scheme == "srt" {
				if u.Hostname() == "" || u.Port() == "" || strings.Trim(u.Path, "/") != "" || u.Fragment != "" {
					v.bad("Apps", "%s: an SRT push target is srt://HOST:PORT?streamid=... (a # in the stream ID written %%23)", where)
				}
				if p := u.Query().Get("passphrase"); p != "" && (len(p) < 10 || len(p) > 79) {
					v.bad("Apps", "%s: an srt:// push target's passphrase is 10 to 79 characters", where)
				}
				continue
			}
			app, key, _ := strings.Cut(strings.Trim(u.EscapedPath(), "/"), "/")
			if err != nil || (u.Scheme != "rtmp" && u.Scheme != "rtmps") || u.Hostname() == "" || app == "" || key == "" {
				v.bad("Apps", "%s: a push target is rtmp://HOST[:PORT]/APP/STREAM, rtmps://... or srt://HOST:PORT?streamid=... ({app} and {stream} allowed)", where)
			}
		}
	}
	for _, app := range slices.Sorted(maps.Keys(c.Apps)) {
		check("apps."+app+".push", c.Apps[app].Push)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Streams)) {
		if _, err := streamname.Parse(name); err != nil {
			v.bad("Streams", "%q: %v", name, err)
		}
		check("streams."+name+".push", c.Streams[name].Push)
	}
}

// validateSources checks the pulled sources: names, URLs, modes.
func (c *Config) validateSources(v *validator) {
	for _, name := range slices.Sorted(maps.Keys(c.Sources)) {
		src := c.Sources[name]
		if _, err := streamname.Parse(name); err != nil {
			v.bad("Sources", "%q: %v", name, err)
		}
		u, err := url.Parse(src.URL)
		switch {
		case err != nil || u.Host == "":
			v.bad("Sources", "%s: url is not a URL", name)
		case u.Scheme == "rtsp", u.Scheme == "rtsps", u.Scheme == "rtmp", u.Scheme == "rtmps":
		case (u.Scheme == "http" || u.Scheme == "https") && (strings.HasSuffix(u.Path, ".flv") || strings.HasSuffix(u.Path, ".m3u8")):
		case u.Scheme == "srt":
			if u.Port() == "" {
				v.bad("Sources", "%s: an srt:// url needs a port: srt://HOST:PORT?streamid=...", name)
			}
			// SRT's passphrases are 10 to 79 bytes (gosrt refuses others).
			if p := u.Query().Get("passphrase"); p != "" && (len(p) < 10 || len(p) > 79) {
				v.bad("Sources", "%s: an srt:// url's passphrase is 10 to 79 characters", name)
			}
		default:
			v.bad("Sources", "%s: url is rtsp://, rtsps://, rtmp://, rtmps://, http(s)://....flv, http(s)://....m3u8 or srt://", name)
		}
		if src.Mode != "" && src.Mode != "on-demand" && src.Mode != "always" {
			v.bad("Sources", "%s: mode is on-demand or always", name)
		}
		if src.RTSPTransport != "" && src.RTSPTransport != "tcp" && src.RTSPTransport != "udp" {
			v.bad("Sources", "%s: rtsp_transport is tcp or udp", name)
		}
	}
}
