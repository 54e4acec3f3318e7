package record

import "encoding/binary"

// FlagBatchStart is bit 0 of the flags field. The journal sets it on the
// first record of each write batch (and on the first record of each
// segment): it asserts that every record before this one was durable when
// this one was written. Journal recovery uses it to tell a torn tail from
// corruption. Other bits are reserved and zero. Part of the on-disk format.
const FlagBatchStart uint16 = 1 << 0

// Flags returns the flags field.
func (v View) Flags() uint16 { return binary.LittleEndian.Uint16(v.b[offFlags:]) }

// RestampFlags rewrites the local sequence and the flags field of an encoded
// record in place and recomputes its CRC (Restamp plus flags, one CRC pass).
// rec must be exactly one structurally valid record.
func RestampFlags(rec []byte, seq uint64, flags uint16) {
	binary.LittleEndian.PutUint64(rec[offSeq:], seq)
	binary.LittleEndian.PutUint16(rec[offFlags:], flags)
	binary.LittleEndian.PutUint32(rec[offCRC:], Checksum(rec[offSeq:]))
}

// FlagsOf reads the flags field of the encoded record at the start of rec
// (at least HeaderSize bytes).
func FlagsOf(rec []byte) uint16 { return binary.LittleEndian.Uint16(rec[offFlags:]) }

// RestampReplica rewrites seq, via and flags of an encoded record in place
// and recomputes its CRC: what a journal does to a record it stores on
// behalf of a replication peer. rec must be exactly one structurally valid
// record.
func RestampReplica(rec []byte, seq, via uint64, flags uint16) {
	binary.LittleEndian.PutUint64(rec[offSeq:], seq)
	binary.LittleEndian.PutUint64(rec[offVia:], via)
	binary.LittleEndian.PutUint16(rec[offFlags:], flags)
	binary.LittleEndian.PutUint32(rec[offCRC:], Checksum(rec[offSeq:]))
}
