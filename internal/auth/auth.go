// Package auth decides who may publish and play: publish keys, signed
// publish tokens and play URLs, and an HTTP admission hook.
//
// A publisher's credentials travel with the stream name as OBS users type
// them, NAME?key=KEY, or as a signed token NAME?expires=UNIX&sig=HEX; a
// player's signed URL carries ?expires=UNIX&sig=HEX. The signature is the
// hex HMAC-SHA256, under the URL secret, of "ACTION\nAPP/STREAM\nEXPIRES"
// (see [Sign]). Secrets and keys never reach a log line.
package auth

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshcast/meshcast/internal/clock"
	"github.com/meshcast/meshcast/internal/streamname"
	"github.com/meshcast/meshcast/internal/webhook"
)

// Action is what a client asks to do with a stream.
type Action string

// Actions.
const (
	Publish Action = "publish"
	Play    Action = "play"
)

// Publish admission modes: who may publish without credentials.
const (
	ModeLoopback = "loopback" // clients on this machine
	ModeAlways   = "always"   // nobody
	ModeOpen     = "open"     // everybody
)

// Request is a client's request to publish or play a stream.
type Request struct {
	Action Action
	Name   streamname.Name
	// Params are the parameters the client sent with the name or URL: key,
	// expires, sig and whatever an admission hook wants.
	Params url.Values
	// Remote is the client's address (behind a trusted proxy, the client's
	// own); invalid when unknown.
	Remote   netip.Addr
	Protocol string // "rtmp", "http-flv", "hls", ...
}

// Grant is an admitted request.
type Grant struct {
	// Credential identifies the credentials a publisher presented, as a
	// digest; empty when it presented none. A publisher presenting the same
	// credential as a stream's live publisher takes the stream over.
	Credential string
}

// Error is a refusal. Status is its HTTP status: 401 when credentials are
// missing, 403 when they are wrong, 410 when a signed URL has expired.
type Error struct {
	Status int
	Reason string
}

func (e *Error) Error() string { return e.Reason }

// StatusOf returns the HTTP status of a refusal, 403 for other errors.
func StatusOf(err error) int {
	var ae *Error
	if errors.As(err, &ae) {
		return ae.Status
	}
	return http.StatusForbidden
}

// Refusals.
var (
	ErrKeyRequired = &Error{http.StatusUnauthorized, "publishing needs a key: use stream key NAME?key=KEY"}
	ErrBadKey      = &Error{http.StatusForbidden, "invalid publish key"}
	ErrSigRequired = &Error{http.StatusUnauthorized, "this stream needs a signed URL (?expires=...&sig=...)"}
	ErrBadSig      = &Error{http.StatusForbidden, "invalid signature"}
	ErrExpired     = &Error{http.StatusGone, "signed URL expired"}
	ErrHookRefused = &Error{http.StatusForbidden, "refused by the admission hook"}
	ErrHookFailed  = &Error{http.StatusForbidden, "admission hook unavailable: refused"}
)

// Config configures a Policy.
type Config struct {
	// PublishAuth is ModeLoopback, ModeAlways or ModeOpen. Defaults to
	// ModeLoopback.
	PublishAuth string
	// TrustedNetworks publish without credentials under ModeLoopback, as
	// loopback does: a container's host reaching it from a bridge
	// network, a LAN of encoders.
	TrustedNetworks []netip.Prefix
	// PublishKeys are PATTERN=KEY entries: PATTERN is an app, APP/STREAM
	// or a path.Match pattern over APP/STREAM.
	PublishKeys []string
	// URLSecret signs publish tokens and play URLs.
	URLSecret string
	// SignedPlayApps need signed play URLs; "*" is every app.
	SignedPlayApps []string
	// Hook, when set, is asked about every request.
	Hook string
	// HookSecret signs the hook's requests.
	HookSecret string
	// HookTimeout bounds the hook's answer. Defaults to 2s.
	HookTimeout time.Duration
	// Node names this node in hook requests.
	Node func() string
	// Client makes hook requests. Defaults to a client of its own.
	Client *http.Client
	// Now defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// key is one static publish key.
type key struct {
	pattern string // a path.Match pattern over APP/STREAM
	key     []byte
}

// Authorizer admits or refuses a client's request to publish or play.
// Every server that takes clients asks one (the node's Policy); a nil
// Authorizer in a server's config admits everybody.
type Authorizer interface {
	Check(ctx context.Context, req Request) (Grant, error)
}

var _ Authorizer = (*Policy)(nil)

// Policy is the node's Authorizer: publish keys, signed publish tokens
// and play URLs, and the admission hook, as configured.
type Policy struct {
	cfg    Config
	keys   []key
	log    *slog.Logger
	client *http.Client

	// The hook's recent admissions of players, so that an HLS player's
	// every segment does not ask it again.
	mu     sync.Mutex
	admits map[string]time.Time // request digest → when the admission lapses
}

// Bounds of the cache of the hook's admissions.
const (
	admitTTL  = 10 * time.Second
	maxAdmits = 10000
)

// New returns a Policy; cfg has been validated by the config package.
func New(cfg Config) (*Policy, error) {
	if cfg.PublishAuth == "" {
		cfg.PublishAuth = ModeLoopback
	}
	if cfg.HookTimeout <= 0 {
		cfg.HookTimeout = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Policy{cfg: cfg, log: cfg.Logger.With("component", "auth"), client: cfg.Client}
	if a.client == nil {
		a.client = &http.Client{
			// An admission hook answers itself: a redirect is a refusal.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	for _, e := range cfg.PublishKeys {
		pattern, k, ok := strings.Cut(e, "=")
		if !ok || pattern == "" || k == "" {
			return nil, errors.New("auth: a publish key is not PATTERN=KEY")
		}
		if !strings.Contains(pattern, "/") {
			pattern += "/*" // an app: every stream in it
		}
		if _, err := path.Match(pattern, "a/b"); err != nil {
			return nil, fmt.Errorf("auth: publish key pattern %q: %w", pattern, err)
		}
		a.keys = append(a.keys, key{pattern: pattern, key: []byte(k)})
	}
	return a, nil
}

// PlaySigned reports whether players of app need a signed URL.
func (a *Policy) PlaySigned(app string) bool {
	return slices.Contains(a.cfg.SignedPlayApps, "*") || slices.Contains(a.cfg.SignedPlayApps, app)
}

// Check admits or refuses req. A refusal is an *Error.
// It implements Authorizer.
func (a *Policy) Check(ctx context.Context, req Request) (Grant, error) {
	var g Grant
	var err error
	switch req.Action {
	case Publish:
		g, err = a.checkPublish(req)
	case Play:
		err = a.checkPlay(req)
	default:
		return Grant{}, &Error{http.StatusBadRequest, "unknown action"}
	}
	if err != nil {
		return Grant{}, err
	}
	if a.cfg.Hook != "" {
		if err := a.askCached(ctx, req); err != nil {
			return Grant{}, err
		}
		if req.Action == Publish && g.Credential == "" {
			// The hook vouched for what the publisher sent.
			if k := req.Params.Get("key"); k != "" {
				g.Credential = digest("hook-key", k)
			}
		}
	}
	return g, nil
}

func (a *Policy) checkPublish(req Request) (Grant, error) {
	hook := a.cfg.Hook != ""
	if k := req.Params.Get("key"); k != "" {
		for _, sk := range a.keys {
			if ok, _ := path.Match(sk.pattern, string(req.Name)); ok && subtle.ConstantTimeCompare(sk.key, []byte(k)) == 1 {
				return Grant{Credential: digest("key", k)}, nil
			}
		}
		if !hook && !a.free(req.Remote) {
			return Grant{}, ErrBadKey // the hook may know keys this node does not
		}
	}
	if req.Params.Has("sig") && a.cfg.URLSecret != "" {
		err := a.verify(req)
		if err == nil {
			// Any valid token for the stream speaks for its publisher.
			return Grant{Credential: digest("token", string(req.Name))}, nil
		}
		if !hook && !a.free(req.Remote) {
			return Grant{}, err
		}
	}
	if hook || a.free(req.Remote) {
		return Grant{}, nil
	}
	if req.Params.Get("key") != "" {
		return Grant{}, ErrBadKey
	}
	return Grant{}, ErrKeyRequired
}

// free reports whether a client at addr may publish without credentials.
func (a *Policy) free(addr netip.Addr) bool {
	switch a.cfg.PublishAuth {
	case ModeOpen:
		return true
	case ModeLoopback:
		if !addr.IsValid() {
			return false
		}
		addr = addr.Unmap()
		if addr.IsLoopback() {
			return true
		}
		for _, p := range a.cfg.TrustedNetworks {
			if p.Contains(addr) {
				return true
			}
		}
	}
	return false
}

// Hint returns, for a log line, the settings that would admit a publisher
// refused with err: attributes to append to the line, none for another
// refusal. The client is never told: it learns only that it needs a key.
func Hint(err error) []any {
	if !errors.Is(err, ErrKeyRequired) {
		return nil
	}
	return []any{"hint", "publish with a key (NAME?key=KEY, keys from --publish-keys), or let the client's network " +
		"publish without one with --publish-trusted-networks CIDR (e.g. 172.16.0.0/12 for Docker's bridge networks), " +
		"or --publish-auth open"}
}

func (a *Policy) checkPlay(req Request) error {
	if !a.PlaySigned(req.Name.App()) {
		return nil
	}
	if !req.Params.Has("sig") {
		return ErrSigRequired
	}
	return a.verify(req)
}

// verify checks req's signature, then its expiry.
func (a *Policy) verify(req Request) error {
	exp := req.Params.Get("expires")
	sig, err := hex.DecodeString(req.Params.Get("sig"))
	if err != nil || exp == "" || a.cfg.URLSecret == "" {
		return ErrBadSig
	}
	want := mac(a.cfg.URLSecret, req.Action, req.Name, exp)
	if !hmac.Equal(sig, want) {
		return ErrBadSig
	}
	t, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return ErrBadSig
	}
	// The signer's clock may be behind or ahead of ours: the URL is good
	// until expires plus clock.MaxSkew. (Written so that no expires,
	// however large or small, overflows.)
	if t < a.cfg.Now().Unix()-int64(clock.MaxSkew/time.Second) {
		return ErrExpired
	}
	return nil
}

func mac(secret string, action Action, name streamname.Name, expires string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	io.WriteString(m, string(action)+"\n"+string(name)+"\n"+expires)
	return m.Sum(nil)
}

// Sign returns the query parameters (expires=UNIX&sig=HEX) that let a
// client perform action on name until expires; nodes accept them for
// clock.MaxSkew more, as their clocks may be behind the signer's.
func Sign(secret string, action Action, name streamname.Name, expires time.Time) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	return "expires=" + exp + "&sig=" + hex.EncodeToString(mac(secret, action, name, exp))
}

// digest names a credential without keeping it.
func digest(kind, v string) string {
	h := sha256.Sum256([]byte(kind + "\x00" + v))
	return kind + ":" + hex.EncodeToString(h[:12])
}

// HookRequest is the JSON body POSTed to the admission hook. It is signed
// like a webhook delivery: X-Meshcast-Signature is "sha256=" and the hex
// HMAC-SHA256, under the hook secret, of X-Meshcast-Timestamp, a dot and
// the body.
type HookRequest struct {
	Action   Action            `json:"action"` // "publish" or "play"
	Stream   string            `json:"stream"` // APP/STREAM
	App      string            `json:"app"`
	Name     string            `json:"name"`
	Params   map[string]string `json:"params"` // what the client sent with the name, key included
	ClientIP string            `json:"client_ip"`
	Protocol string            `json:"protocol"`
	Node     string            `json:"node"`
	Time     time.Time         `json:"time"`
}

func (a *Policy) node() string {
	if a.cfg.Node == nil {
		return ""
	}
	return a.cfg.Node()
}

// maxHookParams and maxHookParamLen bound what a client's parameters add
// to a hook request: at most 32 of them, each name and value cut at 1 KiB.
const (
	maxHookParams   = 32
	maxHookParamLen = 1024
)

// askCached asks the hook, answering a player's request from a recent
// admission of the same request when there is one. Publishers are always
// asked: publishing is rare, and the hook may count publishers.
func (a *Policy) askCached(ctx context.Context, req Request) error {
	if req.Action != Play {
		return a.ask(ctx, req)
	}
	params := url.Values{}
	for k, v := range req.Params {
		if !strings.HasPrefix(k, "_HLS_") { // LL-HLS asks for the next part with each reload
			params[k] = v
		}
	}
	k := digest("admit", string(req.Name)+"\x00"+req.Remote.String()+"\x00"+req.Protocol+"\x00"+params.Encode())
	now := time.Now()
	a.mu.Lock()
	until, ok := a.admits[k]
	a.mu.Unlock()
	if ok && now.Before(until) {
		return nil
	}
	if err := a.ask(ctx, req); err != nil {
		return err
	}
	a.mu.Lock()
	if a.admits == nil || len(a.admits) >= maxAdmits {
		a.admits = make(map[string]time.Time) // full: start over rather than scan
	}
	a.admits[k] = now.Add(admitTTL)
	a.mu.Unlock()
	return nil
}

// ask puts req to the admission hook: 2xx admits, anything else refuses,
// and so does no answer within the timeout.
func (a *Policy) ask(ctx context.Context, req Request) error {
	params := make(map[string]string, min(len(req.Params), maxHookParams))
	for k, v := range req.Params {
		if len(params) == maxHookParams {
			break
		}
		if len(v) > 0 && len(k) <= maxHookParamLen {
			params[k] = v[0][:min(len(v[0]), maxHookParamLen)]
		}
	}
	ip := ""
	if req.Remote.IsValid() {
		ip = req.Remote.Unmap().String()
	}
	body, err := json.Marshal(HookRequest{
		Action: req.Action, Stream: string(req.Name), App: req.Name.App(), Name: req.Name.Stream(),
		Params: params, ClientIP: ip, Protocol: req.Protocol, Node: a.node(), Time: a.cfg.Now().UTC(),
	})
	if err != nil {
		return ErrHookFailed
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.HookTimeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, a.cfg.Hook, bytes.NewReader(body))
	if err != nil {
		return ErrHookFailed
	}
	ts := strconv.FormatInt(a.cfg.Now().Unix(), 10)
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set(webhook.HeaderTimestamp, ts)
	hr.Header.Set(webhook.HeaderSignature, webhook.Sign(a.cfg.HookSecret, ts, body))
	hr.Header.Set(webhook.HeaderEvent, "auth_"+string(req.Action))
	resp, err := a.client.Do(hr)
	if err != nil {
		a.log.Warn("admission hook failed: refusing", "action", req.Action, "stream", req.Name, "err", err)
		return ErrHookFailed
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		a.log.Info("admission hook refused", "action", req.Action, "stream", req.Name, "status", resp.StatusCode)
		return ErrHookRefused
	}
	return nil
}

// SplitName separates a stream name as a client sent it from the
// parameters after "?": "cam?key=K" gives "cam" and key=K. Malformed
// parameters are dropped.
func SplitName(raw string) (string, url.Values) {
	name, query, _ := strings.Cut(raw, "?")
	q, _ := url.ParseQuery(query)
	return name, q
}

// RemoteAddr parses a net.Addr's or an http.Request's address string.
func RemoteAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	a, _ := netip.ParseAddr(s)
	return a.Unmap()
}
