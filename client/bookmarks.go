package client

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/tandemhq/tandem/client/internal/logfile"
	"github.com/tandemhq/tandem/wire"
)

// BookmarkStore remembers, per resumable subscription (WithSubID), how far
// the application has processed the stream, so that the HA client can
// resume it after a reconnect, a failover to another instance of a sync
// pair, or a restart of the process (file-backed store).
//
// Progress is kept per origin instance (by origin sequence) and per
// publisher (by publisher sequence) as the set of discarded sequences: the
// top of the contiguous discarded run from 1 (the "floor": the oldest
// undiscarded message is floor+1) and the ranges discarded above it. So
// messages may be discarded in any order, and a late message below a mark
// that was never discarded is still delivered after a resume. MostRecent
// gives the server the floors (the conservative prefix); the client drops
// what was discarded above them (IsDiscarded). The ranges of a
// subscription are bounded by MaxProgressRanges (see there).
type BookmarkStore interface {
	// MostRecent returns the progress of subscription sub as resume
	// entries (per origin and per publisher: the floor); ok is false if
	// the store knows nothing of sub.
	MostRecent(sub string) (entries []wire.ResumeEntry, ok bool)
	// SetPosition starts sub afresh at a position the server reported
	// (per-origin progress; empty for the start of the journal).
	SetPosition(sub string, pos []wire.PositionEntry) error
	// Discard marks m (delivered on an HA subscription) processed.
	Discard(m *Message) error
	// IsDiscarded reports whether m was discarded (its publisher sequence
	// is in its publisher's progress, or its origin sequence in its
	// origin's): a message seen again after a resume.
	IsDiscarded(m *Message) bool
	// Flush makes discards so far durable (file store); a no-op in memory.
	Flush() error
	Close() error
}

// originSet is one origin's progress.
type originSet struct {
	id  uint64
	set rangeSet
}

// subProgress is one subscription's progress.
type subProgress struct {
	origins   []originSet // few: one per instance
	pubs      map[uint64]*rangeSet
	nRanges   int             // ranges above the floors, all sets
	forgotten uint64          // ranges forgotten to stay within MaxProgressRanges
	dirtyO    map[uint64]bool // file store: entries changed since the last flush
	dirtyP    map[uint64]bool
	dirty     bool
	dirtyAll  bool // write every entry (after a reset or a failed flush)
}

func newSubProgress() *subProgress {
	return &subProgress{pubs: map[uint64]*rangeSet{}, dirtyO: map[uint64]bool{}, dirtyP: map[uint64]bool{}}
}

func (p *subProgress) origin(id uint64) *rangeSet {
	for i := range p.origins {
		if p.origins[i].id == id {
			return &p.origins[i].set
		}
	}
	p.origins = append(p.origins, originSet{id: id})
	return &p.origins[len(p.origins)-1].set
}

func (p *subProgress) pub(id uint64) *rangeSet {
	s, ok := p.pubs[id]
	if !ok {
		s = &rangeSet{}
		p.pubs[id] = s
	}
	return s
}

// discard adds (origin, originSeq) and (publisher, pubSeq), then keeps the
// bound. It reports how many ranges had to be forgotten.
func (p *subProgress) discard(origin, originSeq, pub, pubSeq uint64, track bool) (forgot int) {
	if d, ch := p.origin(origin).add(originSeq); ch {
		p.nRanges += d
		if track {
			p.dirtyO[origin], p.dirty = true, true
		}
	}
	if d, ch := p.pub(pub).add(pubSeq); ch {
		p.nRanges += d
		if track {
			p.dirtyP[pub], p.dirty = true, true
		}
	}
	for p.nRanges > MaxProgressRanges {
		p.forgetOldest(track)
		forgot++
	}
	return forgot
}

// forgetOldest forgets the lowest range of the set with the most ranges.
func (p *subProgress) forgetOldest(track bool) {
	var big *rangeSet
	var bigID uint64
	isOrigin := false
	for i := range p.origins {
		if s := &p.origins[i].set; big == nil || s.Len() > big.Len() {
			big, bigID, isOrigin = s, p.origins[i].id, true
		}
	}
	for id, s := range p.pubs {
		if big == nil || s.Len() > big.Len() {
			big, bigID, isOrigin = s, id, false
		}
	}
	if big == nil || !big.forgetOldest() {
		p.nRanges = 0 // cannot happen: nRanges counts the ranges
		return
	}
	p.nRanges--
	p.forgotten++
	if track {
		if isOrigin {
			p.dirtyO[bigID] = true
		} else {
			p.dirtyP[bigID] = true
		}
		p.dirty = true
	}
}

func (p *subProgress) countRanges() {
	n := 0
	for i := range p.origins {
		n += p.origins[i].set.Len()
	}
	for _, s := range p.pubs {
		n += s.Len()
	}
	p.nRanges = n
}

func (p *subProgress) isDiscarded(m *Message) bool {
	if s, ok := p.pubs[m.Bookmark.Publisher]; ok && s.contains(m.Bookmark.PubSeq) {
		return true
	}
	for i := range p.origins {
		if p.origins[i].id == m.Origin {
			return p.origins[i].set.contains(m.OriginSeq)
		}
	}
	return false
}

func (p *subProgress) entries() []wire.ResumeEntry {
	out := make([]wire.ResumeEntry, 0, len(p.origins)+len(p.pubs))
	for _, o := range p.origins {
		out = append(out, wire.ResumeEntry{ID: o.id, Seq: o.set.Floor(), Kind: wire.ResumeOrigin})
	}
	for id, s := range p.pubs {
		out = append(out, wire.ResumeEntry{ID: id, Seq: s.Floor(), Kind: wire.ResumePublisher})
	}
	sort.Slice(out[len(p.origins):], func(i, j int) bool { return out[len(p.origins)+i].ID < out[len(p.origins)+j].ID })
	return out
}

// memBookmarks is the in-memory state both stores share.
type memBookmarks struct {
	mu        sync.Mutex
	subs      map[string]*subProgress
	forgotten uint64 // all subscriptions
}

func (b *memBookmarks) MostRecent(sub string) ([]wire.ResumeEntry, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.subs[sub]
	if !ok {
		return nil, false
	}
	return p.entries(), true
}

func (b *memBookmarks) setPositionLocked(sub string, pos []wire.PositionEntry) *subProgress {
	p := newSubProgress()
	for _, e := range pos {
		p.origin(e.Origin).SetFloor(e.OriginSeq)
	}
	b.subs[sub] = p
	return p
}

func (b *memBookmarks) discardLocked(m *Message, track bool) {
	p, ok := b.subs[m.SubName]
	if !ok {
		p = newSubProgress()
		b.subs[m.SubName] = p
	}
	b.forgotten += uint64(p.discard(m.Origin, m.OriginSeq, m.Bookmark.Publisher, m.Bookmark.PubSeq, track))
}

func (b *memBookmarks) IsDiscarded(m *Message) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.subs[m.SubName]
	return ok && p.isDiscarded(m)
}

// Forgotten counts the progress ranges forgotten to stay within
// MaxProgressRanges (all subscriptions): each one is messages that may be
// delivered again after a resume.
func (b *memBookmarks) Forgotten() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.forgotten
}

// MemoryBookmarkStore keeps progress in memory: subscriptions resume
// across reconnects and failover, not across restarts of the process.
type MemoryBookmarkStore struct{ memBookmarks }

// NewMemoryBookmarkStore returns an empty memory store.
func NewMemoryBookmarkStore() *MemoryBookmarkStore {
	return &MemoryBookmarkStore{memBookmarks{subs: map[string]*subProgress{}}}
}

// SetPosition implements BookmarkStore.
func (b *MemoryBookmarkStore) SetPosition(sub string, pos []wire.PositionEntry) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.setPositionLocked(sub, pos)
	return nil
}

// Discard implements BookmarkStore. It does not allocate once the
// subscription has seen the message's origin and publisher, for a message
// right after the floor or next to a known range.
func (b *MemoryBookmarkStore) Discard(m *Message) error {
	b.mu.Lock()
	b.discardLocked(m, false)
	b.mu.Unlock()
	return nil
}

// Flush implements BookmarkStore.
func (b *MemoryBookmarkStore) Flush() error { return nil }

// Close implements BookmarkStore.
func (b *MemoryBookmarkStore) Close() error { return nil }

// FileBookmarkStore is a BookmarkStore backed by an append-only file, so a
// restarted process resumes its subscriptions (same WithSubID) right after
// what it processed. Discard only updates memory; Flush writes the
// progress that changed since the last Flush (one record per origin and
// publisher that changed, with its whole range set, however many messages
// were discarded) and, with SyncBatch, fdatasyncs it. An application that
// wants "processed" to mean "its own output is done" calls Flush right
// after making its output durable (tandem sub flushes standard output,
// then the store), so the store never runs ahead of the output. Close
// flushes. A Flush that fails keeps everything it was writing dirty: the
// next Flush writes it again, into a freshly rewritten file.
//
// File format: logfile records (client/internal/logfile: [len u32][crc32c
// u32][body]) whose bodies are [kind u8][subLen u16][sub] and then:
//
//	'H'  header, first record: sub "tandem-bookmarks", [version u64] = 2
//	'R'  sub starts afresh (nothing more)
//	'O'  an origin's progress: [id u64][floor u64][n u32] n x [lo u64][hi u64]
//	'P'  a publisher's progress, as 'O'
//
// An 'O' or 'P' record replaces that entry's whole progress (the last one
// wins); its ranges are sorted, disjoint, non-adjacent, above floor+1, at
// most MaxProgressRanges. Files of the earlier high-water format (no 'H')
// are refused as corrupt.
//
// On open: a torn tail is dropped and reported (Recovery; the HA client
// passes it to OnError); a bad record followed by a valid one fails Open
// with an error matching ErrStoreCorrupt naming the file and offset (see
// RepairFileBookmarkStore); so is a bad first record (files are created
// whole). After a successful open the file is rewritten
// with the current progress (temporary file, fsync, rename, fsync of the
// directory), and again when it passes 16 MiB. Files are mode 0600.
type FileBookmarkStore struct {
	memBookmarks
	path       string
	durability Durability
	fsys       StoreFS
	log        *logfile.Log // guarded by mu for rewrites, wmu for appends
	recovery   StoreRecovery
	pending    []byte // guarded by mu
	rewrite    bool   // guarded by mu: the last write failed; rewrite the file
	wmu        sync.Mutex
}

const (
	bmCompact = 16 << 20
	bmMagic   = "tandem-bookmarks"
	bmVersion = 2
	bmMaxBody = 1 + 2 + 1<<16 + 8 + 8 + 4 + 16*MaxProgressRanges
)

// OpenFileBookmarkStore opens (creating it if needed) the store at path.
// durability: SyncBatch fdatasyncs on every Flush; SyncNone only writes
// (survives the process, not the machine); SyncEveryMessage is treated as
// SyncBatch (Discard never writes by itself). A corrupt file is an error
// matching ErrStoreCorrupt naming the file and offset; a torn tail is
// dropped and reported by Recovery.
func OpenFileBookmarkStore(path string, durability Durability, opts ...StoreOption) (*FileBookmarkStore, error) {
	o := storeOpts(opts)
	b := &FileBookmarkStore{memBookmarks: memBookmarks{subs: map[string]*subProgress{}}, path: path, durability: durability, fsys: o.fs}
	res, err := b.load(false)
	if err == nil {
		err = checkFirst(path, res)
	}
	if err != nil {
		return nil, fmt.Errorf("client: bookmark store: %w", err)
	}
	b.recovery = StoreRecovery{Path: path, Torn: res.Torn}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.rewriteLocked(); err != nil {
		return nil, err
	}
	return b, nil
}

// Recovery reports what Open found: a torn tail it dropped, if any.
func (b *FileBookmarkStore) Recovery() StoreRecovery { return b.recovery }

func appendBmHead(dst []byte, kind byte, sub string) ([]byte, int) {
	dst, start := logfile.Begin(dst)
	dst = append(dst, kind)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(sub)))
	return append(dst, sub...), start
}

func appendBmSet(dst []byte, kind byte, sub string, id uint64, s *rangeSet) []byte {
	dst, start := appendBmHead(dst, kind, sub)
	dst = binary.LittleEndian.AppendUint64(dst, id)
	dst = binary.LittleEndian.AppendUint64(dst, s.Floor())
	dst = binary.LittleEndian.AppendUint32(dst, uint32(s.Len()))
	for _, g := range s.Ranges() {
		dst = binary.LittleEndian.AppendUint64(dst, g.Lo)
		dst = binary.LittleEndian.AppendUint64(dst, g.Hi)
	}
	return logfile.Finish(dst, start)
}

func appendBmReset(dst []byte, sub string) []byte {
	dst, start := appendBmHead(dst, 'R', sub)
	return logfile.Finish(dst, start)
}

func (b *FileBookmarkStore) load(repair bool) (logfile.Result, error) {
	f, size, err := logfile.OpenExisting(b.fsys, b.path)
	if err != nil || f == nil {
		return logfile.Result{}, err
	}
	defer f.Close()
	var ranges []seqRange
	res, err := logfile.Scan(f, size, b.path, bmMaxBody, repair, func(off int64, body []byte) error {
		if len(body) < 3 {
			return fmt.Errorf("%w: %d-byte body", ErrStoreCorrupt, len(body))
		}
		kind := body[0]
		sl := int(binary.LittleEndian.Uint16(body[1:]))
		if 3+sl > len(body) {
			return fmt.Errorf("%w: name length %d past the record", ErrStoreCorrupt, sl)
		}
		sub, rest := string(body[3:3+sl]), body[3+sl:]
		if off == 0 && kind != 'H' {
			return fmt.Errorf("%w: not a bookmark store of this version (no header)", ErrStoreCorrupt)
		}
		switch kind {
		case 'H':
			if off != 0 || sub != bmMagic || len(rest) != 8 {
				return fmt.Errorf("%w: not a bookmark store (header %q)", ErrStoreCorrupt, sub)
			}
			if v := binary.LittleEndian.Uint64(rest); v != bmVersion {
				return fmt.Errorf("%w: bookmark store format version %d, want %d", ErrStoreCorrupt, v, bmVersion)
			}
		case 'R':
			if len(rest) != 0 {
				return fmt.Errorf("%w: %d stray bytes in a reset", ErrStoreCorrupt, len(rest))
			}
			b.setPositionLocked(sub, nil)
		case 'O', 'P':
			if len(rest) < 20 {
				return fmt.Errorf("%w: short progress record", ErrStoreCorrupt)
			}
			id := binary.LittleEndian.Uint64(rest)
			floor := binary.LittleEndian.Uint64(rest[8:])
			n := int(binary.LittleEndian.Uint32(rest[16:]))
			if n > MaxProgressRanges || len(rest) != 20+16*n {
				return fmt.Errorf("%w: %d ranges in a %d-byte progress record", ErrStoreCorrupt, n, len(rest))
			}
			ranges = ranges[:0]
			for i := range n {
				r := rest[20+16*i:]
				ranges = append(ranges, seqRange{Lo: binary.LittleEndian.Uint64(r), Hi: binary.LittleEndian.Uint64(r[8:])})
			}
			if !validRanges(floor, ranges) {
				return fmt.Errorf("%w: ranges out of order", ErrStoreCorrupt)
			}
			p, ok := b.subs[sub]
			if !ok {
				p = newSubProgress()
				b.subs[sub] = p
			}
			if kind == 'O' {
				p.origin(id).set(floor, ranges)
			} else {
				p.pub(id).set(floor, ranges)
			}
		default:
			return fmt.Errorf("%w: unknown record kind %q", ErrStoreCorrupt, kind)
		}
		return nil
	})
	for _, p := range b.subs {
		p.countRanges()
		for p.nRanges > MaxProgressRanges {
			p.forgetOldest(false)
			b.forgotten++
		}
	}
	return res, err
}

// snapshot appends the whole progress to dst.
func (b *FileBookmarkStore) snapshot(dst []byte) []byte {
	dst, start := appendBmHead(dst, 'H', bmMagic)
	dst = binary.LittleEndian.AppendUint64(dst, bmVersion)
	dst = logfile.Finish(dst, start)
	names := make([]string, 0, len(b.subs))
	for name := range b.subs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := b.subs[name]
		dst = appendBmReset(dst, name)
		for i := range p.origins {
			dst = appendBmSet(dst, 'O', name, p.origins[i].id, &p.origins[i].set)
		}
		for id, s := range p.pubs {
			dst = appendBmSet(dst, 'P', name, id, s)
		}
	}
	return dst
}

// rewriteLocked replaces the file with the current progress. On success
// nothing is dirty or pending any more.
func (b *FileBookmarkStore) rewriteLocked() error {
	buf := b.snapshot(nil)
	log, err := logfile.Replace(b.fsys, b.path, func(w io.Writer) error {
		_, err := w.Write(buf)
		return err
	})
	if err != nil {
		b.rewrite = true
		return fmt.Errorf("client: bookmark store: %w", err)
	}
	for _, p := range b.subs {
		clear(p.dirtyO)
		clear(p.dirtyP)
		p.dirty, p.dirtyAll = false, false
	}
	b.pending = b.pending[:0]
	b.rewrite = false
	if b.log != nil {
		b.log.Close()
	}
	b.log = log
	return nil
}

// SetPosition implements BookmarkStore (written with the next Flush).
func (b *FileBookmarkStore) SetPosition(sub string, pos []wire.PositionEntry) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.setPositionLocked(sub, pos)
	b.pending = appendBmReset(b.pending, sub)
	p.dirty, p.dirtyAll = true, true
	return nil
}

// Discard implements BookmarkStore: memory only until Flush.
func (b *FileBookmarkStore) Discard(m *Message) error {
	b.mu.Lock()
	b.discardLocked(m, true)
	b.mu.Unlock()
	return nil
}

// Flush implements BookmarkStore. If it fails, what it was writing stays
// dirty and the next Flush rewrites the whole file.
func (b *FileBookmarkStore) Flush() error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.mu.Lock()
	if b.log == nil {
		b.mu.Unlock()
		return ErrClosed
	}
	if b.rewrite {
		err := b.rewriteLocked()
		if err == nil && b.durability != SyncNone {
			err = b.log.Sync()
		}
		b.mu.Unlock()
		return err
	}
	pend := len(b.pending)
	buf := b.pending
	b.pending = nil
	var flushed []*subProgress
	for name, p := range b.subs {
		if !p.dirty {
			continue
		}
		for i := range p.origins {
			if o := &p.origins[i]; p.dirtyAll || p.dirtyO[o.id] {
				buf = appendBmSet(buf, 'O', name, o.id, &o.set)
			}
		}
		for id, s := range p.pubs {
			if p.dirtyAll || p.dirtyP[id] {
				buf = appendBmSet(buf, 'P', name, id, s)
			}
		}
		clear(p.dirtyO)
		clear(p.dirtyP)
		p.dirty, p.dirtyAll = false, false
		flushed = append(flushed, p)
	}
	if len(buf) == 0 {
		b.mu.Unlock()
		return nil
	}
	if b.log.Size()+int64(len(buf)) > bmCompact {
		err := b.rewriteLocked()
		if err == nil && b.durability != SyncNone {
			err = b.log.Sync()
		}
		if err != nil {
			b.failedLocked(buf[:pend], flushed)
		}
		b.mu.Unlock()
		return err
	}
	log := b.log
	b.mu.Unlock()
	err := log.Append(buf)
	if err == nil && b.durability != SyncNone {
		err = log.Sync()
	}
	if err != nil {
		b.mu.Lock()
		b.failedLocked(buf[:pend], flushed)
		b.mu.Unlock()
		return fmt.Errorf("client: bookmark store: %w", err)
	}
	return nil
}

// failedLocked puts back what a failed Flush was writing: its pending
// records go first again, the subscriptions it wrote are wholly dirty, and
// the next Flush rewrites the file (after a failed append or sync its
// contents are unknown).
func (b *FileBookmarkStore) failedLocked(pending []byte, flushed []*subProgress) {
	b.pending = append(append([]byte(nil), pending...), b.pending...)
	for _, p := range flushed {
		p.dirty, p.dirtyAll = true, true
	}
	b.rewrite = true
}

// Close implements BookmarkStore: it flushes, then closes the file.
func (b *FileBookmarkStore) Close() error {
	err := b.Flush()
	if errors.Is(err, ErrClosed) {
		return nil
	}
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.log != nil {
		if e := b.log.Sync(); err == nil {
			err = e
		}
		b.log.Close()
		b.log = nil
	}
	return err
}

// RepairFileBookmarkStore rewrites the bookmark store at path without its
// bad records and reports exactly what it dropped (each corrupt region and
// a torn tail; the progress those records held is lost, so the
// subscriptions they belonged to resume from an earlier point: messages
// may be delivered again, not lost, unless a dropped record was a reset).
// The original is kept as path+".corrupt" when anything was dropped.
func RepairFileBookmarkStore(path string, opts ...StoreOption) (StoreRepair, error) {
	o := storeOpts(opts)
	b := &FileBookmarkStore{memBookmarks: memBookmarks{subs: map[string]*subProgress{}}, path: path, fsys: o.fs}
	rep := StoreRepair{Path: path}
	orig, ok, err := logfile.ReadExisting(o.fs, path)
	if err != nil {
		return rep, fmt.Errorf("client: bookmark store: %w", err)
	}
	if !ok {
		return rep, nil
	}
	res, err := b.load(true)
	if err != nil {
		return rep, fmt.Errorf("client: bookmark store: %w", err)
	}
	for _, r := range res.Skipped {
		rep.Dropped = append(rep.Dropped, DroppedRegion{Offset: r.Offset, Bytes: r.Bytes})
	}
	rep.Torn = res.Torn
	rep.Subscriptions = len(b.subs)
	if rep.Clean() {
		return rep, nil
	}
	if err := keepCorrupt(o.fs, path, orig); err != nil {
		return rep, fmt.Errorf("client: bookmark store: %w", err)
	}
	rep.Backup = path + ".corrupt"
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.rewriteLocked(); err != nil {
		return rep, err
	}
	return rep, b.log.Close()
}
