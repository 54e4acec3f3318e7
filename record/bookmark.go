package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// A Bookmark names one message. (Publisher, PubSeq) identify the message on
// every instance that holds it; Seq is where the instance that delivered it
// stored it, a hint that lets that instance resolve the bookmark with one
// index lookup. Another instance (after failover) resolves the bookmark by
// (Publisher, PubSeq) instead.
//
// Wire layout, 24 bytes little-endian: publisher u64, pubseq u64, seq u64.
// Text form: "P:S:Q" with P as 16 hex digits and S, Q decimal, e.g.
// "a1b2c3d4e5f60718:42:1007".
type Bookmark struct {
	Publisher uint64
	PubSeq    uint64
	Seq       uint64
}

// BookmarkSize is the encoded size of a Bookmark.
const BookmarkSize = 24

// ErrBadBookmark is returned for a bookmark that cannot be parsed.
var ErrBadBookmark = errors.New("record: bad bookmark")

// IsZero reports whether b is the zero bookmark.
func (b Bookmark) IsZero() bool { return b == Bookmark{} }

// AppendBinary appends the 24-byte encoding of b to dst.
func (b Bookmark) AppendBinary(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, b.Publisher)
	dst = binary.LittleEndian.AppendUint64(dst, b.PubSeq)
	return binary.LittleEndian.AppendUint64(dst, b.Seq)
}

// DecodeBookmark decodes the 24-byte encoding at the start of p.
func DecodeBookmark(p []byte) (Bookmark, error) {
	if len(p) < BookmarkSize {
		return Bookmark{}, fmt.Errorf("%w: %d bytes", ErrBadBookmark, len(p))
	}
	return Bookmark{
		Publisher: binary.LittleEndian.Uint64(p),
		PubSeq:    binary.LittleEndian.Uint64(p[8:]),
		Seq:       binary.LittleEndian.Uint64(p[16:]),
	}, nil
}

// String returns the text form of b.
func (b Bookmark) String() string {
	return fmt.Sprintf("%016x:%d:%d", b.Publisher, b.PubSeq, b.Seq)
}

// ParseBookmark parses the text form produced by String.
func ParseBookmark(s string) (Bookmark, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return Bookmark{}, fmt.Errorf("%w: %q: want PUBLISHER:PUBSEQ:SEQ", ErrBadBookmark, s)
	}
	p, err1 := strconv.ParseUint(parts[0], 16, 64)
	q, err2 := strconv.ParseUint(parts[1], 10, 64)
	n, err3 := strconv.ParseUint(parts[2], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return Bookmark{}, fmt.Errorf("%w: %q: %v", ErrBadBookmark, s, err)
	}
	return Bookmark{Publisher: p, PubSeq: q, Seq: n}, nil
}
