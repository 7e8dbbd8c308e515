//go:build unix

package deploy

// Tests of what deploy/ and the Dockerfile ship: the compose file and the
// systemd unit are checked against the flags meshcast has, and the nginx and
// HAProxy configurations run, as shipped but for their addresses, in front
// of a real three-node cluster.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"
	"go.yaml.in/yaml/v3"

	"github.com/meshcast/meshcast/internal/protocol/rtmp"
	"github.com/meshcast/meshcast/internal/testutil"
	"github.com/meshcast/meshcast/test/e2e/e2eutil"
)

// repoPath returns the absolute path of rel, a slash-separated path from
// the repository's root.
func repoPath(t *testing.T, rel string) string {
	t.Helper()
	return filepath.Join(e2eutil.RepoRoot(t), filepath.FromSlash(rel))
}

func readRepoFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(repoPath(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// serveFlags returns the flags, with their dashes, that "meshcast serve
// --help" lists.
func serveFlags(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command(e2eutil.MeshcastBinary(t), "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("meshcast serve --help: %v\n%s", err, out)
	}
	flags := make(map[string]bool)
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "--") {
			flags[f[0]] = true
		}
	}
	if !flags["--rtmp-addr"] || !flags["--http-addr"] {
		t.Fatalf("meshcast serve --help lists no --rtmp-addr and --http-addr:\n%s", out)
	}
	return flags
}

// needServeFlags skips a test whose meshcast flags are missing from this
// build, and fails it in CI, as need does for tools.
func needServeFlags(t *testing.T, names ...string) {
	t.Helper()
	have := serveFlags(t)
	for _, n := range names {
		if !have[n] {
			if os.Getenv("CI") != "" {
				t.Fatalf("meshcast serve has no %s", n)
			}
			t.Skipf("meshcast serve has no %s yet", n)
		}
	}
}

// composeService is the part of a compose service the tests read.
type composeService struct {
	Build    any      `yaml:"build"`
	Image    string   `yaml:"image"`
	Command  any      `yaml:"command"`
	Ports    []any    `yaml:"ports"`
	Volumes  []any    `yaml:"volumes"`
	Profiles []string `yaml:"profiles"`
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Networks map[string]struct {
		IPAM struct {
			Config []struct {
				Subnet string `yaml:"subnet"`
			} `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
}

// publishedPorts returns a service's port mappings as
// PUBLISHED:TARGET/PROTO strings.
func publishedPorts(ports []any) []string {
	var out []string
	for _, p := range ports {
		switch p := p.(type) {
		case string:
			if !strings.Contains(p, "/") {
				p += "/tcp"
			}
			out = append(out, p)
		case map[string]any:
			proto, _ := p["protocol"].(string)
			if proto == "" {
				proto = "tcp"
			}
			out = append(out, fmt.Sprintf("%v:%v/%s", p["published"], p["target"], proto))
		}
	}
	return out
}

// composeArgs returns a compose command, in list or string form, as a list.
func composeArgs(cmd any) []string {
	switch c := cmd.(type) {
	case string:
		return strings.Fields(c)
	case []any:
		var out []string
		for _, a := range c {
			out = append(out, fmt.Sprint(a))
		}
		return out
	}
	return nil
}

// flagValues maps each --flag of args to its values ("--f v" or "--f=v";
// nil for a flag followed by another flag or nothing).
func flagValues(args []string) map[string][]string {
	out := make(map[string][]string)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			continue
		}
		if name, v, ok := strings.Cut(a, "="); ok {
			out[name] = append(out[name], v)
			continue
		}
		if i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
			out[a] = append(out[a], args[i+1])
			i++
			continue
		}
		out[a] = append(out[a], "")
	}
	return out
}

// TestComposeFile checks deploy/compose.yaml: a three-node cluster, Redis and
// nginx, every node started with flags meshcast has, nginx publishing 80 and
// 1935 with the shipped configuration, and the Dockerfile the nodes are built
// from.
func TestComposeFile(t *testing.T) {
	t.Parallel()
	var cf composeFile
	if err := yaml.Unmarshal([]byte(readRepoFile(t, "deploy/compose.yaml")), &cf); err != nil {
		t.Fatalf("deploy/compose.yaml: %v", err)
	}
	for _, name := range []string{"meshcast-1", "meshcast-2", "meshcast-3", "redis", "nginx"} {
		if _, ok := cf.Services[name]; !ok {
			t.Errorf("deploy/compose.yaml has no service %s", name)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	var subnets []netip.Prefix
	for name, n := range cf.Networks {
		for _, c := range n.IPAM.Config {
			p, err := netip.ParsePrefix(c.Subnet)
			if err != nil {
				t.Errorf("network %s: subnet %q: %v", name, c.Subnet, err)
			}
			subnets = append(subnets, p)
		}
	}

	help := serveFlags(t)
	deployDir := repoPath(t, "deploy")
	ids := make(map[string]string)
	for _, name := range []string{"meshcast-1", "meshcast-2", "meshcast-3"} {
		s := cf.Services[name]
		args := composeArgs(s.Command)
		if len(args) == 0 || args[0] != "serve" {
			t.Errorf("%s: command %q does not start with serve", name, args)
			continue
		}
		for _, a := range args {
			if f, _, _ := strings.Cut(a, "="); strings.HasPrefix(f, "--") && !help[f] {
				t.Errorf("%s: meshcast serve has no flag %s", name, f)
			}
		}
		fv := flagValues(args)
		one := func(flag string) string {
			if len(fv[flag]) != 1 {
				t.Errorf("%s: %s given %d times, want once", name, flag, len(fv[flag]))
				return ""
			}
			return fv[flag][0]
		}
		if v := one("--redis"); v != "redis://redis:6379/0" {
			t.Errorf("%s: --redis %q, want redis://redis:6379/0", name, v)
		}
		if v := one("--cluster-secret"); !strings.HasPrefix(v, "${") {
			t.Errorf("%s: --cluster-secret %q, want it from an environment variable", name, v)
		}
		if v := one("--advertise-host"); v != name {
			t.Errorf("%s: --advertise-host %q, want the service name", name, v)
		}
		id := one("--node-id")
		if other, dup := ids[id]; dup {
			t.Errorf("%s and %s share --node-id %q", other, name, id)
		}
		ids[id] = name
		// nginx's PROXY headers come from the compose network: it must be trusted.
		var trusted []netip.Prefix
		for item := range strings.SplitSeq(one("--trusted-proxies"), ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(item))
			if err != nil {
				t.Errorf("%s: --trusted-proxies %q: %v", name, item, err)
				continue
			}
			trusted = append(trusted, p)
		}
		if len(subnets) == 0 {
			t.Errorf("deploy/compose.yaml fixes no network subnet for --trusted-proxies to name")
		}
		for _, sn := range subnets {
			if !slices.ContainsFunc(trusted, func(p netip.Prefix) bool { return p.Bits() <= sn.Bits() && p.Contains(sn.Addr()) }) {
				t.Errorf("%s: --trusted-proxies %v does not cover the compose network %v", name, trusted, sn)
			}
		}
		// WebRTC media reaches the node at its own UDP port, published as
		// is, and at the host's address.
		udp := strings.TrimPrefix(one("--webrtc-udp-addr"), ":")
		if !slices.Contains(publishedPorts(s.Ports), udp+":"+udp+"/udp") {
			t.Errorf("%s: --webrtc-udp-addr :%s is not published as %s:%s/udp (ports %v)", name, udp, udp, udp, s.Ports)
		}
		if v := one("--webrtc-nat-ips"); !strings.Contains(v, "MESHCAST_PUBLIC_IP") {
			t.Errorf("%s: --webrtc-nat-ips %q, want the host's address from MESHCAST_PUBLIC_IP", name, v)
		}
		// Publishers on the Docker host come from the network's gateway.
		if v := one("--publish-trusted-networks"); len(subnets) > 0 && v != subnets[0].Addr().Next().String()+"/32" {
			t.Errorf("%s: --publish-trusted-networks %q, want the compose network's gateway alone", name, v)
		}
		// Built from the repository's Dockerfile.
		b, _ := s.Build.(map[string]any)
		ctx, _ := b["context"].(string)
		df, _ := b["dockerfile"].(string)
		if df == "" {
			df = "Dockerfile"
		}
		if ctx == "" {
			t.Errorf("%s: no build context", name)
		} else if got, want := filepath.Join(deployDir, ctx, df), repoPath(t, "Dockerfile"); got != want {
			t.Errorf("%s: built from %s, want %s", name, got, want)
		}
	}

	if !slices.Contains(publishedPorts(cf.Services["meshcast-1"].Ports), "8890:8890/udp") {
		t.Errorf("no node publishes SRT (8890/udp)")
	}
	for _, name := range []string{"prometheus", "grafana"} {
		if p := cf.Services[name].Profiles; !slices.Equal(p, []string{"monitoring"}) {
			t.Errorf("%s: profiles %v, want [monitoring]", name, p)
		}
	}

	nginx := cf.Services["nginx"]
	published := make(map[string]string) // published port → container port
	for _, p := range nginx.Ports {
		switch p := p.(type) {
		case string: // [IP:]PUBLISHED:TARGET[/PROTO]
			parts := strings.Split(strings.Split(p, "/")[0], ":")
			if len(parts) >= 2 {
				published[parts[len(parts)-2]] = parts[len(parts)-1]
			}
		case map[string]any:
			published[fmt.Sprint(p["published"])] = fmt.Sprint(p["target"])
		}
	}
	conf := readRepoFile(t, "deploy/nginx/meshcast.conf")
	for _, port := range []string{"80", "1935"} {
		target, ok := published[port]
		if !ok {
			t.Errorf("nginx does not publish port %s (ports %v)", port, nginx.Ports)
			continue
		}
		if !strings.Contains(conf, "listen "+target+";") {
			t.Errorf("nginx publishes %s as container port %s, where deploy/nginx/meshcast.conf does not listen", port, target)
		}
	}
	mounted := false
	for _, v := range nginx.Volumes {
		var src, dst string
		switch v := v.(type) {
		case string: // SOURCE:TARGET[:MODE]
			parts := strings.Split(v, ":")
			if len(parts) >= 2 {
				src, dst = parts[0], parts[1]
			}
		case map[string]any:
			src, _ = v["source"].(string)
			dst, _ = v["target"].(string)
		}
		if src == "" || filepath.IsAbs(src) {
			continue
		}
		if filepath.Join(deployDir, src) == repoPath(t, "deploy/nginx/meshcast.conf") {
			mounted = true
			if dst != "/etc/nginx/nginx.conf" {
				t.Errorf("nginx mounts deploy/nginx/meshcast.conf at %s, want /etc/nginx/nginx.conf", dst)
			}
		}
	}
	if !mounted {
		t.Errorf("nginx does not mount deploy/nginx/meshcast.conf (volumes %v)", nginx.Volumes)
	}

	// The Dockerfile: exposes both ports, runs meshcast serve, not as root.
	var exposed []string
	var user, entrypoint, cmd string
	for _, line := range strings.Split(readRepoFile(t, "Dockerfile"), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		rest := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), f[0]))
		switch strings.ToUpper(f[0]) {
		case "FROM":
			user = "" // a new stage starts as root
		case "EXPOSE":
			for _, p := range f[1:] {
				exposed = append(exposed, strings.TrimSuffix(p, "/tcp"))
			}
		case "USER":
			user = rest
		case "ENTRYPOINT":
			entrypoint = rest
		case "CMD":
			cmd = rest
		}
	}
	for _, p := range []string{"1935", "8080"} {
		if !slices.Contains(exposed, p) {
			t.Errorf("Dockerfile: EXPOSE %v lacks %s", exposed, p)
		}
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "root" || u == "0" {
		t.Errorf("Dockerfile: the image runs as %q, want a user without privileges", user)
	}
	// The last stage has Debian's ffmpeg (transcoding, WebRTC audio) and
	// volumes for recordings and on-demand files, and sets only settings
	// meshcast has.
	last := readRepoFile(t, "Dockerfile")
	last = last[strings.LastIndex(last, "\nFROM "):]
	if !regexp.MustCompile(`apt-get install[^\n]*\bffmpeg\b`).MatchString(last) {
		t.Errorf("Dockerfile: the image's stage installs no ffmpeg")
	}
	for _, dir := range []string{"/var/lib/meshcast/recordings", "/var/lib/meshcast/vod"} {
		if !strings.Contains(last, `"`+dir+`"`) || !regexp.MustCompile(`(?m)^VOLUME .*`+regexp.QuoteMeta(dir)).MatchString(last) {
			t.Errorf("Dockerfile: no VOLUME %s", dir)
		}
	}
	for _, m := range regexp.MustCompile(`MESHCAST_([A-Z0-9_]+)=`).FindAllStringSubmatch(last, -1) {
		if f := "--" + strings.ToLower(strings.ReplaceAll(m[1], "_", "-")); !help[f] {
			t.Errorf("Dockerfile: ENV MESHCAST_%s is no setting (%s)", m[1], f)
		}
	}
	if entrypoint != `["meshcast"]` || cmd != `["serve"]` {
		t.Errorf("Dockerfile: ENTRYPOINT %s CMD %s, want [\"meshcast\"] and [\"serve\"]", entrypoint, cmd)
	}
}

// unitFile is a systemd unit: section → key → values in order.
type unitFile map[string]map[string][]string

// parseUnit parses systemd's INI-like unit syntax: [Section] headers,
// Key=Value lines, # and ; comments, and lines continued by a backslash.
func parseUnit(text string) (unitFile, error) {
	u := make(unitFile)
	section := ""
	var pending string
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		if pending != "" {
			line = pending + " " + line
			pending = ""
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			pending = strings.TrimSuffix(line, `\`)
			continue
		}
		if line[0] == '[' {
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("line %d: bad section header %q", i+1, line)
			}
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = make(map[string][]string)
			}
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			return nil, fmt.Errorf("line %d: %q is not Key=Value in a section", i+1, line)
		}
		key = strings.TrimSpace(key)
		u[section][key] = append(u[section][key], strings.TrimSpace(value))
	}
	if pending != "" {
		return nil, fmt.Errorf("file ends in a continued line")
	}
	return u, nil
}

func (u unitFile) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// systemdSeconds parses a systemd time span such as 45, 45s, 1min 30s.
func systemdSeconds(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	var total time.Duration
	for _, part := range strings.Fields(s) {
		d, err := time.ParseDuration(strings.Replace(strings.Replace(part, "min", "m", 1), "sec", "s", 1))
		if err != nil {
			return 0, fmt.Errorf("time span %q: %v", s, err)
		}
		total += d
	}
	return total, nil
}

// TestSystemdUnit checks deploy/systemd/meshcast.service, and has
// systemd-analyze verify it when systemd-analyze is installed.
func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	text := readRepoFile(t, "deploy/systemd/meshcast.service")
	u, err := parseUnit(text)
	if err != nil {
		t.Fatalf("deploy/systemd/meshcast.service: %v", err)
	}
	for _, s := range []string{"Unit", "Service", "Install"} {
		if u[s] == nil {
			t.Errorf("no [%s] section", s)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	// WebRTC lists interfaces through netlink: without it no candidates.
	if fams := strings.Fields(strings.Join(u["Service"]["RestrictAddressFamilies"], " ")); len(fams) > 0 && !slices.Contains(fams, "AF_NETLINK") {
		t.Errorf("RestrictAddressFamilies=%v lacks AF_NETLINK, which WebRTC's interface listing needs", fams)
	}
	exec0 := u["Service"]["ExecStart"]
	if len(exec0) != 1 {
		t.Fatalf("ExecStart given %d times, want once", len(exec0))
	}
	args := strings.Fields(exec0[0])
	if len(args) < 2 || !filepath.IsAbs(args[0]) || filepath.Base(args[0]) != "meshcast" || args[1] != "serve" {
		t.Fatalf("ExecStart=%s, want /PATH/meshcast serve ...", exec0[0])
	}
	help := serveFlags(t)
	for _, a := range args[2:] {
		if f, _, _ := strings.Cut(a, "="); strings.HasPrefix(f, "--") && !help[f] {
			t.Errorf("ExecStart: meshcast serve has no flag %s", f)
		}
	}
	if v := u.get("Service", "Restart"); v != "on-failure" {
		t.Errorf("Restart=%s, want on-failure", v)
	}
	if v := u.get("Service", "KillSignal"); v != "SIGTERM" {
		t.Errorf("KillSignal=%s, want SIGTERM (which drains the node)", v)
	}
	// --drain-grace is 30 s by default: systemd must wait longer than that.
	if stop, err := systemdSeconds(u.get("Service", "TimeoutStopSec")); err != nil || stop <= 30*time.Second {
		t.Errorf("TimeoutStopSec=%s (%v), want more than the 30 s drain grace", u.get("Service", "TimeoutStopSec"), err)
	}
	if v := u.get("Service", "User"); v == "" || v == "root" || v == "0" {
		t.Errorf("User=%q, want a dedicated user", v)
	}
	if v := u.get("Service", "LimitNOFILE"); v != "infinity" {
		if n, err := strconv.Atoi(strings.Split(v, ":")[0]); err != nil || n < 65536 {
			t.Errorf("LimitNOFILE=%s, want at least 65536", v)
		}
	}
	if v := u["Install"]["WantedBy"]; !slices.Contains(v, "multi-user.target") {
		t.Errorf("WantedBy=%v, want multi-user.target (systemctl enable)", v)
	}

	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: the unit is not verified by systemd")
		return
	}
	// systemd-analyze verify insists that ExecStart's binary exists: point
	// it at the one the tests built.
	copyPath := filepath.Join(t.TempDir(), "meshcast.service")
	if err := os.WriteFile(copyPath, []byte(strings.Replace(text, "ExecStart="+args[0], "ExecStart="+e2eutil.MeshcastBinary(t), 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, sa, "verify", copyPath).CombinedOutput()
	t.Logf("systemd-analyze verify: %v\n%s", err, out)
	if err != nil {
		t.Fatalf("systemd-analyze verify failed: %v\n%s", err, out)
	}
	// Unknown keys and bad values are only warnings: fail on any about the unit.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "meshcast.service") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
}

// The proxy tests.

// render returns text with each old string of the old, new pairs replaced,
// failing the test when one is not there: the tests run the shipped files,
// and a change to those must not silently leave a replacement undone.
func render(t *testing.T, text string, oldnew ...string) string {
	t.Helper()
	for i := 0; i+1 < len(oldnew); i += 2 {
		if !strings.Contains(text, oldnew[i]) {
			t.Fatalf("rendering a shipped file: %q is not in it", oldnew[i])
		}
		text = strings.ReplaceAll(text, oldnew[i], oldnew[i+1])
	}
	return text
}

// drainGrace is the nodes' --drain-grace in the proxy tests.
const drainGrace = 10 * time.Second

// startProxiedCluster starts Redis and three meshcast processes with the
// node IDs meshcast-1..3 the shipped proxy configurations use as names,
// trusting proxies on 127.0.0.1.
func startProxiedCluster(t *testing.T) []*e2eutil.Proc {
	t.Helper()
	testutil.Need(t, "redis-server", "ffmpeg", "ffprobe")
	needServeFlags(t, "--trusted-proxies", "--drain-grace")
	red := testutil.StartRedis(t, 0)
	var nodes []*e2eutil.Proc
	for i := 1; i <= 3; i++ {
		nodes = append(nodes, e2eutil.StartProcess(t, "--redis", red.URL(), "--cluster-secret", "deploy-tests-cluster-secret",
			"--node-id", fmt.Sprintf("meshcast-%d", i), "--advertise-host", "127.0.0.1",
			"--publisher-grace", "2s", "--trusted-proxies", "127.0.0.1/32", "--drain-grace", drainGrace.String()))
	}
	testutil.WaitFor(t, 10*time.Second, "three nodes in the registry", func() bool { return len(e2eutil.NodeIDs(nodes[0].HTTPURL)) == 3 })
	return nodes
}

// frontProxy is nginx or HAProxy running in front of the cluster.
type frontProxy struct {
	httpURL  string // http://127.0.0.1:PORT
	rtmpAddr string // 127.0.0.1:PORT
	cmd      *exec.Cmd
	output   *testutil.LockedBuffer // standard output and error
	// requests lists the HTTP requests the proxy has logged so far.
	requests func() []proxied
}

// proxied is an HTTP request as the proxy logged it.
type proxied struct {
	uri    string
	status int
	node   int // index of the node that answered; -1 for none
}

// startFrontProxy runs a proxy in the foreground, in its own process group,
// and stops it and its workers at the end of the test.
func startFrontProxy(t *testing.T, fp *frontProxy, bin string, args ...string) {
	t.Helper()
	name := filepath.Base(bin)
	fp.output = &testutil.LockedBuffer{}
	fp.cmd = exec.Command(bin, args...)
	fp.cmd.Stdout, fp.cmd.Stderr = fp.output, fp.output
	fp.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := fp.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- fp.cmd.Wait() }()
	t.Cleanup(func() {
		pid := fp.cmd.Process.Pid
		syscall.Kill(pid, syscall.SIGTERM) // both stop at once on SIGTERM
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not stop within 10 s of SIGTERM", name)
			syscall.Kill(-pid, syscall.SIGKILL) // it and its workers
			<-exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, fp.output.String())
		}
	})
	testutil.WaitFor(t, 10*time.Second, name+" to accept connections", func() bool {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("%s exited: %v\n%s", name, err, fp.output.String())
		default:
		}
		for _, addr := range []string{strings.TrimPrefix(fp.httpURL, "http://"), fp.rtmpAddr} {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return false
			}
			c.Close()
		}
		return true
	})
}

// sbinTool returns the path of a tool that Debian installs in /usr/sbin,
// which a user's PATH may lack, skipping or failing the test as need does
// when it is not installed.
func sbinTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := "/usr/sbin/" + name; exec.Command(p, "-v").Run() == nil {
		return p
	}
	testutil.Need(t, name)
	return name
}

// startNginx runs deploy/nginx/meshcast.conf in front of nodes, on free
// loopback ports and with its files in a temporary directory.
func startNginx(t *testing.T, nodes []*e2eutil.Proc) *frontProxy {
	t.Helper()
	bin := sbinTool(t, "nginx")
	if _, err := os.Stat("/usr/lib/nginx/modules/ngx_stream_module.so"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("nginx's stream module is not installed: the test command must install it (scripts/install-test-deps.sh)")
		}
		t.Skip("nginx's stream module is not installed: run scripts/install-test-deps.sh")
	}
	dir := t.TempDir()
	httpPort, rtmpPort := testutil.FreePort(t), testutil.FreePort(t)
	var subst []string
	for i, n := range nodes {
		subst = append(subst,
			fmt.Sprintf("server meshcast-%d:8080", i+1), fmt.Sprintf("server 127.0.0.1:%d", n.HTTPPort),
			fmt.Sprintf("server meshcast-%d:1935", i+1), fmt.Sprintf("server 127.0.0.1:%d", n.RTMPPort))
	}
	subst = append(subst,
		"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", httpPort),
		"listen 1935;", fmt.Sprintf("listen 127.0.0.1:%d;", rtmpPort),
		// Logs in the temporary directory, and temporary files too (nginx
		// creates their directories at start-up even when nothing uses them).
		"/var/log/nginx/", dir+"/",
		"\nhttp {\n", "\nhttp {\n"+
			"    client_body_temp_path "+dir+"/client_body;\n"+
			"    proxy_temp_path "+dir+"/proxy;\n"+
			"    fastcgi_temp_path "+dir+"/fastcgi;\n"+
			"    uwsgi_temp_path "+dir+"/uwsgi;\n"+
			"    scgi_temp_path "+dir+"/scgi;\n")
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(render(t, readRepoFile(t, "deploy/nginx/meshcast.conf"), subst...)), 0o644); err != nil {
		t.Fatal(err)
	}
	byPort := make(map[string]int)
	for i, n := range nodes {
		byPort[fmt.Sprintf("127.0.0.1:%d", n.HTTPPort)] = i
	}
	access := filepath.Join(dir, "meshcast.access.log")
	// "GET /live/stream.flv HTTP/1.1" 200 ... upstream=127.0.0.1:PORT[, 127.0.0.1:PORT] "UA"
	line := regexp.MustCompile(`"[A-Z]+ (\S+) HTTP/[0-9.]+" (\d{3}) .* upstream=([^"]*) "`)
	fp := &frontProxy{
		httpURL:  fmt.Sprintf("http://127.0.0.1:%d", httpPort),
		rtmpAddr: fmt.Sprintf("127.0.0.1:%d", rtmpPort),
		requests: func() []proxied {
			b, _ := os.ReadFile(access)
			var out []proxied
			for _, l := range strings.Split(string(b), "\n") {
				m := line.FindStringSubmatch(l)
				if m == nil {
					continue
				}
				status, _ := strconv.Atoi(m[2])
				ups := strings.Split(strings.TrimSpace(m[3]), ", ") // the last one answered
				node, ok := byPort[ups[len(ups)-1]]
				if !ok {
					node = -1
				}
				out = append(out, proxied{uri: m[1], status: status, node: node})
			}
			return out
		},
	}
	// The error log goes to standard error before the configuration is
	// read (-e); the pid file to the temporary directory.
	startFrontProxy(t, fp, bin, "-e", "stderr", "-p", dir+"/", "-c", conf,
		"-g", "daemon off; pid "+filepath.Join(dir, "nginx.pid")+";")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx error.log:\n%s", b)
		}
	})
	return fp
}

// haproxyCheck is the HTTP health checks' interval and fall count in the
// shipped deploy/haproxy/haproxy.cfg, from its line marked
// "health-check interval".
type haproxyCheck struct {
	inter, timeout time.Duration
	fall           int
}

// startHAProxy runs deploy/haproxy/haproxy.cfg in front of nodes, on free
// loopback ports.
func startHAProxy(t *testing.T, nodes []*e2eutil.Proc) (*frontProxy, haproxyCheck) {
	t.Helper()
	bin := sbinTool(t, "haproxy")
	text := readRepoFile(t, "deploy/haproxy/haproxy.cfg")
	httpPort, rtmpPort := testutil.FreePort(t), testutil.FreePort(t)
	var subst []string
	for i, n := range nodes {
		subst = append(subst,
			fmt.Sprintf("meshcast-%d:8080", i+1), fmt.Sprintf("127.0.0.1:%d", n.HTTPPort),
			fmt.Sprintf("meshcast-%d:1935 check port 8080", i+1), fmt.Sprintf("127.0.0.1:%d check port %d", n.RTMPPort, n.HTTPPort))
	}
	subst = append(subst,
		"bind :80\n", fmt.Sprintf("bind 127.0.0.1:%d\n", httpPort),
		"bind :1935\n", fmt.Sprintf("bind 127.0.0.1:%d\n", rtmpPort),
		// No chroot to /var/lib/haproxy nor change of user: the test may
		// not run as root.
		"\n    user haproxy\n", "\n",
		"\n    group haproxy\n", "\n",
		"\n    chroot /var/lib/haproxy\n", "\n")
	conf := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(conf, []byte(render(t, text, subst...)), 0o644); err != nil {
		t.Fatal(err)
	}

	// The HTTP backend's health checks, as shipped.
	_, httpBackend, _ := strings.Cut(text, "\nbackend meshcast_http\n")
	httpBackend, _, _ = strings.Cut(httpBackend, "\nfrontend ")
	var check haproxyCheck
	m := regexp.MustCompile(`(?m)^\s*#\s*health-check interval.*\n(?:\s*#.*\n)*\s*default-server inter (\S+) fall (\d+)`).FindStringSubmatch(httpBackend)
	if m == nil {
		t.Fatal("deploy/haproxy/haproxy.cfg: no default-server line marked health-check interval in backend meshcast_http")
	}
	var err error
	if check.inter, err = time.ParseDuration(m[1]); err != nil {
		t.Fatal(err)
	}
	check.fall, _ = strconv.Atoi(m[2])
	if m := regexp.MustCompile(`(?m)^\s*timeout check (\S+)`).FindStringSubmatch(text); m != nil {
		check.timeout, _ = time.ParseDuration(m[1])
	}

	// 127.0.0.1:41234 [24/Nov/2026:22:19:16.782] meshcast_http meshcast_http/meshcast-2 0/0/0/1/1 200 ... "GET /live/x.flv HTTP/1.1"
	line := regexp.MustCompile(`\] meshcast_http meshcast_http/(\S+) \S+ (\d{3}) .*"[A-Z]+ (\S+) HTTP/[0-9.]+"`)
	fp := &frontProxy{
		httpURL:  fmt.Sprintf("http://127.0.0.1:%d", httpPort),
		rtmpAddr: fmt.Sprintf("127.0.0.1:%d", rtmpPort),
	}
	fp.requests = func() []proxied {
		var out []proxied
		for _, l := range strings.Split(fp.output.String(), "\n") {
			m := line.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			status, _ := strconv.Atoi(m[2])
			node := -1
			if n, err := strconv.Atoi(strings.TrimPrefix(m[1], "meshcast-")); err == nil && n >= 1 && n <= len(nodes) {
				node = n - 1
			}
			out = append(out, proxied{uri: m[3], status: status, node: node})
		}
		return out
	}
	startFrontProxy(t, fp, bin, "-f", conf, "-db")
	return fp, check
}

// servedBy waits for the proxy to log the request for uri and returns it.
func (fp *frontProxy) servedBy(t *testing.T, uri string) proxied {
	t.Helper()
	var r proxied
	testutil.WaitFor(t, 10*time.Second, "the proxy to log "+uri, func() bool {
		for _, p := range fp.requests() {
			if p.uri == uri {
				r = p
				return true
			}
		}
		return false
	})
	return r
}

// apiPublisher is the publisher part of the streams API.
type apiPublisher struct {
	Publisher *struct {
		Protocol   string `json:"protocol"`
		RemoteAddr string `json:"remote_addr"`
	} `json:"publisher"`
}

// publisherOf waits until one of nodes has an RTMP publisher of name and
// returns that node's index and the publisher's address.
func publisherOf(t *testing.T, nodes []*e2eutil.Proc, name string) (int, string) {
	t.Helper()
	owner, addr := -1, ""
	testutil.WaitFor(t, 20*time.Second, "a node to have the publisher of "+name, func() bool {
		for i, n := range nodes {
			code, body := e2eutil.HTTPGet(t, n.HTTPURL+"/api/v1/streams/"+name)
			var s apiPublisher
			if code == 200 && json.Unmarshal(body, &s) == nil && s.Publisher != nil && s.Publisher.Protocol == "rtmp" {
				owner, addr = i, s.Publisher.RemoteAddr
				return true
			}
		}
		return false
	})
	return owner, addr
}

// publishFrom publishes a few seconds of the test input to addr with the Go
// RTMP client, from the local address ip as a publisher on another machine
// would, and stays connected until the test ends.
func publishFrom(t *testing.T, ip net.IP, addr, name string) {
	t.Helper()
	tags := e2eutil.Clip(t)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	c, err := rtmp.NewClient(conn)
	if err != nil {
		t.Fatalf("publish from %v through %s: %v", ip, addr, err)
	}
	app, key, _ := strings.Cut(name, "/")
	if err := c.Connect(app, "rtmp://"+addr+"/"+app); err != nil {
		t.Fatalf("publish from %v through %s: %v", ip, addr, err)
	}
	if err := c.Publish(key); err != nil {
		t.Fatalf("publish from %v through %s: %v", ip, addr, err)
	}
	for _, tag := range tags {
		if err := c.WriteMedia(tag.Type, tag.TS, tag.Body); err != nil {
			t.Fatalf("publish from %v: %v", ip, err)
		}
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("publish from %v: %v", ip, err)
	}
	conn.SetDeadline(time.Time{})
}

// checkInFront runs what users do through a proxy in front of the cluster:
// publish and play over RTMP through it, play HTTP-FLV and HLS through it,
// all of a stream's HTTP requests reaching one node, and the nodes seeing the
// publisher's own address.
func checkInFront(t *testing.T, fp *frontProxy, nodes []*e2eutil.Proc) (stopPublisher func()) {
	const name = "live/stream"
	stopPublisher = e2eutil.PublishFFmpeg(t, "rtmp://"+fp.rtmpAddr+"/"+name)
	owner, _ := publisherOf(t, nodes, name)
	e2eutil.WaitLiveHTTP(t, nodes[owner].HTTPURL, name)
	t.Logf("the publisher reached meshcast-%d through the proxy", owner+1)

	served := -1 // the node the proxy sends the stream's HTTP requests to
	t.Run("HTTP-FLV and HLS through the proxy, all from one node", func(t *testing.T) {
		e2eutil.ProbeCodecs(t, fp.httpURL+"/"+name+".flv")
		e2eutil.ProbeCodecs(t, fp.httpURL+"/"+name+".m3u8") // redirects to /live/stream/index.m3u8
		// A player counts as an HLS viewer for 10 s after its last playlist.
		for i, n := range nodes {
			if s, ok := e2eutil.GetStream(t, n.HTTPURL, name); ok && s.Viewers["hls"] > 0 {
				if served >= 0 {
					t.Errorf("HLS viewers on meshcast-%d and meshcast-%d, want one node", served+1, i+1)
				}
				served = i
			}
		}
		if served < 0 {
			t.Fatal("no node counts the HLS viewer")
		}
		fp.servedBy(t, "/"+name+".flv")
		var uris []string
		for _, r := range fp.requests() {
			if !strings.HasPrefix(r.uri, "/"+name+".") && !strings.HasPrefix(r.uri, "/"+name+"/") {
				continue
			}
			uris = append(uris, r.uri)
			if r.node != served || r.status >= 400 {
				t.Errorf("%s: status %d from node %d, want meshcast-%d", r.uri, r.status, r.node+1, served+1)
			}
		}
		if len(uris) < 4 { // .flv, .m3u8, index.m3u8, and a media playlist or segment at least
			t.Errorf("the proxy logged %q, want the HTTP-FLV and HLS requests", uris)
		}
		t.Logf("meshcast-%d served %d requests for %s", served+1, len(uris), name)
	})

	t.Run("the nodes see HTTP clients' own addresses", func(t *testing.T) {
		if served < 0 {
			t.Skip("no node is known to serve the stream")
		}
		// The nodes count a player once per address and user agent: three
		// players at 127.0.0.2, .3 and .4 count as three only if the proxy
		// passes their addresses on in X-Forwarded-For and the node takes
		// them from there.
		for i := 2; i <= 4; i++ {
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i))}, Timeout: 5 * time.Second}
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
			req, _ := http.NewRequest("GET", fp.httpURL+"/"+name+"/index.m3u8", nil)
			req.Header.Set("User-Agent", "meshcast-deploy-test")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("GET index.m3u8 from 127.0.0.%d through the proxy: %s", i, resp.Status)
			}
		}
		if s, ok := e2eutil.GetStream(t, nodes[served].HTTPURL, name); !ok || s.Viewers["hls"] < 3 {
			t.Errorf("meshcast-%d counts %d HLS viewers after players at three addresses, want 3 or more", served+1, s.Viewers["hls"])
		}
	})

	t.Run("RTMP play through the proxy", func(t *testing.T) {
		e2eutil.ProbeCodecs(t, "rtmp://"+fp.rtmpAddr+"/"+name)
	})

	t.Run("node-to-node routes and metrics answer 404 through the proxy", func(t *testing.T) {
		for _, path := range []string{"/internal/v1/pull/" + name, "/%69nternal/v1/pull/" + name, "/metrics"} {
			if code, body := e2eutil.HTTPGet(t, fp.httpURL+path); code != 404 {
				t.Errorf("GET %s through the proxy: %d %s, want 404", path, code, body)
			}
		}
	})

	t.Run("WebSocket-FLV and Socket.IO over WebSockets through the proxy", func(t *testing.T) {
		ws := strings.Replace(fp.httpURL, "http://", "ws://", 1)
		c, resp, err := websocket.DefaultDialer.Dial(ws+"/"+name+".flv", nil)
		if err != nil {
			t.Fatalf("WebSocket-FLV through the proxy: %v (%v)", err, resp)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		typ, msg, err := c.ReadMessage()
		if err != nil || typ != websocket.BinaryMessage || !bytes.HasPrefix(msg, []byte("FLV")) {
			t.Fatalf("first WebSocket-FLV message: type %d, % x..., %v; want the binary FLV header", typ, msg[:min(len(msg), 8)], err)
		}
		sio, resp, err := websocket.DefaultDialer.Dial(ws+"/socket.io/?EIO=4&transport=websocket", nil)
		if err != nil {
			t.Fatalf("Socket.IO over a WebSocket through the proxy: %v (%v)", err, resp)
		}
		defer sio.Close()
		sio.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, open, err := sio.ReadMessage(); err != nil || !bytes.HasPrefix(open, []byte("0{")) || !bytes.Contains(open, []byte(`"sid":`)) {
			t.Fatalf("Engine.IO open packet: %q, %v", open, err)
		}
	})

	t.Run("WHEP and its DELETE through the proxy", func(t *testing.T) {
		v := e2eutil.PlayWHEP(t, fp.httpURL, name, false)
		testutil.WaitFor(t, 20*time.Second, "H.264 over WebRTC", func() bool { return v.Video.Load() >= 100 && v.Keyframes.Load() > 0 })
		req, _ := http.NewRequest(http.MethodDelete, fp.httpURL+v.Location, nil)
		resp, err := e2eutil.WHEPClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("DELETE %s through the proxy: %s, want 200 from the node holding the session", v.Location, resp.Status)
		}
		testutil.WaitFor(t, 10*time.Second, "the session to end", func() bool {
			return v.PC.ConnectionState() != webrtc.PeerConnectionStateConnected
		})
	})

	t.Run("the whole cluster's streams listed through the proxy", func(t *testing.T) {
		// A stream published straight to another node: whichever node the
		// proxy asks lists both, each with its owner.
		other := (owner + 1) % len(nodes)
		const elsewhere = "live/elsewhere"
		e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://localhost:%d/%s", nodes[other].RTMPPort, elsewhere))
		want := map[string]string{name: fmt.Sprintf("meshcast-%d", owner+1), elsewhere: fmt.Sprintf("meshcast-%d", other+1)}
		var got map[string]string
		testutil.WaitFor(t, 15*time.Second, "both streams in the cluster listing through the proxy", func() bool {
			code, body := e2eutil.HTTPGet(t, fp.httpURL+"/api/v1/streams?scope=cluster")
			var out struct {
				Streams []struct {
					Name  string `json:"name"`
					Video *struct {
						Codec string `json:"codec"`
					} `json:"video"`
					Owner *struct {
						Node string `json:"node"`
					} `json:"owner"`
				} `json:"streams"`
			}
			if code != 200 || json.Unmarshal(body, &out) != nil {
				return false
			}
			got = map[string]string{}
			for _, s := range out.Streams {
				if s.Owner != nil && s.Video != nil && s.Video.Codec == "h264" {
					got[s.Name] = s.Owner.Node
				}
			}
			return got[name] == want[name] && got[elsewhere] == want[elsewhere]
		})
	})

	t.Run("the nodes see the publisher's own address", func(t *testing.T) {
		publishFrom(t, net.IPv4(127, 0, 0, 2), fp.rtmpAddr, "live/proxied")
		owner, addr := publisherOf(t, nodes, "live/proxied")
		if !strings.HasPrefix(addr, "127.0.0.2:") {
			t.Errorf("meshcast-%d shows publisher.remote_addr %q, want the publisher's 127.0.0.2:PORT", owner+1, addr)
		}
	})
	return stopPublisher
}

// TestNginxInFront runs deploy/nginx/meshcast.conf in front of three nodes.
func TestNginxInFront(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	nodes := startProxiedCluster(t)
	fp := startNginx(t, nodes)
	checkInFront(t, fp, nodes)
}

// TestHAProxyInFront runs deploy/haproxy/haproxy.cfg in front of three
// nodes, and drains one.
func TestHAProxyInFront(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test: skipped with -short")
	}
	nodes := startProxiedCluster(t)
	fp, check := startHAProxy(t, nodes)
	stop := checkInFront(t, fp, nodes)
	stop()

	t.Run("a draining node gets no new requests", func(t *testing.T) {
		// A stream that HAProxy sends to node h and that another node owns,
		// so that draining h leaves the stream's owner alone.
		const name = "live/drained"
		if code := e2eutil.FLVStarts(fp.httpURL + "/" + name + ".flv?where"); code == 200 {
			t.Fatalf("%s is live before it is published", name)
		}
		h := fp.servedBy(t, "/"+name+".flv?where").node
		if h < 0 {
			t.Fatal("HAProxy sent the request to no node")
		}
		owner := (h + 1) % len(nodes)
		e2eutil.PublishFFmpeg(t, fmt.Sprintf("rtmp://localhost:%d/%s", nodes[owner].RTMPPort, name))
		e2eutil.WaitLiveHTTP(t, nodes[owner].HTTPURL, name)
		viewer := e2eutil.PlayFLV(t, fp.httpURL+"/"+name+".flv?viewer")
		t.Cleanup(viewer.Close)
		testutil.WaitFor(t, 10*time.Second, "the HTTP-FLV viewer on the draining node", func() bool {
			s, ok := e2eutil.GetStream(t, nodes[h].HTTPURL, name)
			return ok && s.Viewers["flv"] == 1 && viewer.Bytes.Load() > 0
		})

		drained := nodes[h]
		t.Logf("SIGTERM to meshcast-%d", h+1)
		sent := time.Now()
		drained.Cmd.Process.Signal(syscall.SIGTERM)
		testutil.WaitFor(t, 2*time.Second, "/readyz to answer 503", func() bool {
			code, _ := e2eutil.HTTPGetQuiet(drained.HTTPURL + "/readyz")
			return code == 503
		})
		if code, err := e2eutil.HTTPGetQuiet(drained.HTTPURL + "/healthz"); code != 200 {
			t.Errorf("/healthz of the draining node: %d %v, want 200", code, err)
		}

		// HAProxy takes h out after fall failed checks, inter apart.
		bound := time.Duration(check.fall)*check.inter + check.timeout + 2*time.Second
		var moved time.Duration
		var before int64 // what the draining node's viewer had by then
		for k := 0; ; k++ {
			uri := fmt.Sprintf("/%s.flv?after=%d", name, k)
			code := e2eutil.FLVStarts(fp.httpURL + uri)
			if r := fp.servedBy(t, uri); r.node != h && code == 200 {
				moved, before = time.Since(sent), viewer.Bytes.Load()
				break
			}
			if time.Since(sent) > bound {
				t.Fatalf("HAProxy still sends new requests to the draining node %v after SIGTERM (its checks: %d × %v)", time.Since(sent).Round(time.Millisecond), check.fall, check.inter)
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("new requests leave the draining node %v after SIGTERM", moved.Round(time.Millisecond))
		for k := range 3 {
			uri := fmt.Sprintf("/%s.flv?later=%d", name, k)
			if code := e2eutil.FLVStarts(fp.httpURL + uri); code != 200 {
				t.Errorf("GET %s: %d, want 200", uri, code)
			}
			if r := fp.servedBy(t, uri); r.node == h {
				t.Errorf("GET %s went to the draining node", uri)
			}
		}
		e2eutil.ProbeCodecs(t, fp.httpURL+"/"+name+".flv")

		// The draining node's own viewer plays on until the grace ends,
		// then the node exits 0.
		if err := drained.Exit(t, drainGrace+10*time.Second); err != nil {
			t.Errorf("meshcast exited with %v after SIGTERM, want 0", err)
		}
		took := time.Since(sent)
		t.Logf("the drained node exited %v after SIGTERM", took.Round(time.Millisecond))
		if took < drainGrace-500*time.Millisecond {
			t.Errorf("meshcast exited %v after SIGTERM, before its %v drain grace", took.Round(time.Millisecond), drainGrace)
		}
		if viewer.Bytes.Load() <= before {
			t.Errorf("the draining node's HTTP-FLV viewer got nothing after new requests had moved away")
		}
	})
}
