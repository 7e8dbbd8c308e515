package app

import (
	"errors"
	"log/slog"
	"slices"

	"github.com/meshcast/meshcast/internal/auth"
	"github.com/meshcast/meshcast/internal/config"
)

// WithReload lets the node reload its configuration (SIGHUP, POST
// /api/v1/reload) from source, which builds it as at start: the file, the
// environment and the flags, secret files read again.
func WithReload(source func() (config.Config, error)) Option {
	return func(a *App) { a.source = source }
}

// WithLogLevel lets a reload change the log level of the node's logger,
// which level governs.
func WithLogLevel(level *slog.LevelVar) Option {
	return func(a *App) { a.level = level }
}

// Reloaded is what a reload did.
type Reloaded struct {
	// Applied are the settings (flag names) changed and now in force.
	Applied []string `json:"applied"`
	// RestartNeeded are the settings changed that apply at the next
	// start only (listen addresses, node ID, Redis, ...).
	RestartNeeded []string `json:"restart_needed"`
}

// current is the configuration in force: the one the node started with,
// with the live settings of its reloads.
func (a *App) current() config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.live
}

// policy builds the authorization policy of cfg.
func (a *App) policy(cfg config.Config) (*auth.Policy, error) {
	return auth.New(auth.Config{
		PublishAuth:     cfg.PublishAuth,
		TrustedNetworks: cfg.PublishTrustedNets(),
		PublishKeys:     cfg.PublishKeys,
		URLSecret:       cfg.URLSecret,
		SignedPlayApps:  cfg.SignedPlayApps,
		Hook:            cfg.AuthHook,
		HookSecret:      cfg.AuthHookSecret,
		HookTimeout:     cfg.AuthHookTimeout,
		Node:            a.nodeID,
		Logger:          a.log,
	})
}

// Reload reads the configuration again and applies what can change while
// the node runs: publish keys, the URL secret and signed-play apps, the
// admission hook, the admin token, webhooks, CORS origins, the log level,
// per-address limits and per-app recording and transcoding. Publishers and viewers already admitted stay. A configuration
// that fails validation changes nothing, and the error says why.
func (a *App) Reload() (Reloaded, error) {
	if a.source == nil {
		return Reloaded{}, errors.New("this node was not started from a configuration it can read again")
	}
	next, err := a.source()
	if err != nil {
		a.log.Warn("reload refused: nothing changed", "err", err)
		return Reloaded{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	live, restart := config.Changes(a.live, next)
	if a.recorder == nil && next.Recording() && !a.live.Recording() {
		// Nothing was recorded at start: the recorder starts with the node.
		live = slices.DeleteFunc(live, func(f string) bool { return f == "--record" || f == "--apps" })
		restart = append(restart, "--record")
		next.Record, next.Apps = a.live.Record, a.live.Apps
	}
	cfg := config.Live(a.live, next)
	policy, err := a.policy(cfg)
	if err != nil {
		a.log.Warn("reload refused: nothing changed", "err", err)
		return Reloaded{}, err
	}
	a.auth.Set(policy)
	a.origins.Set(cfg.CORSOrigins)
	if a.hooks != nil {
		a.hooks.SetTargets(cfg.WebhookURLs, cfg.WebhookSecret)
	}
	if a.level != nil {
		var lv slog.Level
		if lv.UnmarshalText([]byte(cfg.LogLevel)) == nil {
			a.level.Set(lv)
		}
	}
	a.Hub.SetMaxSessionsPerIP(cfg.MaxViewersPerIP)
	a.httpPerIP.SetMax(cfg.MaxConnectionsPerIP)
	a.rtmp.SetMaxConnectionsPerIP(cfg.MaxConnectionsPerIP)
	if a.rtmps != nil {
		a.rtmps.SetMaxConnectionsPerIP(cfg.MaxConnectionsPerIP)
	}
	if a.rtsp != nil {
		a.rtsp.SetMaxConnectionsPerIP(cfg.MaxConnectionsPerIP)
	}
	a.api.SetConfig(cfg.Redacted(), cfg.AdminToken)
	a.live = cfg
	res := Reloaded{Applied: live, RestartNeeded: restart}
	if res.Applied == nil {
		res.Applied = []string{}
	}
	if res.RestartNeeded == nil {
		res.RestartNeeded = []string{}
	}
	a.log.Info("configuration reloaded", "applied", res.Applied, "restart_needed", res.RestartNeeded)
	return res, nil
}
