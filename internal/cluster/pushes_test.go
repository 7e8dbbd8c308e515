package cluster

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// testPushes: a stream's pushes record is kept past every lease, replaced
// whole, removed by an empty record, and bounded.
func testPushes(t *testing.T, rt registryUnderTest) {
	reg := rt.open(t, shortTimeout)
	if rec, err := reg.Pushes(bg, nameA); err != nil || rec != nil {
		t.Fatalf("Pushes of a name without a record = %q, %v; want nil, nil", rec, err)
	}
	if err := reg.SetPushes(bg, nameA, []byte("one")); err != nil {
		t.Fatalf("SetPushes: %v", err)
	}
	if err := reg.SetPushes(bg, nameB, []byte("other")); err != nil {
		t.Fatalf("SetPushes: %v", err)
	}
	time.Sleep(2 * shortTimeout) // longer than any lease: the record stays
	if rec, err := reg.Pushes(bg, nameA); err != nil || string(rec) != "one" {
		t.Fatalf("Pushes after a lease = %q, %v; want \"one\"", rec, err)
	}
	if err := reg.SetPushes(bg, nameA, []byte("two")); err != nil {
		t.Fatalf("SetPushes again: %v", err)
	}
	if rec, _ := reg.Pushes(bg, nameA); string(rec) != "two" {
		t.Fatalf("Pushes after a replacement = %q, want \"two\"", rec)
	}
	if err := reg.SetPushes(bg, nameA, nil); err != nil {
		t.Fatalf("SetPushes(nil): %v", err)
	}
	if rec, err := reg.Pushes(bg, nameA); err != nil || rec != nil {
		t.Fatalf("Pushes after removal = %q, %v; want nil, nil", rec, err)
	}
	if rec, _ := reg.Pushes(bg, nameB); string(rec) != "other" {
		t.Fatalf("another name's record = %q, want \"other\"", rec)
	}
	if err := reg.SetPushes(bg, nameA, make([]byte, MaxPushesRecord+1)); err == nil {
		t.Fatal("SetPushes of an oversized record succeeded")
	}
}

func TestSealer(t *testing.T) {
	a := NewSealer("secret-one", "pushes")
	plain := []byte(`[{"url":"rtmp://a/live/key"}]`)
	rec := a.Seal(plain)
	if bytes.Contains(rec, []byte("key")) {
		t.Fatalf("the sealed record shows its text: %q", rec)
	}
	if got, err := NewSealer("secret-one", "pushes").Open(rec); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open with the same secret = %q, %v", got, err)
	}
	for name, s := range map[string]*Sealer{
		"another secret":  NewSealer("secret-two", "pushes"),
		"another purpose": NewSealer("secret-one", "other"),
		"no secret":       NewSealer("", "pushes"),
	} {
		if _, err := s.Open(rec); !errors.Is(err, ErrUnsealed) {
			t.Errorf("Open with %s: %v, want ErrUnsealed", name, err)
		}
	}
	rec[len(rec)-1] ^= 1
	if _, err := a.Open(rec); !errors.Is(err, ErrUnsealed) {
		t.Errorf("Open of an altered record: %v, want ErrUnsealed", err)
	}
	if _, err := a.Open([]byte{1, 2}); !errors.Is(err, ErrUnsealed) {
		t.Errorf("Open of a short record: %v, want ErrUnsealed", err)
	}
}
