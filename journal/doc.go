// Package journal is Tandem's transaction log: every published message is
// a record (package record) in a preallocated, memory-mapped segment file
// (pre-zeroed when new, or recycled from one retention retired), made
// durable by group commit. Delivery and replication read
// records straight from the mappings.
//
// # Segment files
//
// A journal is a directory of segment files named by the seq of their first
// record, 20 digits zero-padded: 00000000000000000001.seg. Each file is
// SegmentSize bytes, zero-filled when created (by writing zeros: unwritten
// extents would make every fdatasync slower) unless it is a recycled file
// (see Segment recycling), and holds a 64-byte header followed by records
// back to back. Records never straddle two segments; the first zero length
// field marks the end of the written data. All integers are little-endian;
// the layout and constants in segment.go are part of the on-disk format.
//
//	 0                8       12      16              24              32
//	+----------------+-------+-------+---------------+---------------+
//	| magic TNDMSEG1 | vers  | hdr 64| first seq u64 | seg size u64  |
//	+----------------+-------+-------+---------------+---------------+
//	32              40                      56        60      64
//	+---------------+-----------------------+---------+-------+
//	| created ns i64| journal id, 16 bytes  | gen u32 | crc32c|  CRC-32C of [0,60)
//	+---------------+-----------------------+---------+-------+
//	64
//	+--------------+--------------+-----+--------------+----------------+
//	| record seq F | record F+1   | ... | record F+n-1 | 0 0 0 0 ... 0  |
//	+--------------+--------------+-----+--------------+----------------+
//	  (record.Append layout: length, crc, seq, time, ..., topic, payload)
//
// vers is 2 for a file zero-filled when created ([56,60) zero), 3 for a
// recycled file, whose gen ([56,60), never 0) counts how many times the
// file was reused; 1 is the release before journal ids (below).
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
// release that knows only version 1 refuses a version 2 header, and one
// that knows only versions 1 and 2 refuses a recycled (version 3) segment,
// which it would misread. Check
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
// temporary name, or a retired file renamed for reuse): header written and
// synced, file renamed, directory synced. The first record of every segment also carries FlagBatchStart.
// A failed preallocation (full disk, EIO) is counted
// (Stats.PreallocFailures), logged at most every 10s, its partial file
// removed, and retried with back-off (50ms doubling to 2s) while the tail
// still has room; when the flusher needs the segment and none is ready it
// asks for an immediate attempt, and if that one fails the journal fails.
// Appenders block (releasing the lock) while MaxStagedBytes are pending.
// Both staging buffers are reserved at Open for MaxStagedBytes plus 1 MiB
// (anonymous mappings outside the Go heap, resident only as far as they
// are used), and the marks for as many records, so appenders outrunning
// the flusher never grow them by copying on the append path.
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
//   - Damage no lost write explains. Segments are pre-zeroed (recycled ones:
//     see Segment recycling) and records are never rewritten, so a write that did not reach the disk, or
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
// # Segment recycling
//
// Zero-filling every new segment writes each byte twice (zeros ahead of
// the writer, then the records), and on a virtual machine each new file's
// page cache is fresh memory the host must fault in. So retention, by
// default (Options.NoRecycle turns it off), does not delete a segment file
// it may reuse: one of the journal's SegmentSize that no cursor or Hold
// references any more (none can take a new reference once it is off the
// segment list). It renames it to recycle-N.seg.tmp and hands it to the
// preallocator, which installs it as the next segment as it is: no zeros
// written, its page cache still warm. At most one retired file waits; the
// others are deleted. To have one ready in time the preallocator applies
// retention itself right after each rotation it supplied. A crash after
// the rename leaves a *.tmp file, which Open removes (the segment was off
// the list already); a crash during the installation is the same as for a
// new file (header synced before the rename, which is synced).
//
// A recycled file keeps the records of the segments it held before, CRCs
// intact, after its own data. What tells them apart:
//
//   - The header: version 3 and the generation (the old one's plus one),
//     written with the rest of the first page zeroed, so the stale record
//     at offset 64 is gone before the file gets its new name.
//   - Seqs. A recycled file only ever held older segments of the same
//     journal (the header's id excludes files of another), and seqs only
//     grow from segment to segment, so every stale record carries a seq
//     below the segment's first seq: it can never continue this
//     generation's seq chain, and a record that verifies with a seq at or
//     above the next one expected was written by this generation. This is
//     the generation stamp of every batch start; the header's generation
//     counts reuses and lets a release that does not know recycling refuse
//     the file.
//   - A zero length field after every batch. In a recycled segment the
//     zeros the flusher writes to complete a batch's last page (see
//     writePart) are at least 4 bytes, a whole extra page if need be, so
//     the first zero length field still marks the end of the written data
//     at every sync, for cursors, checkpoints and recovery alike.
//
// Recovery of a recycled final segment therefore differs in three points.
// A zero length field is a clean end unless a record of this generation
// (seq at or above the next expected) verifies somewhere after it; stale
// records after it are ignored. A later batch start counts as evidence only
// if it is of this generation (its seq above the first bad one: stale ones
// are below). And a lost write leaves a sector as it was at the last sync:
// up to the end of the zeros written after the batch before the last batch
// start that verified (the earliest the last synced batch can have ended)
// zeros, as in a pre-zeroed segment; beyond, stale bytes. A sector of the
// bad record counts as unwritten if it holds only zeros from the bad
// record on, if a whole stale record that verifies overlaps it, or if it
// lies beyond those zeros: there a sector holding the tail of a stale
// record whose start was overwritten looks like any other damage, so the
// rule errs towards a torn tail. That is a second exception to erring
// towards refusal, narrower than the first: damage to the last batch of a
// recycled tail, in a bad record reaching past the page its batch began
// in, with no later batch start, is cut as torn. A torn tail is cut from
// the bad record to the end of the last record of this generation after
// it (or of the bad record), rounded up to a page; stale bytes beyond stay.
// Open of a clean recycled tail reads the rest of the file once (looking
// for records of this generation), as the zero scan of a pre-zeroed tail
// does: Open of a journal with a 64 MiB recycled tail in the page cache
// took 18-24 ms, 16-20 ms with a pre-zeroed one.
//
// Old journals need no conversion: version 1 headers are upgraded as
// above, version 2 segments are pre-zeroed files and stay as they are
// until retention recycles them into version 3 ones.
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
// Sealed segments (never the tail) are deleted (or retired for reuse, see
// Segment recycling) oldest first while the
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
