package charttest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// composeEnv is what deploy/compose.yaml's header asks to export.
var composeEnv = []string{
	"MESHCAST_CLUSTER_SECRET=compose-cluster-secret-of-the-tests",
	"MESHCAST_PUBLISH_KEY=compose-publish-key",
}

// loadCompose loads deploy/compose.yaml with the Compose Specification's
// own loader, as docker compose does, with env and profiles.
func loadCompose(t *testing.T, env []string, profiles ...string) (*types.Project, error) {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"../compose.yaml"},
		cli.WithEnv(env), cli.WithProfiles(profiles), cli.WithWorkingDirectory(".."),
		cli.WithInterpolation(true), cli.WithResolvedPaths(true))
	if err != nil {
		t.Fatal(err)
	}
	return opts.LoadProject(context.Background())
}

// TestCompose: deploy/compose.yaml loads as docker compose loads it, with
// and without the monitoring profile; it says which variable is missing
// when one is; every path it mounts exists; and each node's command
// passes meshcast serve --check.
func TestCompose(t *testing.T) {
	if _, err := loadCompose(t, composeEnv[:1]); err == nil || !strings.Contains(err.Error(), "MESHCAST_PUBLISH_KEY") {
		t.Errorf("loaded without MESHCAST_PUBLISH_KEY: %v, want an error naming it", err)
	}
	p, err := loadCompose(t, composeEnv)
	if err != nil {
		t.Fatalf("deploy/compose.yaml: %v", err)
	}
	for _, name := range []string{"meshcast-1", "meshcast-2", "meshcast-3", "redis", "nginx"} {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("no service %s", name)
		}
	}
	if _, ok := p.Services["grafana"]; ok {
		t.Errorf("grafana runs without --profile monitoring")
	}
	mon, err := loadCompose(t, composeEnv, "monitoring")
	if err != nil {
		t.Fatalf("deploy/compose.yaml --profile monitoring: %v", err)
	}
	for _, name := range []string{"prometheus", "grafana"} {
		if _, ok := mon.Services[name]; !ok {
			t.Errorf("--profile monitoring has no %s", name)
		}
	}
	for name, s := range mon.Services {
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeBind {
				if _, err := os.Stat(v.Source); err != nil {
					t.Errorf("%s mounts %s, which does not exist: %v", name, v.Source, err)
				}
			}
		}
	}
	for _, name := range []string{"meshcast-1", "meshcast-2", "meshcast-3"} {
		s := p.Services[name]
		if s.Build == nil || filepath.Base(s.Build.Dockerfile) != "Dockerfile" {
			t.Errorf("%s: not built from the Dockerfile: %+v", name, s.Build)
		}
		args := []string(s.Command)
		if len(args) == 0 || args[0] != "serve" {
			t.Errorf("%s: command %q does not start with serve", name, args)
			continue
		}
		checkServe(t, name, args, nil)
		// Each node's WebRTC port is published as is, over UDP.
		port := strings.TrimPrefix(argValue(args, "--webrtc-udp-addr"), ":")
		if !slices.ContainsFunc(s.Ports, func(pc types.ServicePortConfig) bool {
			return pc.Protocol == "udp" && pc.Published == port && strconv.FormatUint(uint64(pc.Target), 10) == port
		}) {
			t.Errorf("%s: --webrtc-udp-addr :%s is not published over UDP: %+v", name, port, s.Ports)
		}
	}
}

// TestDockerfile: the image's command with the settings its ENV lines set
// passes meshcast serve --check, and the image has ffmpeg.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	last := df[strings.LastIndex(df, "\nFROM "):]
	// ENV KEY=VALUE [KEY=VALUE...], continued over lines with a backslash.
	var env []string
	joined := strings.ReplaceAll(last, "\\\n", " ")
	for line := range strings.SplitSeq(joined, "\n") {
		if rest, ok := strings.CutPrefix(line, "ENV "); ok {
			for kv := range strings.FieldsSeq(rest) {
				env = append(env, kv)
			}
		}
	}
	cmd := regexp.MustCompile(`(?m)^CMD \["([^"]+)"\]`).FindStringSubmatch(last)
	entry := regexp.MustCompile(`(?m)^ENTRYPOINT \["meshcast"\]`).MatchString(last)
	if cmd == nil || !entry || cmd[1] != "serve" {
		t.Fatalf("Dockerfile: want ENTRYPOINT [\"meshcast\"] and CMD [\"serve\"]")
	}
	if !strings.Contains(last, "ffmpeg") {
		t.Errorf("Dockerfile: the image has no ffmpeg")
	}
	// The directories the ENV names exist in the image; here, in a temp dir.
	root := t.TempDir()
	for i, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(v, "/") {
			os.MkdirAll(filepath.Join(root, v), 0o755)
			env[i] = k + "=" + filepath.Join(root, v)
		}
	}
	checkServe(t, "Dockerfile", []string{"serve"}, env)
}

// checkServe runs meshcast with args and --check, in env.
func checkServe(t *testing.T, what string, args, env []string) {
	t.Helper()
	cmd := exec.Command(meshcastBin, append(slices.Clone(args), "--check")...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stdout.String() != "configuration ok\n" {
		t.Errorf("%s: meshcast %s --check: %v\n%s%s", what, strings.Join(args, " "), err, &stdout, &stderr)
	}
}

// argValue returns the value after flag in args.
func argValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}
