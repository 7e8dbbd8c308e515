package app

import (
	"context"
	"time"

	"github.com/meshcast/meshcast/internal/cluster"
	"github.com/meshcast/meshcast/internal/hub"
	"github.com/meshcast/meshcast/internal/webhook"
)

// hookFlush bounds how long a closing node tries to deliver its last
// webhook events.
const hookFlush = 3 * time.Second

// startWebhooks sends the hub's session events to the configured webhook
// URLs, from the node named node.
func (a *App) startWebhooks(node cluster.NodeID) {
	// The dispatcher runs without URLs too: a reload may add some.
	d := webhook.New(webhook.Config{URLs: a.cfg.WebhookURLs, Secret: a.cfg.WebhookSecret, Node: string(node), Logger: a.log})
	a.hooks = d
	a.Hub.Subscribe(func(ev hub.Event) {
		if name := hookEvent(ev); name != "" {
			s := ev.Session
			d.Notify(webhook.Event{Event: name, Stream: string(ev.Name), Session: s.ID, Protocol: s.Protocol, RemoteAddr: s.RemoteAddr})
		}
	})
}

// hookEvent names the webhook event of a hub event, or "".
func hookEvent(ev hub.Event) string {
	switch {
	case ev.Type == hub.EventSessionStart && ev.Session.Kind == hub.KindPublish:
		return webhook.OnPublish
	case ev.Type == hub.EventSessionEnd && ev.Session.Kind == hub.KindPublish:
		return webhook.OnPublishDone
	case ev.Type == hub.EventSessionStart && ev.Session.Kind == hub.KindPlay:
		return webhook.OnPlay
	case ev.Type == hub.EventSessionEnd && ev.Session.Kind == hub.KindPlay:
		return webhook.OnStop
	}
	return ""
}

// stopWebhooks delivers what is queued, for a while, and stops.
func (a *App) stopWebhooks() {
	if a.hooks == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), hookFlush)
	defer cancel()
	a.hooks.Flush(ctx)
	a.hooks.Close()
}
