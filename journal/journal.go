package journal

// Lock order: Journal.mu, then Journal.segMu, then Journal.waitMu. The
// retention mutex (retMu) is taken before segMu. No lock is held across
// file I/O except retMu.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/internal/hist"
	"github.com/tandemhq/tandem/record"
)

// Errors returned by the journal. Test with errors.Is.
var (
	ErrClosed   = errors.New("journal: closed")
	ErrTooLarge = errors.New("journal: record too large for a segment")
	ErrTrimmed  = errors.New("journal: sequence no longer held (trimmed by retention)")
	ErrNotFound = errors.New("journal: record not found")
	ErrCorrupt  = errors.New("journal: corrupt")
	errTornTail = errors.New("journal: torn tail")
)

// IsTornTail reports whether err describes a torn tail: unsynced records
// at the end of the final segment that recovery truncates (see Check).
// Open never returns such an error: it truncates the tail and logs it.
func IsTornTail(err error) bool { return errors.Is(err, errTornTail) }

// Defaults for zero Options fields.
const (
	DefaultSegmentSize       = 64 << 20
	DefaultMaxBatchBytes     = 4 << 20
	DefaultMaxStagedBytes    = 64 << 20
	DefaultIndexInterval     = 64
	DefaultRetentionInterval = 10 * time.Second
)

// Options configure a Journal. Zero values select the defaults.
type Options struct {
	Dir string
	FS  FS // nil = OSFS

	// PinFlusher pins the flusher goroutine (locked to its OS thread) to
	// core FlusherCPU, so group commits do not share a core with the event
	// loops (see tandem tune).
	PinFlusher bool
	FlusherCPU int

	// SyncVia selects how the flusher writes and syncs each group commit:
	// SyncSyscall ("syscall"; "" selects it) calls pwrite and fdatasync;
	// SyncUring ("uring") submits the batch's write(s) and its fdatasync
	// as one linked chain (IOSQE_IO_LINK) with a single io_uring_enter, on
	// a small ring the flusher creates on its own OS thread (locked, and
	// pinned with PinFlusher). Only files with a descriptor (OSFS) go
	// through the ring; others (MemFS, ErrorFS) keep the syscall path. If
	// the ring cannot be created (io_uring unavailable or refused) the
	// journal logs why once and uses the syscall path. Errors and their
	// messages are the same either way. Stats.SyncVia says which is in use.
	SyncVia string
	// openRing replaces the ring setup (tests: failing or fake rings).
	openRing ringOpener

	// SegmentSize is the size of each preallocated segment file; a record
	// that cannot fit an empty segment fails with ErrTooLarge. At most 4 GiB.
	SegmentSize int64
	// MaxBatchBytes bounds what the flusher writes and syncs per cycle.
	MaxBatchBytes int
	// MaxSyncDelay 0 syncs as soon as the previous sync returned and data
	// is staged. >0: once data is staged, wait up to this long (or until
	// MaxBatchBytes are staged) before writing and syncing.
	MaxSyncDelay time.Duration
	// MaxStagedBytes: appenders block while this many bytes are staged and
	// not yet written.
	MaxStagedBytes int
	// IndexInterval: one sparse index entry every N records.
	IndexInterval int

	// RetentionAge: sealed segments whose newest record is older are
	// deleted. 0 keeps them forever.
	RetentionAge time.Duration
	// RetentionBytes: the oldest sealed segments are deleted while the
	// segment files total more. 0 = no limit.
	RetentionBytes int64
	// RetentionHold returns the lowest seq that must be kept; a segment
	// holding any seq >= it is never deleted. Optional.
	RetentionHold func() uint64
	// RetentionInterval: how often retention runs in the background besides
	// after every rotation (default 10s; only when a limit is set).
	RetentionInterval time.Duration
	// NoRecycle makes retention delete segment files. By default a deleted
	// segment no cursor still reads is renamed and reused as a later
	// segment, so its bytes are not zero-filled again (see Segment
	// recycling in the package documentation).
	NoRecycle bool

	// RecoverTruncate lets Open repair corruption in the final segment
	// (see Recovery in the package documentation) by truncating it at the
	// first bad record, logging what it drops. Without it Open refuses to
	// start on such a journal (ErrCorrupt). Torn tails are truncated either
	// way.
	RecoverTruncate bool

	// VerifyAll makes Open scan every segment (each record's CRC, seq
	// continuity) instead of trusting sealed segments that have a valid
	// checkpoint, and hand out no checkpointed state (RecoveredState
	// returns nil), so the user rebuilds its state from every record: the
	// pre-checkpoint start-up, for when the checkpoints themselves are in
	// doubt (tandem serve --verify-journal). Checkpoints that disagree
	// with the scan are logged, counted and rewritten.
	VerifyAll bool

	// StateCheckpoint, when set, is called by the checkpoint writer (a
	// background goroutine) after each rotation, for the state to store in
	// the sealed segment's checkpoint: an opaque blob, versioned by its
	// owner, describing every record up to and including seq (and none
	// after). The journal waits until seq is synced before writing it, so
	// the state never covers records a crash could still take away. A nil
	// state stores none. It must not call back into the journal's
	// checkpoint machinery; it may take Lock. See RecoveredState.
	StateCheckpoint func() (seq uint64, state []byte, err error)
	// beforeCheckpoint, in tests, runs before each checkpoint is written.
	beforeCheckpoint func(first uint64)

	// OnSync is called by the flusher after each successful sync with the
	// new SyncedSeq. It must not block.
	OnSync func(synced uint64)
	// OnFlushStage, when set, is called by the flusher at two points of
	// each group commit, for latency breakdowns (engine/stages.go): with
	// FlushTaken once it took the staged records up to through from the
	// staging buffer, and with FlushWritten once the pwrite of the batch
	// ending at through returned (before its fdatasync; not called when the
	// write and sync go to the kernel as one io_uring chain). It must be
	// cheap and not block.
	OnFlushStage func(stage FlushStage, through uint64)
	// OnFail is called once, when the journal fails (a write, sync or
	// segment installation failed; Err returns the same error from then
	// on), by the goroutine that failed it, after waiters were woken. It
	// must not block. The server's fail-stop sequence starts here.
	OnFail func(err error)
	Logger *slog.Logger
	// Now is the clock for record timestamps and retention (default time.Now).
	Now func() time.Time
	// NewTimer makes the timer used for MaxSyncDelay (default a time.Timer).
	NewTimer func() Timer
}

// Timer is what the flusher needs from a timer; tests inject a fake one.
// After Stop or Reset returns, no stale value is received from C (the Go
// 1.23+ time.Timer semantics).
type Timer interface {
	C() <-chan time.Time
	Reset(d time.Duration)
	Stop()
}

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time   { return r.t.C }
func (r realTimer) Reset(d time.Duration) { r.t.Reset(d) }
func (r realTimer) Stop()                 { r.t.Stop() }

func newRealTimer() Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return realTimer{t}
}

// Journal is the transaction log. See the package documentation.
type Journal struct {
	opts Options
	fs   FS
	log  *slog.Logger
	now  func() time.Time

	id record.JournalID // immutable after recovery

	maxRecord int    // largest record a segment can hold
	zeros     []byte // for zero-filling files

	// Appender state, guarded by mu.
	mu              sync.Mutex
	notFull         sync.Cond // appenders waiting for staged bytes to drain
	stage           []byte    // encoded records not yet taken by the flusher
	nextSeq         uint64
	pending         int // bytes staged or taken but not yet written
	closing         bool
	failed          error
	flusherIdle     bool // flusher waits on kick for staged data
	flusherDelaying bool // flusher waits for MaxSyncDelay or a full batch
	// Where staged records will land, decided here so the flusher never
	// walks the records (a cold, dependent load per record): the marks
	// note rotations, batch cuts and sparse-index entries.
	marks     []mark
	tailOff   int64 // segment offset the next staged record goes to
	tailSize  int64 // size of the segment it goes to
	indexIn   int   // records until the next index entry
	batchFrom int   // stage offset where the current batch began

	kick chan struct{}

	stagingMaps [][]byte // the mappings behind stage and taken (see stagingBuffer)

	lastSeq atomic.Uint64
	synced  atomic.Uint64
	errp    atomic.Pointer[error]
	closed  atomic.Bool

	// Segment list, oldest first; the last one is the tail being written.
	segMu sync.RWMutex
	segs  []*segment

	// Flusher-owned.
	taken      []byte
	takenPos   int
	takenMarks []mark
	markPos    int
	takenEnd   uint64 // seq after the last record in taken
	writeSeq   uint64 // seq of the next record to write
	tail       *segment
	timer      Timer
	ring       *ringSync // the io_uring sync path; nil: syscalls

	viaRing atomic.Bool // group commits go through ring (Stats.SyncVia)

	// writingThrough (flusher-owned): the last seq of the group commit
	// whose final part the flusher is writing (for OnFlushStage; 0 once
	// reported).
	writingThrough uint64

	waitMu  sync.Mutex
	waiters []*waiter

	ready   chan preallocated
	stop    chan struct{}
	retKick chan struct{}
	flushWG sync.WaitGroup
	bg      sync.WaitGroup

	// preallocFailed carries a failed preallocation to a flusher waiting
	// for the segment (unbuffered: only when it waits); needSegment tells
	// a backing-off preallocator the segment is needed now.
	preallocFailed chan error
	needSegment    chan struct{}

	// retired holds a segment file retention renamed for reuse, until the
	// preallocator takes it; rotated tells the preallocator a rotation
	// installed the file it handed off (see handOff).
	retired chan retired
	rotated chan struct{}

	retMu     sync.Mutex
	stateCkpt uint64 // first seq of the segment whose checkpoint holds the newest state; guarded by retMu

	// Checkpoint writer (checkpoint.go).
	ckptMu        sync.Mutex
	ckptJobs      []ckptJob
	ckptKick      chan struct{}
	recState      uint64 // RecoveredState, guarded by ckptMu
	recStateBytes []byte
	checkpointed  int // segments trusted from checkpoints at Open

	syncs, rotations, writtenBytes, removedSegs, recycledSegs atomic.Uint64
	retireSeq                                                 atomic.Uint64 // names retired files uniquely

	preallocFailures atomic.Uint64
	// Group-commit metrics, recorded by the flusher (off the event loops):
	// the write and sync of each batch in nanoseconds, and its records.
	syncHist  hist.Histogram
	batchHist hist.Histogram
	// tailEnd is the tail segment's written end (its seg.end, which the
	// flusher owns), published for Stats' used bytes.
	tailEnd atomic.Int64

	truncatedBytes int64
}

// Open opens (or creates) the journal in opts.Dir, recovers it (see the
// package documentation), and starts the flusher and preallocator.
func Open(opts Options) (*Journal, error) {
	if opts.Dir == "" {
		return nil, errors.New("journal: Options.Dir is required")
	}
	if opts.FS == nil {
		opts.FS = OSFS{}
	}
	if opts.SegmentSize == 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.SegmentSize < segHeaderSize+record.HeaderSize || opts.SegmentSize > math.MaxUint32 {
		return nil, fmt.Errorf("journal: SegmentSize %d out of range", opts.SegmentSize)
	}
	if opts.MaxBatchBytes <= 0 {
		opts.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if opts.MaxStagedBytes <= 0 {
		opts.MaxStagedBytes = DefaultMaxStagedBytes
	}
	if opts.IndexInterval <= 0 {
		opts.IndexInterval = DefaultIndexInterval
	}
	if opts.RetentionInterval <= 0 {
		opts.RetentionInterval = DefaultRetentionInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.NewTimer == nil {
		opts.NewTimer = newRealTimer
	}
	if opts.SyncVia == "" {
		opts.SyncVia = defaultSyncVia
	}
	if opts.SyncVia != SyncSyscall && opts.SyncVia != SyncUring {
		return nil, fmt.Errorf("journal: Options.SyncVia %q: want %q or %q", opts.SyncVia, SyncSyscall, SyncUring)
	}
	j := &Journal{
		opts:      opts,
		fs:        opts.FS,
		log:       opts.Logger,
		now:       opts.Now,
		maxRecord: int(opts.SegmentSize - segHeaderSize),
		zeros:     make([]byte, min(opts.SegmentSize, 1<<20)),
		kick:      make(chan struct{}, 1),
		ready:     make(chan preallocated),
		stop:      make(chan struct{}),
		retKick:   make(chan struct{}, 1),
		ckptKick:  make(chan struct{}, 1),
		timer:     opts.NewTimer(),
	}
	j.preallocFailed = make(chan error)
	j.needSegment = make(chan struct{}, 1)
	j.retired = make(chan retired, 1)
	j.rotated = make(chan struct{}, 1)
	j.syncHist.Init(SyncHistBase)
	j.batchHist.Init(1)
	j.notFull.L = &j.mu
	if err := j.fs.MkdirAll(opts.Dir); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if err := j.recover(); err != nil {
		j.releaseSegments()
		return nil, err
	}
	j.stage = j.stagingBuffer()
	j.taken = j.stagingBuffer()
	// Room for the marks of MaxStagedBytes of the smallest records (one
	// per index entry, batch cut and rotation), so that they do not grow
	// on the append path either; bounded, for tiny IndexIntervals.
	markCap := min(opts.MaxStagedBytes/(record.HeaderSize*opts.IndexInterval)+
		opts.MaxStagedBytes/opts.MaxBatchBytes+int(int64(opts.MaxStagedBytes)/opts.SegmentSize)+4, 1<<16)
	j.marks = make([]mark, 0, markCap)
	j.takenMarks = make([]mark, 0, markCap)

	j.flushWG.Add(1)
	go j.flushLoop()
	j.bg.Add(1)
	go j.preallocLoop()
	j.bg.Add(1)
	go j.checkpointLoop()
	if opts.RetentionAge > 0 || opts.RetentionBytes > 0 {
		j.bg.Add(1)
		go j.retentionLoop()
	}
	return j, nil
}

// ID returns the journal's identity: a random 128-bit id given when the
// journal was created (or when a journal from before ids was first opened
// by this release), stored in every segment header. It stays the same
// across restarts; a wiped or replaced directory gets a new one.
func (j *Journal) ID() record.JournalID { return j.id }

// Lock locks the journal for AppendLocked and AppendRecordLocked.
func (j *Journal) Lock() { j.mu.Lock() }

// Unlock unlocks the journal.
func (j *Journal) Unlock() { j.mu.Unlock() }

// admitLocked checks that a record of n bytes can be staged, waiting (and
// releasing mu meanwhile) while MaxStagedBytes are pending.
func (j *Journal) admitLocked(n int) error {
	if n > j.maxRecord {
		return fmt.Errorf("%w: %d bytes, segment holds %d", ErrTooLarge, n, j.maxRecord)
	}
	for {
		if j.failed != nil {
			return j.failed
		}
		if j.closing {
			return ErrClosed
		}
		if j.pending < j.opts.MaxStagedBytes {
			return nil
		}
		j.notFull.Wait()
	}
}

// placeLocked decides where the record of n bytes about to be staged at
// j.stage[len(j.stage)] will be written, leaving a mark for the flusher when
// it starts a segment, starts a write batch (MaxBatchBytes) or needs an
// index entry.
func (j *Journal) placeLocked(seq uint64, n int) {
	pos := len(j.stage)
	var flags uint8
	if j.tailOff+int64(n) > j.tailSize {
		flags |= markRotate
		j.tailOff = segHeaderSize
		j.tailSize = j.opts.SegmentSize
		j.indexIn = 0
	}
	if pos > j.batchFrom && pos+n-j.batchFrom > j.opts.MaxBatchBytes {
		flags |= markCut
		j.batchFrom = pos
	}
	if j.indexIn == 0 {
		flags |= markIndex
		j.indexIn = j.opts.IndexInterval
	}
	j.indexIn--
	j.tailOff += int64(n)
	if flags != 0 {
		j.marks = append(j.marks, mark{pos: pos, seq: seq, flags: flags})
	}
}

// stagedLocked accounts for a record of n bytes just staged and wakes the
// flusher if it waits for it.
func (j *Journal) stagedLocked(seq uint64, n int) {
	j.nextSeq = seq + 1
	j.pending += n
	j.lastSeq.Store(seq)
	if j.flusherIdle || (j.flusherDelaying && len(j.stage) >= j.opts.MaxBatchBytes) {
		j.flusherIdle, j.flusherDelaying = false, false
		select {
		case j.kick <- struct{}{}:
		default:
		}
	}
}

// AppendLocked encodes a new record with the next seq into the staging
// buffer, copying topic and payload; h.Seq is set to the seq assigned, and
// a zero h.Time is set to the journal clock. The caller holds Lock. If
// MaxStagedBytes are pending, it waits for the flusher, releasing the lock
// meanwhile. The record becomes durable and visible when SyncedSeq reaches
// seq. It does not allocate (the staging buffers are reserved at Open for
// MaxStagedBytes; only a record larger than 1 MiB can grow one, once).
func (j *Journal) AppendLocked(h *record.Header, topic, payload []byte) (seq uint64, err error) {
	if len(topic) > record.MaxTopic {
		return 0, fmt.Errorf("%w: topic of %d bytes", ErrTooLarge, len(topic))
	}
	n := record.Size(len(topic), len(payload))
	if err := j.admitLocked(n); err != nil {
		return 0, err
	}
	seq = j.nextSeq
	h.Seq = seq
	if h.Time == 0 {
		h.Time = j.now().UnixNano()
	}
	j.placeLocked(seq, n)
	j.stage = record.Append(j.stage, h, topic, payload)
	j.stagedLocked(seq, n)
	return seq, nil
}

// AppendRecordLocked stores an already-encoded record (from a replication
// peer, CRC verified by the caller) under the next local seq: it is copied
// into the staging buffer and restamped there (seq, via = the peer it came
// from, batch-start flag cleared, CRC). The caller holds Lock; see
// AppendLocked.
func (j *Journal) AppendRecordLocked(rec []byte, via uint64) (seq uint64, err error) {
	v, n, err := record.Parse(rec)
	if err != nil {
		return 0, fmt.Errorf("journal: appending record: %w", err)
	}
	if n != len(rec) {
		return 0, fmt.Errorf("journal: appending record: %w: %d trailing bytes", record.ErrLength, len(rec)-n)
	}
	if err := j.admitLocked(n); err != nil {
		return 0, err
	}
	seq = j.nextSeq
	j.placeLocked(seq, n)
	start := len(j.stage)
	j.stage = append(j.stage, rec...)
	record.RestampReplica(j.stage[start:], seq, via, v.Flags()&^record.FlagBatchStart)
	j.stagedLocked(seq, n)
	return seq, nil
}

// Append is Lock, AppendLocked, Unlock.
func (j *Journal) Append(h *record.Header, topic, payload []byte) (uint64, error) {
	j.mu.Lock()
	seq, err := j.AppendLocked(h, topic, payload)
	j.mu.Unlock()
	return seq, err
}

// FirstSeq returns the oldest seq held. An empty journal (or one whose
// records were all trimmed) returns LastSeq()+1.
func (j *Journal) FirstSeq() uint64 {
	j.segMu.RLock()
	defer j.segMu.RUnlock()
	if len(j.segs) == 0 {
		return j.LastSeq() + 1
	}
	return j.segs[0].first
}

// LastSeq returns the last appended (staged) seq; 0 if none ever was.
func (j *Journal) LastSeq() uint64 { return j.lastSeq.Load() }

// SyncedSeq returns the seq up to which every record is durable and
// visible to readers.
func (j *Journal) SyncedSeq() uint64 { return j.synced.Load() }

// Err returns the sticky error that failed the journal, or nil. Once a
// write or sync failed the journal accepts no appends and SyncedSeq stops.
func (j *Journal) Err() error {
	if p := j.errp.Load(); p != nil {
		return *p
	}
	return nil
}

// A mark tells the flusher about the staged record at pos (with seq).
type mark struct {
	pos   int
	seq   uint64
	flags uint8
}

const (
	markRotate uint8 = 1 << iota // the record starts a new segment
	markCut                      // a write batch ends before the record
	markIndex                    // the record gets a sparse-index entry
)

type waiter struct {
	seq uint64
	ch  chan struct{}
}

var waiterPool = sync.Pool{New: func() any { return &waiter{ch: make(chan struct{}, 1)} }}

// WaitSynced blocks until SyncedSeq() >= seq (returns nil), the journal
// failed (returns Err()) or closed short of seq (ErrClosed), or ctx is done.
func (j *Journal) WaitSynced(ctx context.Context, seq uint64) error {
	for {
		if j.synced.Load() >= seq {
			return nil
		}
		if err := j.Err(); err != nil {
			return err
		}
		if j.closed.Load() {
			return ErrClosed
		}
		w := waiterPool.Get().(*waiter)
		w.seq = seq
		j.waitMu.Lock()
		// Re-check under waitMu: the flusher publishes before it wakes.
		if j.synced.Load() >= seq || j.Err() != nil || j.closed.Load() {
			j.waitMu.Unlock()
			waiterPool.Put(w)
			continue
		}
		j.waiters = append(j.waiters, w)
		j.waitMu.Unlock()
		select {
		case <-w.ch:
			waiterPool.Put(w)
		case <-ctx.Done():
			j.waitMu.Lock()
			removed := false
			for i, x := range j.waiters {
				if x == w {
					j.waiters = append(j.waiters[:i], j.waiters[i+1:]...)
					removed = true
					break
				}
			}
			j.waitMu.Unlock()
			if !removed {
				<-w.ch // woken concurrently; drain before reuse
			}
			waiterPool.Put(w)
			if j.synced.Load() >= seq {
				return nil
			}
			return ctx.Err()
		}
	}
}

// wakeWaiters wakes waiters whose seq is covered, or all of them.
func (j *Journal) wakeWaiters(synced uint64, all bool) {
	j.waitMu.Lock()
	kept := j.waiters[:0]
	for _, w := range j.waiters {
		if all || w.seq <= synced {
			w.ch <- struct{}{}
		} else {
			kept = append(kept, w)
		}
	}
	clear(j.waiters[len(kept):])
	j.waiters = kept
	j.waitMu.Unlock()
}

// FlushStage names a point of a group commit reported to
// Options.OnFlushStage.
type FlushStage uint8

const (
	FlushTaken   FlushStage = iota // the flusher took the staged records
	FlushWritten                   // their pwrite returned, the fdatasync follows
)

// Stats is a snapshot of the journal's counters.
type Stats struct {
	FirstSeq, LastSeq, SyncedSeq uint64
	Segments                     int
	Bytes                        int64  // segment files (preallocated size)
	StagedBytes                  int    // staged or being written, not yet synced
	Syncs                        uint64 // successful group-commit syncs
	WrittenBytes                 uint64 // record bytes written since Open
	Rotations                    uint64
	RemovedSegments              uint64 // deleted by retention since Open (recycled ones included)
	// RecycledSegments counts the segments installed since Open in a
	// file retention had retired (reused without zero-filling).
	RecycledSegments uint64
	TruncatedBytes   int64 // zeroed by recovery at Open: a torn tail, or corruption cut by RecoverTruncate
	// PreallocFailures counts failed attempts to preallocate the next
	// segment since Open (each is retried; see preallocLoop).
	PreallocFailures uint64
	// CheckpointedSegments is how many sealed segments Open trusted from
	// their checkpoint instead of scanning them.
	CheckpointedSegments int
	// SyncVia is how group commits are written and synced: SyncUring
	// while they go through the flusher's io_uring ring, else SyncSyscall
	// (the option's default, a fallback, or files without a descriptor).
	SyncVia string
	Err     error
	// UsedBytes is what the segments hold: headers and records written,
	// not the zeros preallocated after them.
	UsedBytes int64
}

// Stats returns a snapshot of the journal's counters.
func (j *Journal) Stats() Stats {
	j.mu.Lock()
	staged := j.pending
	j.mu.Unlock()
	s := Stats{
		FirstSeq:         j.FirstSeq(),
		LastSeq:          j.LastSeq(),
		SyncedSeq:        j.SyncedSeq(),
		StagedBytes:      staged,
		Syncs:            j.syncs.Load(),
		WrittenBytes:     j.writtenBytes.Load(),
		Rotations:        j.rotations.Load(),
		RemovedSegments:  j.removedSegs.Load(),
		RecycledSegments: j.recycledSegs.Load(),
		TruncatedBytes:   j.truncatedBytes,
		SyncVia:          SyncSyscall,
		Err:              j.Err(),
	}
	s.PreallocFailures = j.preallocFailures.Load()
	s.CheckpointedSegments = j.checkpointed
	if j.viaRing.Load() {
		s.SyncVia = SyncUring
	}
	j.segMu.RLock()
	s.Segments = len(j.segs)
	for i, seg := range j.segs {
		s.Bytes += seg.size
		if seg.sealed {
			s.UsedBytes += seg.end // final once sealed (set before seal, under segMu)
		} else if i == len(j.segs)-1 {
			s.UsedBytes += max(j.tailEnd.Load(), segHeaderSize)
		}
	}
	j.segMu.RUnlock()
	return s
}

// SyncHistBase is the first bucket's bound of SyncLatency, in nanoseconds
// (buckets double from 8.2µs to about 69s).
const SyncHistBase = 8192

// SyncLatency returns the histogram of group commits' write-and-sync times
// in nanoseconds: from the first write of a batch to the end of its last
// fdatasync (for one through io_uring, the linked chain's completion),
// both segments' parts when the batch crosses a rotation. The flusher
// records it; reading it does not disturb appends.
func (j *Journal) SyncLatency() hist.Snapshot { return j.syncHist.Snapshot() }

// BatchRecords returns the histogram of records per group commit (buckets
// 1, 2, 4, ...).
func (j *Journal) BatchRecords() hist.Snapshot { return j.batchHist.Snapshot() }

// Close stops accepting appends, writes and syncs everything staged, stops
// the background goroutines and releases the segments (a segment a cursor
// still references is unmapped when the cursor lets go of it). It returns
// Err() if the journal failed, ErrClosed if already closed.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closing {
		j.mu.Unlock()
		return ErrClosed
	}
	j.closing = true
	j.notFull.Broadcast()
	j.mu.Unlock()
	select {
	case j.kick <- struct{}{}:
	default:
	}
	j.flushWG.Wait()
	j.releaseStaging()
	close(j.stop)
	j.bg.Wait()
	j.dropRetired()
	j.timer.Stop()
	j.closed.Store(true)
	j.wakeWaiters(0, true)
	j.releaseSegments()
	return j.Err()
}

// stagingSlack is the room a staging buffer has beyond MaxStagedBytes: an
// appender is admitted while fewer than MaxStagedBytes are pending, so the
// buffer holds up to that plus one record. A larger record grows it once,
// into the Go heap.
const stagingSlack = 1 << 20

// stagingBuffer returns an empty staging buffer with room for
// MaxStagedBytes+stagingSlack: anonymous memory mapped outside the Go heap
// (its pages become resident only as they are first used), so the buffer
// never grows by copying on the append path. Growing one by append while
// appenders outrun the flusher (a replication catch-up) copied up to
// MaxStagedBytes into fresh memory in one non-preemptible memmove, during
// which the garbage collector's workers spun waiting to stop that
// goroutine. Where mapping fails it falls back to the heap.
func (j *Journal) stagingBuffer() []byte {
	n := j.opts.MaxStagedBytes + stagingSlack
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return make([]byte, 0, min(j.opts.MaxStagedBytes, 2*j.opts.MaxBatchBytes))
	}
	j.stagingMaps = append(j.stagingMaps, b)
	return b[:0]
}

// releaseStaging unmaps the staging buffers once the flusher has stopped
// (appenders are refused from Close on, so nothing touches them).
func (j *Journal) releaseStaging() {
	j.mu.Lock()
	j.stage, j.taken = nil, nil
	maps := j.stagingMaps
	j.stagingMaps = nil
	j.mu.Unlock()
	for _, b := range maps {
		if err := unix.Munmap(b); err != nil {
			j.log.Warn("journal: unmapping a staging buffer", "err", err)
		}
	}
}

func (j *Journal) releaseSegments() {
	j.segMu.Lock()
	segs := j.segs
	j.segs = nil
	j.segMu.Unlock()
	for _, s := range segs {
		s.unref(j)
	}
}

// fail makes err the journal's sticky error and wakes everyone waiting.
func (j *Journal) fail(err error) {
	j.mu.Lock()
	first := j.failed == nil
	if first {
		j.failed = err
		j.errp.Store(&err)
	}
	j.notFull.Broadcast()
	j.mu.Unlock()
	j.log.Error("journal: failed; no further writes", "err", err)
	j.wakeWaiters(0, true)
	if first && j.opts.OnFail != nil {
		j.opts.OnFail(err)
	}
}

// MaxRecord returns the largest record (package record's encoding, header
// included) a journal with segments of segmentSize bytes can hold: anything
// larger fails with ErrTooLarge. 0 means DefaultSegmentSize.
func MaxRecord(segmentSize int64) int {
	if segmentSize == 0 {
		segmentSize = DefaultSegmentSize
	}
	return int(segmentSize - segHeaderSize)
}
