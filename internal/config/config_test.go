package config

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/transcode"
)

// writeFile writes a YAML file into a fresh temporary directory and returns
// its path.
func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "meshcast.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefault(t *testing.T) {
	def := Default()
	if err := def.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	want := Config{
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
	}
	if !reflect.DeepEqual(def, want) {
		t.Errorf("Default() = %+v, want %+v", def, want)
	}
	got, err := Load(nil, []string{"HOME=/root", "PATH=/bin"})
	if err != nil {
		t.Fatalf("Load with no sources: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load with no sources = %+v, want %+v", got, want)
	}
}

func TestLoadPrecedence(t *testing.T) {
	const file = "rtmp_addr: \"127.0.0.1:1001\"\nmax_connections: 11\nmax_lag: 1s\n"
	type want struct {
		addr string
		conn int
		lag  time.Duration
	}
	tests := []struct {
		name string
		file string // YAML body; empty means no file
		args []string
		env  []string
		want want
	}{
		{
			name: "defaults",
			want: want{":1935", 10000, 5 * time.Second},
		},
		{
			name: "file over defaults",
			file: file,
			want: want{"127.0.0.1:1001", 11, time.Second},
		},
		{
			name: "env over defaults",
			env:  []string{"MESHCAST_RTMP_ADDR=127.0.0.1:2002", "MESHCAST_MAX_CONNECTIONS=22", "MESHCAST_MAX_LAG=2s"},
			want: want{"127.0.0.1:2002", 22, 2 * time.Second},
		},
		{
			name: "env over file",
			file: file,
			env:  []string{"MESHCAST_RTMP_ADDR=127.0.0.1:2002", "MESHCAST_MAX_CONNECTIONS=22", "MESHCAST_MAX_LAG=2s"},
			want: want{"127.0.0.1:2002", 22, 2 * time.Second},
		},
		{
			name: "env over file, one field only",
			file: file,
			env:  []string{"MESHCAST_MAX_LAG=250ms"},
			want: want{"127.0.0.1:1001", 11, 250 * time.Millisecond},
		},
		{
			name: "flag over env over file",
			file: file,
			env:  []string{"MESHCAST_RTMP_ADDR=127.0.0.1:2002", "MESHCAST_MAX_CONNECTIONS=22", "MESHCAST_MAX_LAG=2s"},
			args: []string{"--rtmp-addr", "127.0.0.1:3003", "--max-connections", "33", "--max-lag", "3s"},
			want: want{"127.0.0.1:3003", 33, 3 * time.Second},
		},
		{
			name: "flag=value form",
			file: file,
			env:  []string{"MESHCAST_RTMP_ADDR=127.0.0.1:2002", "MESHCAST_MAX_CONNECTIONS=22", "MESHCAST_MAX_LAG=2s"},
			args: []string{"--rtmp-addr=127.0.0.1:3003", "--max-connections=33", "--max-lag=3s"},
			want: want{"127.0.0.1:3003", 33, 3 * time.Second},
		},
		{
			name: "single-dash flag",
			args: []string{"-max-connections", "44"},
			want: want{":1935", 44, 5 * time.Second},
		},
		{
			name: "repeated flag: last wins",
			args: []string{"--max-connections=1", "--max-connections=2"},
			want: want{":1935", 2, 5 * time.Second},
		},
		{
			name: "flag over file without env",
			file: file,
			args: []string{"--max-lag=4s"},
			want: want{"127.0.0.1:1001", 11, 4 * time.Second},
		},
		{
			name: "empty env value ignored",
			file: file,
			env:  []string{"MESHCAST_MAX_LAG=", "MESHCAST_RTMP_ADDR="},
			want: want{"127.0.0.1:1001", 11, time.Second},
		},
		{
			name: "later env entry wins",
			env:  []string{"MESHCAST_MAX_CONNECTIONS=5", "MESHCAST_MAX_CONNECTIONS=6"},
			want: want{":1935", 6, 5 * time.Second},
		},
		{
			name: "empty file",
			file: "# nothing set\n",
			want: want{":1935", 10000, 5 * time.Second},
		},
	}
	for _, tt := range tests {
		for _, via := range []string{"flag", "env"} {
			if tt.file == "" && via == "env" {
				continue
			}
			t.Run(tt.name+"/config via "+via, func(t *testing.T) {
				args := slices.Clone(tt.args)
				env := slices.Clone(tt.env)
				if tt.file != "" {
					path := writeFile(t, tt.file)
					if via == "flag" {
						args = append([]string{"--config", path}, args...)
					} else {
						env = append(env, ConfigEnv+"="+path)
					}
				}
				got, err := Load(args, env)
				if err != nil {
					t.Fatalf("Load(%q, %q): %v", args, env, err)
				}
				if g := (want{got.RTMPAddr, got.MaxConnections, got.MaxLag}); g != tt.want {
					t.Errorf("Load(%q, %q) = %+v, want %+v", args, env, g, tt.want)
				}
				if got.HTTPAddr != ":8080" || got.HLSSegmentCount != 7 {
					t.Errorf("untouched fields changed: %+v", got)
				}
			})
		}
	}
}

func TestLoadAllFields(t *testing.T) {
	args := []string{
		"--rtmp-addr=127.0.0.1:0",
		"--http-addr=[::1]:0",
		"--log-level=debug",
		"--log-format=json",
		"--publisher-grace=0s",
		"--write-timeout=1s",
		"--read-timeout=2s",
		"--max-lag=3s",
		"--merge-window=250ms",
		"--low-latency=true",
		"--tcp-nodelay=on",
		"--max-connections=4",
		"--hls-segment-duration=500ms",
		"--hls-segment-count=9",
		"--hls-idle-timeout=1m30s",
		"--record=all",
		"--record-dir=/srv/recordings",
		"--transcode=true",
		"--hls-low-latency=true",
		"--transcode-max=3",
		"--transcode-cpu-max=70",
		"--ffmpeg=/usr/local/bin/ffmpeg",
		"--webrtc-opus=false",
		"--webrtc-udp-addr=0.0.0.0:9189",
		"--webrtc-tcp-addr=:9190",
		"--webrtc-nat-ips=203.0.113.7,198.51.100.9/10.0.0.9",
		"--webrtc-interfaces=eth*,ens5",
		"--webrtc-ice-servers=stun:stun.example.net:3478,turn:turn.example.net:3478?transport=udp",
		"--webrtc-turn-secret=turn-secret-of-tests",
		"--webrtc-turn-ttl=2h",
		"--srt-addr=127.0.0.1:0",
		"--rtsp-addr=127.0.0.1:0",
		"--rtsps-addr=127.0.0.1:0",
		"--rtsp-udp-rtp-addr=127.0.0.1:9000",
		"--rtsp-udp-rtcp-addr=127.0.0.1:9001",
		"--public-host=live.example.com",
		"--redis=redis://127.0.0.1:6390/2",
		"--redis-prefix=mc:",
		"--node-id=edge-1",
		"--advertise-host=edge1.example.com",
		"--region=eu",
		"--capacity=500",
		"--node-timeout=3s",
		"--cluster-secret=0123456789abcdef0123",
		"--relay-idle=10s",
		"--parent=mid-1,mid-2",
		"--mesh=true",
		"--balance=hash",
		"--trusted-proxies=10.0.0.0/8,192.0.2.7",
		"--publish-trusted-networks=172.16.0.0/12,192.0.2.9",
		"--drain-grace=5s",
		"--webhook-urls=http://hooks.example.com/a,https://h2.example.com/b",
		"--webhook-secret=hook-secret",
		"--admin-token=admin-token-of-tests",
		"--metrics-max-streams=7",
		"--events-max-clients=9",
		"--web-modules=/opt/meshcast/node_modules",
		"--publish-auth=always",
		"--publish-keys=live=key-of-live,live/cam*=key-of-cams",
		"--url-secret=url-secret-of-tests",
		"--signed-play-apps=private,paid",
		"--auth-hook=https://auth.example.com/check",
		"--auth-hook-secret=auth-hook-secret-of-tests",
		"--auth-hook-timeout=750ms",
		"--cors-origins=https://a.example.com,http://b.example.com:8000",
		"--tls-cert=/etc/meshcast/cert.pem",
		"--tls-key=/etc/meshcast/key.pem",
		"--https-addr=127.0.0.1:0",
		"--rtmps-addr=[::1]:0",
		"--max-connections-per-ip=12",
		"--max-viewers-per-ip=100",
		"--handshake-timeout=4s",
		"--vod-dir=/srv/vod",
		"--vod-replicas=3",
		"--vod-max-upload=500MB",
		"--vod-segment-duration=6s",
		"--cache-size=1GiB",
		"--cache-l2=memcached://127.0.0.1:11211",
	}
	want := Config{
		RTMPAddr:               "127.0.0.1:0",
		HTTPAddr:               "[::1]:0",
		LogLevel:               "debug",
		LogFormat:              "json",
		PublisherGrace:         0,
		WriteTimeout:           time.Second,
		ReadTimeout:            2 * time.Second,
		MaxLag:                 3 * time.Second,
		MergeWindow:            250 * time.Millisecond,
		LowLatency:             true,
		TCPNoDelay:             "on",
		MaxConnections:         4,
		HLSSegmentDuration:     500 * time.Millisecond,
		HLSSegmentCount:        9,
		HLSIdleTimeout:         90 * time.Second,
		Record:                 "all",
		RecordDir:              "/srv/recordings",
		Transcode:              true,
		HLSLowLatency:          true,
		TranscodeMax:           3,
		TranscodeCPUMax:        70,
		FFmpeg:                 "/usr/local/bin/ffmpeg",
		WebRTCOpus:             false,
		WebRTCUDPAddr:          "0.0.0.0:9189",
		WebRTCTCPAddr:          ":9190",
		WebRTCNATIPs:           []string{"203.0.113.7", "198.51.100.9/10.0.0.9"},
		WebRTCInterfaces:       []string{"eth*", "ens5"},
		WebRTCICEServers:       []string{"stun:stun.example.net:3478", "turn:turn.example.net:3478?transport=udp"},
		WebRTCTURNSecret:       "turn-secret-of-tests",
		WebRTCTURNTTL:          2 * time.Hour,
		SRTAddr:                "127.0.0.1:0",
		RTSPAddr:               "127.0.0.1:0",
		RTSPSAddr:              "127.0.0.1:0",
		RTSPUDPRTPAddr:         "127.0.0.1:9000",
		RTSPUDPRTCPAddr:        "127.0.0.1:9001",
		Apps:                   map[string]AppConfig{},
		PublicHost:             "live.example.com",
		Redis:                  "redis://127.0.0.1:6390/2",
		RedisPrefix:            "mc:",
		NodeID:                 "edge-1",
		AdvertiseHost:          "edge1.example.com",
		Region:                 "eu",
		Capacity:               500,
		NodeTimeout:            3 * time.Second,
		ClusterSecret:          "0123456789abcdef0123",
		RelayIdle:              10 * time.Second,
		Parent:                 []string{"mid-1", "mid-2"},
		Mesh:                   true,
		Balance:                "hash",
		TrustedProxies:         []string{"10.0.0.0/8", "192.0.2.7"},
		PublishTrustedNetworks: []string{"172.16.0.0/12", "192.0.2.9"},
		DrainGrace:             5 * time.Second,
		WebhookURLs:            []string{"http://hooks.example.com/a", "https://h2.example.com/b"},
		WebhookSecret:          "hook-secret",
		AdminToken:             "admin-token-of-tests",
		MetricsMaxStreams:      7,
		EventsMaxClients:       9,
		WebModules:             "/opt/meshcast/node_modules",
		PublishAuth:            "always",
		PublishKeys:            []string{"live=key-of-live", "live/cam*=key-of-cams"},
		URLSecret:              "url-secret-of-tests",
		SignedPlayApps:         []string{"private", "paid"},
		AuthHook:               "https://auth.example.com/check",
		AuthHookSecret:         "auth-hook-secret-of-tests",
		AuthHookTimeout:        750 * time.Millisecond,
		CORSOrigins:            []string{"https://a.example.com", "http://b.example.com:8000"},
		TLSCert:                "/etc/meshcast/cert.pem",
		TLSKey:                 "/etc/meshcast/key.pem",
		HTTPSAddr:              "127.0.0.1:0",
		RTMPSAddr:              "[::1]:0",
		MaxConnectionsPerIP:    12,
		MaxViewersPerIP:        100,
		HandshakeTimeout:       4 * time.Second,
		VODDir:                 "/srv/vod",
		VODReplicas:            3,
		VODMaxUpload:           "500MB",
		VODSegmentDuration:     6 * time.Second,
		CacheSize:              "1GiB",
		CacheL2:                "memcached://127.0.0.1:11211",
	}
	got, err := Load(args, nil)
	if err != nil {
		t.Fatalf("flags: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("flags: got %+v, want %+v", got, want)
	}

	var env []string
	var yml strings.Builder
	for _, a := range args {
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		key := strings.ReplaceAll(name, "-", "_")
		env = append(env, "MESHCAST_"+strings.ToUpper(key)+"="+value)
		switch {
		case key == "parent" || key == "trusted_proxies" || key == "publish_trusted_networks" || key == "webhook_urls" ||
			key == "publish_keys" || key == "signed_play_apps" || key == "cors_origins" ||
			key == "webrtc_nat_ips" || key == "webrtc_interfaces" || key == "webrtc_ice_servers":
			var items []string
			for item := range strings.SplitSeq(value, ",") {
				items = append(items, strconv.Quote(item))
			}
			value = "[" + strings.Join(items, ", ") + "]" // a YAML sequence
		case value == "true" || value == "false":
		default:
			if _, err := strconv.Atoi(value); err != nil {
				value = strconv.Quote(value)
			}
		}
		yml.WriteString(key + ": " + value + "\n")
	}
	// An empty value in the environment means unset, so PublisherGrace uses
	// "0s" rather than "".
	got, err = Load(nil, env)
	if err != nil {
		t.Fatalf("env: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("env: got %+v, want %+v", got, want)
	}

	// Apps, a map, is set in the file only.
	yml.WriteString("apps:\n  live: {record: \"off\"}\n  private: {record: all}\n  cams: {}\n")
	want.Apps = map[string]AppConfig{"live": {Record: "off"}, "private": {Record: "all"}, "cams": {}}
	got, err = Load([]string{"--config", writeFile(t, yml.String())}, nil)
	if err != nil {
		t.Fatalf("file: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("file: got %+v, want %+v", got, want)
	}
	for app, rec := range map[string]bool{"live": false, "private": true, "cams": true, "other": true} {
		if got.Records(app) != rec {
			t.Errorf("Records(%q) = %v, want %v", app, !rec, rec)
		}
	}
}

func TestRecordSettings(t *testing.T) {
	path := writeFile(t, "record: \"off\"\napps:\n  live: {record: all}\n")
	got, err := Load([]string{"--config", path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Records("live") || got.Records("other") || !got.Recording() {
		t.Errorf("apps.live.record: all with record off: Records(live)=%v Records(other)=%v Recording()=%v",
			got.Records("live"), got.Records("other"), got.Recording())
	}
	// The flag sets every app's default; an app's own setting still wins.
	got, err = Load([]string{"--config", writeFile(t, "apps:\n  live: {record: \"off\"}\n"), "--record=all"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Records("live") || !got.Records("other") {
		t.Errorf("--record=all with apps.live.record off: Records(live)=%v Records(other)=%v", got.Records("live"), got.Records("other"))
	}
	if d := Default(); d.Recording() {
		t.Error("recording is on by default")
	}
	// There is no flag for apps, and MESHCAST_APPS is not read.
	if _, err := Load([]string{"--apps=live"}, nil); err == nil {
		t.Error("--apps accepted")
	}
	if got, err := Load(nil, []string{"MESHCAST_APPS=live"}); err != nil || len(got.Apps) != 0 {
		t.Errorf("MESHCAST_APPS: %v, %v", got.Apps, err)
	}
	// An unknown key under an app is an error, as anywhere in the file.
	if _, err := Load([]string{"--config", writeFile(t, "apps:\n  live: {recrod: all}\n")}, nil); err == nil || !strings.Contains(err.Error(), "recrod") {
		t.Errorf("unknown app key: %v", err)
	}
}

func TestLoadConfigPathPrecedence(t *testing.T) {
	fromEnv := writeFile(t, "max_connections: 1\n")
	fromFlag := writeFile(t, "max_connections: 2\n")
	env := []string{ConfigEnv + "=" + fromEnv}

	got, err := Load([]string{"--config=" + fromFlag}, env)
	if err != nil {
		t.Fatal(err)
	}
	if got.MaxConnections != 2 {
		t.Errorf("--config should override %s: MaxConnections = %d, want 2", ConfigEnv, got.MaxConnections)
	}

	got, err = Load([]string{"--config="}, env)
	if err != nil {
		t.Fatal(err)
	}
	if got.MaxConnections != 10000 {
		t.Errorf("--config= should disable the file: MaxConnections = %d, want 10000", got.MaxConnections)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		args []string
		env  []string
		want []string // substrings of the error
	}{
		{
			name: "unknown YAML key",
			file: "rtmp_addr: \":1935\"\nmax_lagg: 5s\n",
			want: []string{"max_lagg", "meshcast.yaml"},
		},
		{
			name: "YAML integer duration",
			file: "max_lag: 5\n",
			want: []string{"time.Duration", "meshcast.yaml"},
		},
		{
			name: "YAML bad duration",
			file: "max_lag: soon\n",
			want: []string{"soon"},
		},
		{
			name: "YAML not a mapping",
			file: "- a\n- b\n",
			want: []string{"meshcast.yaml"},
		},
		{
			name: "YAML syntax",
			file: "rtmp_addr: [\n",
			want: []string{"meshcast.yaml"},
		},
		{
			name: "missing config file",
			args: []string{"--config", filepath.Join(t.TempDir(), "absent.yaml")},
			want: []string{"absent.yaml"},
		},
		{
			name: "missing config file via env",
			env:  []string{ConfigEnv + "=" + filepath.Join(t.TempDir(), "absent.yaml")},
			want: []string{"absent.yaml"},
		},
		{
			name: "bad duration in env",
			env:  []string{"MESHCAST_MAX_LAG=five"},
			want: []string{"MESHCAST_MAX_LAG", `"five"`},
		},
		{
			name: "bad int in env",
			env:  []string{"MESHCAST_MAX_CONNECTIONS=lots"},
			want: []string{"MESHCAST_MAX_CONNECTIONS", `"lots"`},
		},
		{
			name: "bad duration flag",
			args: []string{"--write-timeout", "never"},
			want: []string{"write-timeout", "never"},
		},
		{
			name: "unknown flag",
			args: []string{"--rtmp-adr", ":1"},
			want: []string{"rtmp-adr"},
		},
		{
			name: "flag missing value",
			args: []string{"--max-lag"},
			want: []string{"max-lag"},
		},
		{
			name: "positional argument",
			args: []string{"--max-lag", "1s", "extra"},
			want: []string{`"extra"`},
		},
		{
			name: "invalid after merge",
			file: "log_level: loud\n",
			want: []string{"--log-level", `"loud"`},
		},
		{
			name: "invalid from flag",
			args: []string{"--hls-segment-count=3"},
			want: []string{"--hls-segment-count"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append([]string{"--config", writeFile(t, tt.file)}, args...)
			}
			_, err := Load(args, tt.env)
			if err == nil {
				t.Fatalf("Load(%q, %q) succeeded, want error", args, tt.env)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if !strings.HasPrefix(err.Error(), "config: ") {
				t.Errorf("error %q lacks the config: prefix", err)
			}
		})
	}
}

func TestLoadHelp(t *testing.T) {
	for _, args := range [][]string{
		{"--help"},
		{"-h"},
		{"-help"},
		{"--max-lag=1s", "--help"},
		// Help wins even when the file named before it does not exist.
		{"--config", "/nonexistent/meshcast.yaml", "--help"},
	} {
		_, err := Load(args, nil)
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("Load(%q) error = %v, want flag.ErrHelp", args, err)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string // substrings; nil means valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"port zero", func(c *Config) { c.RTMPAddr, c.HTTPAddr = "127.0.0.1:0", ":0" }, nil},
		{"IPv6 address", func(c *Config) { c.HTTPAddr = "[::1]:8080" }, nil},
		{"grace zero", func(c *Config) { c.PublisherGrace = 0 }, nil},
		{"minimum HLS", func(c *Config) { c.HLSSegmentDuration, c.HLSSegmentCount = 100*time.Millisecond, 7 }, nil},
		{"max connections one", func(c *Config) { c.MaxConnections = 1 }, nil},
		{"record all", func(c *Config) { c.Record = "all" }, nil},
		{"record per app", func(c *Config) {
			c.Apps = map[string]AppConfig{"live": {Record: "all"}, "Cam_1.x-y": {Record: "off"}, "other": {}}
		}, nil},
		{"record mode", func(c *Config) { c.Record = "some" }, []string{`--record: "some" is not one of off, all`}},
		{"record dir empty when recording", func(c *Config) { c.Record, c.RecordDir = "all", "" }, []string{"--record-dir:"}},
		{"record dir empty when not recording", func(c *Config) { c.RecordDir = "" }, nil},
		{"app record mode", func(c *Config) { c.Apps = map[string]AppConfig{"live": {Record: "yes"}} }, []string{`apps: live: record "yes" is not one of off, all`}},
		{"app name", func(c *Config) { c.Apps = map[string]AppConfig{"bad app": {Record: "all"}} }, []string{"apps: app ", `"bad app"`}},
		{"app name reserved", func(c *Config) { c.Apps = map[string]AppConfig{"api": {}} }, []string{"apps: app ", "reserved"}},
		{"app transcode mode", func(c *Config) { c.Apps = map[string]AppConfig{"live": {Transcode: "yes"}} }, []string{`apps: live: transcode "yes" is not one of on, off`}},
		{"app ladder", func(c *Config) {
			c.Apps = map[string]AppConfig{"live": {Ladder: []transcode.Rendition{{Name: "a b", Height: 360, VideoBitrate: "500k"}}}}
		}, []string{"apps: live: ladder:"}},
		{"transcode max negative", func(c *Config) { c.TranscodeMax = -1 }, []string{"--transcode-max:"}},
		{"transcode cpu over 100", func(c *Config) { c.TranscodeCPUMax = 101 }, []string{"--transcode-cpu-max:"}},
		{"ffmpeg empty", func(c *Config) { c.FFmpeg = "" }, []string{"--ffmpeg:"}},
		{"webrtc opus off", func(c *Config) { c.WebRTCOpus = false }, nil},
		{"webrtc opus without ffmpeg", func(c *Config) { c.WebRTCOpus, c.FFmpeg = true, "" }, []string{"--ffmpeg:"}},
		{"webrtc per-session ports", func(c *Config) { c.WebRTCUDPAddr = "" }, nil},
		{"webrtc behind NAT", func(c *Config) {
			c.WebRTCUDPAddr, c.WebRTCTCPAddr = "10.0.0.5:8189", "[::]:8189"
			c.WebRTCNATIPs = []string{"203.0.113.7", "2001:db8::7", "198.51.100.9/10.0.0.9"}
			c.WebRTCInterfaces = []string{"eth0", "ens*", "wg[0-9]"}
			c.WebRTCICEServers = []string{"stun:stun.example.net", "stuns:stun.example.net:5349", "turn:turn.example.net:3478?transport=tcp", "turns:turn.example.net"}
			c.WebRTCTURNSecret = "sixteen-chars-ok"
		}, nil},
		{"webrtc udp addr", func(c *Config) { c.WebRTCUDPAddr = "8189" }, []string{"--webrtc-udp-addr:"}},
		{"a source", func(c *Config) {
			c.Sources = map[string]SourceConfig{"live/cam": {URL: "rtsp://10.0.0.9/s", Mode: "always"}}
		}, nil},
		{"a source's url", func(c *Config) { c.Sources = map[string]SourceConfig{"live/cam": {URL: "ftp://h/x"}} }, []string{"sources:", "rtsp://"}},
		{"more sources", func(c *Config) {
			c.Sources = map[string]SourceConfig{
				"live/hls":  {URL: "https://cdn.example.net/live/cam/index.m3u8?token=T"},
				"live/flv":  {URL: "http://10.0.0.9:8080/live/cam.flv"},
				"live/srt":  {URL: "srt://10.0.0.9:8890?streamid=read:live/cam&passphrase=ten-chars-ok", Mode: "always"},
				"live/udp":  {URL: "rtsp://10.0.0.9/s", RTSPTransport: "udp"},
				"live/rtmp": {URL: "rtmps://h/app/key"},
			}
		}, nil},
		{"a source's http url", func(c *Config) { c.Sources = map[string]SourceConfig{"live/cam": {URL: "http://h/live/cam.mp4"}} }, []string{"sources:", ".m3u8"}},
		{"an srt source without a port", func(c *Config) {
			c.Sources = map[string]SourceConfig{"live/cam": {URL: "srt://h?streamid=read:live/cam"}}
		}, []string{"sources:", "port"}},
		{"an srt source's passphrase", func(c *Config) {
			c.Sources = map[string]SourceConfig{"live/cam": {URL: "srt://h:8890?passphrase=short"}}
		}, []string{"sources:", "passphrase"}},
		{"a source's rtsp transport", func(c *Config) {
			c.Sources = map[string]SourceConfig{"live/cam": {URL: "rtsp://h/s", RTSPTransport: "sctp"}}
		}, []string{"sources:", "tcp or udp"}},
		{"a source's mode", func(c *Config) {
			c.Sources = map[string]SourceConfig{"live/cam": {URL: "rtmp://h/a/b", Mode: "sometimes"}}
		}, []string{"sources:", "on-demand or always"}},
		{"a source's name", func(c *Config) { c.Sources = map[string]SourceConfig{"nope": {URL: "rtmp://h/a/b"}} }, []string{"sources:"}},
		{"a push", func(c *Config) { c.Apps = map[string]AppConfig{"live": {Push: []string{"rtmp://h/app/{stream}"}}} }, nil},
		{"a push target", func(c *Config) { c.Apps = map[string]AppConfig{"live": {Push: []string{"http://h/app/x"}}} }, []string{"apps:", "rtmp://"}},
		{"an srt push", func(c *Config) {
			c.Apps = map[string]AppConfig{"live": {Push: []string{"srt://h:9000?streamid=publish:live/{stream}&latency=200"}}}
		}, nil},
		{"an srt push without a port", func(c *Config) {
			c.Apps = map[string]AppConfig{"live": {Push: []string{"srt://h?streamid=publish:live/{stream}"}}}
		}, []string{"apps:", "srt://HOST:PORT"}},
		{"an srt push's passphrase", func(c *Config) {
			c.Streams = map[string]StreamConfig{"live/cam": {Push: []string{"srt://h:9000?streamid=x&passphrase=short"}}}
		}, []string{"apps:", "streams.live/cam.push", "10 to 79"}},
		{"rtsp off", func(c *Config) { c.RTSPAddr, c.RTSPSAddr, c.RTSPUDPRTPAddr, c.RTSPUDPRTCPAddr = "", "", "", "" }, nil},
		{"rtsp udp alone", func(c *Config) { c.RTSPUDPRTCPAddr = "" }, []string{"--rtsp-udp-rtcp-addr:", "go together"}},
		{"rtsp udp ports", func(c *Config) { c.RTSPUDPRTPAddr, c.RTSPUDPRTCPAddr = ":8001", ":8002" }, []string{"--rtsp-udp-rtcp-addr:", "even port"}},
		{"rtsp addr", func(c *Config) { c.RTSPAddr = "8554" }, []string{"--rtsp-addr:"}},
		{"webrtc tcp addr", func(c *Config) { c.WebRTCTCPAddr = ":99999" }, []string{"--webrtc-tcp-addr:"}},
		{"webrtc nat ip name", func(c *Config) { c.WebRTCNATIPs = []string{"media.example.net"} }, []string{"--webrtc-nat-ips:", "media.example.net"}},
		{"webrtc nat ip unspecified", func(c *Config) { c.WebRTCNATIPs = []string{"0.0.0.0"} }, []string{"--webrtc-nat-ips:", "unicast"}},
		{"webrtc nat ip link-local", func(c *Config) { c.WebRTCNATIPs = []string{"203.0.113.7/169.254.1.1"} }, []string{"--webrtc-nat-ips:", "169.254.1.1"}},
		{"webrtc interface pattern", func(c *Config) { c.WebRTCInterfaces = []string{"eth[0"} }, []string{"--webrtc-interfaces:", "eth[0"}},
		{"webrtc ice server scheme", func(c *Config) { c.WebRTCICEServers = []string{"https://stun.example.net"} }, []string{"--webrtc-ice-servers:", "https://stun.example.net"}},
		{"webrtc turn transport", func(c *Config) {
			c.WebRTCICEServers, c.WebRTCTURNSecret = []string{"turn:turn.example.net?transport=sctp"}, "sixteen-chars-ok"
		}, []string{"--webrtc-ice-servers:"}},
		{"webrtc turn static password", func(c *Config) {
			c.WebRTCICEServers, c.WebRTCTURNSecret = []string{"turn:alice:hunter2@turn.example.net:3478"}, "sixteen-chars-ok"
		}, []string{"--webrtc-ice-servers:", "password"}},
		{"webrtc turn without secret", func(c *Config) { c.WebRTCICEServers = []string{"turn:turn.example.net"} }, []string{"--webrtc-turn-secret:", "required"}},
		{"webrtc stun without secret", func(c *Config) { c.WebRTCICEServers = []string{"stun:stun.example.net"} }, nil},
		{"webrtc turn secret short", func(c *Config) { c.WebRTCTURNSecret = "short" }, []string{"--webrtc-turn-secret:", "16"}},
		{"webrtc turn ttl zero", func(c *Config) { c.WebRTCTURNTTL = 0 }, []string{"--webrtc-turn-ttl:"}},
		{"rtmp addr missing port", func(c *Config) { c.RTMPAddr = "localhost" }, []string{"--rtmp-addr:", "missing port"}},
		{"http addr empty", func(c *Config) { c.HTTPAddr = "" }, []string{"--http-addr:"}},
		{"http addr bad port", func(c *Config) { c.HTTPAddr = ":http" }, []string{"--http-addr:", `"http"`}},
		{"port out of range", func(c *Config) { c.RTMPAddr = ":70000" }, []string{"--rtmp-addr:", "70000"}},
		{"log level", func(c *Config) { c.LogLevel = "loud" }, []string{`--log-level: "loud" is not one of debug, info, warn, error`}},
		{"log level case", func(c *Config) { c.LogLevel = "INFO" }, []string{"--log-level:"}},
		{"log format", func(c *Config) { c.LogFormat = "xml" }, []string{`--log-format: "xml" is not one of text, json`}},
		{"grace negative", func(c *Config) { c.PublisherGrace = -time.Second }, []string{"--publisher-grace:"}},
		{"write timeout zero", func(c *Config) { c.WriteTimeout = 0 }, []string{"--write-timeout:"}},
		{"read timeout negative", func(c *Config) { c.ReadTimeout = -1 }, []string{"--read-timeout:"}},
		{"max lag zero", func(c *Config) { c.MaxLag = 0 }, []string{"--max-lag:"}},
		{"max connections zero", func(c *Config) { c.MaxConnections = 0 }, []string{"--max-connections:"}},
		{"segment duration short", func(c *Config) { c.HLSSegmentDuration = 99 * time.Millisecond }, []string{"--hls-segment-duration:"}},
		{"segment count low", func(c *Config) { c.HLSSegmentCount = 6 }, []string{"--hls-segment-count:", "7"}},
		{"HLS idle timeout short", func(c *Config) { c.HLSIdleTimeout = 500 * time.Millisecond }, []string{"--hls-idle-timeout:", "1s"}},
		{"cluster", func(c *Config) {
			c.Redis, c.ClusterSecret, c.NodeID, c.Parent = "redis://r:6379/0", "sixteen-chars-ok", "edge-1.eu", []string{"mid-1"}
			c.TrustedProxies = []string{"10.0.0.0/8", "::1", "192.0.2.1/32"}
		}, nil},
		{"redis without secret", func(c *Config) { c.Redis = "redis://r:6379/0" }, []string{"--cluster-secret:", "16"}},
		{"short secret", func(c *Config) { c.Redis, c.ClusterSecret = "redis://r:6379/0", "short" }, []string{"--cluster-secret:"}},
		{"node id with slash", func(c *Config) { c.NodeID = "a/b" }, []string{"--node-id:"}},
		{"parent not an id", func(c *Config) { c.Parent = []string{"ok", "not ok"} }, []string{"--parent:", `"not ok"`}},
		{"node timeout short", func(c *Config) { c.NodeTimeout = 500 * time.Millisecond }, []string{"--node-timeout:"}},
		{"relay idle zero", func(c *Config) { c.RelayIdle = 0 }, []string{"--relay-idle:"}},
		{"capacity negative", func(c *Config) { c.Capacity = -1 }, []string{"--capacity:"}},
		{"balance", func(c *Config) { c.Balance = "random" }, []string{"--balance:", "least-loaded, p2c, affinity, hash"}},
		{"trusted proxy", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/33"} }, []string{"--trusted-proxies:", "10.0.0.0/33"}},
		{"trusted publishing network", func(c *Config) { c.PublishTrustedNetworks = []string{"docker"} }, []string{"--publish-trusted-networks:", "docker"}},
		{"drain grace negative", func(c *Config) { c.DrainGrace = -time.Second }, []string{"--drain-grace:"}},
		{"webhooks", func(c *Config) { c.WebhookURLs, c.WebhookSecret = []string{"https://h.example.com/x"}, "s" }, nil},
		{"webhook URL", func(c *Config) { c.WebhookURLs, c.WebhookSecret = []string{"ftp://h/x"}, "s" }, []string{"--webhook-urls:", "ftp://h/x"}},
		{"webhook without secret", func(c *Config) { c.WebhookURLs = []string{"http://h/x"} }, []string{"--webhook-secret:"}},
		{"short admin token", func(c *Config) { c.AdminToken = "short" }, []string{"--admin-token:", "16"}},
		{"metrics max streams zero", func(c *Config) { c.MetricsMaxStreams = 0 }, nil},
		{"metrics max streams negative", func(c *Config) { c.MetricsMaxStreams = -1 }, []string{"--metrics-max-streams:", "-1"}},
		{"events max clients zero", func(c *Config) { c.EventsMaxClients = 0 }, []string{"--events-max-clients:", "0"}},
		{"tcp nodelay", func(c *Config) { c.TCPNoDelay = "yes" }, []string{"--tcp-nodelay:", "auto, on, off"}},
		{"publish auth", func(c *Config) { c.PublishAuth = "sometimes" }, []string{"--publish-auth:", "loopback, always, open"}},
		{"publish auth always alone", func(c *Config) { c.PublishAuth = "always" }, []string{"--publish-auth:", "nobody could publish"}},
		{"publish keys", func(c *Config) { c.PublishAuth, c.PublishKeys = "always", []string{"live=12345678", "*=abcdefgh"} }, nil},
		{"publish key without pattern", func(c *Config) { c.PublishKeys = []string{"secret-key-here"} }, []string{"--publish-keys:", "PATTERN=KEY"}},
		{"publish key short", func(c *Config) { c.PublishKeys = []string{"live=short"} }, []string{"--publish-keys:", "8 characters"}},
		{"url secret short", func(c *Config) { c.URLSecret = "short" }, []string{"--url-secret:", "16"}},
		{"signed play without secret", func(c *Config) { c.SignedPlayApps = []string{"live"} }, []string{"--url-secret: is required with --signed-play-apps"}},
		{"auth hook", func(c *Config) { c.AuthHook, c.AuthHookSecret = "http://127.0.0.1:9/auth", "sixteen-chars-ok" }, nil},
		{"auth hook URL", func(c *Config) { c.AuthHook, c.AuthHookSecret = "file:///x", "sixteen-chars-ok" }, []string{"--auth-hook:", "file:///x"}},
		{"auth hook without secret", func(c *Config) { c.AuthHook = "http://h/x" }, []string{"--auth-hook-secret:"}},
		{"auth hook timeout zero", func(c *Config) { c.AuthHookTimeout = 0 }, []string{"--auth-hook-timeout:"}},
		{"auth hook slower than handshakes", func(c *Config) {
			c.AuthHook, c.AuthHookSecret, c.AuthHookTimeout = "http://127.0.0.1:9/auth", "sixteen-chars-ok", 10*time.Second
		}, []string{"--auth-hook-timeout: must be shorter than --handshake-timeout"}},
		{"cors origin", func(c *Config) { c.CORSOrigins = []string{"https://ok.example.com", "example.com/x"} }, []string{"--cors-origins:", "example.com/x"}},
		{"tls cert without key", func(c *Config) { c.TLSCert = "c.pem" }, []string{"--tls-key:"}},
		{"https addr", func(c *Config) { c.HTTPSAddr = "8443" }, []string{"--https-addr:"}},
		{"rtmps addr", func(c *Config) { c.RTMPSAddr = ":99999" }, []string{"--rtmps-addr:"}},
		{"per-IP connections negative", func(c *Config) { c.MaxConnectionsPerIP = -1 }, []string{"--max-connections-per-ip:"}},
		{"per-IP viewers negative", func(c *Config) { c.MaxViewersPerIP = -1 }, []string{"--max-viewers-per-ip:"}},
		{"handshake timeout zero", func(c *Config) { c.HandshakeTimeout = 0 }, []string{"--handshake-timeout:"}},
		{"vod replicas zero", func(c *Config) { c.VODReplicas = 0 }, []string{"--vod-replicas:"}},
		{"vod upload limit", func(c *Config) { c.VODMaxUpload = "lots" }, []string{"--vod-max-upload:"}},
		{"vod segments", func(c *Config) { c.VODSegmentDuration = 0 }, []string{"--vod-segment-duration:"}},
		{"cache size", func(c *Config) { c.CacheSize = "12kB" }, []string{"--cache-size:"}},
		{"cache tiny", func(c *Config) { c.CacheSize = "1000" }, []string{"--cache-size:"}},
		{"cache l2", func(c *Config) { c.CacheL2 = "http://x" }, []string{"--cache-l2:"}},
		{
			"several problems joined",
			func(c *Config) { c.LogLevel, c.MaxLag, c.HLSSegmentCount = "loud", 0, 1 },
			[]string{"--log-level:", "--max-lag:", "--hls-segment-count:"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			// Each want starting with "--" (or "apps:" or "sources:",
			// settings of the file only) is one problem, on its own line.
			lines := strings.Split(err.Error(), "\n")
			problems := 0
			for _, w := range tt.want {
				if strings.HasPrefix(w, "--") || strings.HasPrefix(w, "apps:") || strings.HasPrefix(w, "sources:") {
					problems++
				}
			}
			if len(lines) != problems {
				t.Errorf("got %d problems, want %d: %q", len(lines), problems, err)
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, "config: --") && !strings.HasPrefix(l, "config: apps: ") && !strings.HasPrefix(l, "config: sources: ") && !strings.HasPrefix(l, "config: streams: ") {
					t.Errorf("problem %q does not start with config: --flag", l)
				}
			}
		})
	}
}

func TestRedacted(t *testing.T) {
	c := Default()
	c.PublicHost = "live.example.com"
	got := c.Redacted()

	var keys []string
	rt := reflect.TypeFor[Config]()
	for i := range rt.NumField() {
		keys = append(keys, rt.Field(i).Tag.Get("yaml"))
	}
	gotKeys := make([]string, 0, len(got))
	for k := range got {
		gotKeys = append(gotKeys, k)
	}
	slices.Sort(keys)
	slices.Sort(gotKeys)
	if !slices.Equal(keys, gotKeys) {
		t.Errorf("Redacted keys = %q, want the YAML keys %q", gotKeys, keys)
	}

	c.Apps = map[string]AppConfig{"live": {Record: "all"}}
	apps := c.Redacted()["apps"].(map[string]AppConfig)
	apps["live"] = AppConfig{Record: "off"}
	if c.Apps["live"].Record != "all" {
		t.Error("the redacted map shares apps with the configuration")
	}

	for key, want := range map[string]any{
		"rtmp_addr":            ":1935",
		"max_connections":      10000,
		"max_lag":              "5s",
		"hls_segment_duration": "1s",
		"public_host":          "live.example.com",
	} {
		if got[key] != want {
			t.Errorf("Redacted()[%q] = %#v, want %#v", key, got[key], want)
		}
	}
}

// kinds exercises every supported field kind and the secret tag.
type kinds struct {
	Name    string        `yaml:"name" usage:"a string"`
	Count   int           `yaml:"count" usage:"an int"`
	Enabled bool          `yaml:"enabled" usage:"a bool"`
	Wait    time.Duration `yaml:"wait" usage:"a duration"`
	Peers   []string      `yaml:"peers" usage:"a list"`
	Token   string        `yaml:"stream_token" secret:"true" usage:"a secret"`
}

func TestFieldKinds(t *testing.T) {
	fl := mustFields(reflect.TypeFor[kinds]())
	var k kinds
	rv := reflect.ValueOf(&k).Elem()
	inputs := map[string]string{
		"name":         "cam",
		"count":        "3",
		"enabled":      "true",
		"wait":         "250ms",
		"peers":        " a:1, b:2 ,,",
		"stream_token": "hunter2",
	}
	for _, f := range fl {
		v, err := f.parse(inputs[f.yaml])
		if err != nil {
			t.Fatalf("%s: %v", f.yaml, err)
		}
		rv.Field(f.index).Set(v)
	}
	want := kinds{"cam", 3, true, 250 * time.Millisecond, []string{"a:1", "b:2"}, "hunter2"}
	if !reflect.DeepEqual(k, want) {
		t.Errorf("parsed %+v, want %+v", k, want)
	}

	red := fl.redacted(reflect.ValueOf(k))
	wantRed := map[string]any{
		"name":         "cam",
		"count":        3,
		"enabled":      true,
		"wait":         "250ms",
		"peers":        []string{"a:1", "b:2"},
		"stream_token": "REDACTED",
	}
	if !reflect.DeepEqual(red, wantRed) {
		t.Errorf("redacted = %#v, want %#v", red, wantRed)
	}
	red["peers"].([]string)[0] = "changed"
	if k.Peers[0] != "a:1" {
		t.Error("redacted map shares the list with the configuration")
	}

	byKey := map[string]field{}
	for _, f := range fl {
		byKey[f.yaml] = f
	}
	if got := byKey["stream_token"].flag; got != "stream-token" {
		t.Errorf("flag name = %q, want stream-token", got)
	}
	if got := byKey["stream_token"].env; got != "MESHCAST_STREAM_TOKEN" {
		t.Errorf("env name = %q, want MESHCAST_STREAM_TOKEN", got)
	}
	if got := byKey["peers"].format(reflect.ValueOf([]string{"a", "b"})); got != "a,b" {
		t.Errorf("list format = %q, want a,b", got)
	}
	if v, _ := byKey["peers"].parse(""); v.Len() != 0 || v.IsNil() {
		t.Errorf("empty list should parse to an empty, non-nil list, got %#v", v.Interface())
	}
	for _, bad := range []struct{ key, in string }{{"count", "x"}, {"enabled", "maybe"}, {"wait", "5"}} {
		if _, err := byKey[bad.key].parse(bad.in); err == nil {
			t.Errorf("%s: parse(%q) succeeded, want error", bad.key, bad.in)
		}
	}

	// A boolean flag may be given bare or with =value.
	var out []pending
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.Var(&flagValue{f: byKey["enabled"], out: &out}, "enabled", "")
	fs.Var(&flagValue{f: byKey["peers"], out: &out}, "peers", "")
	if err := fs.Parse([]string{"--enabled", "--peers", "x,y"}); err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || !out[0].v.Bool() || !reflect.DeepEqual(out[1].v.Interface(), []string{"x", "y"}) {
		t.Errorf("parsed flags = %+v", out)
	}
}

func TestMustFieldsRejects(t *testing.T) {
	tests := map[string]reflect.Type{
		"unsupported type": reflect.TypeFor[struct {
			F float64 `yaml:"f"`
		}](),
		"missing yaml tag": reflect.TypeFor[struct{ F string }](),
		"duplicate key": reflect.TypeFor[struct {
			A string `yaml:"a"`
			B string `yaml:"a"`
		}](),
	}
	for name, typ := range tests {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("mustFields did not panic")
				}
			}()
			mustFields(typ)
		})
	}
}

func TestNames(t *testing.T) {
	rt := reflect.TypeFor[Config]()
	if len(configFields) != rt.NumField() {
		t.Fatalf("%d settings for %d fields", len(configFields), rt.NumField())
	}
	for _, f := range configFields {
		if f.flag != strings.ReplaceAll(f.yaml, "_", "-") {
			t.Errorf("%s: flag %q does not match YAML key %q", f.goName, f.flag, f.yaml)
		}
		if f.env != "MESHCAST_"+strings.ToUpper(f.yaml) {
			t.Errorf("%s: env %q", f.goName, f.env)
		}
		if f.usage == "" {
			t.Errorf("%s: no usage text", f.goName)
		}
	}
	if got := configFields.byGo("HLSSegmentDuration").flag; got != "hls-segment-duration" {
		t.Errorf("HLSSegmentDuration flag = %q", got)
	}
}

// TestUsageGroups: every flag is in exactly one topic of --help, and the
// topics name no flag that does not exist.
func TestUsageGroups(t *testing.T) {
	seen := map[string]string{}
	for _, g := range usageGroups {
		for _, name := range g.flags {
			if other, ok := seen[name]; ok {
				t.Errorf("--%s is in %q and %q", name, other, g.title)
			}
			seen[name] = g.title
		}
	}
	for _, f := range configFields {
		if f.fileOnly {
			continue
		}
		if _, ok := seen[f.flag]; !ok {
			t.Errorf("--%s is in no topic of --help (usageGroups)", f.flag)
		}
		delete(seen, f.flag)
	}
	for name := range seen {
		t.Errorf("usageGroups names --%s, which is no flag", name)
	}
}

// TestUnknownFlag: an unknown flag is named with its double dash, with the
// flag it was probably meant to be.
func TestUnknownFlag(t *testing.T) {
	for args, want := range map[string]string{
		"--rtmp-adr=:1":        "unknown flag --rtmp-adr: did you mean --rtmp-addr?",
		"-publish-key=live=k":  "unknown flag --publish-key: did you mean --publish-keys?",
		"--clustersecret=x":    "unknown flag --clustersecret: did you mean --cluster-secret?",
		"--hls-low":            "unknown flag --hls-low: did you mean --hls-low-latency?",
		"--something-else-x=1": "unknown flag --something-else-x (meshcast serve --help lists them)",
	} {
		_, err := Load([]string{args}, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load(%s): %v, want %q", args, err, want)
		}
	}
}

func TestUsage(t *testing.T) {
	var b bytes.Buffer
	Usage(&b)
	out := b.String()
	for _, want := range []string{
		"--config file",
		"MESHCAST_CONFIG",
		`--rtmp-addr string`,
		`(default ":1935")`,
		"--publisher-grace duration",
		"(default 5s)",
		"--max-connections int",
		"(default 10000)",
		`--public-host string`,
		"Ingest (publishing):", "Playback:", "Cluster:", "Security:", "Storage (recordings, on demand, cache):", "Observability:",
		"MESHCAST_<NAME>",
		"underscores",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("Usage output lacks %q:\n%s", want, out)
		}
	}
	for _, noise := range []string{`(default "")`, "(default false)", "(default 0)", "(default [])", "(default 0s)"} {
		if strings.Contains(out, noise) {
			t.Errorf("Usage output shows %s", noise)
		}
	}
	for _, f := range configFields {
		if f.fileOnly {
			if !strings.Contains(out, "  "+f.yaml+":\n") || !strings.Contains(out, f.usage) {
				t.Errorf("Usage output lacks %s or its meaning", f.yaml)
			}
			continue
		}
		// Bool flags have no type after the name.
		named := strings.Contains(out, "--"+f.flag+" ") || strings.Contains(out, "--"+f.flag+"\n")
		if !named || !strings.Contains(out, f.usage) {
			t.Errorf("Usage output lacks --%s or its meaning", f.flag)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1024": 1024, "256MB": 256e6, "1GiB": 1 << 30, "8GiB": 8 << 30, "500 MB": 500e6, "64K": 64 << 10, "2M": 2 << 20, "10B": 10} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MB", "-1", "1.5GB", "lots", "99999999999TB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}

func TestNagle(t *testing.T) {
	for _, tc := range []struct {
		nodelay string
		low     bool
		nagle   bool
	}{
		{"auto", false, false},
		{"auto", true, true},
		{"on", true, false},
		{"on", false, false},
		{"off", false, true},
		{"off", true, true},
	} {
		c := Default()
		c.TCPNoDelay, c.LowLatency = tc.nodelay, tc.low
		if got := c.Nagle(); got != tc.nagle {
			t.Errorf("--tcp-nodelay %s, --low-latency %v: Nagle() = %v, want %v", tc.nodelay, tc.low, got, tc.nagle)
		}
	}
}
