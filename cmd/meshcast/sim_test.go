package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// meshcast sim prints its tables, or JSON that --from-json prints the same.
func TestSimCommand(t *testing.T) {
	// The default: no drain phase (at 10 nodes, a node drained as well as
	// one killed leaves too few to lose a region; drained below).
	args := []string{"sim", "--nodes", "10", "--regions", "2", "--streams", "50", "--viewers", "2000", "--arrival", "30s", "--balance", "all", "--vnodes", "10"}
	var out, errOut bytes.Buffer
	if code := run(args, nil, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"| least-loaded", "| hash", "region lost", "nodes per Redis", "rendezvous (meshcast --balance hash)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "drain") {
		t.Errorf("the default drained:\n%s", out.String())
	}
	if errOut.Len() > 0 {
		t.Errorf("a progress bar on a buffer: %q", errOut.String())
	}

	var js bytes.Buffer
	if code := run(append(args, "--json"), nil, &js, &errOut); code != 0 {
		t.Fatalf("--json: exit %d: %s", code, errOut.String())
	}
	var parsed simOutput
	if err := json.Unmarshal(js.Bytes(), &parsed); err != nil || len(parsed.Runs) != 4 {
		t.Fatalf("--json: %v, %d runs", err, len(parsed.Runs))
	}
	file := filepath.Join(t.TempDir(), "sim.json")
	if err := os.WriteFile(file, js.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if code := run([]string{"sim", "--from-json", file}, nil, &again, &errOut); code != 0 {
		t.Fatalf("--from-json: exit %d: %s", code, errOut.String())
	}
	// The same tables, but for the wall times of the two runs.
	if a, b := strings.Count(out.String(), "\n"), strings.Count(again.String(), "\n"); a != b {
		t.Errorf("--from-json printed %d lines, the run %d", b, a)
	}

	if code := run([]string{"sim", "--balance", "random"}, nil, &out, &errOut); code != 2 {
		t.Errorf("an unknown balancer: exit %d, want 2", code)
	}
	if code := run([]string{"sim", "--drain-grace", "0"}, nil, &out, &errOut); code != 2 {
		t.Errorf("--drain-grace 0: exit %d, want 2", code)
	}

	// --drain 0.05: 5 % of the nodes, 1 of 10.
	var drained bytes.Buffer
	if code := run([]string{"sim", "--nodes", "10", "--regions", "2", "--tiers", "2", "--streams", "50", "--viewers", "2000", "--arrival", "30s", "--no-region-loss", "--vnodes", "10", "--drain", "0.05"}, nil, &drained, &errOut); code != 0 {
		t.Fatalf("drain: exit %d: %s%s", code, drained.String(), errOut.String())
	}
	for _, want := range []string{"5% of the nodes drained", "| least-loaded | drain 1 ", "| least-loaded | kill 1 ", "after the last drained node left"} {
		if !strings.Contains(drained.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, drained.String())
		}
	}
}
