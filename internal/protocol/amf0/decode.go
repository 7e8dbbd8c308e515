package amf0

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// Decode decodes one AMF0 value from the start of b and reports how many
// bytes it consumed. On error it returns nil, 0 and an error wrapping one of
// the package sentinels. Decoded strings never alias b.
func Decode(b []byte) (v any, n int, err error) {
	d := decoder{b: b}
	v, err = d.value(0)
	if err != nil {
		return nil, 0, err
	}
	return v, d.off, nil
}

// DecodeAll decodes consecutive AMF0 values until b is exhausted, as in an
// RTMP command message (name, transaction ID, command object, arguments...).
// At most MaxElements values are accepted; empty input yields no values.
func DecodeAll(b []byte) ([]any, error) {
	d := decoder{b: b}
	var vs []any
	for d.off < len(b) {
		if len(vs) == MaxElements {
			return nil, errAt("value", d.off, fmt.Errorf("more than %d top-level values: %w", MaxElements, ErrTooMany))
		}
		v, err := d.value(0)
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	return vs, nil
}

// decoder reads values from b; off is the next unread byte, and all error
// offsets are relative to the start of b.
type decoder struct {
	b      []byte
	off    int
	values int // values decoded so far, at every depth
}

// take returns the next n bytes, or false if fewer than n remain. Every
// length read from the wire goes through here before anything is allocated
// for it, so a lying length prefix costs nothing.
func (d *decoder) take(n int) ([]byte, bool) {
	if n < 0 || n > len(d.b)-d.off {
		return nil, false
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p, true
}

// value decodes one marker-prefixed value. depth is the number of containers
// enclosing it.
func (d *decoder) value(depth int) (any, error) {
	start := d.off
	mb, ok := d.take(1)
	if !ok {
		return nil, errAt("value", start, ErrShort)
	}
	if d.values == MaxValues {
		return nil, errAt("value", start, fmt.Errorf("more than %d values in all: %w", MaxValues, ErrTooMany))
	}
	d.values++
	m := mb[0]
	switch m {
	case markerNumber: // §2.2: IEEE-754 double, big-endian.
		p, ok := d.take(8)
		if !ok {
			return nil, errAt("number", start, ErrShort)
		}
		return math.Float64frombits(binary.BigEndian.Uint64(p)), nil

	case markerBoolean: // §2.3: U8, zero is false and anything else true.
		p, ok := d.take(1)
		if !ok {
			return nil, errAt("boolean", start, ErrShort)
		}
		return p[0] != 0, nil

	case markerString: // §2.4: UTF-8 with a U16 length.
		return d.utf8(2, "string", start)

	case markerLongString: // §2.14: UTF-8-long with a U32 length.
		return d.utf8(4, "long string", start)

	case markerNull: // §2.7
		return nil, nil

	case markerUndefined: // §2.8
		return Undefined, nil

	case markerObject: // §2.5
		props, err := d.properties(depth+1, "object", start)
		if err != nil {
			return nil, err
		}
		return Object(props), nil

	case markerECMAArray: // §2.10
		// The U32 associative-count is advisory: encoders in the wild
		// write 0 or a stale count, so the array runs to its
		// object-end marker exactly like an anonymous object.
		if _, ok := d.take(4); !ok {
			return nil, errAt("ECMA array", start, ErrShort)
		}
		props, err := d.properties(depth+1, "ECMA array", start)
		if err != nil {
			return nil, err
		}
		return ECMAArray(props), nil

	case markerStrictArray: // §2.12
		return d.strictArray(depth+1, start)

	case markerDate: // §2.13
		return d.date(start)
	}
	return nil, errAt(markerName(m), start, fmt.Errorf("marker 0x%02x: %w", m, ErrUnsupportedType))
}

// utf8 reads a string whose byte length is a big-endian prefix of lenSize
// (2 or 4) bytes.
func (d *decoder) utf8(lenSize int, kind string, start int) (string, error) {
	p, ok := d.take(lenSize)
	if !ok {
		return "", errAt(kind, start, ErrShort)
	}
	var n uint64
	if lenSize == 2 {
		n = uint64(binary.BigEndian.Uint16(p))
	} else {
		n = uint64(binary.BigEndian.Uint32(p))
	}
	// The declared length alone is enough to reject an oversized string;
	// there is no need to wait for (or buffer) the bytes.
	if n > MaxStringLen {
		return "", errAt(kind, start, fmt.Errorf("length %d exceeds %d: %w", n, MaxStringLen, ErrTooLong))
	}
	s, ok := d.take(int(n))
	if !ok {
		return "", errAt(kind, start, fmt.Errorf("length %d, %d bytes left: %w", n, len(d.b)-d.off, ErrShort))
	}
	return string(s), nil
}

// properties reads the key/value pairs of an object or ECMA array up to and
// including the object-end marker. depth is the depth of the container.
func (d *decoder) properties(depth int, kind string, start int) ([]Property, error) {
	if depth > MaxDepth {
		return nil, errAt(kind, start, fmt.Errorf("depth %d exceeds %d: %w", depth, MaxDepth, ErrTooDeep))
	}
	props := []Property{}
	for {
		keyOff := d.off
		key, err := d.utf8(2, kind+" key", keyOff)
		if err != nil {
			return nil, err
		}
		// §2.11: the object-end marker is a UTF-8-empty key (§1.3)
		// followed by 0x09. An empty key followed by any other marker is
		// an ordinary property whose name is "".
		if key == "" {
			if d.off >= len(d.b) {
				return nil, errAt(kind, start, ErrShort)
			}
			if d.b[d.off] == markerObjectEnd {
				d.off++
				return props, nil
			}
		}
		if len(props) == MaxElements {
			return nil, errAt(kind, start, fmt.Errorf("more than %d properties: %w", MaxElements, ErrTooMany))
		}
		v, err := d.value(depth)
		if err != nil {
			return nil, err
		}
		props = append(props, Property{Key: key, Value: v})
	}
}

// strictArray reads the U32 count and that many values. depth is the depth
// of the array itself.
func (d *decoder) strictArray(depth, start int) ([]any, error) {
	if depth > MaxDepth {
		return nil, errAt("strict array", start, fmt.Errorf("depth %d exceeds %d: %w", depth, MaxDepth, ErrTooDeep))
	}
	p, ok := d.take(4)
	if !ok {
		return nil, errAt("strict array", start, ErrShort)
	}
	n := binary.BigEndian.Uint32(p)
	if n > MaxElements {
		return nil, errAt("strict array", start, fmt.Errorf("count %d exceeds %d: %w", n, MaxElements, ErrTooMany))
	}
	// Capacity grows with the elements decoded, not with the count: a
	// count that passes the check may still be a lie, and the elements may
	// be containers that fail deeper down. Every element takes at least one
	// byte, so the remaining input bounds the first allocation too.
	elems := make([]any, 0, min(int(n), len(d.b)-d.off, 16))
	for range n {
		v, err := d.value(depth)
		if err != nil {
			return nil, err
		}
		elems = append(elems, v)
	}
	return elems, nil
}

// date reads a §2.13 Date: a double of milliseconds since the Unix epoch
// followed by an S16 time zone that the spec reserves and says to ignore.
// Sub-millisecond fractions are dropped (rounding toward negative infinity,
// as time.Time.UnixMilli does) so that decoded dates re-encode exactly.
func (d *decoder) date(start int) (time.Time, error) {
	p, ok := d.take(10)
	if !ok {
		return time.Time{}, errAt("date", start, ErrShort)
	}
	ms := math.Float64frombits(binary.BigEndian.Uint64(p))
	if math.IsNaN(ms) || ms < -maxDateMillis || ms > maxDateMillis {
		return time.Time{}, errAt("date", start, fmt.Errorf("%v ms: %w", ms, ErrInvalidDate))
	}
	return time.UnixMilli(int64(math.Floor(ms))).UTC(), nil
}
