// Package rtmp implements the RTMP wire format (Adobe RTMP specification
// 1.0, December 2012): the handshake, the chunk stream, protocol control and
// command messages. It does no networking of its own; servers and clients
// drive it over a connection.
package rtmp

import (
	"encoding/binary"
)

// Message type IDs (RTMP spec §5.4, §7.1).
const (
	TypeSetChunkSize     uint8 = 1
	TypeAbort            uint8 = 2
	TypeAck              uint8 = 3
	TypeUserControl      uint8 = 4
	TypeWindowAckSize    uint8 = 5
	TypeSetPeerBandwidth uint8 = 6
	TypeAudio            uint8 = 8
	TypeVideo            uint8 = 9
	TypeDataAMF3         uint8 = 15
	TypeCommandAMF3      uint8 = 17
	TypeDataAMF0         uint8 = 18
	TypeCommandAMF0      uint8 = 20
	TypeAggregate        uint8 = 22
)

// User control event types (RTMP spec §7.1.7).
const (
	EventStreamBegin  uint16 = 0
	EventStreamEOF    uint16 = 1
	EventStreamDry    uint16 = 2
	EventSetBufferLen uint16 = 3
	EventRecorded     uint16 = 4
	EventPingRequest  uint16 = 6
	EventPingResponse uint16 = 7
)

// Chunk stream IDs meshcast uses when sending. Control messages must use 2
// (RTMP spec §5.4); the rest follow common practice so captures read alike.
const (
	CSIDControl uint32 = 2
	CSIDCommand uint32 = 3
	CSIDAudio   uint32 = 4
	CSIDVideo   uint32 = 6
	CSIDData    uint32 = 5
)

// Limits on what a peer may make us hold.
const (
	// DefaultChunkSize is the chunk size before either side sets one.
	DefaultChunkSize = 128
	// MaxChunkSize is the largest chunk size a peer may set: 16 MiB.
	MaxChunkSize = 1 << 24
	// DefaultMaxMessageSize caps one message's payload.
	DefaultMaxMessageSize = 8 << 20
	// MaxChunkStreams caps the chunk streams one connection may use.
	MaxChunkStreams = 64
)

// Message is one reassembled RTMP message.
type Message struct {
	Type      uint8
	StreamID  uint32 // message stream ID
	Timestamp uint32 // absolute, milliseconds
	CSID      uint32 // chunk stream it arrived on
	Payload   []byte
	Length    uint32 // payload length; more than len(Payload) when skimmed
}

// AppendSetChunkSize appends the payload of Set Chunk Size.
func AppendSetChunkSize(dst []byte, size uint32) []byte {
	return binary.BigEndian.AppendUint32(dst, size&0x7fffffff)
}

// AppendUint32 appends a 4-byte big-endian payload (Ack, Window Ack Size).
func AppendUint32(dst []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(dst, v) }

// AppendSetPeerBandwidth appends the payload of Set Peer Bandwidth; limit
// type 2 is "dynamic".
func AppendSetPeerBandwidth(dst []byte, window uint32, limitType uint8) []byte {
	dst = binary.BigEndian.AppendUint32(dst, window)
	return append(dst, limitType)
}

// AppendUserControl appends a user control event with a 4-byte argument.
func AppendUserControl(dst []byte, event uint16, arg uint32) []byte {
	dst = binary.BigEndian.AppendUint16(dst, event)
	return binary.BigEndian.AppendUint32(dst, arg)
}

// AckState decides when to acknowledge received bytes. The sequence number
// is the byte count modulo 2^32 and arithmetic wraps, so acknowledgements
// keep flowing past 4 GiB (a stall seen in other servers when it did not).
type AckState struct {
	Window uint32 // acknowledge every Window bytes; 0 disables
	last   uint32
}

// Due reports whether total (bytes received mod 2^32) calls for an
// acknowledgement, and records it as sent if so.
func (a *AckState) Due(total uint32) bool {
	if a.Window == 0 || total-a.last < a.Window {
		return false
	}
	a.last = total
	return true
}
