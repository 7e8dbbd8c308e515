package config

import (
	"fmt"
	"io"
	"reflect"
	"strings"
)

// usageGroups sorts serve's flags by topic for --help; TestUsageGroups
// holds every flag to exactly one group.
var usageGroups = []struct {
	title string
	flags []string
}{
	{"Ingest (publishing)", []string{
		"rtmp-addr", "rtmps-addr", "srt-addr", "rtsp-addr", "rtsps-addr", "rtsp-udp-rtp-addr", "rtsp-udp-rtcp-addr",
		"publisher-grace", "read-timeout", "handshake-timeout", "push-allow-private",
	}},
	{"Playback", []string{
		"http-addr", "https-addr", "public-host", "write-timeout", "max-lag", "merge-window", "low-latency", "tcp-nodelay",
		"hls-segment-duration", "hls-segment-count", "hls-low-latency", "hls-idle-timeout", "cors-origins", "web-modules",
	}},
	{"WebRTC (WHIP and WHEP)", []string{
		"webrtc-opus", "webrtc-udp-addr", "webrtc-tcp-addr", "webrtc-nat-ips", "webrtc-interfaces",
		"webrtc-ice-servers", "webrtc-turn-secret", "webrtc-turn-ttl",
	}},
	{"Transcoding", []string{"transcode", "transcode-max", "transcode-cpu-max", "ffmpeg"}},
	{"Cluster", []string{
		"redis", "redis-file", "redis-prefix", "node-id", "advertise-host", "region", "capacity", "node-timeout",
		"cluster-secret", "cluster-secret-file", "relay-idle", "parent", "mesh", "balance", "trusted-proxies", "drain-grace",
	}},
	{"Security", []string{
		"publish-auth", "publish-trusted-networks", "publish-keys", "publish-keys-file", "url-secret", "url-secret-file",
		"signed-play-apps", "auth-hook", "auth-hook-secret", "auth-hook-secret-file", "auth-hook-timeout",
		"admin-token", "admin-token-file", "tls-cert", "tls-key",
		"max-connections", "max-connections-per-ip", "max-viewers-per-ip",
	}},
	{"Storage (recordings, on demand, cache)", []string{
		"record", "record-dir", "vod-dir", "vod-replicas", "vod-max-upload", "vod-segment-duration", "cache-size", "cache-l2",
	}},
	{"Observability", []string{
		"log-level", "log-format", "metrics-max-streams", "events-max-clients", "webhook-urls", "webhook-secret",
		"webhook-secret-file", "pprof",
	}},
}

// Usage writes serve's flags, grouped by topic, each with its default
// unless that is empty, zero or off.
func Usage(w io.Writer) {
	def := reflect.ValueOf(Default())
	byFlag := map[string]field{}
	var fileOnly []field
	for _, f := range configFields {
		if f.fileOnly {
			fileOnly = append(fileOnly, f)
			continue
		}
		byFlag[f.flag] = f
	}
	fmt.Fprintf(w, "Usage: meshcast serve [flags]\n\n")
	fmt.Fprintf(w, "  --config file\n        YAML configuration file (or %s)\n", ConfigEnv)
	for _, g := range usageGroups {
		fmt.Fprintf(w, "\n%s:\n", g.title)
		for _, name := range g.flags {
			f, ok := byFlag[name]
			if !ok {
				continue
			}
			head := "--" + f.flag
			if f.kind != "bool" {
				head += " " + f.kind
			}
			fmt.Fprintf(w, "  %s\n        %s", head, f.usage)
			if d := f.quoted(def.Field(f.index)); d != "" && d != `""` && d != "0" && d != "false" && d != "[]" && d != "0s" {
				fmt.Fprintf(w, " (default %s)", d)
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintf(w, "\nIn the YAML file only:\n")
	for _, f := range fileOnly {
		fmt.Fprintf(w, "  %s:\n        %s\n", f.yaml, f.usage)
	}
	fmt.Fprintf(w, "\nEach flag can also be set in the YAML file under its name with dashes turned\n"+
		"to underscores (max_lag: 2s), or by the environment variable %s<NAME>\n"+
		"with the name upper-cased (%sMAX_LAG=2s). Flags override the environment,\n"+
		"which overrides the file, which overrides the defaults. Durations use Go\n"+
		"syntax such as 5s or 250ms; lists are comma-separated in flags and the\n"+
		"environment and YAML sequences in the file. deploy/meshcast.example.yaml\n"+
		"shows every setting.\n", EnvPrefix, EnvPrefix)
}

// unknownFlag turns the flag package's "flag provided but not defined:
// -name" into the flag's double-dash name and, when one is close, the flag
// that was probably meant.
func unknownFlag(err error) error {
	const prefix = "flag provided but not defined: "
	msg := err.Error()
	if !strings.HasPrefix(msg, prefix) {
		return fmt.Errorf("config: %w", err)
	}
	name := strings.TrimLeft(strings.TrimPrefix(msg, prefix), "-")
	best, bestD := "", 4 // suggest nothing further than 3 edits away
	for _, f := range configFields {
		if f.fileOnly {
			continue
		}
		if d := editDistance(name, f.flag); d < bestD || (strings.HasPrefix(f.flag, name) && best == "") {
			best, bestD = f.flag, min(d, bestD)
		}
	}
	if best == "" {
		return fmt.Errorf("config: unknown flag --%s (meshcast serve --help lists them)", name)
	}
	return fmt.Errorf("config: unknown flag --%s: did you mean --%s?", name, best)
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
