package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// Secret settings can come from files, read again by each Load.
func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	token := write("token", "an-admin-token-of-the-tests\n")
	keys := write("keys", "# the keys\nlive=key-of-live-0001\n\nlive/cam*=key-of-cams-002\n")
	cfg, err := Load([]string{"--admin-token-file", token, "--publish-auth", "always", "--publish-keys-file", keys}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AdminToken != "an-admin-token-of-the-tests" {
		t.Errorf("AdminToken = %q", cfg.AdminToken)
	}
	if want := []string{"live=key-of-live-0001", "live/cam*=key-of-cams-002"}; !slices.Equal(cfg.PublishKeys, want) {
		t.Errorf("PublishKeys = %q, want %q", cfg.PublishKeys, want)
	}
	if _, err := Load([]string{"--admin-token", "another-admin-token-xx", "--admin-token-file", token}, nil); err == nil ||
		!strings.Contains(err.Error(), "both set") {
		t.Errorf("a secret and its file both set: %v, want an error", err)
	}
	if _, err := Load([]string{"--url-secret-file", filepath.Join(dir, "missing")}, nil); err == nil {
		t.Error("a missing secret file was accepted")
	}
	// Every *File setting names a secret setting.
	rt := reflect.TypeFor[Config]()
	for i := range rt.NumField() {
		if target := rt.Field(i).Tag.Get("fileof"); target != "" {
			if f := configFields.byYAML(target); !f.secret {
				t.Errorf("%s holds %s, which is not a secret", rt.Field(i).Name, target)
			}
		}
	}
}

// Changes sorts what differs into what a running node applies and what
// needs a restart; Live keeps the latter.
func TestChangesAndLive(t *testing.T) {
	old := Default()
	next := Default()
	next.PublishKeys = []string{"live=a-new-publish-key"}
	next.LogLevel = "debug"
	next.RTMPAddr = ":1936"
	live, restart := Changes(old, next)
	if want := []string{"--log-level", "--publish-keys"}; !slices.Equal(live, want) {
		t.Errorf("live changes %q, want %q", live, want)
	}
	if want := []string{"--rtmp-addr"}; !slices.Equal(restart, want) {
		t.Errorf("restart changes %q, want %q", restart, want)
	}
	got := Live(old, next)
	if got.LogLevel != "debug" || !slices.Equal(got.PublishKeys, next.PublishKeys) || got.RTMPAddr != old.RTMPAddr {
		t.Errorf("Live = log %q, keys %q, rtmp %q", got.LogLevel, got.PublishKeys, got.RTMPAddr)
	}
	if l, r := Changes(old, old); len(l)+len(r) != 0 {
		t.Errorf("no change reported %q, %q", l, r)
	}
}
