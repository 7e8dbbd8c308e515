package webrtc

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pion/stun/v4"
)

// DefaultTURNTTL is how long TURN credentials last by default.
const DefaultTURNTTL = 24 * time.Hour

// iceServer is a STUN or TURN server handed to clients.
type iceServer struct {
	url  string
	turn bool // needs credentials
}

// CheckICEServer checks a STUN or TURN URL for Config.ICEServers (RFC 7064,
// RFC 7065: stun:HOST[:PORT], turn:HOST[:PORT][?transport=udp|tcp], and
// stuns:, turns:), and reports whether it is TURN's. A URL carrying a user
// name or password is refused: TURN credentials are made per session from
// Config.TURNSecret, never a static password handed to every client.
func CheckICEServer(url string) (turn bool, err error) {
	if strings.ContainsAny(url, "@ \t\r\n<>\"") {
		return false, fmt.Errorf("%q: a STUN or TURN URL carries no user name, password, space, quote or angle bracket (TURN credentials come from the TURN secret)", url)
	}
	u, err := stun.ParseURI(url)
	if err != nil {
		return false, fmt.Errorf("%q is not a STUN or TURN URL (stun:HOST:PORT, turn:HOST:PORT?transport=udp): %w", url, err)
	}
	return u.Scheme == stun.SchemeTypeTURN || u.Scheme == stun.SchemeTypeTURNS, nil
}

// parseICEServers checks Config.ICEServers: TURN URLs need a secret.
func parseICEServers(urls []string, secret string) ([]iceServer, error) {
	var out []iceServer
	for _, u := range urls {
		turn, err := CheckICEServer(u)
		if err != nil {
			return nil, err
		}
		if turn && secret == "" {
			return nil, errors.New("TURN URLs need a TURN secret: their credentials are made from it")
		}
		out = append(out, iceServer{url: u, turn: turn})
	}
	return out, nil
}

// TURNCredentials are time-limited TURN credentials in the TURN REST API
// convention (draft-uberti-behave-turn-rest, coturn's use-auth-secret):
// the user name is the expiry time in Unix seconds and a name, joined by
// a colon, and the password is the base64 HMAC-SHA1 of the user name
// keyed with the secret the TURN server shares. The TURN server checks
// the expiry and recomputes the password: nothing is stored.
func TURNCredentials(secret, name string, expires time.Time) (username, password string) {
	username = strconv.FormatInt(expires.Unix(), 10) + ":" + name
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// iceLinks are the Link header values of an answer carrying the STUN and
// TURN servers, as WHIP (RFC 9725 §4.6) and WHEP describe them:
//
//	<stun:stun.example.net>; rel="ice-server"
//	<turn:turn.example.net?transport=udp>; rel="ice-server"; username="EXPIRY:NAME"; credential="..."; credential-type="password"
//
// TURN credentials are made for the session named name and last until
// now + ttl.
func iceLinks(servers []iceServer, secret string, ttl time.Duration, name string, now time.Time) []string {
	out := make([]string, 0, len(servers))
	var user, pass string
	for _, s := range servers {
		l := "<" + s.url + `>; rel="ice-server"`
		if s.turn {
			if user == "" {
				user, pass = TURNCredentials(secret, name, now.Add(ttl))
			}
			l += `; username="` + user + `"; credential="` + pass + `"; credential-type="password"`
		}
		out = append(out, l)
	}
	return out
}
