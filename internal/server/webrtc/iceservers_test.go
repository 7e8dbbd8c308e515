package webrtc

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"testing"
	"time"
)

func TestCheckICEServer(t *testing.T) {
	for url, turn := range map[string]bool{
		"stun:stun.example.net":                    false,
		"stun:stun.example.net:3478":               false,
		"stuns:stun.example.net:5349":              false,
		"stun:[2001:db8::1]:3478":                  false,
		"turn:turn.example.net":                    true,
		"turn:turn.example.net:3478?transport=udp": true,
		"turn:turn.example.net:3478?transport=tcp": true,
		"turns:turn.example.net:443?transport=tcp": true,
		"turn:203.0.113.7:3478":                    true,
	} {
		got, err := CheckICEServer(url)
		if err != nil || got != turn {
			t.Errorf("CheckICEServer(%q) = %v, %v; want %v", url, got, err, turn)
		}
	}
	for _, bad := range []string{
		"", "stun.example.net", "https://stun.example.net", "stun:", "stun:stun.example.net:x",
		"stun:stun.example.net?transport=udp", "turn:turn.example.net?transport=sctp",
		"turn:alice:hunter2@turn.example.net:3478", "turn:alice@turn.example.net",
		"stun:stun.example.net>; rel=\"x\"", "turn:turn.example.net\r\nX-Injected: 1",
	} {
		if _, err := CheckICEServer(bad); err == nil {
			t.Errorf("CheckICEServer(%q) accepted it", bad)
		}
	}
	if _, err := parseICEServers([]string{"stun:stun.example.net", "turn:turn.example.net"}, ""); err == nil {
		t.Error("a TURN URL without a secret accepted")
	}
	if _, err := parseICEServers([]string{"stun:stun.example.net"}, ""); err != nil {
		t.Errorf("a STUN URL without a secret: %v", err)
	}
}

// TestICELinks: answers carry the servers as Link headers, TURN with
// credentials in the TURN REST convention coturn checks: a user name
// EXPIRY:NAME and the base64 HMAC-SHA1 of it under the shared secret.
func TestICELinks(t *testing.T) {
	const secret = "turn-secret-of-tests"
	servers, err := parseICEServers([]string{"stun:stun.example.net:3478", "turn:turn.example.net:3478?transport=udp", "turns:turn.example.net:443?transport=tcp"}, secret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	got := iceLinks(servers, secret, time.Hour, "0123abcd", now)
	user := "1700003600:0123abcd"
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(user))
	pass := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	cred := `; username="` + user + `"; credential="` + pass + `"; credential-type="password"`
	want := []string{
		`<stun:stun.example.net:3478>; rel="ice-server"`,
		`<turn:turn.example.net:3478?transport=udp>; rel="ice-server"` + cred,
		`<turns:turn.example.net:443?transport=tcp>; rel="ice-server"` + cred,
	}
	if len(got) != len(want) {
		t.Fatalf("links %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("link %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
	// Computed apart from Go: printf %s 1433895918:alice |
	// openssl dgst -sha1 -hmac north -binary | base64
	if u, p := TURNCredentials("north", "alice", time.Unix(1433895918, 0)); u != "1433895918:alice" || p != "RqMvcGPYTJMGThVLSi4amT4zFtI=" {
		t.Errorf("TURNCredentials = %s %s", u, p)
	}
	if l := iceLinks(nil, "", time.Hour, "x", now); len(l) != 0 {
		t.Errorf("links without servers: %q", l)
	}
}
