package events

import (
	"strings"
	"testing"
	"time"

	"github.com/meshcast/meshcast/internal/streamname"
)

func TestParseChat(t *testing.T) {
	tests := []struct {
		name       string
		arg        any
		wantStream streamname.Name
		wantText   string
		wantCode   string
	}{
		{"plain", map[string]any{"stream": "live/stream", "text": "hello"}, "live/stream", "hello", ""},
		{"trimmed", map[string]any{"stream": "live/stream", "text": "  hi  "}, "live/stream", "hi", ""},
		{"control characters stripped", map[string]any{"stream": "live/stream", "text": "a\x00b\x07c\x1b[31md\x7f"}, "live/stream", "abc[31md", ""},
		{"line breaks become spaces", map[string]any{"stream": "live/stream", "text": "one\ntwo\r\nthree\tfour"}, "live/stream", "one two  three four", ""},
		{"C1 controls stripped", map[string]any{"stream": "live/stream", "text": "x\u0085\u009by"}, "live/stream", "xy", ""},
		{"bidi overrides stripped", map[string]any{"stream": "live/stream", "text": "abc\u202edef\u2066g"}, "live/stream", "abcdefg", ""},
		{"emoji and joiners kept", map[string]any{"stream": "live/stream", "text": "héllo 👩\u200d💻 日本"}, "live/stream", "héllo 👩\u200d💻 日本", ""},
		{"invalid UTF-8 dropped", map[string]any{"stream": "live/stream", "text": "a\xffb"}, "live/stream", "ab", ""},
		{"HTML is text", map[string]any{"stream": "live/stream", "text": "<b>x</b>"}, "live/stream", "<b>x</b>", ""},
		{"exactly 500 characters", map[string]any{"stream": "live/stream", "text": strings.Repeat("é", 500)}, "live/stream", strings.Repeat("é", 500), ""},
		{"501 characters", map[string]any{"stream": "live/stream", "text": strings.Repeat("a", 501)}, "live/stream", "", codeTooLong},
		{"500 after trimming", map[string]any{"stream": "live/stream", "text": "  " + strings.Repeat("a", 500) + "\n"}, "live/stream", strings.Repeat("a", 500), ""},
		{"huge", map[string]any{"stream": "live/stream", "text": strings.Repeat("a", 1<<20)}, "live/stream", "", codeTooLong},
		{"empty", map[string]any{"stream": "live/stream", "text": ""}, "live/stream", "", codeEmpty},
		{"only controls and spaces", map[string]any{"stream": "live/stream", "text": " \x01\n\u202e "}, "live/stream", "", codeEmpty},
		{"text not a string", map[string]any{"stream": "live/stream", "text": 42.0}, "live/stream", "", codeBadRequest},
		{"no text", map[string]any{"stream": "live/stream"}, "live/stream", "", codeBadRequest},
		{"no stream", map[string]any{"text": "hi"}, "", "", codeBadRequest},
		{"bad stream", map[string]any{"stream": "../etc/passwd", "text": "hi"}, "", "", codeBadRequest},
		{"reserved app", map[string]any{"stream": "api/x", "text": "hi"}, "", "", codeBadRequest},
		{"stream not a string", map[string]any{"stream": []any{"live/stream"}, "text": "hi"}, "", "", codeBadRequest},
		{"not an object", "hello", "", "", codeBadRequest},
		{"nil", nil, "", "", codeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, text, code := parseChat(tt.arg)
			if code != tt.wantCode || text != tt.wantText || (tt.wantCode == "" && name != tt.wantStream) {
				t.Errorf("parseChat = (%q, %q, %q), want (%q, %q, %q)", name, text, code, tt.wantStream, tt.wantText, tt.wantCode)
			}
		})
	}
}

func TestRateLimiter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	type try struct {
		at   time.Duration
		want bool
	}
	tests := []struct {
		name  string
		tries []try
	}{
		{"five at once pass, the sixth is dropped", []try{
			{0, true}, {0, true}, {0, true}, {0, true}, {0, true}, {0, false},
		}},
		{"one every two seconds always passes", []try{
			{0, true}, {2 * time.Second, true}, {4 * time.Second, true}, {6 * time.Second, true},
			{8 * time.Second, true}, {10 * time.Second, true}, {12 * time.Second, true},
		}},
		{"window slides: the oldest frees a slot ten seconds on", []try{
			{0, true}, {time.Second, true}, {2 * time.Second, true}, {3 * time.Second, true}, {4 * time.Second, true},
			{9*time.Second + 999*time.Millisecond, false}, {10 * time.Second, true}, {10 * time.Second, false},
			{11 * time.Second, true}, {11 * time.Second, false},
		}},
		{"dropped messages do not count", []try{
			{0, true}, {0, true}, {0, true}, {0, true}, {0, true},
			{time.Second, false}, {5 * time.Second, false}, {9 * time.Second, false},
			{10 * time.Second, true}, {10 * time.Second, true}, {10 * time.Second, true}, {10 * time.Second, true}, {10 * time.Second, true},
			{10 * time.Second, false},
		}},
		{"a burst after a quiet spell", []try{
			{0, true}, {time.Minute, true}, {time.Minute, true}, {time.Minute, true}, {time.Minute, true}, {time.Minute, true},
			{time.Minute, false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l rateLimiter
			for i, tr := range tt.tries {
				if got := l.allow(at(tr.at)); got != tr.want {
					t.Fatalf("try %d at %v: allow = %v, want %v", i, tr.at, got, tr.want)
				}
			}
		})
	}
}

// TestChat runs chat through the server's handler: room members get it,
// others do not, and each refusal reaches the sender only.
func TestChat(t *testing.T) {
	s, rec := newTestServer(t, &fakeSource{})
	a, b, outsider := rec.client("a"), rec.client("b"), rec.client("c")
	s.onJoin(a, "live/stream")
	s.onJoin(b, "live/stream")
	s.onJoin(outsider, "live/other")
	rec.reset()

	s.onChat(a, map[string]any{"stream": "live/stream", "text": " hi\x07 "})
	for _, c := range []*client{a, b} {
		got := rec.take(c, "chat")
		if len(got) != 1 {
			t.Fatalf("%s got %d chat events, want 1", c.id, len(got))
		}
		m := got[0]
		if m["stream"] != "live/stream" || m["text"] != "hi" || m["from"] != "a" {
			t.Errorf("%s got %v", c.id, m)
		}
		if _, err := time.Parse(time.RFC3339, m["time"].(string)); err != nil {
			t.Errorf("time %q: %v", m["time"], err)
		}
	}
	if got := rec.take(outsider, "chat"); len(got) != 0 {
		t.Errorf("a socket outside the room got %v", got)
	}

	refused := []struct {
		name string
		from *client
		arg  any
		code string
	}{
		{"not a member", outsider, map[string]any{"stream": "live/stream", "text": "hi"}, codeNotMember},
		{"too long", a, map[string]any{"stream": "live/stream", "text": strings.Repeat("x", MaxChatLen+1)}, codeTooLong},
		{"empty", a, map[string]any{"stream": "live/stream", "text": "\n"}, codeEmpty},
		{"bad stream", a, map[string]any{"stream": "nope", "text": "hi"}, codeBadRequest},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			rec.reset()
			s.onChat(tt.from, tt.arg)
			errs := rec.take(tt.from, "error")
			if len(errs) != 1 || errs[0]["code"] != tt.code {
				t.Errorf("errors to the sender = %v, want one with code %q", errs, tt.code)
			}
			if n := rec.count("chat"); n != 0 {
				t.Errorf("%d chat events delivered", n)
			}
		})
	}

	t.Run("rate limited", func(t *testing.T) {
		rec.reset()
		// a sent one message above; four more pass, the rest are dropped.
		for i := range 8 {
			s.onChat(a, map[string]any{"stream": "live/stream", "text": "m" + string(rune('0'+i))})
		}
		if got := rec.take(b, "chat"); len(got) != ChatBurst-1 {
			t.Errorf("b got %d messages, want %d", len(got), ChatBurst-1)
		}
		if got := rec.take(a, "chat"); len(got) != ChatBurst-1 {
			t.Errorf("a got %d of its messages, want %d", len(got), ChatBurst-1)
		}
		errs := rec.take(a, "error")
		if len(errs) != 4 {
			t.Fatalf("a got %d errors, want 4", len(errs))
		}
		for _, e := range errs {
			if e["code"] != codeRateLimited {
				t.Errorf("error %v, want code %q", e, codeRateLimited)
			}
		}
		// Another socket has its own budget.
		s.onChat(b, map[string]any{"stream": "live/stream", "text": "from b"})
		if got := rec.take(a, "chat"); len(got) != 1 || got[0]["text"] != "from b" {
			t.Errorf("a got %v, want b's message", got)
		}
	})
}
