package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/config"
	"github.com/meshcast/meshcast/internal/streamname"
)

// signCmd prints a signed play URL or publish token:
//
//	meshcast sign --stream live/cam1 --ttl 1h [--action play] [--url URL]
//
// The secret comes from --url-secret or MESHCAST_URL_SECRET, as for serve.
func signCmd(args, env []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshcast sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	secret := fs.String("url-secret", "", "the nodes' --url-secret (default: $"+config.EnvPrefix+"URL_SECRET)")
	action := fs.String("action", "play", "play or publish")
	name := fs.String("stream", "", "APP/STREAM the URL is for")
	ttl := fs.Duration("ttl", time.Hour, "how long the URL stays valid")
	base := fs.String("url", "", "URL to sign (its query gets the signature); empty prints only the parameters")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: meshcast sign --stream APP/STREAM [--action play|publish] [--ttl 1h] [--url URL]")
		fmt.Fprintln(stderr, "prints ?expires=...&sig=... for a play URL, or the stream key NAME?expires=...&sig=... for publishing")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *secret == "" {
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, config.EnvPrefix+"URL_SECRET="); ok {
				*secret = v
			}
		}
	}
	n, err := streamname.Parse(*name)
	switch {
	case *secret == "":
		fmt.Fprintln(stderr, "meshcast sign: --url-secret (or "+config.EnvPrefix+"URL_SECRET) is required")
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "meshcast sign: --stream: %v\n", err)
		return 2
	case *action != string(auth.Play) && *action != string(auth.Publish):
		fmt.Fprintln(stderr, "meshcast sign: --action must be play or publish")
		return 2
	case *ttl <= 0:
		fmt.Fprintln(stderr, "meshcast sign: --ttl must be positive")
		return 2
	}
	q := auth.Sign(*secret, auth.Action(*action), n, time.Now().Add(*ttl))
	switch {
	case *base != "":
		sep := "?"
		if strings.Contains(*base, "?") {
			sep = "&"
		}
		fmt.Fprintln(stdout, *base+sep+q)
	case *action == string(auth.Publish):
		fmt.Fprintln(stdout, n.Stream()+"?"+q) // the stream key, as typed into OBS
	default:
		fmt.Fprintln(stdout, "?"+q)
	}
	return 0
}
