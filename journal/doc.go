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
//	| magic TNDMSEG1 | vers 1| hdr 64| first seq u64 | seg size u64  |
//	+----------------+-------+-------+---------------+---------------+
//	32              40                                60      64
//	+---------------+---------------------------------+-------+
//	| created ns i64| reserved, zero                  | crc32c|  CRC-32C of [0,60)
//	+---------------+---------------------------------+-------+
//	64
//	+--------------+--------------+-----+--------------+----------------+
//	| record seq F | record F+1   | ... | record F+n-1 | 0 0 0 0 ... 0  |
//	+--------------+--------------+-----+--------------+----------------+
//	  (record.Append layout: length, crc, seq, time, ..., topic, payload)
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
// Open scans every segment: header, CRC of each record and seq continuity
// (within and across segments), building the sparse index (one offset every
// IndexInterval records, so Seek is a binary search over segments plus at
// most IndexInterval-1 record hops).
//
//   - Any invalid record in a non-final segment is corruption: Open fails
//     with an error wrapping ErrCorrupt that names the file, offset and seq.
//     Segments are synced before the next one is created, so nothing in them
//     can be torn.
//   - In the final segment, the first invalid record (bad length, CRC
//     mismatch, seq discontinuity, or a zero length followed by non-zero
//     bytes) at offset X is a torn tail: the last batch was being written
//     when the machine stopped. Recovery zeroes the bytes from X to the last
//     non-zero byte, syncs, logs it, and appends continue at X.
//   - Unless a record that verifies, carries FlagBatchStart and has a higher
//     seq is found after X: a later batch was written, so the bad batch had
//     been synced. That is corruption (ErrCorrupt), never silently cut.
//   - A final segment whose header is invalid and which holds no data (a
//     crash while creating it) is removed. Leftover *.tmp files are removed.
//
// Check runs the same scan without changing anything; IsTornTail tells a
// torn tail from corruption in its result.
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
//
// # Concurrency
//
// Append/AppendLocked/AppendRecordLocked may be called from any goroutine
// (the Locked forms under Lock). SyncedSeq, LastSeq, FirstSeq, WaitSynced,
// Find, Stats and NewCursor are safe concurrently with appends. A Cursor
// belongs to one goroutine.
package journal
