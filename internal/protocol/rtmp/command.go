package rtmp

import (
	"errors"
	"fmt"

	"github.com/meshcast/meshcast/internal/protocol/amf0"
)

// Command is an AMF0 command message: name, transaction ID, command object
// and optional arguments (RTMP spec §7.1.1, §7.2).
type Command struct {
	Name   string
	TxID   float64
	Object any
	Args   []any
}

// ErrBadCommand is returned for command messages that do not start with a
// name and a transaction ID.
var ErrBadCommand = errors.New("malformed command")

// ParseCommand decodes a command message payload. AMF3 command messages
// (type 17) start with one format byte before AMF0 values; callers strip it.
func ParseCommand(payload []byte) (*Command, error) {
	vs, err := amf0.DecodeAll(payload)
	if err != nil {
		return nil, fmt.Errorf("rtmp: command: %w", err)
	}
	if len(vs) < 2 {
		return nil, fmt.Errorf("rtmp: command: %d values: %w", len(vs), ErrBadCommand)
	}
	name, ok := vs[0].(string)
	if !ok {
		return nil, fmt.Errorf("rtmp: command: name is %T: %w", vs[0], ErrBadCommand)
	}
	tx, ok := vs[1].(float64)
	if !ok {
		return nil, fmt.Errorf("rtmp: command %q: transaction ID is %T: %w", name, vs[1], ErrBadCommand)
	}
	c := &Command{Name: name, TxID: tx}
	if len(vs) > 2 {
		c.Object = vs[2]
		c.Args = vs[3:]
	}
	return c, nil
}

// Arg returns argument i as a string, or "".
func (c *Command) Arg(i int) string {
	if i >= 0 && i < len(c.Args) {
		if s, ok := c.Args[i].(string); ok {
			return s
		}
	}
	return ""
}

// AppendCommand appends an AMF0 command payload.
func AppendCommand(dst []byte, name string, tx float64, object any, args ...any) ([]byte, error) {
	dst, err := amf0.AppendAll(dst, name, tx, object)
	if err != nil {
		return dst, err
	}
	return amf0.AppendAll(dst, args...)
}

// Status builds the info object of an onStatus or _result/_error reply.
func Status(level, code, description string) amf0.Object {
	return amf0.Object{
		{Key: "level", Value: level},
		{Key: "code", Value: code},
		{Key: "description", Value: description},
	}
}
