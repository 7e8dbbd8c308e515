package transcode

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/meshcast/meshcast/internal/streamname"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDefaultLadder(t *testing.T) {
	want := []Rendition{
		{Name: "720p", Width: 1280, Height: 720, VideoBitrate: "2500k", Preset: "veryfast", GOP: 60, AudioBitrate: "128k"},
		{Name: "480p", Width: 854, Height: 480, VideoBitrate: "1000k", Preset: "veryfast", GOP: 60, AudioBitrate: "128k"},
		{Name: "360p", Width: 640, Height: 360, VideoBitrate: "500k", Preset: "veryfast", GOP: 60, AudioBitrate: "128k"},
	}
	if got := DefaultLadder(); !reflect.DeepEqual(got, want) {
		t.Fatalf("DefaultLadder() = %+v, want %+v", got, want)
	}
	if err := ValidateLadder(DefaultLadder()); err != nil {
		t.Fatal(err)
	}
	// Callers may change what they get without changing the default.
	l := DefaultLadder()
	l[0].Height = 1080
	if DefaultLadder()[0].Height != 720 {
		t.Fatal("DefaultLadder shares memory between calls")
	}
}

func TestRenditionValidate(t *testing.T) {
	ok := Rendition{Name: "480p", Width: 854, Height: 480, VideoBitrate: "1000k"}
	with := func(f func(*Rendition)) Rendition { r := ok; f(&r); return r }
	for _, tc := range []struct {
		name string
		r    Rendition
		want string // "" when valid, else a word of the error
	}{
		{"minimal", ok, ""},
		{"defaults spelled out", with(func(r *Rendition) { r.Preset, r.GOP, r.AudioBitrate = "veryfast", 60, "128k" }), ""},
		{"width from height", with(func(r *Rendition) { r.Width = 0 }), ""},
		{"name with dash and underscore", with(func(r *Rendition) { r.Name = "hd_720-low" }), ""},
		{"name of 32", with(func(r *Rendition) { r.Name = strings.Repeat("a", 32) }), ""},
		{"bitrate in M", with(func(r *Rendition) { r.VideoBitrate = "2M" }), ""},
		{"bitrate in bits", with(func(r *Rendition) { r.VideoBitrate = "800000" }), ""},
		{"bitrate in K", with(func(r *Rendition) { r.VideoBitrate = "800K" }), ""},
		{"smallest", with(func(r *Rendition) { r.Width, r.Height, r.GOP = 16, 16, 1 }), ""},
		{"largest", with(func(r *Rendition) { r.Width, r.Height, r.GOP = 7680, 4320, 1000 }), ""},
		{"every preset", with(func(r *Rendition) { r.Preset = "placebo" }), ""},

		{"empty name", with(func(r *Rendition) { r.Name = "" }), "name"},
		{"name of 33", with(func(r *Rendition) { r.Name = strings.Repeat("a", 33) }), "name"},
		{"name with dot", with(func(r *Rendition) { r.Name = "7.2" }), "name"},
		{"name with slash", with(func(r *Rendition) { r.Name = "a/b" }), "name"},
		{"name with space", with(func(r *Rendition) { r.Name = "a b" }), "name"},
		{"no height", with(func(r *Rendition) { r.Height = 0 }), "height"},
		{"odd height", with(func(r *Rendition) { r.Height = 481 }), "height"},
		{"tiny height", with(func(r *Rendition) { r.Height = 8 }), "height"},
		{"huge height", with(func(r *Rendition) { r.Height = 4322 }), "height"},
		{"odd width", with(func(r *Rendition) { r.Width = 853 }), "width"},
		{"tiny width", with(func(r *Rendition) { r.Width = 14 }), "width"},
		{"negative width", with(func(r *Rendition) { r.Width = -2 }), "width"},
		{"huge width", with(func(r *Rendition) { r.Width = 7682 }), "width"},
		{"no video bitrate", with(func(r *Rendition) { r.VideoBitrate = "" }), "video bitrate"},
		{"milli bitrate", with(func(r *Rendition) { r.VideoBitrate = "2m" }), "video bitrate"},
		{"decimal bitrate", with(func(r *Rendition) { r.VideoBitrate = "1.5M" }), "video bitrate"},
		{"zero bitrate", with(func(r *Rendition) { r.VideoBitrate = "0k" }), "video bitrate"},
		{"leading zero", with(func(r *Rendition) { r.VideoBitrate = "0500k" }), "video bitrate"},
		{"negative bitrate", with(func(r *Rendition) { r.VideoBitrate = "-500k" }), "video bitrate"},
		{"bitrate with unit", with(func(r *Rendition) { r.VideoBitrate = "500kbps" }), "video bitrate"},
		{"bitrate option injection", with(func(r *Rendition) { r.VideoBitrate = "1k -f" }), "video bitrate"},
		{"bitrate too high", with(func(r *Rendition) { r.VideoBitrate = "2000M" }), "video bitrate"},
		{"bad audio bitrate", with(func(r *Rendition) { r.AudioBitrate = "lots" }), "audio bitrate"},
		{"unknown preset", with(func(r *Rendition) { r.Preset = "fastest" }), "preset"},
		{"preset case", with(func(r *Rendition) { r.Preset = "VeryFast" }), "preset"},
		{"negative gop", with(func(r *Rendition) { r.GOP = -1 }), "gop"},
		{"huge gop", with(func(r *Rendition) { r.GOP = 1001 }), "gop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate(%+v) = %v, want nil", tc.r, err)
			case tc.want != "" && err == nil:
				t.Fatalf("Validate(%+v) = nil, want an error about %s", tc.r, tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Validate(%+v) = %v, want an error about %s", tc.r, err, tc.want)
			}
		})
	}
}

func TestValidateLadder(t *testing.T) {
	if err := ValidateLadder(nil); err != nil {
		t.Fatalf("empty ladder: %v", err)
	}
	l := DefaultLadder()
	l[2].Name = "720p"
	if err := ValidateLadder(l); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("duplicate names: %v", err)
	}
	l = DefaultLadder()
	l[1].Height = 479
	if err := ValidateLadder(l); err == nil || !strings.Contains(err.Error(), "480p") {
		t.Fatalf("bad rung: %v", err)
	}
}

func TestFit(t *testing.T) {
	names := func(l []Rendition) []string {
		var n []string
		for _, r := range l {
			n = append(n, r.Name)
		}
		return n
	}
	for _, tc := range []struct {
		w, h int
		want []string
	}{
		{1920, 1080, []string{"720p", "480p", "360p"}},
		{1280, 720, []string{"720p", "480p", "360p"}},
		{854, 480, []string{"480p", "360p"}},
		{640, 360, []string{"360p"}},
		{0, 0, []string{"720p", "480p", "360p"}},
		{0, 480, []string{"480p", "360p"}}, // width unknown
		{320, 240, nil},
		{720, 1280, []string{"360p"}}, // portrait: 720p and 480p would be wider than the source
	} {
		ladder := DefaultLadder()
		got := Fit(ladder, tc.w, tc.h)
		if !slices.Equal(names(got), tc.want) {
			t.Errorf("Fit(%dx%d) = %v, want %v", tc.w, tc.h, names(got), tc.want)
		}
		if len(got) > 0 {
			got[0].Name = "changed"
			if slices.Contains(names(ladder), "changed") {
				t.Errorf("Fit(%dx%d) shares memory with the ladder", tc.w, tc.h)
			}
		}
	}
	// Renditions that set only a height are kept up to the source's height.
	byHeight := []Rendition{{Name: "a", Height: 720}, {Name: "b", Height: 360}}
	if got := names(Fit(byHeight, 640, 360)); !slices.Equal(got, []string{"b"}) {
		t.Errorf("Fit by height = %v", got)
	}
}

func TestRenditionName(t *testing.T) {
	r := Rendition{Name: "480p"}
	got, err := RenditionName("live/cam", r)
	if err != nil || got != streamname.Name("live/cam_480p") {
		t.Fatalf("RenditionName = %q, %v", got, err)
	}
	long := streamname.Name("live/" + strings.Repeat("s", streamname.MaxStreamLen-3))
	if _, err := RenditionName(long, r); !errors.Is(err, streamname.ErrBad) {
		t.Fatalf("too long: %v, want ErrBadName", err)
	}
	if _, err := RenditionName("live/cam", Rendition{Name: "../x"}); err == nil {
		t.Fatal("bad rendition name accepted")
	}
	if _, err := RenditionName("live/cam", Rendition{Name: ""}); err == nil {
		t.Fatal("empty rendition name accepted")
	}
	if _, err := RenditionName("nocam", r); err == nil {
		t.Fatal("source without app accepted")
	}
}
