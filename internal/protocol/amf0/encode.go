package amf0

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"
)

// Append appends the AMF0 encoding of v to dst. Besides the decoded value
// types it accepts every Go integer type, float32 (all as Number) and
// map[string]any (as an Object with keys sorted, for deterministic output).
// Strings longer than 65535 bytes use the Long String marker. On error dst
// is returned unchanged.
func Append(dst []byte, v any) ([]byte, error) {
	out, err := appendValue(dst, v, 0)
	if err != nil {
		return dst, err
	}
	return out, nil
}

// AppendAll appends the encodings of vs to dst in order, as for an RTMP
// command message. On error dst is returned unchanged.
func AppendAll(dst []byte, vs ...any) ([]byte, error) {
	out := dst
	for _, v := range vs {
		var err error
		if out, err = appendValue(out, v, 0); err != nil {
			return dst, err
		}
	}
	return out, nil
}

// appendValue encodes v; depth is the number of containers enclosing it.
// Depth is limited on encode too, both so that output always decodes and so
// that a self-referencing []any cannot recurse forever.
func appendValue(dst []byte, v any, depth int) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(dst, markerNull), nil
	case UndefinedType:
		return append(dst, markerUndefined), nil
	case bool:
		b := byte(0)
		if v {
			b = 1
		}
		return append(dst, markerBoolean, b), nil
	case float64:
		return appendNumber(dst, v), nil
	case float32:
		return appendNumber(dst, float64(v)), nil
	case int:
		return appendNumber(dst, float64(v)), nil
	case int8:
		return appendNumber(dst, float64(v)), nil
	case int16:
		return appendNumber(dst, float64(v)), nil
	case int32:
		return appendNumber(dst, float64(v)), nil
	case int64:
		return appendNumber(dst, float64(v)), nil
	case uint:
		return appendNumber(dst, float64(v)), nil
	case uint8:
		return appendNumber(dst, float64(v)), nil
	case uint16:
		return appendNumber(dst, float64(v)), nil
	case uint32:
		return appendNumber(dst, float64(v)), nil
	case uint64:
		return appendNumber(dst, float64(v)), nil
	case string:
		return appendString(dst, v)
	case time.Time:
		return appendDate(dst, v)
	case Object:
		return appendProperties(append(dst, markerObject), v, depth+1, "object")
	case ECMAArray:
		if uint64(len(v)) > math.MaxUint32 {
			return nil, fmt.Errorf("amf0: ECMA array of %d properties: %w", len(v), ErrTooMany)
		}
		dst = append(dst, markerECMAArray)
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(v)))
		return appendProperties(dst, v, depth+1, "ECMA array")
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		props := make([]Property, len(keys))
		for i, k := range keys {
			props[i] = Property{Key: k, Value: v[k]}
		}
		return appendProperties(append(dst, markerObject), props, depth+1, "object")
	case []any:
		return appendStrictArray(dst, v, depth+1)
	}
	return nil, fmt.Errorf("amf0: cannot encode Go type %T: %w", v, ErrUnsupportedType)
}

// appendNumber writes a §2.2 Number.
func appendNumber(dst []byte, f float64) []byte {
	dst = append(dst, markerNumber)
	return binary.BigEndian.AppendUint64(dst, math.Float64bits(f))
}

// appendString writes s as a §2.4 String, or as a §2.14 Long String when it
// does not fit a U16 length.
func appendString(dst []byte, s string) ([]byte, error) {
	if len(s) <= math.MaxUint16 {
		dst = append(dst, markerString)
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
		return append(dst, s...), nil
	}
	if uint64(len(s)) > math.MaxUint32 {
		return nil, fmt.Errorf("amf0: string of %d bytes: %w", len(s), ErrTooLong)
	}
	dst = append(dst, markerLongString)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...), nil
}

// appendDate writes a §2.13 Date with millisecond precision and the reserved
// time-zone field set to zero, as the spec requires.
func appendDate(dst []byte, t time.Time) ([]byte, error) {
	ms := t.UnixMilli()
	if ms < -maxDateMillis || ms > maxDateMillis {
		return nil, fmt.Errorf("amf0: date %v: %w", t, ErrInvalidDate)
	}
	dst = append(dst, markerDate)
	dst = binary.BigEndian.AppendUint64(dst, math.Float64bits(float64(ms)))
	return append(dst, 0, 0), nil
}

// appendProperties writes key/value pairs followed by the §2.11 object-end
// marker. depth is the depth of the enclosing container.
func appendProperties(dst []byte, props []Property, depth int, kind string) ([]byte, error) {
	if depth > MaxDepth {
		return nil, fmt.Errorf("amf0: %s: depth exceeds %d: %w", kind, MaxDepth, ErrTooDeep)
	}
	for _, p := range props {
		// Keys are UTF-8 with a U16 length (§1.3); there is no long form.
		if len(p.Key) > math.MaxUint16 {
			return nil, fmt.Errorf("amf0: %s key of %d bytes: %w", kind, len(p.Key), ErrTooLong)
		}
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(p.Key)))
		dst = append(dst, p.Key...)
		var err error
		if dst, err = appendValue(dst, p.Value, depth); err != nil {
			return nil, err
		}
	}
	return append(dst, 0, 0, markerObjectEnd), nil
}

// appendStrictArray writes a §2.12 Strict Array. depth is the depth of the
// array itself.
func appendStrictArray(dst []byte, elems []any, depth int) ([]byte, error) {
	if depth > MaxDepth {
		return nil, fmt.Errorf("amf0: strict array: depth exceeds %d: %w", MaxDepth, ErrTooDeep)
	}
	if uint64(len(elems)) > math.MaxUint32 {
		return nil, fmt.Errorf("amf0: strict array of %d elements: %w", len(elems), ErrTooMany)
	}
	dst = append(dst, markerStrictArray)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(elems)))
	for _, e := range elems {
		var err error
		if dst, err = appendValue(dst, e, depth); err != nil {
			return nil, err
		}
	}
	return dst, nil
}
