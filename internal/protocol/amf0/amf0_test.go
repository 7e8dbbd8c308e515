package amf0

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// connectCmd is an RTMP connect command as sent by FMLE-style encoders,
// written out byte by byte from the AMF0 spec.
const connectCmd = "" +
	"\x02\x00\x07connect" + // String "connect"
	"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00" + // Number 1 (transaction ID)
	"\x03" + // Object
	"\x00\x03app\x02\x00\x04live" +
	"\x00\x04type\x02\x00\x0anonprivate" +
	"\x00\x08flashVer\x02\x00\x08FMLE/3.0" +
	"\x00\x05tcUrl\x02\x00\x15rtmp://localhost/live" +
	"\x00\x00\x09" // object end

var connectValues = []any{
	"connect",
	1.0,
	Object{
		{"app", "live"},
		{"type", "nonprivate"},
		{"flashVer", "FMLE/3.0"},
		{"tcUrl", "rtmp://localhost/live"},
	},
}

// metaDataMsg is an FFmpeg-style @setDataFrame/onMetaData data message. The
// ECMA array count is deliberately wrong (3 for 7 properties), as some
// encoders write it.
const metaDataMsg = "" +
	"\x02\x00\x0d@setDataFrame" +
	"\x02\x00\x0aonMetaData" +
	"\x08\x00\x00\x00\x03" + // ECMA array, associative-count 3
	"\x00\x08duration\x00\x00\x00\x00\x00\x00\x00\x00\x00" +
	"\x00\x05width\x00\x40\x94\x00\x00\x00\x00\x00\x00" +
	"\x00\x06height\x00\x40\x86\x80\x00\x00\x00\x00\x00" +
	"\x00\x0cvideocodecid\x00\x40\x1c\x00\x00\x00\x00\x00\x00" +
	"\x00\x0caudiocodecid\x00\x40\x24\x00\x00\x00\x00\x00\x00" +
	"\x00\x06stereo\x01\x01" +
	"\x00\x07encoder\x02\x00\x0dLavf58.29.100" +
	"\x00\x00\x09"

var metaDataValues = []any{
	"@setDataFrame",
	"onMetaData",
	ECMAArray{
		{"duration", 0.0},
		{"width", 1280.0},
		{"height", 720.0},
		{"videocodecid", 7.0},
		{"audiocodecid", 10.0},
		{"stereo", true},
		{"encoder", "Lavf58.29.100"},
	},
}

// kitchenSink is one object holding every supported type, used for
// truncation tests.
const kitchenSink = "" +
	"\x03" +
	"\x00\x01n\x00\x3f\xf8\x00\x00\x00\x00\x00\x00" +
	"\x00\x01b\x01\x00" +
	"\x00\x01s\x02\x00\x02hi" +
	"\x00\x01l\x0c\x00\x00\x00\x03abc" +
	"\x00\x01z\x05" +
	"\x00\x01u\x06" +
	"\x00\x01e\x08\x00\x00\x00\x01\x00\x01k\x05\x00\x00\x09" +
	"\x00\x01a\x0a\x00\x00\x00\x02\x05\x06" +
	"\x00\x01d\x0b\x42\x78\xbc\xfe\x56\x80\x00\x00\x00\x00" +
	"\x00\x00\x09"

var kitchenSinkValue = Object{
	{"n", 1.5},
	{"b", false},
	{"s", "hi"},
	{"l", "abc"},
	{"z", nil},
	{"u", Undefined},
	{"e", ECMAArray{{"k", nil}}},
	{"a", []any{nil, Undefined}},
	{"d", time.UnixMilli(1700000000000).UTC()},
}

func TestDecodeConnect(t *testing.T) {
	got, err := DecodeAll([]byte(connectCmd))
	if err != nil {
		t.Fatalf("DecodeAll: %v", err)
	}
	if !reflect.DeepEqual(got, connectValues) {
		t.Fatalf("DecodeAll = %#v, want %#v", got, connectValues)
	}
	obj := got[2].(Object)
	if app := obj.String("app"); app != "live" {
		t.Errorf("app = %q", app)
	}
	if tc := obj.String("tcUrl"); tc != "rtmp://localhost/live" {
		t.Errorf("tcUrl = %q", tc)
	}

	v, n, err := Decode([]byte(connectCmd))
	if err != nil || v != "connect" || n != 10 {
		t.Errorf("Decode = %v, %d, %v; want connect, 10, nil", v, n, err)
	}

	enc, err := AppendAll(nil, connectValues...)
	if err != nil {
		t.Fatalf("AppendAll: %v", err)
	}
	if string(enc) != connectCmd {
		t.Errorf("AppendAll = %q, want %q", enc, connectCmd)
	}
}

func TestDecodeOnMetaData(t *testing.T) {
	got, err := DecodeAll([]byte(metaDataMsg))
	if err != nil {
		t.Fatalf("DecodeAll: %v", err)
	}
	if !reflect.DeepEqual(got, metaDataValues) {
		t.Fatalf("DecodeAll = %#v, want %#v", got, metaDataValues)
	}
	md := got[2].(ECMAArray)
	if w, ok := md.Number("width"); !ok || w != 1280 {
		t.Errorf("width = %v, %v", w, ok)
	}
	if e := md.String("encoder"); e != "Lavf58.29.100" {
		t.Errorf("encoder = %q", e)
	}
	if s, ok := md.Get("stereo"); !ok || s != true {
		t.Errorf("stereo = %v, %v", s, ok)
	}

	// Re-encoding writes the true count (7) in place of the advisory 3.
	enc, err := AppendAll(nil, got...)
	if err != nil {
		t.Fatalf("AppendAll: %v", err)
	}
	want := strings.Replace(metaDataMsg, "\x08\x00\x00\x00\x03", "\x08\x00\x00\x00\x07", 1)
	if string(enc) != want {
		t.Errorf("AppendAll = %q, want %q", enc, want)
	}
}

func TestAppendGolden(t *testing.T) {
	long := strings.Repeat("x", 65536)
	tests := []struct {
		name string
		in   any
		want string
	}{
		{"number", 1.0, "\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"},
		{"int", 7, "\x00\x40\x1c\x00\x00\x00\x00\x00\x00"},
		{"int32", int32(-2), "\x00\xc0\x00\x00\x00\x00\x00\x00\x00"},
		{"int64", int64(1280), "\x00\x40\x94\x00\x00\x00\x00\x00\x00"},
		{"uint32", uint32(720), "\x00\x40\x86\x80\x00\x00\x00\x00\x00"},
		{"float32", float32(1.5), "\x00\x3f\xf8\x00\x00\x00\x00\x00\x00"},
		{"true", true, "\x01\x01"},
		{"false", false, "\x01\x00"},
		{"string", "ab", "\x02\x00\x02ab"},
		{"empty string", "", "\x02\x00\x00"},
		{"long string", long, "\x0c\x00\x01\x00\x00" + long},
		{"max short string", long[:65535], "\x02\xff\xff" + long[:65535]},
		{"null", nil, "\x05"},
		{"undefined", Undefined, "\x06"},
		{"object", Object{{"a", 1.0}}, "\x03\x00\x01a\x00\x3f\xf0\x00\x00\x00\x00\x00\x00\x00\x00\x09"},
		{"empty object", Object{}, "\x03\x00\x00\x09"},
		{"nil object", Object(nil), "\x03\x00\x00\x09"},
		{"ecma array", ECMAArray{{"k", nil}}, "\x08\x00\x00\x00\x01\x00\x01k\x05\x00\x00\x09"},
		{"map sorted", map[string]any{"b": nil, "a": true, "c": "x"},
			"\x03\x00\x01a\x01\x01\x00\x01b\x05\x00\x01c\x02\x00\x01x\x00\x00\x09"},
		{"strict array", []any{nil, true}, "\x0a\x00\x00\x00\x02\x05\x01\x01"},
		{"empty strict array", []any{}, "\x0a\x00\x00\x00\x00"},
		{"date", time.UnixMilli(1700000000000), "\x0b\x42\x78\xbc\xfe\x56\x80\x00\x00\x00\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("pre")
			got, err := Append(prefix, tt.in)
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			if string(got) != "pre"+tt.want {
				t.Errorf("Append = %q, want %q", got, "pre"+tt.want)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	long := strings.Repeat("é", 40000) // 80000 bytes: Long String
	// Alternate the three container kinds, MaxDepth deep.
	deep := any(1.0)
	for i := range MaxDepth {
		switch i % 3 {
		case 0:
			deep = Object{{"o", deep}}
		case 1:
			deep = ECMAArray{{"e", deep}}
		default:
			deep = []any{deep}
		}
	}
	many := make(Object, MaxElements)
	for i := range many {
		many[i] = Property{Key: strings.Repeat("k", i%50), Value: float64(i)}
	}
	manyArr := make([]any, MaxElements)
	for i := range manyArr {
		manyArr[i] = nil
	}

	tests := []struct {
		name string
		in   any
		want any // zero means same as in
	}{
		{"zero", 0.0, nil},
		{"negative", -2.25, nil},
		{"max float", math.MaxFloat64, nil},
		{"smallest denormal", math.SmallestNonzeroFloat64, nil},
		{"+inf", math.Inf(1), nil},
		{"-inf", math.Inf(-1), nil},
		{"int", 42, 42.0},
		{"int32", int32(-7), -7.0},
		{"int64", int64(1 << 40), float64(1 << 40)},
		{"uint32", uint32(math.MaxUint32), float64(math.MaxUint32)},
		{"float32", float32(0.5), 0.5},
		{"true", true, nil},
		{"false", false, nil},
		{"empty string", "", nil},
		{"string", "hello", nil},
		{"unicode string", "日本語 ✓", nil},
		{"binary string", "\x00\xff\x09", nil},
		{"long string", long, nil},
		{"null", nil, nil},
		{"undefined", Undefined, nil},
		{"empty object", Object{}, nil},
		{"object", Object{{"b", 1.0}, {"a", "x"}, {"b", false}}, nil},
		{"empty key", Object{{"", nil}, {"", 1.0}}, nil},
		{"nested object", Object{{"o", Object{{"p", Object{{"q", "deep"}}}}}}, nil},
		{"ecma array", ECMAArray{{"duration", 12.5}, {"title", "t"}}, nil},
		{"empty ecma array", ECMAArray{}, nil},
		{"strict array", []any{1.0, "two", nil, Undefined, []any{true}, Object{{"k", "v"}}}, nil},
		{"empty strict array", []any{}, nil},
		{"date", time.Date(2024, 2, 29, 12, 34, 56, 789_000_000, time.UTC), nil},
		{"date non-UTC", time.Date(2024, 2, 29, 12, 34, 56, 0, time.FixedZone("X", 3600)),
			time.Date(2024, 2, 29, 11, 34, 56, 0, time.UTC)},
		{"date sub-ms", time.Unix(0, 1_999_999), time.UnixMilli(1).UTC()},
		{"date before epoch", time.UnixMilli(-1).UTC(), nil},
		{"epoch", time.UnixMilli(0).UTC(), nil},
		{"map", map[string]any{"z": 1, "a": "s"}, Object{{"a", "s"}, {"z", 1.0}}},
		{"max depth", deep, nil},
		{"max properties", many, nil},
		{"max elements", manyArr, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if want == nil {
				want = tt.in
			}
			enc, err := Append(nil, tt.in)
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			got, n, err := Decode(enc)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if n != len(enc) {
				t.Errorf("Decode consumed %d of %d bytes", n, len(enc))
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Decode = %#v, want %#v", got, want)
			}
		})
	}

	nan, _, err := Decode(appendNumber(nil, math.NaN()))
	if f, ok := nan.(float64); err != nil || !ok || !math.IsNaN(f) {
		t.Errorf("NaN round trip = %v, %v", nan, err)
	}
	negZero, _, err := Decode(appendNumber(nil, math.Copysign(0, -1)))
	if f, ok := negZero.(float64); err != nil || !ok || !math.Signbit(f) {
		t.Errorf("-0 round trip = %v, %v", negZero, err)
	}
}

func TestDecodeQuirks(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want any
	}{
		// §2.3: any non-zero byte is true.
		{"boolean nonzero", "\x01\x7f", true},
		// §2.14: a Long String may hold a short value.
		{"short long string", "\x0c\x00\x00\x00\x02hi", "hi"},
		{"empty long string", "\x0c\x00\x00\x00\x00", ""},
		// §2.10: the associative-count is ignored in both directions.
		{"ecma count too small", "\x08\x00\x00\x00\x00\x00\x01a\x05\x00\x01b\x06\x00\x00\x09",
			ECMAArray{{"a", nil}, {"b", Undefined}}},
		{"ecma count too big", "\x08\xff\xff\xff\xff\x00\x01a\x05\x00\x00\x09", ECMAArray{{"a", nil}}},
		{"ecma empty", "\x08\x00\x00\x00\x00\x00\x00\x09", ECMAArray{}},
		// §1.3/§2.11: an empty key ends the object only before 0x09.
		{"empty key property", "\x03\x00\x00\x02\x00\x01v\x00\x00\x09", Object{{"", "v"}}},
		// §2.13: the time zone is ignored; sub-ms fractions are dropped.
		{"date with time zone", "\x0b\x42\x78\xbc\xfe\x56\x80\x00\x00\xff\x88", time.UnixMilli(1700000000000).UTC()},
		{"date fraction", "\x0b\x3f\xf8\x00\x00\x00\x00\x00\x00\x00\x00", time.UnixMilli(1).UTC()},
		{"date negative fraction", "\x0b\xbf\xf8\x00\x00\x00\x00\x00\x00\x00\x00", time.UnixMilli(-2).UTC()},
		{"date max", "\x0b\x43\x3e\xb2\x08\xc2\xdc\x00\x00\x00\x00", time.UnixMilli(8.64e15).UTC()},
		{"duplicate keys kept", "\x03\x00\x01a\x05\x00\x01a\x06\x00\x00\x09", Object{{"a", nil}, {"a", Undefined}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, n, err := Decode([]byte(tt.in))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if n != len(tt.in) {
				t.Errorf("consumed %d of %d bytes", n, len(tt.in))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decode = %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestDecodeTrailingBytes(t *testing.T) {
	v, n, err := Decode([]byte("\x05\x02\x00"))
	if err != nil || v != nil || n != 1 {
		t.Errorf("Decode = %v, %d, %v; want nil, 1, nil", v, n, err)
	}
	vs, err := DecodeAll(nil)
	if err != nil || len(vs) != 0 {
		t.Errorf("DecodeAll(nil) = %v, %v", vs, err)
	}
}

func TestDecodeStringsDoNotAlias(t *testing.T) {
	b := []byte("\x03\x00\x01k\x02\x00\x01v\x00\x00\x09")
	v, _, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 'X'
	}
	if want := (Object{{"k", "v"}}); !reflect.DeepEqual(v, want) {
		t.Errorf("after overwriting input, value = %#v, want %#v", v, want)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    error
		contain string
	}{
		{"empty", "", ErrShort, "offset 0"},
		{"short number", "\x00\x3f\xf0", ErrShort, "number"},
		{"short boolean", "\x01", ErrShort, "boolean"},
		{"short string length", "\x02\x00", ErrShort, "string"},
		{"short string body", "\x02\x00\x05abc", ErrShort, "length 5, 3 bytes left"},
		{"short long string", "\x0c\x00\x00\x01\x00ab", ErrShort, "long string"},
		{"object without end", "\x03\x00\x01a\x05", ErrShort, "object key at offset 5"},
		{"object end missing 0x09", "\x03\x00\x00", ErrShort, "object at offset 0"},
		{"object value missing", "\x03\x00\x01a", ErrShort, "value at offset 4"},
		{"ecma short count", "\x08\x00\x00", ErrShort, "ECMA array"},
		{"ecma without end", "\x08\x00\x00\x00\x01\x00\x01a\x05", ErrShort, "ECMA array"},
		{"strict array short count", "\x0a\x00\x00\x00", ErrShort, "strict array"},
		{"strict array short elems", "\x0a\x00\x00\x00\x03\x05\x05", ErrShort, "value at offset 7"},
		{"short date", "\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00", ErrShort, "date"},
		{"nested offset", "\x03\x00\x01a\x03\x00\x01b\x02\x00\x09x", ErrShort, "string at offset 8"},

		{"long string too long", "\x0c\x00\x10\x00\x01", ErrTooLong, "length 1048577 exceeds 1048576"},
		{"long string max length", "\x0c\xff\xff\xff\xff", ErrTooLong, "long string"},

		{"strict array too many", "\x0a\x00\x00\x04\x01", ErrTooMany, "count 1025 exceeds 1024"},
		{"strict array 2^32-1", "\x0a\xff\xff\xff\xff\x05\x05\x05\x05\x05", ErrTooMany, "strict array"},

		{"date NaN", "\x0b\x7f\xf8\x00\x00\x00\x00\x00\x01\x00\x00", ErrInvalidDate, "date"},
		{"date +Inf", "\x0b\x7f\xf0\x00\x00\x00\x00\x00\x00\x00\x00", ErrInvalidDate, "date"},
		{"date -Inf", "\x0b\xff\xf0\x00\x00\x00\x00\x00\x00\x00\x00", ErrInvalidDate, "date"},
		{"date just past max", "\x0b\x43\x3e\xb2\x08\xc2\xdc\x00\x01\x00\x00", ErrInvalidDate, "date"},
		{"date out of range", "\x0b\x43\x41\xc3\x79\x37\xe0\x80\x00\x00\x00", ErrInvalidDate, "date"},

		{"movieclip", "\x04", ErrUnsupportedType, "marker 0x04"},
		{"reference", "\x07\x00\x01", ErrUnsupportedType, "reference at offset 0: marker 0x07"},
		{"object end as value", "\x09", ErrUnsupportedType, "marker 0x09"},
		{"unsupported", "\x0d", ErrUnsupportedType, "marker 0x0d"},
		{"recordset", "\x0e", ErrUnsupportedType, "marker 0x0e"},
		{"xml document", "\x0f\x00\x00\x00\x01x", ErrUnsupportedType, "XML document"},
		{"typed object", "\x10\x00\x01T\x00\x00\x09", ErrUnsupportedType, "typed object"},
		{"avm+", "\x11\x01", ErrUnsupportedType, "AVM+"},
		{"unknown marker", "\x12", ErrUnsupportedType, "marker 0x12"},
		{"marker 0xff", "\xff", ErrUnsupportedType, "marker 0xff"},
		{"unsupported inside object", "\x03\x00\x01a\x10", ErrUnsupportedType, "offset 4"},
		{"unsupported inside array", "\x0a\x00\x00\x00\x01\x11", ErrUnsupportedType, "offset 5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, n, err := Decode([]byte(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decode err = %v, want %v", err, tt.want)
			}
			if v != nil || n != 0 {
				t.Errorf("Decode on error returned %v, %d", v, n)
			}
			if !strings.HasPrefix(err.Error(), "amf0: ") || !strings.Contains(err.Error(), tt.contain) {
				t.Errorf("error %q: want prefix \"amf0: \" and to contain %q", err, tt.contain)
			}
			// DecodeAll accepts empty input as zero values.
			if _, err := DecodeAll([]byte(tt.in)); tt.in != "" && !errors.Is(err, tt.want) {
				t.Errorf("DecodeAll err = %v, want %v", err, tt.want)
			}
		})
	}
}

// nest wraps inner in n containers of the kind given by marker.
func nest(n int, marker byte, inner string) []byte {
	var b []byte
	for range n {
		switch marker {
		case markerObject:
			b = append(b, "\x03\x00\x01k"...)
		case markerECMAArray:
			b = append(b, "\x08\x00\x00\x00\x01\x00\x01k"...)
		case markerStrictArray:
			b = append(b, "\x0a\x00\x00\x00\x01"...)
		}
	}
	b = append(b, inner...)
	for range n {
		if marker != markerStrictArray {
			b = append(b, 0, 0, markerObjectEnd)
		}
	}
	return b
}

func TestDepthLimit(t *testing.T) {
	for _, m := range []byte{markerObject, markerECMAArray, markerStrictArray} {
		ok := nest(MaxDepth, m, "\x05")
		if _, n, err := Decode(ok); err != nil || n != len(ok) {
			t.Errorf("marker %#x: depth %d: Decode = %d, %v", m, MaxDepth, n, err)
		}
		bad := nest(MaxDepth+1, m, "\x05")
		if _, _, err := Decode(bad); !errors.Is(err, ErrTooDeep) {
			t.Errorf("marker %#x: depth %d: err = %v, want ErrTooDeep", m, MaxDepth+1, err)
		}
		// The limit trips before the (absent) rest of the input is needed.
		if _, _, err := Decode(bad[:len(bad)/2+1]); !errors.Is(err, ErrTooDeep) && !errors.Is(err, ErrShort) {
			t.Errorf("marker %#x: truncated deep input: err = %v", m, err)
		}
	}
	// Mixed nesting counts every container kind.
	mixed := append(nest(MaxDepth/2, markerStrictArray, ""), nest(MaxDepth/2+1, markerObject, "\x05")...)
	if _, _, err := Decode(mixed); !errors.Is(err, ErrTooDeep) {
		t.Errorf("mixed depth: err = %v, want ErrTooDeep", err)
	}

	// Encoding enforces the same limit, which also stops cycles.
	deep := any(nil)
	for range MaxDepth + 1 {
		deep = []any{deep}
	}
	if _, err := Append(nil, deep); !errors.Is(err, ErrTooDeep) {
		t.Errorf("Append depth %d: err = %v, want ErrTooDeep", MaxDepth+1, err)
	}
	cyclic := make([]any, 1)
	cyclic[0] = cyclic
	if _, err := Append(nil, cyclic); !errors.Is(err, ErrTooDeep) {
		t.Errorf("Append cyclic: err = %v, want ErrTooDeep", err)
	}
	obj := Object{{"self", nil}}
	m := map[string]any{"o": obj}
	obj[0].Value = m
	if _, err := Append(nil, m); !errors.Is(err, ErrTooDeep) {
		t.Errorf("Append cyclic map: err = %v, want ErrTooDeep", err)
	}
}

// properties builds an object or ECMA array body with n null properties.
func properties(head string, n int) []byte {
	b := []byte(head)
	for range n {
		b = append(b, 0, 1, 'k', markerNull)
	}
	return append(b, 0, 0, markerObjectEnd)
}

func TestElementLimit(t *testing.T) {
	for _, head := range []string{"\x03", "\x08\x00\x00\x00\x00"} {
		if _, _, err := Decode(properties(head, MaxElements)); err != nil {
			t.Errorf("%q with %d properties: %v", head, MaxElements, err)
		}
		if _, _, err := Decode(properties(head, MaxElements+1)); !errors.Is(err, ErrTooMany) {
			t.Errorf("%q with %d properties: err = %v, want ErrTooMany", head, MaxElements+1, err)
		}
	}

	arr := binary.BigEndian.AppendUint32([]byte{markerStrictArray}, MaxElements)
	arr = append(arr, bytes.Repeat([]byte{markerNull}, MaxElements)...)
	if v, _, err := Decode(arr); err != nil || len(v.([]any)) != MaxElements {
		t.Errorf("strict array of %d: %v", MaxElements, err)
	}

	nulls := bytes.Repeat([]byte{markerNull}, MaxElements)
	if vs, err := DecodeAll(nulls); err != nil || len(vs) != MaxElements {
		t.Errorf("DecodeAll of %d values: %d, %v", MaxElements, len(vs), err)
	}
	if _, err := DecodeAll(append(nulls, markerNull)); !errors.Is(err, ErrTooMany) {
		t.Errorf("DecodeAll of %d values: err = %v, want ErrTooMany", MaxElements+1, err)
	}
}

func TestStringLimit(t *testing.T) {
	b := binary.BigEndian.AppendUint32([]byte{markerLongString}, MaxStringLen)
	b = append(b, bytes.Repeat([]byte{'a'}, MaxStringLen)...)
	v, _, err := Decode(b)
	if err != nil || len(v.(string)) != MaxStringLen {
		t.Fatalf("string of MaxStringLen: %v", err)
	}
	b = binary.BigEndian.AppendUint32([]byte{markerLongString}, MaxStringLen+1)
	b = append(b, bytes.Repeat([]byte{'a'}, MaxStringLen+1)...)
	if _, _, err := Decode(b); !errors.Is(err, ErrTooLong) {
		t.Fatalf("string of MaxStringLen+1: err = %v, want ErrTooLong", err)
	}
}

// bytesAllocated reports the average heap bytes allocated per call of f.
func bytesAllocated(f func()) uint64 {
	const runs = 50
	f()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / runs
}

func TestDeclaredLengthsDoNotAllocate(t *testing.T) {
	inputs := map[string]string{
		"strict array 2^32-1":      "\x0a\xff\xff\xff\xff\x05\x05\x05\x05\x05",
		"strict array 1024, short": "\x0a\x00\x00\x04\x00\x05\x05\x05\x05\x05",
		"long string 1MiB, short":  "\x0c\x00\x10\x00\x00abcde",
		"long string 4GiB":         "\x0c\xff\xff\xff\xffabcde",
		"ecma array 2^32-1":        "\x08\xff\xff\xff\xff\x00\x01k\x05",
	}
	for name, in := range inputs {
		b := []byte(in)
		n := bytesAllocated(func() {
			if _, _, err := Decode(b); err == nil {
				t.Errorf("%s: Decode succeeded", name)
			}
		})
		if n > 1024 {
			t.Errorf("%s: %d bytes allocated per Decode, want <= 1024", name, n)
		}
	}
}

func TestTruncation(t *testing.T) {
	for _, full := range []string{kitchenSink, connectCmd[19:], metaDataMsg[29:]} {
		v, n, err := Decode([]byte(full))
		if err != nil || n != len(full) {
			t.Fatalf("full input: %d, %v", n, err)
		}
		if full == kitchenSink && !reflect.DeepEqual(v, kitchenSinkValue) {
			t.Fatalf("kitchen sink = %#v, want %#v", v, kitchenSinkValue)
		}
		// A single value is incomplete until its last byte.
		for i := range len(full) {
			v, n, err := Decode([]byte(full[:i]))
			if !errors.Is(err, ErrShort) || v != nil || n != 0 {
				t.Errorf("prefix %d/%d: Decode = %v, %d, %v; want ErrShort", i, len(full), v, n, err)
			}
		}
	}
	// A message is a sequence, so a prefix ending on a value boundary is
	// valid; any other prefix must report ErrShort.
	for _, msg := range []string{connectCmd, metaDataMsg} {
		for i := range len(msg) + 1 {
			vs, err := DecodeAll([]byte(msg[:i]))
			if err != nil && !errors.Is(err, ErrShort) {
				t.Errorf("prefix %d: err = %v, want nil or ErrShort", i, err)
			}
			if err == nil && vs != nil {
				if _, err := AppendAll(nil, vs...); err != nil {
					t.Errorf("prefix %d: re-encode: %v", i, err)
				}
			}
		}
	}
}

func TestAppendErrors(t *testing.T) {
	type custom struct{}
	tests := []struct {
		name string
		in   any
		want error
	}{
		{"struct", custom{}, ErrUnsupportedType},
		{"pointer", &Object{}, ErrUnsupportedType},
		{"string slice", []string{"a"}, ErrUnsupportedType},
		{"typed map", map[string]int{"a": 1}, ErrUnsupportedType},
		{"complex", complex(1, 2), ErrUnsupportedType},
		{"nested unsupported", Object{{"ok", 1.0}, {"bad", make(chan int)}}, ErrUnsupportedType},
		{"nested in array", []any{1.0, struct{}{}}, ErrUnsupportedType},
		{"long key", Object{{strings.Repeat("k", 65536), nil}}, ErrTooLong},
		{"long ecma key", ECMAArray{{strings.Repeat("k", 65536), nil}}, ErrTooLong},
		{"date too late", time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC), ErrInvalidDate},
		{"date too early", time.Date(-300000, 1, 1, 0, 0, 0, 0, time.UTC), ErrInvalidDate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := make([]byte, 3, 64)
			copy(dst, "pre")
			got, err := Append(dst, tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Append err = %v, want %v", err, tt.want)
			}
			if string(got) != "pre" {
				t.Errorf("Append on error returned %q, want dst unchanged", got)
			}
			got, err = AppendAll(dst, "first", tt.in)
			if !errors.Is(err, tt.want) || string(got) != "pre" {
				t.Errorf("AppendAll = %q, %v", got, err)
			}
		})
	}
}

func TestObjectAccessors(t *testing.T) {
	o := Object{{"s", "str"}, {"n", 2.5}, {"b", true}, {"s", "second"}, {"nil", nil}}
	if v, ok := o.Get("s"); !ok || v != "str" {
		t.Errorf("Get(s) = %v, %v; want first value", v, ok)
	}
	if v, ok := o.Get("nil"); !ok || v != nil {
		t.Errorf("Get(nil) = %v, %v", v, ok)
	}
	if _, ok := o.Get("missing"); ok {
		t.Error("Get(missing) reported present")
	}
	if s := o.String("n"); s != "" {
		t.Errorf("String(n) = %q, want empty", s)
	}
	if s := o.String("missing"); s != "" {
		t.Errorf("String(missing) = %q", s)
	}
	if f, ok := o.Number("n"); !ok || f != 2.5 {
		t.Errorf("Number(n) = %v, %v", f, ok)
	}
	if _, ok := o.Number("s"); ok {
		t.Error("Number(s) reported ok")
	}
	if _, ok := Object(nil).Get("x"); ok {
		t.Error("nil Object Get reported present")
	}

	a := ECMAArray(o)
	if a.String("s") != "str" {
		t.Errorf("ECMAArray.String(s) = %q", a.String("s"))
	}
	if f, ok := a.Number("n"); !ok || f != 2.5 {
		t.Errorf("ECMAArray.Number(n) = %v, %v", f, ok)
	}
	if v, ok := a.Get("b"); !ok || v != true {
		t.Errorf("ECMAArray.Get(b) = %v, %v", v, ok)
	}
}

// hasNaN reports whether v contains a NaN anywhere, since NaN != NaN defeats
// reflect.DeepEqual.
func hasNaN(v any) bool {
	switch v := v.(type) {
	case float64:
		return math.IsNaN(v)
	case []any:
		for _, e := range v {
			if hasNaN(e) {
				return true
			}
		}
	case Object:
		for _, p := range v {
			if hasNaN(p.Value) {
				return true
			}
		}
	case ECMAArray:
		for _, p := range v {
			if hasNaN(p.Value) {
				return true
			}
		}
	}
	return false
}

var sentinels = []error{ErrShort, ErrTooDeep, ErrTooMany, ErrTooLong, ErrUnsupportedType, ErrInvalidDate}

func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, n, err := Decode(b); err != nil {
			if v != nil || n != 0 {
				t.Fatalf("Decode error %v returned %v, %d", err, v, n)
			}
		} else if n < 1 || n > len(b) {
			t.Fatalf("Decode consumed %d of %d bytes", n, len(b))
		}

		vs, err := DecodeAll(b)
		if err != nil {
			known := false
			for _, s := range sentinels {
				known = known || errors.Is(err, s)
			}
			if !known {
				t.Fatalf("DecodeAll error %v wraps no sentinel", err)
			}
			return
		}
		enc, err := AppendAll(nil, vs...)
		if err != nil {
			t.Fatalf("AppendAll of decoded values: %v", err)
		}
		vs2, err := DecodeAll(enc)
		if err != nil {
			t.Fatalf("DecodeAll of re-encoded values: %v", err)
		}
		// The encoding of decoded values is canonical: a second pass must
		// produce identical bytes, NaN payloads included.
		enc2, err := AppendAll(nil, vs2...)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoding not stable: %v\n%q\n%q", err, enc, enc2)
		}
		if len(enc) > len(b) {
			// Normalisation (true ECMA-array counts, short form for
			// short Long Strings, zero time zone) never adds bytes.
			t.Fatalf("re-encoding grew from %d to %d bytes", len(b), len(enc))
		}
		if hasNaN(vs) {
			return
		}
		if !reflect.DeepEqual(vs, vs2) {
			t.Fatalf("round trip mismatch:\n%#v\n%#v", vs, vs2)
		}
	})
}

func BenchmarkDecodeConnect(b *testing.B) {
	in := []byte(connectCmd)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeAll(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendOnStatus(b *testing.B) {
	info := Object{
		{"level", "status"},
		{"code", "NetStream.Publish.Start"},
		{"description", "Start publishing"},
	}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		buf, err = AppendAll(buf[:0], "onStatus", 0, nil, info)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}
