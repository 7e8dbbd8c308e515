// Package amf0 encodes and decodes Action Message Format version 0 (AMF0),
// the serialisation RTMP uses for command messages (type 20) and data
// messages (type 18) such as connect, publish, onStatus and onMetaData.
//
// The package works purely on byte slices. Decoded values use these Go types,
// so callers can type-switch on them:
//
//	Number             float64
//	Boolean            bool
//	String/Long String string
//	Null               nil
//	Undefined          Undefined (UndefinedType)
//	Object             Object (ordered properties)
//	ECMA Array         ECMAArray (ordered properties)
//	Strict Array       []any
//	Date               time.Time (UTC, millisecond precision)
//
// Section numbers in comments refer to "Action Message Format -- AMF 0"
// (Adobe Systems, December 2007).
package amf0

import (
	"errors"
	"fmt"
)

// Limits enforced by the decoder. AMF0 arrives from untrusted peers, so every
// count and length on the wire is checked against these before it is used.
const (
	// MaxDepth is the deepest nesting of objects, ECMA arrays and strict
	// arrays that Decode accepts (and Append produces); a top-level object
	// is at depth 1.
	MaxDepth = 16
	// MaxElements is the largest number of properties or elements Decode
	// accepts in one object or array, and of top-level values in DecodeAll.
	// A count announced on the wire (a strict array's) is checked against
	// it before anything is allocated; capacity then follows the elements
	// as they are decoded, never the announced count.
	MaxElements = 1024
	// MaxValues is the largest number of values, at every depth together,
	// that one Decode or DecodeAll call produces. Each value takes at least
	// one byte of input but 16 to 32 bytes decoded, so without this bound a
	// large message of tiny values, nested to stay within MaxElements per
	// container, would decode to many times its size.
	MaxValues = 8192
	// MaxStringLen is the longest string, in bytes, that Decode accepts.
	MaxStringLen = 1 << 20
)

// Sentinel errors. Every error returned by this package wraps exactly one of
// them, so callers can test with errors.Is. The wrapping error carries the
// "amf0:" prefix and, for decode errors, the value kind and its byte offset.
var (
	// ErrShort reports input that ends before the value it started is complete.
	ErrShort = errors.New("truncated input")
	// ErrTooDeep reports nesting beyond MaxDepth.
	ErrTooDeep = errors.New("nesting too deep")
	// ErrTooMany reports an object or array with more than MaxElements
	// entries, a DecodeAll input with more than MaxElements top-level
	// values, or an input with more than MaxValues values in all.
	ErrTooMany = errors.New("too many elements")
	// ErrTooLong reports a string longer than MaxStringLen on decode, or a
	// string or key too long for its length prefix on encode.
	ErrTooLong = errors.New("string too long")
	// ErrUnsupportedType reports a type marker this package does not decode
	// (typed object, XML document, AVM+ switch, reference, movieclip,
	// recordset, unsupported, or a byte that is not a value marker at all),
	// or a Go type that Append cannot encode.
	ErrUnsupportedType = errors.New("unsupported type")
	// ErrInvalidDate reports a Date whose millisecond count is not finite or
	// lies outside the ECMAScript time range of ±8.64e15 ms.
	ErrInvalidDate = errors.New("invalid date")
)

// Type markers, §2.1.
const (
	markerNumber      = 0x00
	markerBoolean     = 0x01
	markerString      = 0x02
	markerObject      = 0x03
	markerMovieClip   = 0x04
	markerNull        = 0x05
	markerUndefined   = 0x06
	markerReference   = 0x07
	markerECMAArray   = 0x08
	markerObjectEnd   = 0x09
	markerStrictArray = 0x0A
	markerDate        = 0x0B
	markerLongString  = 0x0C
	markerUnsupported = 0x0D
	markerRecordSet   = 0x0E
	markerXMLDocument = 0x0F
	markerTypedObject = 0x10
	markerAVMPlus     = 0x11
)

// maxDateMillis is the ECMAScript time value range (ECMA-262 "Time Values
// and Time Range"), which bounds what a Flash Date can hold.
const maxDateMillis = 8.64e15

// markerName names a marker for error messages.
func markerName(m byte) string {
	switch m {
	case markerNumber:
		return "number"
	case markerBoolean:
		return "boolean"
	case markerString:
		return "string"
	case markerObject:
		return "object"
	case markerMovieClip:
		return "movieclip"
	case markerNull:
		return "null"
	case markerUndefined:
		return "undefined"
	case markerReference:
		return "reference"
	case markerECMAArray:
		return "ECMA array"
	case markerObjectEnd:
		return "object end"
	case markerStrictArray:
		return "strict array"
	case markerDate:
		return "date"
	case markerLongString:
		return "long string"
	case markerUnsupported:
		return "unsupported"
	case markerRecordSet:
		return "recordset"
	case markerXMLDocument:
		return "XML document"
	case markerTypedObject:
		return "typed object"
	case markerAVMPlus:
		return "AVM+ switch"
	}
	return "unknown"
}

// UndefinedType is the type of Undefined; it has no other values.
type UndefinedType struct{}

// Undefined is the AMF0 undefined value (§2.8), distinct from null (nil).
var Undefined = UndefinedType{}

// Property is one key/value pair of an Object or ECMAArray.
type Property struct {
	Key   string
	Value any
}

// Object is an anonymous AMF0 object (§2.5). It is a slice rather than a map
// because key order is visible on the wire and some peers depend on it.
type Object []Property

// Get returns the value of the first property named key.
func (o Object) Get(key string) (any, bool) {
	for _, p := range o {
		if p.Key == key {
			return p.Value, true
		}
	}
	return nil, false
}

// String returns the string value of key, or "" if key is absent or not a string.
func (o Object) String(key string) string {
	v, _ := o.Get(key)
	s, _ := v.(string)
	return s
}

// Number returns the numeric value of key, and false if key is absent or not
// a number.
func (o Object) Number(key string) (float64, bool) {
	v, _ := o.Get(key)
	f, ok := v.(float64)
	return f, ok
}

// ECMAArray is an AMF0 ECMA (associative) array (§2.10), used by onMetaData.
// It is kept separate from Object so that it re-encodes with its own marker.
type ECMAArray []Property

// Get returns the value of the first property named key.
func (a ECMAArray) Get(key string) (any, bool) { return Object(a).Get(key) }

// String returns the string value of key, or "" if key is absent or not a string.
func (a ECMAArray) String(key string) string { return Object(a).String(key) }

// Number returns the numeric value of key, and false if key is absent or not
// a number.
func (a ECMAArray) Number(key string) (float64, bool) { return Object(a).Number(key) }

// errAt builds an error for the value of the given kind starting at off.
func errAt(kind string, off int, err error) error {
	return fmt.Errorf("amf0: %s at offset %d: %w", kind, off, err)
}
