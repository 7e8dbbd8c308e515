package charttest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// chartDir is the chart under test, from this module's directory.
const chartDir = "../helm/meshcast"

// release names the release every test renders.
const (
	releaseName = "meshcast"
	namespace   = "streaming"
)

// valueSet is one set of values the chart is rendered with: --set style
// overrides of the chart's values.yaml.
type valueSet struct {
	name string
	set  map[string]any
}

// valueSets are the configurations every test renders: the defaults (three
// nodes, bundled Redis, WebRTC and SRT on host ports), an external Redis,
// no WebRTC, and every option on.
var valueSets = []valueSet{
	{name: "defaults", set: map[string]any{}},
	{name: "external redis", set: map[string]any{
		"redis": map[string]any{"enabled": false, "url": "redis://redis.example.internal:6379/2"},
		"secrets": map[string]any{
			"clusterSecret": "a-cluster-secret-of-32-characters",
			"publishKeys":   []any{"live=publish-key-1", "studio/*=publish-key-2"},
			"adminToken":    "an-admin-token-0123",
		},
	}},
	{name: "no webrtc", set: map[string]any{
		"webrtc": map[string]any{"enabled": false},
		"srt":    map[string]any{"enabled": false},
	}},
	{name: "everything", set: map[string]any{
		"replicas": 5,
		"redis":    map[string]any{"enabled": false, "existingSecret": "redis-credentials"},
		"secrets":  map[string]any{"existingSecret": "meshcast-credentials"},
		"tls":      map[string]any{"enabled": true, "secretName": "meshcast-tls"},
		"rtsp":     map[string]any{"enabled": true},
		"ingress":  map[string]any{"enabled": true, "host": "live.example.com", "tlsSecretName": "live-tls"},
		"metrics": map[string]any{
			"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "prometheus"}},
			"dashboard":      map[string]any{"namespace": "monitoring"},
		},
		"recording": map[string]any{"mode": "all", "persistence": map[string]any{"enabled": true, "storageClass": "fast"}},
		"config": map[string]any{
			"region":            "eu",
			"trustedProxies":    []any{"10.0.0.0/8"},
			"drainGraceSeconds": 120,
			"extraArgs":         []any{"--max-viewers-per-ip=64", "--mesh"},
		},
		"webrtc": map[string]any{"tcpPort": 0, "iceServers": []any{"stun:stun.example.net:3478"}},
		"service": map[string]any{"ingest": map[string]any{
			"type": "LoadBalancer", "externalTrafficPolicy": "Local",
			"loadBalancerSourceRanges": []any{"203.0.113.0/24"},
		}},
		"podDisruptionBudget": map[string]any{"enabled": false},
	}},
}

// loadChart loads the chart with Helm's loader.
func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("chart metadata: %v", err)
	}
	return c
}

// render renders the chart with vs as helm install would (no cluster: lookup
// finds nothing) and returns the manifests by template name.
func render(t *testing.T, c *chart.Chart, vs valueSet) map[string]string {
	t.Helper()
	vals, err := util.ToRenderValues(c, vs.set, common.ReleaseOptions{
		Name: releaseName, Namespace: namespace, Revision: 1, IsInstall: true,
	}, nil)
	if err != nil {
		t.Fatalf("%s: values: %v", vs.name, err)
	}
	out, err := engine.Render(c, vals)
	if err != nil {
		t.Fatalf("%s: render: %v", vs.name, err)
	}
	return out
}

// object is one rendered Kubernetes object: its kind and the typed value it
// decoded into.
type object struct {
	source string // the template that rendered it
	kind   string
	name   string
	obj    any
}

// decoders decodes each kind the chart renders, strictly, into its API type.
var decoders = map[string]func([]byte) (any, string, error){
	"v1/Secret":                               decode[corev1.Secret],
	"v1/Service":                              decode[corev1.Service],
	"v1/ConfigMap":                            decode[corev1.ConfigMap],
	"apps/v1/StatefulSet":                     decode[appsv1.StatefulSet],
	"policy/v1/PodDisruptionBudget":           decode[policyv1.PodDisruptionBudget],
	"networking.k8s.io/v1/Ingress":            decode[networkingv1.Ingress],
	"monitoring.coreos.com/v1/ServiceMonitor": decode[ServiceMonitor],
}

// decode reads doc into a T: an unknown or misspelt field, a duplicate key
// or a value of the wrong type is an error.
func decode[T any](doc []byte) (any, string, error) {
	v := new(T)
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		return nil, "", err
	}
	var meta struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return nil, "", err
	}
	return v, meta.Metadata.Name, nil
}

// objects splits the rendered manifests into documents and decodes each.
func objects(t *testing.T, vs valueSet, rendered map[string]string) []object {
	t.Helper()
	var objs []object
	for _, source := range slices.Sorted(maps.Keys(rendered)) {
		if path.Ext(source) != ".yaml" {
			continue // NOTES.txt and _helpers.tpl
		}
		r := k8syaml.NewYAMLReader(bufio.NewReader(strings.NewReader(rendered[source])))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %s: split: %v", vs.name, source, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			var tm struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %s: %v\n%s", vs.name, source, err, doc)
			}
			key := tm.APIVersion + "/" + tm.Kind
			dec, ok := decoders[key]
			if !ok {
				t.Fatalf("%s: %s: no decoder for %s", vs.name, source, key)
			}
			obj, name, err := dec(doc)
			if err != nil {
				t.Fatalf("%s: %s: %s: %v\n%s", vs.name, source, key, err, doc)
			}
			if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
				t.Errorf("%s: %s: %s name %q: %v", vs.name, source, tm.Kind, name, errs)
			}
			objs = append(objs, object{source: source, kind: tm.Kind, name: name, obj: obj})
		}
	}
	return objs
}

// stripComments drops the comment lines of a YAML document.
func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
		}
	}
	return out
}

// find returns the rendered objects of kind, by name.
func find[T any](objs []object, kind string) map[string]*T {
	m := map[string]*T{}
	for _, o := range objs {
		if o.kind == kind {
			m[o.name] = o.obj.(*T)
		}
	}
	return m
}

// The chart loads and Helm's linter finds no error with any value set.
func TestLint(t *testing.T) {
	loadChart(t)
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			res := lint.RunAll(chartDir, vs.set, namespace)
			for _, m := range res.Messages {
				t.Logf("lint: %s", m)
				if m.Severity >= support.ErrorSev {
					t.Errorf("lint error: %s", m)
				}
			}
		})
	}
}

// Every object the chart renders decodes strictly into its API type.
func TestRenderStrict(t *testing.T) {
	c := loadChart(t)
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			objs := objects(t, vs, render(t, c, vs))
			kinds := map[string]int{}
			for _, o := range objs {
				kinds[o.kind]++
			}
			t.Logf("rendered: %v", kinds)
			if kinds["StatefulSet"] == 0 || kinds["Service"] < 3 {
				t.Errorf("rendered %v: want the nodes' StatefulSet and at least 3 Services", kinds)
			}
		})
	}
}

// A chart that cannot work fails to render, saying why.
func TestRenderRefuses(t *testing.T) {
	c := loadChart(t)
	for _, tc := range []struct {
		vs   valueSet
		want string
	}{
		{valueSet{"no redis", map[string]any{"redis": map[string]any{"enabled": false}}}, "redis.url"},
		{valueSet{"short secret", map[string]any{"secrets": map[string]any{"clusterSecret": "short"}}}, "16 characters"},
		{valueSet{"tls without secret", map[string]any{"tls": map[string]any{"enabled": true}}}, "tls.secretName"},
	} {
		vals, err := util.ToRenderValues(c, tc.vs.set, common.ReleaseOptions{Name: releaseName, Namespace: namespace, IsInstall: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = engine.Render(c, vals)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: render error %v, want one naming %q", tc.vs.name, err, tc.want)
		}
	}
}

// renderedSorted is a stable listing of what a value set renders, for
// failure messages.
func renderedSorted(objs []object) string {
	var names []string
	for _, o := range objs {
		names = append(names, fmt.Sprintf("%s/%s", o.kind, o.name))
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// readFile reads a file of the repository for a test.
func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
