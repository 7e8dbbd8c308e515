package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/sim"
)

// simOutput is what "meshcast sim --json" prints.
type simOutput struct {
	Runs []simRun `json:"runs"`
	Ring sim.Ring `json:"ring"`
}

type simRun struct {
	sim.Result
	// WallSeconds is how long the run took on this machine.
	WallSeconds float64 `json:"wall_seconds"`
}

// simCmd runs "meshcast sim": a simulated cluster at scale, on meshcast's
// own placement code, without sockets.
func simCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := sim.Config{}.Defaults()
	nodes := fs.Int("nodes", def.Nodes, "nodes in the cluster")
	regions := fs.Int("regions", def.Regions, "regions the nodes are spread over")
	tiers := fs.Int("tiers", def.Tiers, "1: every node owns streams and serves viewers; 2: origins and edges; 3: origins, mid-tier nodes and edges pulling through two of them (--parent)")
	mesh := fs.Bool("mesh", false, "relays pull from a peer that pulls from the owner (--mesh)")
	streams := fs.Int("streams", def.Streams, "streams published")
	zipf := fs.Float64("zipf", def.Zipf, "exponent of the streams' Zipf popularity")
	viewers := fs.Int("viewers", def.Viewers, "viewers, arriving evenly over --arrival")
	arrival := fs.Duration("arrival", def.Arrival, "simulated time over which the viewers arrive")
	capacity := fs.Int("capacity", 0, "each edge's --capacity (0: twice the viewers per edge)")
	balance := fs.String("balance", def.Balance, "selector: "+strings.Join(cluster.Selectors, ", ")+", or all to run each")
	drain := fs.Float64("drain", def.Drain, "share of the nodes drained after the arrivals, one after another over --drain-grace, each leaving --drain-grace after (0: no drain phase; 0.05: a rolling restart of 5 %)")
	drainGrace := fs.Duration("drain-grace", def.DrainGrace, "simulated time a draining node serves on before it leaves (meshcast's --drain-grace)")
	kill := fs.Float64("kill", def.Kill, "share of the nodes killed at once after the drain (negative: none)")
	noRegion := fs.Bool("no-region-loss", false, "skip the loss of a region")
	vnodes := fs.Int("vnodes", def.VirtualNodes, "points per node of the consistent-hash ring compared with rendezvous hashing")
	seed := fs.Uint64("seed", 1, "seed of the run: the same seed, the same figures")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	progress := fs.Bool("progress", false, "draw the progress bar even when standard error is not a terminal")
	quiet := fs.Bool("quiet", false, "no progress bar")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	fromJSON := fs.String("from-json", "", "print the tables of this file, written by --json, and simulate nothing")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: meshcast sim [flags]")
		fmt.Fprintln(stderr, "Simulates a cluster on meshcast's own registry, routing and relay code, without")
		fmt.Fprintln(stderr, "sockets: viewers arrive, then --drain of the nodes drain and leave, then --kill of")
		fmt.Fprintln(stderr, "the nodes die at once, then a region is lost.")
		fmt.Fprintln(stderr, "Prints placement, origin egress, relays per stream, recovery times and registry")
		fmt.Fprintln(stderr, "operations per second (to size Redis) as tables, or JSON.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "meshcast sim: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *drainGrace <= 0 {
		fmt.Fprintf(stderr, "meshcast sim: --drain-grace %v: want a positive duration\n", *drainGrace)
		return 2
	}
	if *fromJSON != "" {
		b, err := os.ReadFile(*fromJSON)
		var out simOutput
		if err == nil {
			err = json.Unmarshal(b, &out)
		}
		if err == nil && len(out.Runs) == 0 {
			err = errors.New("no runs in it")
		}
		if err != nil {
			fmt.Fprintf(stderr, "meshcast sim: %s: %v\n", *fromJSON, err)
			return 1
		}
		printSim(stdout, out)
		return 0
	}
	cfg := sim.Config{
		Nodes: *nodes, Regions: *regions, Tiers: *tiers, Mesh: *mesh, Streams: *streams,
		Zipf: *zipf, Viewers: *viewers, Arrival: *arrival, Capacity: *capacity,
		Drain: *drain, DrainGrace: *drainGrace,
		Kill: *kill, NoRegionLoss: *noRegion, VirtualNodes: *vnodes, Seed: *seed,
	}
	// Defaults takes 0 for the default share: -1 is none.
	if cfg.Drain <= 0 {
		cfg.Drain = -1
	}
	if cfg.Kill < 0 {
		cfg.Kill = -1
	}
	balances := []string{*balance}
	if *balance == "all" {
		balances = cluster.Selectors
	}
	for _, b := range balances {
		c := cfg
		c.Balance = b
		if err := c.Defaults().Validate(); err != nil {
			fmt.Fprintln(stderr, "meshcast", err)
			return 2
		}
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(stderr, "meshcast sim:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "meshcast sim:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	bar := !*quiet && (*progress || isTerminal(stderr))
	var out simOutput
	for i, b := range balances {
		c := cfg
		c.Balance = b
		if bar {
			label := fmt.Sprintf("%s (%d/%d)", b, i+1, len(balances))
			last := -1
			c.Progress = func(done float64) {
				if pct := int(done * 100); pct != last {
					last = pct
					drawBar(stderr, label, done)
				}
			}
		}
		start := time.Now()
		res, err := sim.Run(ctx, c)
		if bar {
			drawBar(stderr, b, 1)
			fmt.Fprintln(stderr)
		}
		if err != nil {
			fmt.Fprintln(stderr, "meshcast sim:", err)
			return 1
		}
		out.Runs = append(out.Runs, simRun{Result: res, WallSeconds: time.Since(start).Seconds()})
	}
	origins, mids, edges := sim.Topology(cfg)
	ids := append(append(append([]cluster.NodeID(nil), origins...), mids...), edges...)
	names := make([]string, cfg.Defaults().Streams)
	for i := range names {
		names[i] = string(sim.StreamName(i))
	}
	out.Ring = sim.AnalyzeRing(ids, names, cfg.Defaults().VirtualNodes)

	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			fmt.Fprintln(stderr, "meshcast sim:", err)
			return 1
		}
		return 0
	}
	printSim(stdout, out)
	for _, r := range out.Runs {
		if len(r.Violations) > 0 {
			return 1
		}
	}
	return 0
}

// drawBar draws a progress bar over the line it drew before.
func drawBar(w io.Writer, label string, done float64) {
	const width = 40
	n := min(width, int(done*width))
	fmt.Fprintf(w, "\r%-24s [%s%s] %3d%%", label, strings.Repeat("#", n), strings.Repeat(".", width-n), int(done*100))
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// printSim prints the results as Markdown tables.
func printSim(w io.Writer, out simOutput) {
	r0 := out.Runs[0]
	c := r0.Config
	topo := map[int]string{1: "1 tier (every node owns and serves)", 2: "2 tiers (origins, edges)", 3: "3 tiers (origins, mid-tier, edges through --parent)"}[c.Tiers]
	if c.Mesh {
		topo += ", --mesh"
	}
	fmt.Fprintf(w, "%d nodes in %d regions, %s: %d origins, %d mid-tier, %d edges of capacity %d\n",
		c.Nodes, c.Regions, topo, r0.OriginNodes, r0.MidNodes, r0.EdgeNodes, r0.Capacity)
	drained := ""
	if c.Drain > 0 {
		drained = fmt.Sprintf(" then %.0f%% of the nodes drained (one after another over %v, each leaving %v after it began);", c.Drain*100, c.DrainGrace, c.DrainGrace)
	}
	fmt.Fprintf(w, "%d streams (Zipf %.2g), %d viewers over %v;%s then %.0f%% of the nodes killed, then region r0 lost; seed %d\n\n",
		c.Streams, c.Zipf, c.Viewers, c.Arrival, drained, max(c.Kill, 0)*100, c.Seed)

	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| balance\t phase\t live nodes\t viewers/edge max\t mean\t origin egress (streams)\t relays/stream mean\t p99\t max\t upstreams/stream/node max\t viewers re-placed after\t streams restored after\t refused attempts\t wall\t")
	fmt.Fprintln(tw, "|---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t---\t")
	for _, r := range out.Runs {
		for i, p := range r.Phases {
			wall := ""
			if i == 0 {
				wall = fmt.Sprintf("%.1f s", r.WallSeconds)
			}
			phase := p.Name
			switch p.Name {
			case "drain":
				phase = fmt.Sprintf("drain %d", p.Drained)
			case "kill":
				phase = fmt.Sprintf("kill %d", p.Killed)
			case "region":
				phase = fmt.Sprintf("region lost (%d)", p.Killed)
			}
			fmt.Fprintf(tw, "| %s\t %s\t %d\t %d\t %.0f\t %d\t %.1f\t %d\t %d\t %d\t %s\t %s\t %d\t %s\t\n",
				r.Config.Balance, phase, p.LiveNodes, p.LoadMax, p.LoadMean, p.OriginEgress,
				p.RelaysMean, p.RelaysP99, p.RelaysMax, p.MaxUpstreams,
				simDur(p.Name, p.Replaced), simDur(p.Name, p.Restored), p.FailedAttempts, wall)
		}
	}
	tw.Flush()
	if c.Drain > 0 {
		fmt.Fprintln(w, "\nA drain's viewers are re-placed, and its streams restored, after the last drained node left.")
	}

	fmt.Fprintln(w)
	fmt.Fprintf(w, "Registry operations a second, all viewers arriving (the last %v of arrivals):\n\n", r0.Ops.Window)
	tw = tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprint(tw, "| balance\t")
	for _, k := range r0.Ops.ByKind {
		fmt.Fprintf(tw, " %s\t", k.Kind)
	}
	fmt.Fprintln(tw, " total\t per node\t nodes per Redis at 50k ops/s\t")
	fmt.Fprint(tw, "|---\t")
	for range r0.Ops.ByKind {
		fmt.Fprint(tw, "---\t")
	}
	fmt.Fprintln(tw, "---\t---\t---\t")
	for _, r := range out.Runs {
		fmt.Fprintf(tw, "| %s\t", r.Config.Balance)
		for _, k := range r.Ops.ByKind {
			fmt.Fprintf(tw, " %.0f\t", k.Rate)
		}
		fmt.Fprintf(tw, " %.0f\t %.1f\t %d\t\n", r.Ops.Total, r.Ops.PerNode, r.Ops.MaxNodes)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nNodes per Redis keeps the viewers per node: the routers' reads of the node list grow with")
	fmt.Fprintln(w, "the square of the nodes, the other operations linearly. Operations are records")
	fmt.Fprintln(w, "written or read: a node's beat is one round trip (one Lua script) holding its heartbeat,")
	fmt.Fprintln(w, "a renewal and a stream record per claim, and the relay records due (new, moved, or a")
	fmt.Fprintln(w, "node timeout old); a router reads every node's record at most once a second, and the")
	fmt.Fprintln(w, "chosen node's for each viewer.")

	fmt.Fprintf(w, "\nStreams per node under hashing, %d streams over %d nodes (share of the mean):\n\n", out.Ring.Streams, out.Ring.Nodes)
	tw = tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| placement\t min\t max\t stddev\t moved when a node joins\t when one leaves\t ideal\t")
	fmt.Fprintln(tw, "|---\t---\t---\t---\t---\t---\t---\t")
	for _, p := range out.Ring.Placements {
		fmt.Fprintf(tw, "| %s\t %.2f\t %.2f\t %.3f\t %d\t %d\t %.0f\t\n", p.Name, p.Balance.Min, p.Balance.Max, p.Balance.Stddev, p.Join, p.Leave, p.Ideal)
	}
	tw.Flush()
	for _, r := range out.Runs {
		for _, v := range r.Violations {
			fmt.Fprintf(w, "\nINVARIANT BROKEN (%s): %s\n", r.Config.Balance, v)
		}
	}
}

// simDur formats a recovery time; the steady phase has none.
func simDur(phase string, d time.Duration) string {
	switch {
	case phase == "steady":
		return "—"
	case d < 0:
		return "not recovered"
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}
