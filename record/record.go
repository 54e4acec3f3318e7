// Package record defines the layout of a stored message: the unit Tandem
// writes to its journal, delivers to subscribers and ships to replication
// peers. The same bytes serve all three, so a record is never re-encoded
// between the journal mapping and a socket.
//
// Layout (all integers little-endian; this layout is part of both the on-disk
// journal format and the wire protocol, so changing it is a format change):
//
//	offset size field
//	0      4    length      total record bytes, header included (>= HeaderSize)
//	4      4    crc         CRC-32C (Castagnoli) of bytes [8, length)
//	8      8    seq         local sequence in the journal that holds it (1-based, consecutive)
//	16     8    time        Unix nanoseconds when the origin instance first stored it
//	24     8    origin      id of the instance the message was first published to
//	32     8    publisher   publisher id: ID(client name)
//	40     8    pubseq      publisher sequence number, assigned by the publisher
//	48     8    via         id of the instance this copy was replicated from (0: published here)
//	56     8    originSeq   seq of the record in its origin's journal (== seq at the origin)
//	64     2    topicLen    bytes of topic
//	66     2    flags       bit 0 FlagBatchStart (set by the journal), others reserved zero
//	68     4    payloadLen  bytes of payload
//	72     ...  topic, then payload
//
// length == HeaderSize + topicLen + payloadLen always holds for a valid record.
// A length of zero marks the unwritten (pre-zeroed) end of a journal segment.
//
// (origin, originSeq) names a message's place in its origin's stream. Every
// journal holds each origin's stream in originSeq order (replication ships
// it in order), which is what lets a subscriber resume on another instance
// from per-origin progress without loss or repetition.
//
// The CRC covers seq, so a record copied into another journal (replication)
// is re-stamped with RestampReplica, which rewrites seq, via and flags and
// the CRC in place. origin and via let replication avoid sending a
// message back where it came from.
package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Field offsets and sizes; part of the on-disk and wire format.
const (
	offLength     = 0
	offCRC        = 4
	offSeq        = 8
	offTime       = 16
	offOrigin     = 24
	offPublisher  = 32
	offPubSeq     = 40
	offVia        = 48
	offOriginSeq  = 56
	offTopicLen   = 64
	offFlags      = 66
	offPayloadLen = 68

	// HeaderSize is the fixed part of a record before topic and payload.
	HeaderSize = 72
	// MaxTopic is the longest topic a record can carry.
	MaxTopic = 1<<16 - 1
)

var (
	// ErrShort means fewer bytes are available than the record claims.
	ErrShort = errors.New("record: short record")
	// ErrLength means the length field is inconsistent with the header.
	ErrLength = errors.New("record: bad length")
	// ErrChecksum means the CRC does not match the record's bytes.
	ErrChecksum = errors.New("record: checksum mismatch")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the CRC-32C used by records (and journal metadata).
func Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// ID maps a name (client name or instance name) to its 64-bit id with
// FNV-1a. Ids are what records carry; names stay in memory and logs.
func ID(name string) uint64 {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= prime64
	}
	if h == 0 { // 0 means "no publisher"; keep real ids non-zero
		h = 1
	}
	return h
}

// JournalID identifies one journal: a random 128-bit id given when the
// journal is created. A wiped or restored data directory gets a new one.
type JournalID [16]byte

// IsZero reports whether id is unset.
func (id JournalID) IsZero() bool { return id == JournalID{} }

// String returns id in hex.
func (id JournalID) String() string { return fmt.Sprintf("%x", id[:]) }

// OriginID is the origin id records carry for the stream of instance name
// writing into journal j: FNV-1a over the name, a zero byte and the
// journal id. A new journal under the same name is a new origin stream, so
// origin sequences restarting at 1 never collide with the old stream's.
// A zero journal id gives ID(name) (journals from before journal ids).
func OriginID(name string, j JournalID) uint64 {
	if j.IsZero() {
		return ID(name)
	}
	b := make([]byte, 0, len(name)+17)
	b = append(b, name...)
	b = append(b, 0)
	b = append(b, j[:]...)
	return ID(string(b))
}

// OriginEpochID is the origin id of what instance name publishes into
// journal j during one run of the process (epoch: a random non-zero value
// drawn at each start; 0 gives OriginID(name, j)). A journal restored from
// an old copy, or run on after a crash, never reuses the (origin,
// originSeq) identities of records its peers and subscribers already hold.
func OriginEpochID(name string, j JournalID, epoch uint32) uint64 {
	if epoch == 0 {
		return OriginID(name, j)
	}
	b := make([]byte, 0, len(name)+21)
	b = append(b, name...)
	b = append(b, 0)
	b = append(b, j[:]...)
	b = append(b, byte(epoch), byte(epoch>>8), byte(epoch>>16), byte(epoch>>24))
	return ID(string(b))
}

// Header holds the fixed fields of a record, for encoding.
type Header struct {
	Seq       uint64
	Time      int64
	Origin    uint64
	Publisher uint64
	PubSeq    uint64
	Via       uint64 // 0 for a message published to this instance
	// OriginSeq is the seq at the origin; 0 means "this is the origin":
	// Append writes Seq.
	OriginSeq uint64
}

// Size returns the encoded size of a record with the given topic and payload.
func Size(topicLen, payloadLen int) int { return HeaderSize + topicLen + payloadLen }

// Append encodes a record onto dst and returns the extended slice. topic must
// be at most MaxTopic bytes and payload below 4 GiB minus the header: the
// caller validates (wire frames cannot carry longer ones); Append panics
// rather than write a record whose lengths lie.
func Append(dst []byte, h *Header, topic, payload []byte) []byte {
	if len(topic) > MaxTopic || uint64(len(payload)) > 1<<32-1-HeaderSize-uint64(len(topic)) {
		panic("record: topic or payload too long")
	}
	n := Size(len(topic), len(payload))
	start := len(dst)
	dst = grow(dst, n)
	b := dst[start : start+n]
	binary.LittleEndian.PutUint32(b[offLength:], uint32(n))
	binary.LittleEndian.PutUint64(b[offSeq:], h.Seq)
	binary.LittleEndian.PutUint64(b[offTime:], uint64(h.Time))
	binary.LittleEndian.PutUint64(b[offOrigin:], h.Origin)
	binary.LittleEndian.PutUint64(b[offPublisher:], h.Publisher)
	binary.LittleEndian.PutUint64(b[offPubSeq:], h.PubSeq)
	binary.LittleEndian.PutUint64(b[offVia:], h.Via)
	originSeq := h.OriginSeq
	if originSeq == 0 {
		originSeq = h.Seq
	}
	binary.LittleEndian.PutUint64(b[offOriginSeq:], originSeq)
	binary.LittleEndian.PutUint16(b[offTopicLen:], uint16(len(topic)))
	binary.LittleEndian.PutUint16(b[offFlags:], 0)
	binary.LittleEndian.PutUint32(b[offPayloadLen:], uint32(len(payload)))
	copy(b[HeaderSize:], topic)
	copy(b[HeaderSize+len(topic):], payload)
	binary.LittleEndian.PutUint32(b[offCRC:], Checksum(b[offSeq:]))
	return dst
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, 2*cap(b)+n)
	copy(nb, b)
	return nb
}

// Restamp rewrites the local sequence of an encoded record in place and
// recomputes its CRC. rec must be exactly one valid record.
func Restamp(rec []byte, seq uint64) {
	binary.LittleEndian.PutUint64(rec[offSeq:], seq)
	binary.LittleEndian.PutUint32(rec[offCRC:], Checksum(rec[offSeq:]))
}

// Length reads the length field at the start of b. It returns 0 when b is
// shorter than 4 bytes or the field is zero (the end of written data).
func Length(b []byte) int {
	if len(b) < 4 {
		return 0
	}
	return int(binary.LittleEndian.Uint32(b))
}

// View is a decoded record: accessors over the bytes it was parsed from. A
// View does not own its bytes; it is valid as long as they are (for a journal
// mapping, see the journal's contract).
type View struct {
	b []byte
}

// Parse checks that b starts with a structurally valid record and returns a
// view of exactly that record and its length. It does not verify the CRC
// (see Verify): delivery paths trust the journal, recovery and replication
// verify.
func Parse(b []byte) (View, int, error) {
	if len(b) < HeaderSize {
		return View{}, 0, ErrShort
	}
	n32 := binary.LittleEndian.Uint32(b[offLength:])
	if n32 < HeaderSize {
		return View{}, 0, fmt.Errorf("%w: %d < header %d", ErrLength, n32, HeaderSize)
	}
	tl := uint64(binary.LittleEndian.Uint16(b[offTopicLen:]))
	pl := uint64(binary.LittleEndian.Uint32(b[offPayloadLen:]))
	if HeaderSize+tl+pl != uint64(n32) { // in uint64: no wrap-around on 32-bit builds
		return View{}, 0, fmt.Errorf("%w: length %d != %d+%d+%d", ErrLength, n32, HeaderSize, tl, pl)
	}
	if uint64(len(b)) < uint64(n32) {
		return View{}, 0, ErrShort
	}
	n := int(n32)
	return View{b: b[:n:n]}, n, nil
}

// Verify checks the record's CRC.
func (v View) Verify() error {
	if Checksum(v.b[offSeq:]) != binary.LittleEndian.Uint32(v.b[offCRC:]) {
		return ErrChecksum
	}
	return nil
}

// Bytes returns the encoded record.
func (v View) Bytes() []byte { return v.b }

// Len returns the encoded size of the record.
func (v View) Len() int { return len(v.b) }

// Seq returns the local sequence.
func (v View) Seq() uint64 { return binary.LittleEndian.Uint64(v.b[offSeq:]) }

// Time returns the store time in Unix nanoseconds.
func (v View) Time() int64 { return int64(binary.LittleEndian.Uint64(v.b[offTime:])) }

// Origin returns the id of the instance the message was first published to.
func (v View) Origin() uint64 { return binary.LittleEndian.Uint64(v.b[offOrigin:]) }

// Publisher returns the publisher id.
func (v View) Publisher() uint64 { return binary.LittleEndian.Uint64(v.b[offPublisher:]) }

// PubSeq returns the publisher sequence number.
func (v View) PubSeq() uint64 { return binary.LittleEndian.Uint64(v.b[offPubSeq:]) }

// Via returns the id of the instance this copy was replicated from (0 when
// it was published to the instance that holds it).
func (v View) Via() uint64 { return binary.LittleEndian.Uint64(v.b[offVia:]) }

// OriginSeq returns the record's seq in its origin's journal.
func (v View) OriginSeq() uint64 { return binary.LittleEndian.Uint64(v.b[offOriginSeq:]) }

// CRC returns the stored checksum.
func (v View) CRC() uint32 { return binary.LittleEndian.Uint32(v.b[offCRC:]) }

// Topic returns the topic bytes (a view, not a copy).
func (v View) Topic() []byte {
	tl := int(binary.LittleEndian.Uint16(v.b[offTopicLen:]))
	return v.b[HeaderSize : HeaderSize+tl : HeaderSize+tl]
}

// Payload returns the payload bytes (a view, not a copy).
func (v View) Payload() []byte {
	tl := int(binary.LittleEndian.Uint16(v.b[offTopicLen:]))
	return v.b[HeaderSize+tl:]
}

// Bookmark returns the bookmark that identifies this record.
func (v View) Bookmark() Bookmark {
	return Bookmark{Publisher: v.Publisher(), PubSeq: v.PubSeq(), Seq: v.Seq()}
}
