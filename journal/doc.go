// Package journal is Tandem's transaction log: every published message is
// a record (package record) in a preallocated, pre-zeroed, memory-mapped
// segment file, made durable by group commit. Delivery and replication read
// records straight from the mappings.
//
// # Segment files
//
// A journal is a directory of segment files named by the seq of their first
// record, 20 digits zero-padded: 00000000000000000001.seg. Each file is
// SegmentSize bytes, zero-filled when created (by writing zeros: unwritten
// extents would make every fdatasync slower), and holds a 64-byte header
// followed by records back to back. Records never straddle two segments; the
// first zero length field marks the end of the written data. All integers
// are little-endian; the layout and constants in segment.go are part of the
// on-disk format.
//
//	 0                8       12      16              24              32
//	+----------------+-------+-------+---------------+---------------+
//	| magic TNDMSEG1 | vers 2| hdr 64| first seq u64 | seg size u64  |
//	+----------------+-------+-------+---------------+---------------+
//	32              40                      56        60      64
//	+---------------+-----------------------+---------+-------+
//	| created ns i64| journal id, 16 bytes  | rsvd, 0 | crc32c|  CRC-32C of [0,60)
//	+---------------+-----------------------+---------+-------+
//	64
//	+--------------+--------------+-----+--------------+----------------+
//	| record seq F | record F+1   | ... | record F+n-1 | 0 0 0 0 ... 0  |
//	+--------------+--------------+-----+--------------+----------------+
//	  (record.Append layout: length, crc, seq, time, ..., topic, payload)
//
// # Journal identity
//
// Every journal has a random 128-bit id (record.JournalID, from
// crypto/rand, never zero), given when Open finds no segment and written
// into the header of every segment it creates, so it is durable with the
// first segment (header synced, renamed, directory synced) and survives
// restarts; a wiped or replaced directory gets a new id. ID returns it;
// the engine derives its origin id from it (record.OriginID), so a new
// journal under the same instance name is a new origin stream. Open checks
// that every segment carries the same id: a segment with another id (a
// file copied in from another journal) is corruption (ErrCorrupt naming
// both files), and so is a version 2 header with a zero id.
//
// Version 1 headers (the release before ids: bytes [40,60) zero) are
// upgraded at Open, not refused: the journal adopts the id of the segments
// that already carry one, or a new id if none does, then rewrites each
// version 1 header (one 64-byte write in the first sector, with its CRC,
// then fdatasync), oldest segment first. The upgrade is crash-safe: a crash
// half-way leaves some headers with the id and some without, which the
// next Open completes with the same id. Like the rest of the format it
// relies on a 512-byte sector write being atomic. There is no downgrade: a
// release that knows only version 1 refuses a version 2 header. Check
// reports the id without upgrading anything (Report.ID is zero for an
// unupgraded version 1 journal).
//
// # Write path
//
// Appenders (under Lock) encode records into a user-space staging buffer and
// get their seq at once (LastSeq). While the record is hot they also decide
// where it will land and leave a small mark for the flusher when it starts
// a segment, starts a new write batch (MaxBatchBytes) or needs a sparse-index
// entry, so the flusher never walks the records. One flusher goroutine swaps
// the staging buffer with its own (double buffering), then per cycle takes
// one batch (at most MaxBatchBytes, or one larger record), sets
// record.FlagBatchStart on its first record (recomputing that CRC), writes
// it with one buffered pwrite into the tail segment, calls fdatasync once,
// advances SyncedSeq, wakes WaitSynced callers and calls OnSync. Never a
// sync per record. At a rotation the flusher writes and syncs what precedes
// the record that does not fit, then installs the next segment, which a
// preallocator goroutine keeps ready (zero-filled and synced under a
// temporary name): header written and synced, file renamed, directory
// synced. The first record of every segment also carries FlagBatchStart.
// A failed preallocation (full disk, EIO) is counted
// (Stats.PreallocFailures), logged at most every 10s, its partial file
// removed, and retried with back-off (50ms doubling to 2s) while the tail
// still has room; when the flusher needs the segment and none is ready it
// asks for an immediate attempt, and if that one fails the journal fails.
// Appenders block (releasing the lock) while MaxStagedBytes are pending.
//
// On the OS file system the zeros are written with O_DIRECT (they would
// only pollute the page cache) through a descriptor that is closed before
// the file is reopened for buffered I/O and mapped; records are always
// written with buffered pwrite, which keeps the mappings coherent.
//
// With MaxSyncDelay > 0 the flusher waits that long after finding staged
// data (or until MaxBatchBytes are staged) before writing, trading latency
// for larger batches; the timer is injectable (Options.NewTimer).
//
// # Visibility and durability invariants
//
//   - Every record with seq <= SyncedSeq() is on stable storage (its batch's
//     fdatasync returned), and only those records are visible to cursors and
//     Find.
//   - Seqs are consecutive across the whole journal, 1-based.
//   - A record with FlagBatchStart was written only after every record
//     before it was durable.
//   - A failed write or fdatasync is never retried: the journal becomes
//     failed (Err), appends return that error and SyncedSeq stops, so no
//     acknowledgement ever covers data whose sync failed. Options.OnFail
//     is called once when that happens (the server's fail-stop).
//
// # Recovery
//
// Open checks every segment's header and journal id, and seq continuity
// across segments. It builds each segment's sparse index (one offset every
// IndexInterval records, so Seek is a binary search over segments plus at
// most IndexInterval-1 record hops) from the segment's checkpoint when it
// is sealed and has a valid one (see Checkpoints), and otherwise by
// scanning it: CRC of each record and seq continuity within it. The final
// segment (the tail) is always scanned, so a restart reads the records of
// the tail only, not the whole journal. Options.VerifyAll (tandem serve
// --verify-journal) and Check scan every segment, as Open did before
// checkpoints.
//
//   - Any invalid record in a non-final segment that is scanned (one
//     without a trusted checkpoint, or any with VerifyAll) is corruption: Open fails
//     with an error wrapping ErrCorrupt that names the file, offset and seq.
//     Segments are synced before the next one is created, so nothing in them
//     can be torn. RecoverTruncate does not repair it (that would drop every
//     later segment): restore the journal, e.g. from a replication peer.
//   - A final segment whose header is invalid and which holds no data (a
//     crash while creating it) is removed. Leftover *.tmp files are removed.
//
// In the final segment, the first invalid record (bad length, CRC mismatch,
// seq discontinuity, or a zero length followed by non-zero bytes) at offset
// X, seq S, is either a torn tail (the machine stopped while the last batch
// was being written; its fdatasync never returned, so nothing from S on was
// acknowledged) or damage to records that may have been acknowledged. The
// damage alone does not say which, and neither do records of the same
// batch after X that verify: one pwrite wrote them all, and the page cache
// writes pages back in any order, so a batch's last page can be on disk
// while its first is not. Recovery decides on evidence:
//
//   - A later batch start: a record after X that verifies, carries
//     FlagBatchStart and has a seq above S. The flusher issues a batch's
//     write only after the previous batch's fdatasync returned, so S's batch
//     was synced, and acknowledged: corruption. Every byte offset after X is
//     tried, so this also works when X's length field is what was damaged.
//   - Damage no lost write explains. Segments are pre-zeroed and records
//     are never rewritten, so a write that did not reach the disk, or
//     reached it in part, leaves whole 512-byte sectors of zeros (a disk
//     writes a sector atomically; Linux writes back whole pages). A sector
//     counts as written if any of its bytes at or after X is non-zero
//     (bytes before X belong to records that verified). If every sector the
//     bad record occupies is written (its extent: its length when its header
//     is consistent, else its 72-byte header), its bytes reached the disk
//     and still fail, so something damaged them afterwards (media,
//     firmware, a stray writer), whether or not their batch had been
//     acknowledged: corruption.
//   - Otherwise (some sector of the bad record holds only zeros, and no
//     later batch starts) a lost write explains the damage: a torn tail.
//     Recovery zeroes the bytes from X to the last non-zero byte, syncs,
//     logs a warning saying so (file, offset, first and last seq dropped,
//     bytes), and appends continue at X.
//
// On corruption in the final segment Open fails with an error wrapping
// ErrCorrupt that names the file, offset and seq, the evidence, and what a
// repair would drop. It never starts without an explicit repair:
// Options.RecoverTruncate (tandem serve --recover truncate, TOML recover =
// "truncate") cuts at X as for a torn tail and logs at error level exactly
// what it drops: seqs S to the highest seq of a record after X that still
// verifies (S if none does; Report.DroppedFirst/DroppedLast), and the
// bytes. It is meant for one start, once the operator knows the records
// are lost anyway or held by a replication peer; left on, it would cut the
// next corruption too.
//
// The rule errs towards refusing to start, never towards dropping
// acknowledged records silently, with one exception it cannot avoid: a
// damaged record whose payload holds a whole sector of zeros counts as torn
// (that sector could be a lost write). Conversely a device that tears
// inside a sector, or a page changed while it was being written back (file
// systems without stable pages allow it), can leave a written-looking but
// failing record in a batch that was never synced: Open then refuses, and
// RecoverTruncate, after a power loss during a write, loses nothing that
// was acknowledged.
//
// Before trusting what it recovered Open fdatasyncs the final segment: its
// records may be only in the page cache, written by a process killed before
// its fdatasync, and acknowledging new records on top of them (or serving
// them) must not rest on data a power loss would still take away. When
// recovery removed files it syncs the directory too.
//
// Check runs the same scan without changing anything; IsTornTail tells a
// torn tail from corruption in its result, and its Report says where the
// cut is or would be.
//
// Segment recycling (issue 15; not implemented) would break the
// pre-zeroed assumption: a reused file holds old records with valid CRCs,
// and an old batch start could pass for evidence. The header's journal id
// is the start of the answer: a recycled segment would get a generation
// number in its header (the reserved bytes [56,60)), and every batch start
// would carry a stamp of the journal id and that generation (a record
// format change, or a small batch-header record). Recovery would accept a
// record, and a batch start as evidence, only with the stamp of the file's
// header, treating anything else as unwritten (zero) space.
//
// # Checkpoints
//
// When a rotation seals a segment, a background goroutine writes a
// checkpoint beside it, 00000000000000000001.ckpt for
// 00000000000000000001.seg (layout in checkpoint.go): the segment's first
// seq, record count, end offset, size, the time of its last record, the
// journal id, the index interval and the sparse index entries, then an
// optional state blob, all covered by a CRC-32C. It is written to
// <name>.ckpt.tmp (mode 0600), fdatasynced, renamed and the directory
// synced, so a checkpoint file is either absent or whole. Rotations never
// wait for it; a crash before it is written (kill -9 right after a seal)
// leaves the segment without one, and the next Open scans that segment and
// writes its checkpoint then. Open also writes the checkpoints missing for
// sealed segments of a journal from before checkpoints, and rewrites bad
// ones. The checkpoint written at a rotation also carries a manifest: the
// checkpoints of all older sealed segments (their journal part). Open
// reads the newest checkpoint file and takes the older segments'
// checkpoints from its manifest, reading a segment's own file only when
// the manifest is missing, unusable or has no entry for it: on a cold
// disk every file read is a random read, and per segment there remain two
// (its header and its last record). The manifest is the index entries of
// every sealed segment, about 4 bytes per IndexInterval records (3 MB for
// 10 GB of 128-byte messages), rewritten at every rotation.
//
// A checkpoint is trusted only if it decodes (magic, version, CRC, sizes
// consistent), carries the segment header's journal id (a checkpoint copied
// in from another journal is ignored), matches the segment's first seq,
// size and the journal's IndexInterval, its index entries are increasing
// and inside the data, and two reads of the segment agree with it: its last
// record parses, verifies (CRC) and has the seq first+count-1 and the time
// the checkpoint says, ending exactly at the end offset, and the length
// field at the end offset is zero. Anything else is logged and the segment
// is scanned instead: a missing or bad checkpoint costs time, never trust
// in wrong data. What Open no longer does for a trusted segment is verify
// the CRC of every record in it: damage to a record in the middle of a
// sealed segment after it was written (bit rot) is found by Check or
// VerifyAll, not by a normal Open; cursors still check each record's
// length and seq as they read.
//
// The state blob is the journal user's (the engine's index, see
// Options.StateCheckpoint): the checkpoint writer asks the hook for its
// state and the seq it is as of (the last appended seq, taken under the
// journal lock), waits until that seq is synced (so a state never covers
// records a crash could take away), then writes it with the checkpoint.
// Only the newest state (and manifest) is ever used, so once a checkpoint
// with a state is durable the previous one is rewritten without them. Open hands the
// newest state whose seq is at most LastSeq to RecoveredState (not with
// VerifyAll); the user replays only the records after that seq. A
// checkpoint whose segment is gone (retention died between the two
// removals) is removed at Open. Check and VerifyAll compare each
// checkpoint they find with the scan and report a disagreement
// (Report.BadCheckpoints); Open then rewrites it.
//
// # Readers and the View lifetime contract
//
// Cursors read straight from the read-only mappings (buffered pwrite keeps
// them coherent). A record.View returned by
// Cursor.Next points into a mapping and is valid until the next Next, Seek
// or Close on that cursor; copy what must outlive that. A segment is never
// remapped: it is mapped once at its full preallocated size.
//
// # Retention
//
// Sealed segments (never the tail) are deleted oldest first while the
// newest record of the oldest is older than RetentionAge, or while the
// segment files total more than RetentionBytes. RetentionHold bounds both:
// a segment holding any seq >= RetentionHold() (the lowest seq a
// replication peer still needs) is never deleted. A deleted segment leaves
// the list at once (FirstSeq moves, new cursors get ErrTrimmed) but is
// unmapped and closed only when the last cursor referencing it moves off.
// A segment's checkpoint is removed right after the segment.
//
// # Concurrency
//
// Append/AppendLocked/AppendRecordLocked may be called from any goroutine
// (the Locked forms under Lock). SyncedSeq, LastSeq, FirstSeq, WaitSynced,
// Find, Stats and NewCursor are safe concurrently with appends. A Cursor
// belongs to one goroutine.
package journal
