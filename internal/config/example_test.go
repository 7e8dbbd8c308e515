package config

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite deploy/meshcast.example.yaml from the settings")

const examplePath = "../../deploy/meshcast.example.yaml"

// exampleConfig renders every setting with its meaning and default, by
// --help's topics, and the file-only ones as commented examples.
func exampleConfig() string {
	var b strings.Builder
	b.WriteString(`# meshcast's configuration file: every setting, with its default.
#
#   meshcast serve --config meshcast.yaml     (or MESHCAST_CONFIG=meshcast.yaml)
#
# Keep only what you change. Each setting is also a flag (--max-lag 2s) and
# an environment variable (MESHCAST_MAX_LAG=2s); flags beat the environment,
# which beats this file. Secrets may come from files instead (the *_file
# settings). This file is generated from the settings themselves:
#   go test ./internal/config -run TestExampleConfig -update
`)
	def := reflect.ValueOf(Default())
	byFlag := map[string]field{}
	for _, f := range configFields {
		byFlag[f.flag] = f
	}
	for _, g := range usageGroups {
		fmt.Fprintf(&b, "\n# ---- %s ----\n", g.title)
		for _, name := range g.flags {
			f := byFlag[name]
			fmt.Fprintf(&b, "\n# %s\n%s: %s\n", f.usage, f.yaml, yamlValue(f, def.Field(f.index)))
		}
	}
	b.WriteString(`
# ---- In this file only ----

# Settings of single apps, by app name: recording, transcoding and its
# ladder, restreaming.
apps: {}
#  live:
#    record: all                 # off, all or on-demand
#    transcode: "on"
#    push: ["rtmp://a.rtmp.youtube.com/live2/{stream}?key=KEY"]

# Settings of single streams, by APP/STREAM.
streams: {}
#  live/cam1:
#    push: ["srt://backup.example.com:8890?streamid=publish:live/cam1"]

# Streams pulled from sources that do not push, by APP/STREAM: on demand
# (the first viewer starts them) or always.
sources: {}
#  live/door: {url: "rtsp://user:PASSWORD@10.0.0.9:554/stream1", rtsp_transport: tcp}
#  live/relayed: {url: "rtmp://origin.example.com/live/show", mode: always}
#  live/cdn: {url: "https://cdn.example.com/live/show/index.m3u8"}
`)
	return b.String()
}

// yamlValue is v as YAML.
func yamlValue(f field, v reflect.Value) string {
	switch {
	case f.typ == stringSliceType:
		items := v.Interface().([]string)
		q := make([]string, len(items))
		for i, s := range items {
			q[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	case f.typ.Kind() == reflect.String:
		return strconv.Quote(v.String())
	}
	return f.format(v)
}

// TestExampleConfig: deploy/meshcast.example.yaml names every setting,
// is what the settings render, and loads into the defaults.
func TestExampleConfig(t *testing.T) {
	want := exampleConfig()
	if *update {
		if err := os.WriteFile(examplePath, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s is not what the settings render: go test ./internal/config -run TestExampleConfig -update", examplePath)
	}
	for _, f := range configFields {
		if !strings.Contains(want, "\n"+f.yaml+": ") {
			t.Errorf("the example lacks %s", f.yaml)
		}
	}
	abs, _ := filepath.Abs(examplePath)
	cfg, err := Load([]string{"--config", abs}, nil)
	if err != nil {
		t.Fatalf("Load(the example): %v", err)
	}
	if len(cfg.Streams) == 0 && len(cfg.Sources) == 0 {
		cfg.Streams, cfg.Sources = nil, nil // "{}" in the file, none by default
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("the example loads as\n%+v\nwant the defaults\n%+v", cfg, Default())
	}
}
