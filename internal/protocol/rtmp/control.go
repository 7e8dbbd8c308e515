package rtmp

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrControl reports a protocol control or user control message whose
// payload is too short for its type or holds an invalid value.
var ErrControl = errors.New("malformed control message")

// Control is a decoded protocol control message (RTMP spec §5.4).
type Control struct {
	Type uint8
	// Value is the chunk size (Set Chunk Size), the chunk stream ID
	// (Abort), the sequence number (Acknowledgement) or the window size
	// (Window Acknowledgement Size, Set Peer Bandwidth).
	Value uint32
	// LimitType is Set Peer Bandwidth's limit type: 0 hard, 1 soft, 2
	// dynamic.
	LimitType uint8
}

// ParseControl decodes the payload of a protocol control message: Set Chunk
// Size, Abort, Acknowledgement, Window Acknowledgement Size or Set Peer
// Bandwidth. Bytes beyond the fields are ignored. It checks the payload's
// form only; whether a value is acceptable (a chunk size's range, say) is
// for the caller to decide.
func ParseControl(typeID uint8, p []byte) (Control, error) {
	var name string
	want := 4
	switch typeID {
	case TypeSetChunkSize:
		name = "set chunk size"
	case TypeAbort:
		name = "abort"
	case TypeAck:
		name = "acknowledgement"
	case TypeWindowAckSize:
		name = "window acknowledgement size"
	case TypeSetPeerBandwidth:
		name, want = "set peer bandwidth", 5
	default:
		return Control{}, fmt.Errorf("rtmp: message type %d is not a protocol control message: %w", typeID, ErrControl)
	}
	if len(p) < want {
		return Control{}, fmt.Errorf("rtmp: %s: %d-byte payload, want %d: %w", name, len(p), want, ErrControl)
	}
	c := Control{Type: typeID, Value: binary.BigEndian.Uint32(p)}
	if typeID == TypeSetPeerBandwidth {
		c.LimitType = p[4]
		if c.LimitType > 2 {
			return Control{}, fmt.Errorf("rtmp: %s: limit type %d, want 0, 1 or 2: %w", name, c.LimitType, ErrControl)
		}
	}
	return c, nil
}

// UserControl is a decoded User Control Message (RTMP spec §7.1.7).
type UserControl struct {
	Event uint16
	// Arg is the event's first 4-byte field: the message stream ID for
	// Stream Begin, Stream EOF, Stream Dry, Set Buffer Length and Stream Is
	// Recorded; the timestamp for Ping Request and Ping Response. It is 0
	// for events this package does not know.
	Arg uint32
	// BufferLength is Set Buffer Length's buffer size in milliseconds.
	BufferLength uint32
}

// ParseUserControl decodes the payload of a User Control Message. Events
// this package does not know (such as SWF verification) are returned with
// only Event set, so callers can ignore them; known events whose fields are
// cut short are an error. Bytes beyond the fields are ignored.
func ParseUserControl(p []byte) (UserControl, error) {
	if len(p) < 2 {
		return UserControl{}, fmt.Errorf("rtmp: user control: %d-byte payload, want at least 2: %w", len(p), ErrControl)
	}
	u := UserControl{Event: binary.BigEndian.Uint16(p)}
	want := 6
	switch u.Event {
	case EventStreamBegin, EventStreamEOF, EventStreamDry, EventRecorded, EventPingRequest, EventPingResponse:
	case EventSetBufferLen:
		want = 10
	default:
		return u, nil
	}
	if len(p) < want {
		return UserControl{}, fmt.Errorf("rtmp: user control event %d: %d-byte payload, want %d: %w", u.Event, len(p), want, ErrControl)
	}
	u.Arg = binary.BigEndian.Uint32(p[2:])
	if u.Event == EventSetBufferLen {
		u.BufferLength = binary.BigEndian.Uint32(p[6:])
	}
	return u, nil
}
