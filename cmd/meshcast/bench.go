package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshcast/meshcast/internal/bench"
)

// benchCmd runs "meshcast bench": a load generator for meshcast or any
// RTMP/HTTP-FLV/HLS server.
func benchCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	publish := fs.String("publish", "rtmp://127.0.0.1:1935/live/bench", "RTMP URL to publish the input to; with more, comma-separated, the publisher moves to the next when its connection breaks (failover), after --reconnect-delay")
	stagger := fs.Duration("stagger", 0, "with several --play URLs, the players of each URL join this long after those of the one before (a mesh forms as viewers arrive); 0: all at once")
	reconnect := fs.Duration("reconnect-delay", 500*time.Millisecond, "the publisher's pause before reconnecting to the next --publish URL")
	play := fs.String("play", "", "URL players read: rtmp://…, http://…/APP/STREAM.flv, http://…/index.m3u8, http://…/APP/STREAM/whep or srt://…?streamid=… (defaults to the publish URL); with more, comma-separated, each step runs its players on each, one result per URL")
	protocol := fs.String("protocol", "", "how players read --play: "+strings.Join(bench.Protocols, ", ")+" (llhls: LL-HLS with blocking playlist reloads; empty: inferred from the URL)")
	input := fs.String("input", "", "FLV file (H.264/AAC) to publish in a loop, paced by its timestamps (required)")
	viewers := fs.String("viewers", "100,500,1000", "viewer counts, one step each; every step's players join at once")
	warmup := fs.Duration("warmup", 5*time.Second, "wait after all players joined before measuring")
	hold := fs.Duration("hold", 20*time.Second, "measuring window of each step")
	pid := fs.Int("pid", 0, "server process ID to measure CPU time and memory of (0: do not)")
	labels := fs.String("label", "", "labels added to every JSON line: key=value,key=value")
	out := fs.String("out", "", "append JSON lines to this file instead of standard output")
	quiet := fs.Bool("quiet", false, "no progress bar")
	firstFrames := fs.String("first-frames", "", "write each player's first picture to this file: local address, play request time and the kernel's receive time (Unix ns), to match with a server's own record")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: meshcast bench --input FILE.flv [flags]")
		fmt.Fprintln(stderr, "Publishes FILE.flv in a loop and measures steps of N players: delivered frames,")
		fmt.Fprintln(stderr, "time to first frame, per-frame latency, stalls, and the server's CPU and RSS (--pid).")
		fmt.Fprintln(stderr, "One JSON line per step.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *input == "" {
		fmt.Fprintln(stderr, "meshcast bench: --input is required")
		return 2
	}
	publishURLs := strings.Split(*publish, ",")
	cfg := bench.Config{
		PublishURL:      publishURLs[0],
		PublishFailover: publishURLs[1:],
		ReconnectDelay:  *reconnect,
		Stagger:         *stagger,
		PlayURL:         *play,
		Protocol:        *protocol,
		Input:           *input,
		Warmup:          *warmup,
		Hold:            *hold,
		PID:             *pid,
		Labels:          map[string]string{},
		Out:             stdout,
	}
	if cfg.Protocol != "" && !slices.Contains(bench.Protocols, cfg.Protocol) {
		fmt.Fprintf(stderr, "meshcast bench: --protocol: %q is not one of %s\n", cfg.Protocol, strings.Join(bench.Protocols, ", "))
		return 2
	}
	if cfg.PlayURL == "" {
		cfg.PlayURL = cfg.PublishURL
	}
	if urls := strings.Split(cfg.PlayURL, ","); len(urls) > 1 {
		cfg.PlayURL, cfg.PlayURLs = urls[0], urls
	}
	if !*quiet {
		cfg.Progress = stderr
	}
	for _, v := range strings.Split(*viewers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 || n > 100000 {
			fmt.Fprintf(stderr, "meshcast bench: --viewers: %q is not a count from 1 to 100000\n", v)
			return 2
		}
		cfg.Steps = append(cfg.Steps, n)
	}
	if *labels != "" {
		for _, kv := range strings.Split(*labels, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				fmt.Fprintf(stderr, "meshcast bench: --label: %q is not key=value\n", kv)
				return 2
			}
			cfg.Labels[k] = v
		}
	}
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			fmt.Fprintln(stderr, "meshcast bench:", err)
			return 1
		}
		defer f.Close()
		cfg.Out = f
	}
	if *firstFrames != "" {
		f, err := os.Create(*firstFrames)
		if err != nil {
			fmt.Fprintln(stderr, "meshcast bench:", err)
			return 1
		}
		defer f.Close()
		cfg.FirstFrames = f
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := bench.Run(ctx, cfg); err != nil {
		fmt.Fprintln(stderr, "\nmeshcast bench:", err)
		return 1
	}
	return 0
}
