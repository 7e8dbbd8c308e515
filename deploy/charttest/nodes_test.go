package charttest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// meshcastBin is the meshcast binary TestMain builds from the main module.
var meshcastBin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "charttest")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		meshcastBin = filepath.Join(dir, "meshcast")
		build := exec.Command("go", "build", "-o", meshcastBin, "./cmd/meshcast")
		build.Dir = "../.." // the main module: this module must not build it
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build meshcast:", err)
			return 1
		}
		return m.Run()
	}())
}

// nodes is a value set's rendering as the tests below read it.
type nodes struct {
	vs        valueSet
	objs      []object
	set       *appsv1.StatefulSet
	container corev1.Container
	args      []string
}

// renderNodes renders vs and finds the nodes' StatefulSet and container.
func renderNodes(t *testing.T, vs valueSet) nodes {
	t.Helper()
	objs := objects(t, vs, render(t, loadChart(t), vs))
	n := nodes{vs: vs, objs: objs}
	n.set = find[appsv1.StatefulSet](objs, "StatefulSet")[releaseName]
	if n.set == nil {
		t.Fatalf("no StatefulSet %q in %s", releaseName, renderedSorted(objs))
	}
	for _, c := range n.set.Spec.Template.Spec.Containers {
		if c.Name == "meshcast" {
			n.container = c
		}
	}
	if n.container.Name == "" {
		t.Fatal("no meshcast container")
	}
	n.args = n.container.Args
	return n
}

// flag returns the value of --name=VALUE among args, and whether it is there.
func flag(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// podEnv are plausible values of the pod's downward-API variables.
var podEnv = map[string]string{
	"metadata.name": "meshcast-1",
	"status.podIP":  "10.244.1.7",
	"status.hostIP": "192.0.2.21",
}

// expand substitutes $(VAR) in s as the kubelet does, from env; a reference
// to a variable the container does not define is an error (the kubelet
// would leave it as it is, and meshcast would get "$(VAR)").
func expand(s string, env map[string]string) (string, error) {
	var missing []string
	out := regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		name := m[2 : len(m)-1]
		v, ok := env[name]
		if !ok {
			missing = append(missing, name)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%q refers to %v, which the container does not define", s, missing)
	}
	return out, nil
}

// containerEnv is the container's environment with plausible values of
// its downward-API fields.
func containerEnv(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			v, ok := podEnv[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Fatalf("env %s: no test value for field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = v
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		}
	}
	return env
}

// The container's arguments, with the pod's variables and the mounted
// files in place, pass meshcast serve --check: the chart passes no flag or
// value the binary refuses.
func TestServeCheck(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			n := renderNodes(t, vs)
			root := t.TempDir()
			mounts := mountFiles(t, n, root)
			env := containerEnv(t, n.container)
			args := make([]string, 0, len(n.args)+1)
			for _, a := range n.args {
				a, err := expand(a, env)
				if err != nil {
					t.Fatal(err)
				}
				if flagName, v, ok := strings.Cut(a, "="); ok {
					for _, m := range mounts {
						if v == m || strings.HasPrefix(v, m+"/") {
							a = flagName + "=" + filepath.Join(root, v)
							break
						}
					}
				}
				args = append(args, a)
			}
			if args[0] != "serve" {
				t.Fatalf("args %q: want serve first (the image's entrypoint is meshcast)", args)
			}
			cmd := exec.Command(meshcastBin, append(args, "--check")...)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if err != nil || stdout.String() != "configuration ok\n" {
				t.Fatalf("meshcast %s --check: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, &stdout, &stderr)
			}
		})
	}
}

// mountFiles writes under root what the container's volume mounts would
// show: the items of its Secret volumes, from the rendered Secret or, for
// a Secret of the user's, made-up contents, and a certificate for TLS. It
// returns the mount paths.
func mountFiles(t *testing.T, n nodes, root string) []string {
	t.Helper()
	secrets := find[corev1.Secret](n.objs, "Secret")
	volumes := map[string]corev1.Volume{}
	for _, v := range n.set.Spec.Template.Spec.Volumes {
		volumes[v.Name] = v
	}
	claims := map[string]bool{}
	for _, c := range n.set.Spec.VolumeClaimTemplates {
		claims[c.Name] = true
	}
	var paths []string
	for _, m := range n.container.VolumeMounts {
		paths = append(paths, m.MountPath)
		dir := filepath.Join(root, m.MountPath)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		v, ok := volumes[m.Name]
		if !ok {
			if !claims[m.Name] {
				t.Fatalf("mount %s: no volume or claim template %q", m.MountPath, m.Name)
			}
			continue
		}
		if v.Secret == nil {
			continue
		}
		data := map[string][]byte{}
		if s, ok := secrets[v.Secret.SecretName]; ok {
			data = s.Data
		} else {
			data = userSecret(t, v.Secret.SecretName)
		}
		keys := []string{}
		if len(v.Secret.Items) == 0 {
			for k := range data {
				keys = append(keys, k)
			}
		}
		for _, it := range v.Secret.Items {
			if _, ok := data[it.Key]; !ok {
				t.Fatalf("volume %s: Secret %s has no key %q", v.Name, v.Secret.SecretName, it.Key)
			}
			keys = append(keys, it.Key)
		}
		for _, k := range keys {
			p := k
			for _, it := range v.Secret.Items {
				if it.Key == k {
					p = it.Path
				}
			}
			if err := os.WriteFile(filepath.Join(dir, p), data[k], 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return paths
}

// userSecret makes up the contents of the Secrets the "everything" value
// set names, as their README section describes them.
func userSecret(t *testing.T, name string) map[string][]byte {
	t.Helper()
	switch name {
	case "meshcast-credentials":
		return map[string][]byte{
			"cluster-secret": []byte("a-cluster-secret-from-the-user\n"),
			"publish-keys":   []byte("live=publish-key-1\n# studio\nstudio/*=publish-key-2\n"),
			"admin-token":    []byte(""),
		}
	case "redis-credentials":
		return map[string][]byte{"redis-url": []byte("redis://:password@redis.example.internal:6379/0\n")}
	case "meshcast-tls":
		cert, key := selfSigned(t)
		return map[string][]byte{"tls.crt": cert, "tls.key": key, "ca.crt": cert}
	}
	t.Fatalf("no test contents for Secret %q", name)
	return nil
}

// selfSigned returns a PEM certificate and key for live.example.com.
func selfSigned(t *testing.T) (cert, key []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "live.example.com"},
		DNSNames: []string{"live.example.com"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// The nodes: one per pod, named and addressed from the pod, probed on
// /readyz and /healthz, given longer than their drain to stop, unprivileged,
// with WebRTC and SRT on host ports only when on.
func TestNodes(t *testing.T) {
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			n := renderNodes(t, vs)
			pod := n.set.Spec.Template.Spec
			want := map[string]string{"node-id": "$(POD_NAME)", "advertise-host": "$(POD_IP)",
				"cluster-secret-file": "/etc/meshcast/secrets/cluster-secret",
				"publish-keys-file":   "/etc/meshcast/secrets/publish-keys",
				"admin-token-file":    "/etc/meshcast/secrets/admin-token"}
			for name, v := range want {
				if got, _ := flag(n.args, name); got != v {
					t.Errorf("--%s=%q, want %q", name, got, v)
				}
			}
			env := map[string]string{}
			for _, e := range n.container.Env {
				if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
					env[e.Name] = e.ValueFrom.FieldRef.FieldPath
				}
			}
			if env["POD_NAME"] != "metadata.name" || env["POD_IP"] != "status.podIP" {
				t.Errorf("env from the pod: %v", env)
			}
			if sel, err := metaSelector(n.set); err != nil || !sel.Matches(labels.Set(n.set.Spec.Template.Labels)) {
				t.Errorf("the StatefulSet's selector does not select its pods (%v)", err)
			}
			if n.set.Spec.ServiceName == "" || find[corev1.Service](n.objs, "Service")[n.set.Spec.ServiceName] == nil {
				t.Errorf("serviceName %q: no such Service", n.set.Spec.ServiceName)
			}

			// Probes.
			for name, p := range map[string]*corev1.Probe{"/readyz": n.container.ReadinessProbe, "/healthz": n.container.LivenessProbe} {
				if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != name || !hasPort(n.container, p.HTTPGet.Port, corev1.ProtocolTCP) {
					t.Errorf("probe of %s: %+v", name, p)
				}
			}

			// Stopping: longer than the drain.
			dg, _ := flag(n.args, "drain-grace")
			grace, err := time.ParseDuration(dg)
			if err != nil {
				t.Fatalf("--drain-grace=%q: %v", dg, err)
			}
			if pod.TerminationGracePeriodSeconds == nil || time.Duration(*pod.TerminationGracePeriodSeconds)*time.Second <= grace {
				t.Errorf("terminationGracePeriodSeconds %v, not longer than --drain-grace %v", pod.TerminationGracePeriodSeconds, grace)
			}

			// Privileges.
			psc, sc := pod.SecurityContext, n.container.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
				t.Errorf("pod security context %+v: want a user other than root", psc)
			}
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("container security context %+v: want a read-only root and no privilege escalation", sc)
			}
			if n.container.Resources.Requests.Cpu().IsZero() || n.container.Resources.Limits.Memory().IsZero() {
				t.Errorf("resources %+v: want CPU requested and memory limited", n.container.Resources)
			}

			// Host ports: WebRTC's and SRT's, matching their flags, and no other.
			webrtc := vs.name != "no webrtc"
			hostPorts := map[string]corev1.ContainerPort{}
			for _, p := range n.container.Ports {
				if p.HostPort != 0 {
					hostPorts[p.Name] = p
					if p.HostPort != p.ContainerPort {
						t.Errorf("port %s: host port %d to %d: WebRTC and SRT clients are given the same port", p.Name, p.HostPort, p.ContainerPort)
					}
				}
			}
			udp, hasUDP := hostPorts["webrtc-udp"]
			natIPs, hasNAT := flag(n.args, "webrtc-nat-ips")
			if webrtc {
				addr, _ := flag(n.args, "webrtc-udp-addr")
				if !hasUDP || udp.Protocol != corev1.ProtocolUDP || addr != ":"+strconv.Itoa(int(udp.ContainerPort)) {
					t.Errorf("WebRTC: host port %+v, --webrtc-udp-addr=%q: want the same UDP port", udp, addr)
				}
				if natIPs != "$(HOST_IP)" || env["HOST_IP"] != "status.hostIP" {
					t.Errorf("--webrtc-nat-ips=%q, HOST_IP from %q: want the host's IP", natIPs, env["HOST_IP"])
				}
				if tcp, ok := flag(n.args, "webrtc-tcp-addr"); ok {
					p := hostPorts["webrtc-tcp"]
					if p.Protocol != corev1.ProtocolTCP || tcp != ":"+strconv.Itoa(int(p.HostPort)) {
						t.Errorf("--webrtc-tcp-addr=%q: host port %+v", tcp, p)
					}
				} else if _, ok := hostPorts["webrtc-tcp"]; ok {
					t.Error("a WebRTC TCP host port without --webrtc-tcp-addr")
				}
			} else {
				for _, p := range n.container.Ports {
					if p.Protocol == corev1.ProtocolUDP || p.HostPort != 0 {
						t.Errorf("WebRTC and SRT off: port %+v", p)
					}
				}
				if hasNAT {
					t.Errorf("WebRTC off: --webrtc-nat-ips=%q", natIPs)
				}
			}
			srt, hasSRT := hostPorts["srt"]
			srtAddr, _ := flag(n.args, "srt-addr")
			if hasSRT != (srtAddr != "") || (hasSRT && (srt.Protocol != corev1.ProtocolUDP || srtAddr != ":"+strconv.Itoa(int(srt.HostPort)))) {
				t.Errorf("SRT: host port %+v, --srt-addr=%q", srt, srtAddr)
			}
			for name := range hostPorts {
				if name != "webrtc-udp" && name != "webrtc-tcp" && name != "srt" {
					t.Errorf("host port %s: only WebRTC and SRT need one", name)
				}
			}

			// Services reach the pods on ports the container has.
			for name, s := range find[corev1.Service](n.objs, "Service") {
				if s.Spec.Selector == nil {
					continue // the Ingress's denied paths
				}
				if !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(n.set.Spec.Template.Labels)) {
					if name == releaseName+"-redis" {
						continue
					}
					t.Errorf("Service %s selects no node", name)
					continue
				}
				for _, p := range s.Spec.Ports {
					if !hasPort(n.container, p.TargetPort, p.Protocol) {
						t.Errorf("Service %s port %s: target %s is no %s port of the container", name, p.Name, p.TargetPort.String(), p.Protocol)
					}
				}
			}

			// Redis: the bundled one's Service, or the user's.
			redis, hasRedis := flag(n.args, "redis")
			redisFile, hasRedisFile := flag(n.args, "redis-file")
			switch vs.name {
			case "external redis":
				if redis != "redis://redis.example.internal:6379/2" {
					t.Errorf("--redis=%q, want redis.url", redis)
				}
			case "everything":
				if !hasRedisFile || hasRedis {
					t.Errorf("--redis-file=%q, --redis=%q: want the URL from the Secret", redisFile, redis)
				}
			default:
				svc := find[corev1.Service](n.objs, "Service")[releaseName+"-redis"]
				rs := find[appsv1.StatefulSet](n.objs, "StatefulSet")[releaseName+"-redis"]
				if svc == nil || rs == nil || redis != "redis://"+svc.Name+":6379/0" || svc.Spec.Ports[0].Port != 6379 {
					t.Fatalf("--redis=%q; want the bundled Redis's Service on 6379 (%s)", redis, renderedSorted(n.objs))
				}
				if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(rs.Spec.Template.Labels)) {
					t.Error("the Redis Service does not select the Redis pod")
				}
				rc := rs.Spec.Template.Spec.Containers[0]
				if !strings.HasPrefix(rc.Image, "redis:7-alpine") || !hasPort(rc, svc.Spec.Ports[0].TargetPort, corev1.ProtocolTCP) {
					t.Errorf("Redis container %s, ports %+v", rc.Image, rc.Ports)
				}
			}
		})
	}
}

// metaSelector is the StatefulSet's label selector.
func metaSelector(s *appsv1.StatefulSet) (labels.Selector, error) {
	return labels.ValidatedSelectorFromSet(s.Spec.Selector.MatchLabels)
}

// hasPort reports whether container c has port p (by name or number) with
// protocol proto (TCP when empty).
func hasPort(c corev1.Container, p intstr.IntOrString, proto corev1.Protocol) bool {
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for _, cp := range c.Ports {
		pr := cp.Protocol
		if pr == "" {
			pr = corev1.ProtocolTCP
		}
		if pr == proto && ((p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal)) {
			return true
		}
	}
	return false
}

// The chart's image defaults to its appVersion.
func TestImage(t *testing.T) {
	c := loadChart(t)
	n := renderNodes(t, valueSets[0])
	if want := "meshcast:" + c.Metadata.AppVersion; n.container.Image != want {
		t.Errorf("image %q, want %q", n.container.Image, want)
	}
	n = renderNodes(t, valueSet{"tagged", map[string]any{"image": map[string]any{"repository": "registry.example.com/meshcast", "tag": "1.2.3"}}})
	if want := "registry.example.com/meshcast:1.2.3"; n.container.Image != want {
		t.Errorf("image %q, want %q", n.container.Image, want)
	}
}

// The Ingress carries WebSockets and never buffers (HTTP-FLV never ends),
// and routes /metrics and /internal/ to no node.
func TestIngress(t *testing.T) {
	n := renderNodes(t, valueSets[len(valueSets)-1])
	ing := find[networkingv1.Ingress](n.objs, "Ingress")[releaseName]
	if ing == nil {
		t.Fatalf("no Ingress in %s", renderedSorted(n.objs))
	}
	for k, v := range map[string]string{
		"nginx.ingress.kubernetes.io/proxy-buffering":         "off",
		"nginx.ingress.kubernetes.io/proxy-request-buffering": "off",
		"nginx.ingress.kubernetes.io/proxy-http-version":      "1.1",
	} {
		if ing.Annotations[k] != v {
			t.Errorf("annotation %s=%q, want %q", k, ing.Annotations[k], v)
		}
	}
	for _, k := range []string{"nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"} {
		if s, err := strconv.Atoi(ing.Annotations[k]); err != nil || s < 3600 {
			t.Errorf("annotation %s=%q: want an hour or more", k, ing.Annotations[k])
		}
	}
	services := find[corev1.Service](n.objs, "Service")
	routes := map[string]string{}
	for _, r := range ing.Spec.Rules {
		if r.Host != "live.example.com" {
			t.Errorf("host %q", r.Host)
		}
		for _, p := range r.HTTP.Paths {
			s := services[p.Backend.Service.Name]
			if s == nil {
				t.Fatalf("path %s: no Service %s", p.Path, p.Backend.Service.Name)
			}
			found := false
			for _, sp := range s.Spec.Ports {
				found = found || sp.Name == p.Backend.Service.Port.Name
			}
			if !found {
				t.Errorf("path %s: Service %s has no port %q", p.Path, s.Name, p.Backend.Service.Port.Name)
			}
			routes[p.Path] = s.Name
			if s.Spec.Selector == nil && p.Path == "/" {
				t.Error("/ goes to no node")
			}
		}
	}
	for _, p := range []string{"/metrics", "/internal/"} {
		if s := services[routes[p]]; s == nil || s.Spec.Selector != nil {
			t.Errorf("%s routed to %q, want a Service without pods", p, routes[p])
		}
	}
	if len(ing.Spec.TLS) != 1 || ing.Spec.TLS[0].SecretName != "live-tls" {
		t.Errorf("TLS %+v", ing.Spec.TLS)
	}
	if public, _ := flag(n.args, "public-host"); public != "live.example.com" {
		t.Errorf("--public-host=%q, want the Ingress's host", public)
	}
}

// The ServiceMonitor scrapes /metrics of every node through the headless
// Service alone, as job meshcast (the dashboard's).
func TestServiceMonitor(t *testing.T) {
	n := renderNodes(t, valueSets[len(valueSets)-1])
	sm := find[ServiceMonitor](n.objs, "ServiceMonitor")[releaseName]
	if sm == nil {
		t.Fatalf("no ServiceMonitor in %s", renderedSorted(n.objs))
	}
	if sm.Labels["release"] != "prometheus" {
		t.Errorf("labels %v: want metrics.serviceMonitor.labels", sm.Labels)
	}
	var selected []*corev1.Service
	for _, s := range find[corev1.Service](n.objs, "Service") {
		if labels.SelectorFromSet(sm.Spec.Selector.MatchLabels).Matches(labels.Set(s.Labels)) {
			selected = append(selected, s)
		}
	}
	if len(selected) != 1 || selected[0].Spec.ClusterIP != corev1.ClusterIPNone || !selected[0].Spec.PublishNotReadyAddresses {
		t.Fatalf("selects %d Services, want the headless one", len(selected))
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("endpoints %+v", sm.Spec.Endpoints)
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Path != "/metrics" || ep.Port != selected[0].Spec.Ports[0].Name {
		t.Errorf("endpoint %+v", ep)
	}
	for _, d := range []string{ep.Interval, ep.ScrapeTimeout} {
		if !promDuration.MatchString(d) {
			t.Errorf("duration %q is not the CRD's", d)
		}
	}
	job := false
	for _, r := range ep.Relabelings {
		job = job || (r.TargetLabel == "job" && r.Replacement != nil && *r.Replacement == "meshcast")
	}
	if !job {
		t.Error("no relabeling to job meshcast, which the dashboard selects")
	}
	if got := sm.Spec.NamespaceSelector.MatchNames; len(got) != 1 || got[0] != namespace {
		t.Errorf("namespaces %v", got)
	}
}
