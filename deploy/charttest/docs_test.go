package charttest

import (
	"bytes"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/strvals"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// The chart's copy of the Grafana dashboard (a chart reads only files
// inside it) is deploy/grafana/meshcast.json byte for byte.
func TestDashboardCopy(t *testing.T) {
	if !bytes.Equal(readFile(t, chartDir+"/dashboards/meshcast.json"), readFile(t, "../grafana/meshcast.json")) {
		t.Fatal("deploy/helm/meshcast/dashboards/meshcast.json differs from deploy/grafana/meshcast.json: copy it again")
	}
}

// The dashboard's ConfigMap holds the dashboard, labelled for Grafana's
// sidecar.
func TestDashboardConfigMap(t *testing.T) {
	want := strings.TrimSuffix(string(readFile(t, "../grafana/meshcast.json")), "\n")
	for _, vs := range valueSets {
		n := renderNodes(t, vs)
		cm := find[corev1.ConfigMap](n.objs, "ConfigMap")[releaseName+"-dashboard"]
		if cm == nil {
			t.Fatalf("%s: no dashboard ConfigMap in %s", vs.name, renderedSorted(n.objs))
		}
		if cm.Labels["grafana_dashboard"] != "1" {
			t.Errorf("%s: labels %v: want grafana_dashboard: \"1\"", vs.name, cm.Labels)
		}
		if got := cm.Data["meshcast.json"]; got != want {
			t.Errorf("%s: meshcast.json is %d bytes, not the dashboard's %d", vs.name, len(got), len(want))
		}
		if wantNS := map[bool]string{true: "monitoring", false: namespace}[vs.name == "everything"]; cm.Namespace != wantNS {
			t.Errorf("%s: namespace %q, want %q", vs.name, cm.Namespace, wantNS)
		}
	}
	n := renderNodes(t, valueSet{"no dashboard", map[string]any{"metrics": map[string]any{"dashboard": map[string]any{"enabled": false}}}})
	if len(find[corev1.ConfigMap](n.objs, "ConfigMap")) != 0 {
		t.Error("metrics.dashboard.enabled=false: a ConfigMap all the same")
	}
}

// wholeValues are values passed to Kubernetes as they are (resources,
// security contexts): documented as one row each.
var wholeValues = []string{"resources", "redis.resources", "podSecurityContext", "securityContext"}

// valueKeys lists the dotted keys of values: a key whose value is a map
// with keys of its own is listed through them, unless it is one of
// wholeValues; any other (a scalar, a list, an empty map) as itself.
func valueKeys(prefix string, values map[string]any) []string {
	var keys []string
	for _, k := range slices.Sorted(maps.Keys(values)) {
		if m, ok := values[k].(map[string]any); ok && len(m) > 0 && !slices.Contains(wholeValues, prefix+k) {
			keys = append(keys, valueKeys(prefix+k+".", m)...)
			continue
		}
		keys = append(keys, prefix+k)
	}
	return keys
}

// Every value of values.yaml has a row in the README's table, and every row
// names a value.
func TestREADMEValues(t *testing.T) {
	var values map[string]any
	if err := yaml.Unmarshal(readFile(t, chartDir+"/values.yaml"), &values); err != nil {
		t.Fatal(err)
	}
	keys := valueKeys("", values)
	documented := map[string]bool{}
	row := regexp.MustCompile("^\\| `([A-Za-z0-9.]+)` \\|")
	for line := range strings.SplitSeq(string(readFile(t, chartDir+"/README.md")), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			documented[m[1]] = true
		}
	}
	for _, k := range keys {
		if !documented[k] {
			t.Errorf("value %s has no row in deploy/helm/meshcast/README.md", k)
		}
		delete(documented, k)
	}
	for k := range documented {
		t.Errorf("README.md documents %s, which values.yaml lacks", k)
	}
	if t.Failed() {
		t.Logf("values: %v", keys)
	}
}

// The README's helm install command, its $(...) filled in, sets what it
// means to: the image, the cluster secret and a publish key of app live.
func TestREADMEInstall(t *testing.T) {
	var line string
	for l := range strings.SplitSeq(string(readFile(t, chartDir+"/README.md")), "\n") {
		if strings.HasPrefix(l, "helm install ") {
			line = l
		}
	}
	if line == "" {
		t.Fatal("README.md gives no helm install command")
	}
	line = regexp.MustCompile(`\$\(openssl rand -hex (\d+)\)`).ReplaceAllStringFunc(line, func(string) string {
		return "0123456789abcdef0123456789abcdef"
	})
	vals := map[string]any{}
	fields := strings.Fields(line)
	for i := 0; i < len(fields)-1; i++ {
		arg := strings.ReplaceAll(fields[i+1], `"`, "")
		var err error
		switch fields[i] {
		case "--set":
			err = strvals.ParseInto(arg, vals)
		case "--set-string":
			err = strvals.ParseIntoString(arg, vals)
		}
		if err != nil {
			t.Fatalf("%s %s: %v", fields[i], arg, err)
		}
	}
	n := renderNodes(t, valueSet{"README", vals})
	s := find[corev1.Secret](n.objs, "Secret")[releaseName]
	if s == nil {
		t.Fatal("no Secret")
	}
	if got := string(s.Data["publish-keys"]); got != "live=0123456789abcdef0123456789abcdef" {
		t.Errorf("publish-keys %q", got)
	}
	if got := string(s.Data["cluster-secret"]); got != "0123456789abcdef0123456789abcdef" {
		t.Errorf("cluster-secret %q", got)
	}
	if !strings.HasPrefix(n.container.Image, "registry.example.com/meshcast:") {
		t.Errorf("image %q", n.container.Image)
	}
}
