package replicate

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/tandemhq/tandem/internal/rsm"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// Replication link frames. They use the client protocol's 8-byte frame
// header (package wire) with types from 32 up; Heartbeat (8) and Error (10)
// are shared with the client protocol. All integers little-endian. These
// values and layouts are part of the replication wire format; docs/wire.md
// (section "Replication link") and docs/replication.md show them, the
// latter with hex examples.
//
// Protocol version 3 (2 had no epoch and no last; a peer of another
// version is refused with both versions named):
//
//	Hello     32  0 version u16 | 2 fromLen u16 | 4 toLen u16 | 6 reserved u16 |
//	              8 nonce [16] | 24 proof [32] | 56 journal [16] |
//	              72 maxFrame u32 | 76 epoch u32 |
//	              80 resume journal [16] | 96 resume seq u64 |
//	              104 resume crc u32 | 108 reserved u32 | 112 last u64 |
//	              120 from | to
//	                              journal: the sender's journal id (its
//	                              stream's identity); epoch: the sender's run
//	                              (record.OriginEpochID: what it publishes in
//	                              this run has that origin); last: the
//	                              sender's journal is durable through this seq
//	                              (a peer holding more of that journal's
//	                              stream knows the sender lost records of its
//	                              own origin: rsm.LostOwnRecords); maxFrame:
//	                              the largest frame the sender reads on this
//	                              link;
//	                              resume: the position the sender's Resume
//	                              will carry (what the proofs cover); proof:
//	                              zero in the dialer's Hello, the acceptor's
//	                              proof in the acceptor's
//	Proof     33  0 proof [32]   the dialer's proof
//	Resume    34  0 journal [16] | 16 seq u64 | 24 crc u32 | 28 reserved u32
//	                              the receiver holds, durably, the stream of
//	                              the sender's journal `journal` up to source
//	                              seq `seq`, whose record has CRC `crc` (the
//	                              CRC the source's journal stamped); all zero:
//	                              nothing held
//	Batch     35  0 from u64 | 8 through u64 | 16 throughCRC u32 |
//	              20 reserved u32 | 24 records...
//	                              the sender examined source seqs [from, through]
//	                              and these are the records of that range the
//	                              destination gets (possibly none); throughCRC
//	                              is the CRC of the source's record at through
//	                              (sent or not): what the next Resume names
//	BatchAck  36  0 through u64   everything up to this source seq is on the
//	                              destination's disk
//	Refuse    37  0 reason u16 | 2 reserved u16 | 4 text
//	                              the source will not stream to the receiver
//	                              from the position its Resume named (reason
//	                              1: fork); the link stays up for the other
//	                              direction
//
// Handshake: the dialer sends its Hello; the acceptor answers with its
// Hello carrying proof = handshakeMAC(secret, labelAcceptor, dialer's
// Hello, acceptor's Hello); the dialer checks it (hmac.Equal) and answers
// Proof = handshakeMAC(secret, labelDialer, ...). Neither side sends
// anything else (Resume, Batch) before the other's proof verified. The
// MAC binds the whole transcript (both nonces, both names, both journal
// ids, both frame limits, both resume positions) and the role, so a proof
// made in one connection never verifies in another: a relay between two
// listening peers cannot turn one peer's acceptor proof into the dialer
// proof the other asks for. The first Resume on a link must equal the
// resume of its sender's Hello.
const (
	typeHello    wire.Type = 32
	typeProof    wire.Type = 33
	typeResume   wire.Type = 34
	typeBatch    wire.Type = 35
	typeBatchAck wire.Type = 36
	typeRefuse   wire.Type = 37

	protoVersion = 3
	nonceSize    = 16
	proofSize    = sha256.Size
	helloFixed   = 120
	resumeSize   = 32
	batchFixed   = 24
	refuseFixed  = 4

	refuseFork = 1
)

// errVersion: a peer speaks another replication protocol version.
var errVersion = errors.New("replicate: unsupported replication protocol version")

type hello struct {
	Version  uint16
	From     string
	To       string
	Nonce    [nonceSize]byte
	Proof    [proofSize]byte
	Journal  record.JournalID
	MaxFrame uint32
	Epoch    uint32
	// Resume is the position the sender's Resume frame will carry.
	Resume position
	// Last: the sender's journal is durable through this seq.
	Last uint64
}

// position is how far a destination holds one source journal's stream:
// the journal's id, the last source seq held and the CRC of the source's
// record at that seq. It is what Resume carries and what the positions
// files keep; the zero position holds nothing.
type position = rsm.Position

func appendFrameHeader(dst []byte, t wire.Type) ([]byte, int) {
	start := len(dst)
	return append(dst, 0, 0, 0, 0, byte(t), 0, 0, 0), start
}

func finishFrame(dst []byte, start int) []byte {
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst
}

func appendHello(dst []byte, h *hello) []byte {
	dst, s := appendFrameHeader(dst, typeHello)
	dst = binary.LittleEndian.AppendUint16(dst, h.Version)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(h.From)))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(h.To)))
	dst = append(dst, 0, 0)
	dst = append(dst, h.Nonce[:]...)
	dst = append(dst, h.Proof[:]...)
	dst = append(dst, h.Journal[:]...)
	dst = binary.LittleEndian.AppendUint32(dst, h.MaxFrame)
	dst = binary.LittleEndian.AppendUint32(dst, h.Epoch)
	dst = appendPosition(dst, h.Resume)
	dst = binary.LittleEndian.AppendUint64(dst, h.Last)
	dst = append(dst, h.From...)
	dst = append(dst, h.To...)
	return finishFrame(dst, s)
}

// decodeHello reads a Hello; a version other than protoVersion is
// errVersion (with h.Version set), before any other check, so the answer
// can name it.
func decodeHello(body []byte, h *hello) error {
	if len(body) >= 2 {
		if v := binary.LittleEndian.Uint16(body); v != protoVersion {
			h.Version = v
			return fmt.Errorf("%w: %d, want %d", errVersion, v, protoVersion)
		}
	}
	if len(body) < helloFixed {
		return fmt.Errorf("%w: hello of %d bytes", wire.ErrMalformed, len(body))
	}
	fl, tl := int(binary.LittleEndian.Uint16(body[2:])), int(binary.LittleEndian.Uint16(body[4:]))
	if helloFixed+fl+tl != len(body) {
		return fmt.Errorf("%w: hello names %d+%d != %d", wire.ErrMalformed, fl, tl, len(body)-helloFixed)
	}
	h.Version = binary.LittleEndian.Uint16(body)
	copy(h.Nonce[:], body[8:24])
	copy(h.Proof[:], body[24:56])
	copy(h.Journal[:], body[56:72])
	h.MaxFrame = binary.LittleEndian.Uint32(body[72:])
	h.Epoch = binary.LittleEndian.Uint32(body[76:])
	h.Resume, _ = decodeResume(body[80 : 80+resumeSize])
	h.Last = binary.LittleEndian.Uint64(body[112:])
	h.From = string(body[helloFixed : helloFixed+fl])
	h.To = string(body[helloFixed+fl:])
	return nil
}

func appendResume(dst []byte, p position) []byte {
	dst, s := appendFrameHeader(dst, typeResume)
	dst = appendPosition(dst, p)
	return finishFrame(dst, s)
}

// appendPosition appends p's 32 bytes: journal [16] | seq u64 | crc u32 |
// reserved u32 (a Resume body, and the resume field of a Hello).
func appendPosition(dst []byte, p position) []byte {
	dst = append(dst, p.Journal[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, p.Seq)
	dst = binary.LittleEndian.AppendUint32(dst, p.CRC)
	return append(dst, 0, 0, 0, 0)
}

func decodeResume(body []byte) (position, error) {
	if len(body) != resumeSize {
		return position{}, fmt.Errorf("%w: resume body of %d bytes", wire.ErrMalformed, len(body))
	}
	var p position
	copy(p.Journal[:], body[:16])
	p.Seq = binary.LittleEndian.Uint64(body[16:])
	p.CRC = binary.LittleEndian.Uint32(body[24:])
	return p, nil
}

func appendRefuse(dst []byte, reason uint16, text string) []byte {
	dst, s := appendFrameHeader(dst, typeRefuse)
	dst = binary.LittleEndian.AppendUint16(dst, reason)
	dst = append(dst, 0, 0)
	dst = append(dst, text...)
	return finishFrame(dst, s)
}

func decodeRefuse(body []byte) (reason uint16, text string, err error) {
	if len(body) < refuseFixed {
		return 0, "", fmt.Errorf("%w: refuse body of %d bytes", wire.ErrMalformed, len(body))
	}
	return binary.LittleEndian.Uint16(body), string(body[refuseFixed:]), nil
}

func appendProof(dst []byte, proof [proofSize]byte) []byte {
	dst, s := appendFrameHeader(dst, typeProof)
	dst = append(dst, proof[:]...)
	return finishFrame(dst, s)
}

func appendU64Frame(dst []byte, t wire.Type, v uint64) []byte {
	dst, s := appendFrameHeader(dst, t)
	dst = binary.LittleEndian.AppendUint64(dst, v)
	return finishFrame(dst, s)
}

func decodeU64(t wire.Type, body []byte) (uint64, error) {
	if len(body) != 8 {
		return 0, fmt.Errorf("%w: %s body of %d bytes", wire.ErrMalformed, typeName(t), len(body))
	}
	return binary.LittleEndian.Uint64(body), nil
}

// startBatch reserves a Batch frame header on dst; records are appended
// after it and finishBatch fills in the range and length.
func startBatch(dst []byte) ([]byte, int) {
	dst, s := appendFrameHeader(dst, typeBatch)
	return append(dst, make([]byte, batchFixed)...), s
}

func finishBatch(dst []byte, start int, from, through uint64, throughCRC uint32) []byte {
	binary.LittleEndian.PutUint64(dst[start+wire.HeaderSize:], from)
	binary.LittleEndian.PutUint64(dst[start+wire.HeaderSize+8:], through)
	binary.LittleEndian.PutUint32(dst[start+wire.HeaderSize+16:], throughCRC)
	return finishFrame(dst, start)
}

// batchHeaderSize is a Batch frame's bytes before its records.
const batchHeaderSize = wire.HeaderSize + batchFixed

// putBatchHeader writes the header of a Batch frame whose records (recLen
// bytes) are sent after it from elsewhere (gathered from the journal
// mapping): the same bytes startBatch and finishBatch put before records
// appended in place.
func putBatchHeader(dst *[batchHeaderSize]byte, from, through uint64, throughCRC uint32, recLen int) {
	binary.LittleEndian.PutUint32(dst[0:], uint32(batchHeaderSize+recLen))
	dst[4], dst[5], dst[6], dst[7] = byte(typeBatch), 0, 0, 0
	binary.LittleEndian.PutUint64(dst[wire.HeaderSize:], from)
	binary.LittleEndian.PutUint64(dst[wire.HeaderSize+8:], through)
	binary.LittleEndian.PutUint32(dst[wire.HeaderSize+16:], throughCRC)
	binary.LittleEndian.PutUint32(dst[wire.HeaderSize+20:], 0)
}

func decodeBatch(body []byte) (from, through uint64, throughCRC uint32, records []byte, err error) {
	if len(body) < batchFixed {
		return 0, 0, 0, nil, fmt.Errorf("%w: batch of %d bytes", wire.ErrMalformed, len(body))
	}
	from, through = binary.LittleEndian.Uint64(body), binary.LittleEndian.Uint64(body[8:])
	if from == 0 || through+1 < from {
		return 0, 0, 0, nil, fmt.Errorf("%w: batch range [%d, %d]", wire.ErrMalformed, from, through)
	}
	return from, through, binary.LittleEndian.Uint32(body[16:]), body[batchFixed:], nil
}

// Handshake MAC labels: distinct per role, so an acceptor's proof is never
// a dialer's.
const (
	labelAcceptor = "tandem-repl/2 acceptor"
	labelDialer   = "tandem-repl/2 dialer"
)

// handshakeMAC is a proof of the secret over a handshake's transcript:
// HMAC-SHA256(secret, label | dialer nonce | acceptor nonce |
// len(dialer) u16 | dialer | len(acceptor) u16 | acceptor |
// dialer journal | acceptor journal | dialer maxFrame u32 |
// acceptor maxFrame u32 | dialer resume [32] | acceptor resume [32]),
// where d is the dialer's Hello and a the acceptor's (its proof field is
// not covered). The name lengths keep two different name pairs from ever
// producing the same input.
func handshakeMAC(secret []byte, label string, d, a *hello) [proofSize]byte {
	m := hmac.New(sha256.New, secret)
	b := make([]byte, 0, 256)
	b = append(b, label...)
	b = append(b, d.Nonce[:]...)
	b = append(b, a.Nonce[:]...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(d.From)))
	b = append(b, d.From...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(a.From)))
	b = append(b, a.From...)
	b = append(b, d.Journal[:]...)
	b = append(b, a.Journal[:]...)
	b = binary.LittleEndian.AppendUint32(b, d.MaxFrame)
	b = binary.LittleEndian.AppendUint32(b, a.MaxFrame)
	b = binary.LittleEndian.AppendUint32(b, d.Epoch)
	b = binary.LittleEndian.AppendUint32(b, a.Epoch)
	b = appendPosition(b, d.Resume)
	b = appendPosition(b, a.Resume)
	b = binary.LittleEndian.AppendUint64(b, d.Last)
	b = binary.LittleEndian.AppendUint64(b, a.Last)
	m.Write(b)
	var out [proofSize]byte
	copy(out[:], m.Sum(nil))
	return out
}

// proofEqual compares two proofs in constant time.
func proofEqual(got []byte, want [proofSize]byte) bool {
	return hmac.Equal(got, want[:])
}

func typeName(t wire.Type) string {
	switch t {
	case typeHello:
		return "hello"
	case typeProof:
		return "proof"
	case typeResume:
		return "resume"
	case typeBatch:
		return "batch"
	case typeBatchAck:
		return "batch-ack"
	case typeRefuse:
		return "refuse"
	}
	return t.String()
}
