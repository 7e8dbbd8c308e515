// Command report turns the JSON lines of bench/compare.sh into a Markdown
// table, a verdict per server and gnuplot data.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/meshcast/meshcast/internal/bench"
)

func main() {
	in := flag.String("in", "", "JSON lines written by meshcast bench")
	machine := flag.String("machine", "", "text describing the machine and the command (optional)")
	md := flag.String("md", "", "write the Markdown report here (default: standard output)")
	data := flag.String("data", "", "write gnuplot data here (optional)")
	servers := flag.String("servers", "", "server labels in the order to report them (default: as found)")
	ref := flag.String("ref", "nginx-rtmp", "the server whose CPU per viewer the others are compared with")
	flag.Parse()
	if err := run(*in, *machine, *md, *data, *ref, strings.Fields(*servers)); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(in, machine, mdPath, dataPath, ref string, order []string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	byServer := map[string][]bench.Result{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r bench.Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("%s: %w", in, err)
		}
		s := r.Labels["server"]
		if !slices.Contains(order, s) {
			order = append(order, s)
		}
		byServer[s] = append(byServer[s], r)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	var out io.Writer = os.Stdout
	if mdPath != "" {
		mf, err := os.Create(mdPath)
		if err != nil {
			return err
		}
		defer mf.Close()
		out = mf
	}
	if machine != "" {
		b, err := os.ReadFile(machine)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "```\n%s```\n\n", b)
	}
	writeTable(out, order, byServer)
	writeProtocolTable(out, order, byServer)
	writeVerdict(out, order, ref, byServer)
	if dataPath != "" {
		return writeData(dataPath, order, byServer)
	}
	return nil
}

// kept reports whether a step's viewers all kept up.
func kept(r bench.Result) bool {
	return !r.Void && r.Connected == r.Viewers && r.Dropped == 0 && r.DeliveredPct >= 99
}

func writeTable(w io.Writer, order []string, by map[string][]bench.Result) {
	fmt.Fprintln(w, "| server | viewers | CPU % | CPU ms per viewer-s | RSS MiB | RSS per viewer KiB | delivered % | TTFF p50 / p99 ms | added latency p50 / p99 ms | load generator CPU % | note |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, s := range order {
		for _, r := range by[s] {
			var note []string
			if r.Void {
				note = append(note, "**void**: load generator saturated")
			}
			if r.Connected < r.Viewers {
				note = append(note, fmt.Sprintf("%d not connected", r.Viewers-r.Connected))
			}
			if r.Dropped > 0 {
				note = append(note, fmt.Sprintf("%d dropped", r.Dropped))
			}
			if r.Stalls > 0 {
				note = append(note, fmt.Sprintf("%d stalls", r.Stalls))
			}
			fmt.Fprintf(w, "| %s | %d | %.1f | %.3f | %.1f | %.1f | %.2f | %s / %s | %s / %s | %.0f | %s |\n",
				s, r.Viewers, r.ServerCPUPct, r.CPUmsPerViewerSec, float64(r.ServerRSS)/(1<<20),
				float64(r.RSSPerViewer)/1024, r.DeliveredPct, ms(r.TTFFp50), ms(r.TTFFp99),
				ms(r.LatencyP50), ms(r.LatencyP99), r.LoadgenCPUPct, strings.Join(note, "; "))
		}
	}
	fmt.Fprintln(w)
}

func ms(v float64) string {
	if v < 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", v)
}

// writeProtocolTable writes what the players of packet and HTTP protocols
// measure beyond frames: packet loss (WHEP, SRT), requests and their
// latency, LL-HLS part delivery and the distance behind the live edge
// (HLS). Nothing when no step has any of it.
func writeProtocolTable(w io.Writer, order []string, by map[string][]bench.Result) {
	found := false
	for _, s := range order {
		for _, r := range by[s] {
			found = found || r.PacketsExpected > 0 || r.Requests > 0
		}
	}
	if !found {
		return
	}
	fmt.Fprintln(w, "| server | protocol | viewers | packets lost % | requests/s | request p50 / p99 ms | part p50 / p99 ms | behind live p50 / p99 ms | stalls | gap max ms |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, s := range order {
		for _, r := range by[s] {
			loss := "–"
			if r.PacketsExpected > 0 {
				loss = fmt.Sprintf("%.3f", r.LossPct)
			}
			reqs, req, part, behind := "–", "– / –", "– / –", "– / –"
			if r.Requests > 0 {
				reqs = fmt.Sprintf("%.0f", r.RequestsPerSec)
				req = ms(r.RequestP50) + " / " + ms(r.RequestP99)
			}
			if r.PartP99 >= 0 && r.PartP50 >= 0 && (r.PartP99 > 0 || r.PartP50 > 0 || r.Proto == "llhls") {
				part = ms(r.PartP50) + " / " + ms(r.PartP99)
			}
			if r.BehindP99 >= 0 && r.BehindP50 >= 0 && (r.BehindP99 > 0 || r.BehindP50 > 0 || r.Requests > 0) {
				behind = ms(r.BehindP50) + " / " + ms(r.BehindP99)
			}
			fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s | %d | %.0f |\n",
				s, r.Proto, r.Viewers, loss, reqs, req, part, behind, r.Stalls, r.GapMax)
		}
	}
	fmt.Fprintln(w)
}

func writeVerdict(w io.Writer, order []string, refName string, by map[string][]bench.Result) {
	fmt.Fprintln(w, "Largest viewer count sustained on one core (every player connected, ≥ 99% delivered, run not void):")
	fmt.Fprintln(w)
	for _, s := range order {
		best := 0
		for _, r := range by[s] {
			if kept(r) && r.Viewers > best {
				best = r.Viewers
			}
		}
		voids := 0
		for _, r := range by[s] {
			if r.Void {
				voids++
			}
		}
		line := fmt.Sprintf("- %s: %d", s, best)
		if best == 0 {
			line = fmt.Sprintf("- %s: none of the steps", s)
		}
		if voids > 0 {
			line += fmt.Sprintf(" (%d step(s) void: the load generator's core was saturated, so they say nothing of the server)", voids)
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w)
	// CPU per viewer at equal load, against the reference server's.
	ref := by[refName]
	if len(ref) == 0 {
		return
	}
	fmt.Fprintf(w, "CPU per viewer against %s's at the same viewer count (lower is better):\n", refName)
	fmt.Fprintln(w)
	for _, s := range order {
		if s == refName {
			continue
		}
		var parts []string
		for _, r := range by[s] {
			for _, n := range ref {
				if n.Viewers == r.Viewers && n.CPUmsPerViewerSec > 0 && kept(r) && kept(n) {
					parts = append(parts, fmt.Sprintf("%d viewers: %.2f×", r.Viewers, r.CPUmsPerViewerSec/n.CPUmsPerViewerSec))
				}
			}
		}
		if len(parts) > 0 {
			fmt.Fprintf(w, "- %s: %s\n", s, strings.Join(parts, ", "))
		}
	}
	fmt.Fprintln(w)
}

// writeData writes one gnuplot block per server: viewers, CPU %, latency
// p50, latency p99, CPU ms per viewer-second. Void steps are left out.
func writeData(path string, order []string, by map[string][]bench.Result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for i, s := range order {
		if i > 0 {
			fmt.Fprint(f, "\n\n")
		}
		fmt.Fprintf(f, "%q cpu_pct latency_p50 latency_p99 cpu_ms_per_viewer_s\n", s)
		for _, r := range by[s] {
			if r.Void {
				continue
			}
			fmt.Fprintf(f, "%d %.2f %.1f %.1f %.4f\n", r.Viewers, r.ServerCPUPct, r.LatencyP50, r.LatencyP99, r.CPUmsPerViewerSec)
		}
	}
	return nil
}
