package sim

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/tandemhq/tandem/record"
)

// Rec is one record of a model journal: the fields of record.Header that
// replication and the engine look at, the topic, and a digest standing for
// the payload.
type Rec struct {
	Seq       uint64
	Origin    uint64
	OriginSeq uint64
	Pub       uint64
	PubSeq    uint64
	Via       uint64
	Topic     string
	Digest    uint64 // the message's content (topic and payload)
	CRC       uint32
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crcOf is the record's CRC over every field, as the real record's covers
// its bytes: two records at one seq with different content differ.
func crcOf(r *Rec) uint32 {
	var b [64]byte
	binary.LittleEndian.PutUint64(b[0:], r.Seq)
	binary.LittleEndian.PutUint64(b[8:], r.Origin)
	binary.LittleEndian.PutUint64(b[16:], r.OriginSeq)
	binary.LittleEndian.PutUint64(b[24:], r.Pub)
	binary.LittleEndian.PutUint64(b[32:], r.PubSeq)
	binary.LittleEndian.PutUint64(b[40:], r.Via)
	binary.LittleEndian.PutUint64(b[48:], r.Digest)
	c := crc32.Update(0, castagnoli, b[:56])
	return crc32.Update(c, castagnoli, []byte(r.Topic))
}

// Journal is the model journal of one instance. Appends are in memory
// until a sync (group commit: every record appended before it starts)
// completes. It survives crashes (Crash keeps a prefix); Wipe replaces it.
type Journal struct {
	ID      record.JournalID
	recs    []Rec
	synced  uint64
	syncing bool
	failed  bool
	// full: appends fail (the disk is full).
	full bool
	// failNextSync: the next sync fails (an fsync error).
	failNextSync bool
	// slow: extra time every sync takes (a slow disk).
	slow int64
}

func newJournal(w *World) *Journal {
	j := &Journal{}
	for i := range j.ID {
		j.ID[i] = byte(w.Intn(256))
	}
	return j
}

// LastSeq returns the last appended seq.
func (j *Journal) LastSeq() uint64 { return uint64(len(j.recs)) }

// SyncedSeq returns the last durable seq.
func (j *Journal) SyncedSeq() uint64 { return j.synced }

// At returns the record at seq (1-based).
func (j *Journal) At(seq uint64) *Rec { return &j.recs[seq-1] }

// Append appends r (its Seq, and OriginSeq for a record published here,
// are set) and returns its seq; false when the journal cannot take it.
func (j *Journal) Append(r Rec) (uint64, bool) {
	if j.failed || j.full {
		j.failed = true
		return 0, false
	}
	r.Seq = uint64(len(j.recs)) + 1
	if r.OriginSeq == 0 {
		r.OriginSeq = r.Seq
	}
	r.CRC = crcOf(&r)
	j.recs = append(j.recs, r)
	return r.Seq, true
}

// clone returns a copy (a backup of the data directory).
func (j *Journal) clone() *Journal {
	c := *j
	c.recs = append([]Rec(nil), j.recs[:j.synced]...)
	c.syncing, c.failed, c.full, c.failNextSync = false, false, false, false
	return &c
}

// crash keeps the synced records and the first keep of the unsynced ones.
func (j *Journal) crash(keep int) {
	n := int(j.synced) + keep
	if n > len(j.recs) {
		n = len(j.recs)
	}
	j.recs = j.recs[:n]
	j.synced = uint64(n) // recovery makes what it keeps durable
	j.syncing = false
	j.failed, j.full, j.failNextSync = false, false, false
}
