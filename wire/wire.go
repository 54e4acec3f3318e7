// Package wire is Tandem's client protocol: length-prefixed binary frames
// with a fixed little-endian header. Decoders work in place over the caller's
// read buffer and fill caller-owned structs whose byte-slice fields are views
// into that buffer (valid until the buffer is reused); encoders are
// append-style. The package knows nothing of journals, sockets or policy.
//
// Every frame starts with an 8-byte header:
//
//	offset size field
//	0      4    length   total frame bytes, header included (8 <= length <= the peer's max)
//	4      1    type     frame type (Type*)
//	5      1    flags    zero in version 1
//	6      2    reserved zero
//	8      ...  body     layout per type, below
//
// Bodies (offsets relative to the body; all integers little-endian):
//
//	Logon        C->S  0 minVersion u16 | 2 maxVersion u16 | 4 heartbeatMillis u32 |
//	                   8 nameLen u16 | 10 credLen u16 | 12 name | credentials
//	LogonReply   S->C  0 version u16 | 2 maxTopic u16 (v2; v1 zero) | 4 heartbeatMillis u32 |
//	                   8 lastPubSeq u64 | 16 instanceLen u16 | 18 reserved u16 |
//	                   20 maxFrame u32 (v2; v1 zero) | v2 only: 24 ackedPubSeq u64 |
//	                   24 (v1) or 32 (v2) instance name
//	Publish      C->S  0 pubSeq u64 | 8 topicLen u16 | 10 ack u8 | 11 flags u8 |
//	                   12 topic | payload (the rest of the frame)
//	Ack          S->C  0 kind u8 | 1 syncPeers u8 (v2; v1 zero) | 2 code u16 | 4 reserved u32 |
//	                   8 seq u64 | 16 text (the rest)
//	Subscribe    C->S  0 subID u32 | 4 start u8 | 5 match u8 | 6 topicLen u16 |
//	                   8 bookmarkCount u16 | 10 reserved u16 | 12 reserved u32 |
//	                   16 topic | bookmarkCount x 24-byte bookmarks (or, with
//	                   start = resume, 24-byte resume entries; with start =
//	                   time, one entry: time i64 Unix ns | 16 reserved bytes)
//	Unsubscribe  C->S  0 subID u32 | 4 reserved u32
//	Deliver      S->C  0 subID u32 | 4 reserved u32 | 8 one stored record (package record)
//	Heartbeat    both  empty
//	Flush        C->S  0 token u64
//	Error        S->C  0 code u16 | 2 reserved u16 | 4 text (the rest); the sender closes after it
//	StatRequest  C->S  empty
//	StatReply    S->C  JSON document (not a hot path)
//	Position     S->C  0 subID u32 | 4 count u32 | count x (origin u64 | originSeq u64)
//
// A Deliver frame carries the record exactly as the journal stores it, so a
// server sends deliveries straight from its journal mapping; the bookmark of
// a delivered message is derived from the record (record.View.Bookmark).
// docs/wire.md shows each frame with a hex example.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HeaderSize is the size of the fixed frame header.
const HeaderSize = 8

// Protocol versions. A client offers [min, max] at logon; the server answers
// with the highest version it speaks in that range or refuses the logon.
const (
	Version1 uint16 = 1
	// Version2 adds the logon reply's acked sequence and limits and the
	// persisted ack's sync-peer count (see LogonReply and Ack).
	Version2 uint16 = 2

	MinVersion = Version1
	MaxVersion = Version2
)

// DefaultMaxFrame bounds a frame's size unless configured otherwise: 4 MiB of
// payload plus headroom for the headers and a topic.
const DefaultMaxFrame = 4<<20 + 64<<10

// Type is a frame type. The values are part of the wire format.
type Type uint8

// Frame types.
const (
	TypeLogon       Type = 1
	TypeLogonReply  Type = 2
	TypePublish     Type = 3
	TypeAck         Type = 4
	TypeSubscribe   Type = 5
	TypeUnsubscribe Type = 6
	TypeDeliver     Type = 7
	TypeHeartbeat   Type = 8
	TypeFlush       Type = 9
	TypeError       Type = 10
	TypeStatRequest Type = 11
	TypeStatReply   Type = 12
	TypePosition    Type = 13
)

var typeNames = [...]string{
	TypeLogon: "logon", TypeLogonReply: "logon-reply", TypePublish: "publish",
	TypeAck: "ack", TypeSubscribe: "subscribe", TypeUnsubscribe: "unsubscribe",
	TypeDeliver: "deliver", TypeHeartbeat: "heartbeat", TypeFlush: "flush",
	TypeError: "error", TypeStatRequest: "stat-request", TypeStatReply: "stat-reply",
	TypePosition: "position",
}

func (t Type) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Errors returned by the decoders. A decoding error means the stream cannot
// be trusted any further: the receiver sends an Error frame and closes.
var (
	ErrMalformed = errors.New("wire: malformed frame")
	ErrTooLarge  = errors.New("wire: frame too large")
	ErrType      = errors.New("wire: unexpected frame type")
)

// Frame is one frame split off a byte stream: its type and a view of its
// body.
type Frame struct {
	Type  Type
	Flags uint8
	Body  []byte
}

// Split takes the first frame off buf. It returns n == 0 and a nil error when
// buf holds only part of a frame (read more, then call again with the bytes
// kept); a frame whose declared length is below the header size or above
// maxFrame is an error. Split never reads past buf and never allocates.
func Split(buf []byte, maxFrame int) (f Frame, n int, err error) {
	if len(buf) < 4 {
		return Frame{}, 0, nil
	}
	size := binary.LittleEndian.Uint32(buf)
	if size < HeaderSize {
		return Frame{}, 0, fmt.Errorf("%w: length %d below header size", ErrMalformed, size)
	}
	if maxFrame < HeaderSize || int64(size) > int64(maxFrame) {
		return Frame{}, 0, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, size, maxFrame)
	}
	if len(buf) < int(size) {
		return Frame{}, 0, nil
	}
	return Frame{Type: Type(buf[4]), Flags: buf[5], Body: buf[HeaderSize:size:size]}, int(size), nil
}

// Need returns how many bytes the frame starting at buf occupies when its
// length field is readable, else 0. Readers use it to grow a buffer for a
// frame larger than the current one.
func Need(buf []byte) int {
	if len(buf) < 4 {
		return 0
	}
	return int(binary.LittleEndian.Uint32(buf))
}

// appendHeader reserves a frame header on dst; finish fills in the length.
func appendHeader(dst []byte, t Type) ([]byte, int) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, byte(t), 0, 0, 0)
	return dst, start
}

func finish(dst []byte, start int) []byte {
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst
}

var le = binary.LittleEndian

func short(t Type, body []byte, need int) error {
	return fmt.Errorf("%w: %s body %d bytes, need %d", ErrMalformed, t, len(body), need)
}
