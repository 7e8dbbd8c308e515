package events

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/meshcast/meshcast/internal/streamname"
)

// Codes of the "error" events a client gets for a refused chat message.
const (
	codeBadRequest  = "bad_request"  // not {"stream": "APP/STREAM", "text": "..."}
	codeEmpty       = "empty"        // no text left once cleaned
	codeTooLong     = "too_long"     // over MaxChatLen characters
	codeNotMember   = "not_member"   // the socket has not joined the stream's room
	codeRateLimited = "rate_limited" // over ChatBurst messages in ChatWindow
)

// parseChat reads a chat event's argument, {"stream": "APP/STREAM",
// "text": "..."}, and returns the stream, the cleaned text, or the code
// refusing it.
func parseChat(arg any) (name streamname.Name, text, code string) {
	m, ok := arg.(map[string]any)
	if !ok {
		return "", "", codeBadRequest
	}
	str, ok := m["stream"].(string)
	if !ok {
		return "", "", codeBadRequest
	}
	name, err := streamname.Parse(str)
	if err != nil {
		return "", "", codeBadRequest
	}
	raw, ok := m["text"].(string)
	if !ok {
		return name, "", codeBadRequest
	}
	if len(raw) > 4*MaxChatLen*utf8.UTFMax {
		return name, "", codeTooLong // refused before cleaning: far too long as sent
	}
	text = cleanText(raw)
	switch {
	case text == "":
		return name, "", codeEmpty
	case utf8.RuneCountInString(text) > MaxChatLen:
		return name, "", codeTooLong
	}
	return name, text, ""
}

// cleanText makes chat text plain: invalid UTF-8 and control characters
// are removed (line breaks and tabs become spaces), as are the Unicode
// controls that reorder text (bidirectional overrides and isolates), and
// the result is trimmed.
func cleanText(s string) string {
	s = strings.ToValidUTF8(s, "")
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f':
			return ' '
		case unicode.IsControl(r), isBidiControl(r):
			return -1
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}

// isBidiControl reports the explicit directional formatting characters:
// they can make a message display as something other than what it says.
func isBidiControl(r rune) bool {
	return r >= '\u202a' && r <= '\u202e' || r >= '\u2066' && r <= '\u2069' || r == '\u200e' || r == '\u200f' || r == '\u061c'
}

// rateLimiter allows ChatBurst messages in any ChatWindow: it remembers
// when the last ChatBurst allowed messages were sent.
type rateLimiter struct {
	sent [ChatBurst]time.Time
	n    int // entries of sent in use
	next int // the oldest entry, overwritten next
}

// allow reports whether a message may be sent at now, and counts it if so.
func (l *rateLimiter) allow(now time.Time) bool {
	if l.n == ChatBurst && now.Sub(l.sent[l.next]) < ChatWindow {
		return false
	}
	l.sent[l.next] = now
	l.next = (l.next + 1) % ChatBurst
	if l.n < ChatBurst {
		l.n++
	}
	return true
}

// onChat checks a chat message from c and sends it to the stream's room
// on every node.
func (s *Server) onChat(c *client, arg any) {
	name, text, code := parseChat(arg)
	if code == "" {
		s.mu.Lock()
		_, member := c.rooms[name]
		s.mu.Unlock()
		switch {
		case !member:
			code = codeNotMember
		case !c.chat.allow(s.now()):
			code = codeRateLimited
		}
	}
	if code != "" {
		s.deliver(c, "error", errorPayload(code, name))
		return
	}
	m := chatMessage{Stream: string(name), Text: text, From: c.id, Time: s.now().UTC().Format(timeFormat)}
	s.toRoom(name, "chat", mustJSON(m))
	if s.bus != nil {
		s.bus.publish(busMessage{Type: "chat", Stream: m.Stream, Text: m.Text, From: m.From, Time: m.Time})
	}
}
