// Command meshcast is a distributed live and on-demand streaming server.
//
//	meshcast serve [flags]   run a node
//	meshcast serve --check   validate the configuration and exit
//	meshcast version         print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshcast/meshcast/internal/app"
	"github.com/meshcast/meshcast/internal/buildinfo"
	"github.com/meshcast/meshcast/internal/config"
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

func run(args, env []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], env, stdout, stderr)
	case "bench":
		return benchCmd(args[1:], stdout, stderr)
	case "sign":
		return signCmd(args[1:], env, stdout, stderr)
	case "sim":
		return simCmd(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "meshcast", versionString())
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "meshcast: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: meshcast <command> [flags]")
	fmt.Fprintln(w, "")
	fmt.Fprintln(w, "commands:")
	fmt.Fprintln(w, "  serve     run a meshcast node (no arguments needed for a single node)")
	fmt.Fprintln(w, "  bench     load-test a server: one publisher, steps of N players (meshcast bench --help)")
	fmt.Fprintln(w, "  sign      print a signed play URL or publish token (meshcast sign --help)")
	fmt.Fprintln(w, "  sim       simulate a cluster at scale on meshcast's own placement code (meshcast sim --help)")
	fmt.Fprintln(w, "  version   print the version")
	fmt.Fprintln(w, "")
	fmt.Fprintln(w, "flags of serve:")
	config.Usage(w)
}

func versionString() string { return buildinfo.String() }

// secondProc gives the Go runtime a second processor when it found one CPU
// (an affinity mask or a CPU quota of one), unless GOMAXPROCS is set. The
// runtime reads the network only when a processor is idle, or every 10 ms
// or so from its monitor: with one processor kept busy writing to viewers,
// a joining viewer's handshake and play request would each wait for that.
// With two, one of them is more often free to read requests as they arrive
// (measured: a burst of 1000 joins on one core sees its first frames in
// 14 to 35 ms at p99 instead of 23 to 42). The sender then runs two
// workers (egress.NewSender), which cost no more CPU per viewer.
func secondProc(env []string, log *slog.Logger) {
	for _, kv := range env {
		if strings.HasPrefix(kv, "GOMAXPROCS=") {
			return
		}
	}
	if runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
		log.Debug("one CPU: a second Go processor waits on the network")
	}
}

func serve(args, env []string, stdout, stderr io.Writer) int {
	args, check, err := takeCheck(args)
	if err != nil {
		fmt.Fprintln(stderr, "meshcast:", err)
		return 2
	}
	cfg, err := config.Load(args, env)
	if errors.Is(err, flag.ErrHelp) {
		config.Usage(stdout)
		fmt.Fprintf(stdout, "\nmeshcast serve --check [flags] reads the configuration (the file, the\n"+
			"environment, the flags and the secret files), validates it as a start\n"+
			"would, prints \"configuration ok\" or the error, and exits: nothing is\n"+
			"bound or started.\n")
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "meshcast:", err)
		return 2
	}
	if check {
		// config.Load has read the file, the environment, the flags and the
		// secret files, and validated them as a start would: nothing is
		// bound or started.
		fmt.Fprintln(stdout, "configuration ok")
		return 0
	}
	level := new(slog.LevelVar)
	log := newLogger(cfg, level, stderr)
	slog.SetDefault(log)
	checkFileLimit(cfg, log)
	secondProc(env, log)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	// SIGHUP reloads the configuration (see App.Reload).
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	defer signal.Stop(hups)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	source := func() (config.Config, error) { return config.Load(args, env) }
	a, err := app.New(cfg, log, app.WithReload(source), app.WithLogLevel(level))
	if err != nil {
		fmt.Fprintln(stderr, "meshcast:", err)
		return 2
	}
	if err := a.Start(ctx); err != nil {
		a.Close()
		fmt.Fprintln(stderr, "meshcast:", err)
		return 1
	}
	started := []any{"version", versionString(), "rtmp", a.RTMPAddr().String(), "http", a.HTTPAddr().String()}
	if a.RTMPSAddr() != nil {
		started = append(started, "rtmps", a.RTMPSAddr().String(), "https", a.HTTPSAddr().String())
	}
	log.Info("meshcast started", started...)
	fmt.Fprintf(stdout, "meshcast %s is running.\n\n%s\n", versionString(), a.URLs("stream"))
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hups:
				log.Info("SIGHUP: reloading the configuration")
				a.Reload() // logs what it applied, or why it changed nothing
			}
		}
	}()
	if sig := <-sigs; sig == syscall.SIGTERM && cfg.DrainGrace > 0 {
		drain(a, cfg.DrainGrace, sigs, log)
	}
	log.Info("shutting down")
	if err := a.Close(); err != nil {
		log.Error("shutdown", "err", err)
		return 1
	}
	return 0
}

// takeCheck removes serve's --check flag (also -check, --check=BOOL) from
// args, as it is no setting that config.Load knows, and reports whether it
// was set. It reads args as the flag package does: flags end at "--" or at
// the first argument that is no flag, and the argument after a flag that
// takes a value is that value, never a flag.
func takeCheck(args []string) (rest []string, check bool, err error) {
	rest = make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || a == "-" || !strings.HasPrefix(a, "-") {
			return append(rest, args[i:]...), check, nil
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		if name == "check" {
			check = true
			if hasValue {
				if check, err = strconv.ParseBool(value); err != nil {
					return nil, false, fmt.Errorf("config: invalid boolean value %q for flag --check", value)
				}
			}
			continue
		}
		rest = append(rest, a)
		if !hasValue && config.FlagTakesValue(name) && i+1 < len(args) {
			i++
			rest = append(rest, args[i])
		}
	}
	return rest, check, nil
}

// drain keeps serving for grace while the node is marked draining, or
// until it serves nothing or another signal comes.
func drain(a *app.App, grace time.Duration, sigs <-chan os.Signal, log *slog.Logger) {
	log.Info("SIGTERM: draining before shutdown (SIGTERM again to stop now)", "grace", grace)
	a.Drain()
	end := time.NewTimer(grace)
	defer end.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case sig := <-sigs:
			log.Info("stopping now", "signal", sig.String())
			return
		case <-end.C:
			log.Info("drain grace over")
			return
		case <-tick.C:
			if a.Idle() {
				log.Info("drained: no stream left")
				return
			}
		}
	}
}

// newLogger logs to w at cfg's level, held in level so that a reload can
// change it.
func newLogger(cfg config.Config, level *slog.LevelVar, w io.Writer) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(cfg.LogLevel))
	level.Set(l)
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: logAttr}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
