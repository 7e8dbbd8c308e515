package cluster

import (
	"context"
	"errors"
	"testing"

	"github.com/meshcast/meshcast/internal/media"
	"github.com/meshcast/meshcast/internal/streamname"
)

func mediaData(body []byte) media.Packet {
	return media.Packet{Kind: media.KindData, Codec: media.CodecAMF0, Payload: body}
}

// The node a relay pulls from, in each topology: the owner (star), the
// first live parent (tree), or a same-region peer pulling straight from
// the owner (mesh).
func TestRelayChoosesUpstream(t *testing.T) {
	ctx := context.Background()
	const name = streamname.Name("live/stream")
	reg := NewMemory(MemoryConfig{})
	defer reg.Close()
	for _, n := range []Node{
		{ID: "owner", Region: "us"},
		{ID: "peer-us", Region: "us"},
		{ID: "peer-eu", Region: "eu"},
		{ID: "second-tier", Region: "eu"},
		{ID: "self", Region: "eu"},
	} {
		n.State, n.HTTPAddr = StateServing, string(n.ID)+":8080"
		if err := reg.Heartbeat(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.Claim(ctx, name, "owner"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []Relay{{"peer-us", "owner"}, {"peer-eu", "owner"}, {"second-tier", "peer-eu"}, {"self", "owner"}} {
		if err := reg.SetRelay(ctx, name, r); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		cfg  RelayConfig
		want NodeID
	}{
		{"star", RelayConfig{}, "owner"},
		{"tree", RelayConfig{Parents: []NodeID{"gone", "self", "second-tier"}}, "second-tier"},
		{"tree without a live parent", RelayConfig{Parents: []NodeID{"gone"}}, "owner"},
		{"mesh, same region first", RelayConfig{Mesh: true, Region: "eu"}, "peer-eu"},
		{"mesh, no peer in the region", RelayConfig{Mesh: true, Region: "ap"}, "peer-eu"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Self, tc.cfg.Registry = "self", reg
			n, err := NewRelays(tc.cfg, nil).choose(ctx, name)
			if err != nil || n.ID != tc.want || n.HTTPAddr != string(tc.want)+":8080" {
				t.Errorf("choose = %+v, %v; want %s", n, err, tc.want)
			}
		})
	}

	m := NewRelays(RelayConfig{Self: "self", Registry: reg}, nil)
	if _, err := m.choose(ctx, "live/nothing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a stream nobody owns: %v, want ErrNotFound", err)
	}
	mine := streamname.Name("live/mine")
	if _, err := reg.Claim(ctx, mine, "self"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.choose(ctx, mine); !errors.Is(err, ErrNotFound) {
		t.Errorf("a stream this node owns: %v, want ErrNotFound", err)
	}
	if err := reg.Leave(ctx, "owner"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.choose(ctx, name); !errors.Is(err, ErrNotFound) {
		t.Errorf("an owner that left: %v, want ErrNotFound", err)
	}
}

func TestEndTag(t *testing.T) {
	// The end marker is an FLV script tag a puller recognises, and no
	// onMetaData is mistaken for it.
	tag := EndTag()
	if len(tag) < 15 || tag[0] != 18 {
		t.Fatalf("EndTag = % x, want an FLV script data tag", tag)
	}
	body := tag[11 : len(tag)-4]
	if p := mediaData(body); !isEnd(&p) {
		t.Error("EndTag's body is not recognised as the end")
	}
	if p := mediaData([]byte{2, 0, 10, 'o', 'n', 'M', 'e', 't', 'a', 'D', 'a', 't', 'a'}); isEnd(&p) {
		t.Error("onMetaData taken for the end")
	}
}
