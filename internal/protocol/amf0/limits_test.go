package amf0

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// TestHostileNesting: input nested far beyond MaxDepth, in each container
// kind and mixed, fails with ErrTooDeep as soon as the limit is crossed:
// no deep recursion, and memory for the levels above the limit only.
func TestHostileNesting(t *testing.T) {
	const levels = 10000
	mixed := func() []byte {
		var b []byte
		for i := range levels {
			switch i % 3 {
			case 0:
				b = append(b, "\x03\x00\x01k"...)
			case 1:
				b = append(b, "\x08\x00\x00\x00\x01\x00\x01k"...)
			case 2:
				b = append(b, "\x0a\x00\x00\x00\x01"...)
			}
		}
		return append(b, markerNull)
	}
	inputs := map[string][]byte{
		"object":       nest(levels, markerObject, "\x05"),
		"ECMA array":   nest(levels, markerECMAArray, "\x05"),
		"strict array": nest(levels, markerStrictArray, "\x05"),
		"mixed":        mixed(),
		// Only the opening bytes of each level: the limit, not the end of
		// input, stops the decoder.
		"object, unterminated":                bytes.Repeat([]byte("\x03\x00\x01k"), levels),
		"strict arrays of 1024, unterminated": bytes.Repeat([]byte("\x0a\x00\x00\x04\x00"), levels),
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			for _, decode := range []func() error{
				func() error { _, _, err := Decode(in); return err },
				func() error { _, err := DecodeAll(in); return err },
			} {
				err := decode()
				if !errors.Is(err, ErrTooDeep) {
					t.Fatalf("err = %v, want ErrTooDeep", err)
				}
				if want := "depth 17 exceeds 16"; !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if n := bytesAllocated(func() { Decode(in) }); n > 8<<10 {
				t.Errorf("%d bytes allocated rejecting %d levels, want <= 8 KiB", n, levels)
			}
		})
	}
}

// TestAnnouncedCounts: the counts in front of ECMA and strict arrays never
// size an allocation. A strict array may announce at most MaxElements; an
// ECMA array's count is advisory, so a lying one decodes to the properties
// actually present.
func TestAnnouncedCounts(t *testing.T) {
	ecma := []byte("\x08\xff\xff\xff\xff\x00\x01a\x05\x00\x01b\x01\x01\x00\x00\x09")
	v, n, err := Decode(ecma)
	if err != nil || n != len(ecma) {
		t.Fatalf("ECMA array announcing 2^32-1: %d, %v", n, err)
	}
	if got := v.(ECMAArray); len(got) != 2 || got[0].Key != "a" || got[1].Value != true {
		t.Errorf("ECMA array announcing 2^32-1 = %#v", got)
	}
	if n := bytesAllocated(func() { Decode(ecma) }); n > 2<<10 {
		t.Errorf("ECMA array announcing 2^32-1: %d bytes allocated, want <= 2 KiB", n)
	}

	for _, tc := range []struct {
		name, in, contain string
		want              error
	}{
		{"strict array 2^32-1, 3 elements", "\x0a\xff\xff\xff\xff\x05\x05\x05", "strict array at offset 0: count 4294967295 exceeds 1024", ErrTooMany},
		{"strict array 1024, 3 elements", "\x0a\x00\x00\x04\x00\x05\x05\x05", "value at offset 8", ErrShort},
		{"ECMA array 2^32-1, unterminated", "\x08\xff\xff\xff\xff\x00\x01a\x05", "ECMA array", ErrShort},
	} {
		in := []byte(tc.in)
		_, _, err := Decode(in)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.contain) {
			t.Errorf("%s: err = %v, want %v containing %q", tc.name, err, tc.want, tc.contain)
		}
		if n := bytesAllocated(func() { Decode(in) }); n > 2<<10 {
			t.Errorf("%s: %d bytes allocated, want <= 2 KiB", tc.name, n)
		}
	}
}

// TestLongStringLengths: a Long String announcing 0xFFFFFFFF bytes fails on
// its length alone, whatever follows; one within MaxStringLen but longer
// than the input fails as truncated. Neither allocates the announced size.
func TestLongStringLengths(t *testing.T) {
	for _, tc := range []struct {
		name, in, contain string
		want              error
	}{
		{"0xFFFFFFFF, short body", "\x0c\xff\xff\xff\xffabc", "long string at offset 0: length 4294967295 exceeds 1048576", ErrTooLong},
		{"0xFFFFFFFF, no body", "\x0c\xff\xff\xff\xff", "length 4294967295 exceeds 1048576", ErrTooLong},
		{"MaxStringLen, short body", "\x0c\x00\x10\x00\x00abc", "length 1048576, 3 bytes left", ErrShort},
		{"inside a command", "\x02\x00\x07connect\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\x03\x00\x03app\x0c\xff\xff\xff\xffab", "long string at offset 25", ErrTooLong},
	} {
		in := []byte(tc.in)
		_, err := DecodeAll(in)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.contain) {
			t.Errorf("%s: err = %v, want %v containing %q", tc.name, err, tc.want, tc.contain)
		}
		if n := bytesAllocated(func() { DecodeAll(in) }); n > 2<<10 {
			t.Errorf("%s: %d bytes allocated, want <= 2 KiB", tc.name, n)
		}
	}
}

// TestValueLimit: MaxValues bounds the values of one call at every depth
// together, so a message of one-byte values cannot decode to many times
// its size even though each container stays within MaxElements.
func TestValueLimit(t *testing.T) {
	// arrays returns k strict arrays of per nulls each: k*(per+1) values.
	arrays := func(k, per int) []byte {
		var b []byte
		for range k {
			b = binary.BigEndian.AppendUint32(append(b, markerStrictArray), uint32(per))
			b = append(b, bytes.Repeat([]byte{markerNull}, per)...)
		}
		return b
	}
	ok := arrays(MaxValues/MaxElements, MaxElements-1)
	if vs, err := DecodeAll(ok); err != nil || len(vs) != MaxValues/MaxElements {
		t.Fatalf("exactly %d values: %d, %v", MaxValues, len(vs), err)
	}
	// One array inside another, so Decode sees them all too.
	wrapped := binary.BigEndian.AppendUint32([]byte{markerStrictArray}, MaxValues/MaxElements)
	wrapped = append(wrapped, ok...)
	if _, _, err := Decode(wrapped); !errors.Is(err, ErrTooMany) || !strings.Contains(err.Error(), "more than 8192 values in all") {
		t.Errorf("Decode of %d values: err = %v, want ErrTooMany", MaxValues+1, err)
	}
	// 1 MiB of nulls in arrays of MaxElements: rejected after MaxValues,
	// having allocated a small fraction of what decoding it all would.
	huge := arrays(1<<20/(MaxElements+5), MaxElements)
	var err error
	n := bytesAllocated(func() { _, err = DecodeAll(huge) })
	if !errors.Is(err, ErrTooMany) {
		t.Fatalf("DecodeAll of %d bytes of nulls: err = %v, want ErrTooMany", len(huge), err)
	}
	if n > 512<<10 {
		t.Errorf("DecodeAll of %d bytes of nulls allocated %d bytes, want <= 512 KiB", len(huge), n)
	}
}
