package client

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sort"
	"sync"

	"github.com/tandemhq/tandem/wire"
)

// BookmarkStore remembers, per resumable subscription (WithSubID), how far
// the application has processed the stream, so that the HA client can
// resume it after a reconnect, a failover to another instance of a sync
// pair, or a restart of the process (file-backed store).
//
// Progress is kept as high-water marks: per origin instance, the highest
// origin sequence discarded; per publisher, the highest publisher sequence
// discarded. Discarding a message therefore also marks as processed every
// message delivered before it from the same origin and publisher: discard
// in delivery order (the usual case) or at least never skip a message you
// still need.
type BookmarkStore interface {
	// MostRecent returns the progress of subscription sub as resume
	// entries; ok is false if the store knows nothing of sub.
	MostRecent(sub string) (entries []wire.ResumeEntry, ok bool)
	// SetPosition starts sub afresh at a position the server reported
	// (per-origin progress; empty for the start of the journal).
	SetPosition(sub string, pos []wire.PositionEntry) error
	// Discard marks m (delivered on an HA subscription) processed.
	Discard(m *Message) error
	// IsDiscarded reports whether m's publisher sequence is at or below
	// its publisher's progress (a message seen again after a resume).
	IsDiscarded(m *Message) bool
	// Flush makes discards so far durable (file store); a no-op in memory.
	Flush() error
	Close() error
}

// subProgress is one subscription's progress.
type subProgress struct {
	origins []wire.PositionEntry // few: one per instance
	pubs    map[uint64]uint64
	dirtyO  map[uint64]bool // file store: entries changed since the last flush
	dirtyP  map[uint64]bool
	dirty   bool
}

func newSubProgress() *subProgress {
	return &subProgress{pubs: map[uint64]uint64{}, dirtyO: map[uint64]bool{}, dirtyP: map[uint64]bool{}}
}

func (p *subProgress) setOrigin(id, seq uint64, track bool) {
	for i := range p.origins {
		if p.origins[i].Origin == id {
			if seq > p.origins[i].OriginSeq {
				p.origins[i].OriginSeq = seq
				if track {
					p.dirtyO[id], p.dirty = true, true
				}
			}
			return
		}
	}
	p.origins = append(p.origins, wire.PositionEntry{Origin: id, OriginSeq: seq})
	if track {
		p.dirtyO[id], p.dirty = true, true
	}
}

func (p *subProgress) setPub(id, seq uint64, track bool) {
	if old, ok := p.pubs[id]; ok && old >= seq {
		return
	}
	p.pubs[id] = seq
	if track {
		p.dirtyP[id], p.dirty = true, true
	}
}

func (p *subProgress) entries() []wire.ResumeEntry {
	out := make([]wire.ResumeEntry, 0, len(p.origins)+len(p.pubs))
	for _, o := range p.origins {
		out = append(out, wire.ResumeEntry{ID: o.Origin, Seq: o.OriginSeq, Kind: wire.ResumeOrigin})
	}
	for id, s := range p.pubs {
		out = append(out, wire.ResumeEntry{ID: id, Seq: s, Kind: wire.ResumePublisher})
	}
	sort.Slice(out[len(p.origins):], func(i, j int) bool { return out[len(p.origins)+i].ID < out[len(p.origins)+j].ID })
	return out
}

// memBookmarks is the in-memory state both stores share.
type memBookmarks struct {
	mu   sync.Mutex
	subs map[string]*subProgress
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
		p.setOrigin(e.Origin, e.OriginSeq, false)
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
	p.setOrigin(m.Origin, m.OriginSeq, track)
	p.setPub(m.Bookmark.Publisher, m.Bookmark.PubSeq, track)
}

func (b *memBookmarks) IsDiscarded(m *Message) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.subs[m.SubName]
	if !ok {
		return false
	}
	s, ok := p.pubs[m.Bookmark.Publisher]
	return ok && m.Bookmark.PubSeq <= s
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
// subscription has seen the message's origin and publisher.
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
// progress that changed since the last Flush (one small record per origin
// and publisher, however many messages were discarded) and, with
// SyncBatch, fdatasyncs it. An application that wants "processed" to mean
// "its own output is done" calls Flush right after making its output
// durable (tandem sub flushes standard output, then the store), so the
// store never runs ahead of the output. Close flushes.
//
// File format: records [len u16][crc32c u32][kind u8][subLen u16][sub]
// [id u64][seq u64]; kind 'R' resets sub (then 'O' entries give its
// position), 'O' sets an origin's progress, 'P' a publisher's. A torn tail
// ends the file on open; the file is rewritten with the current progress on
// open and when it passes 16 MiB.
type FileBookmarkStore struct {
	memBookmarks
	path       string
	durability Durability
	f          *os.File
	pending    []byte // guarded by mu
	size       int64
	wmu        sync.Mutex
}

const bmCompact = 16 << 20

// OpenFileBookmarkStore opens (creating it if needed) the store at path.
// durability: SyncBatch fdatasyncs on every Flush; SyncNone only writes
// (survives the process, not the machine); SyncEveryMessage is treated as
// SyncBatch (Discard never writes by itself).
func OpenFileBookmarkStore(path string, durability Durability) (*FileBookmarkStore, error) {
	b := &FileBookmarkStore{memBookmarks: memBookmarks{subs: map[string]*subProgress{}}, path: path, durability: durability}
	if err := b.load(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.rewriteLocked(); err != nil {
		return nil, err
	}
	return b, nil
}

func appendBmRec(dst []byte, kind byte, sub string, id, seq uint64) []byte {
	n := 2 + 4 + 1 + 2 + len(sub) + 16
	start := len(dst)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(n))
	dst = append(dst, 0, 0, 0, 0, kind)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(sub)))
	dst = append(dst, sub...)
	dst = binary.LittleEndian.AppendUint64(dst, id)
	dst = binary.LittleEndian.AppendUint64(dst, seq)
	binary.LittleEndian.PutUint32(dst[start+2:], crc32.Checksum(dst[start+6:], crcTable))
	return dst
}

func (b *FileBookmarkStore) load() error {
	f, err := os.Open(b.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("client: bookmark store: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 256<<10)
	var hdr [6]byte
	var body []byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			break
		}
		n := int(binary.LittleEndian.Uint16(hdr[:]))
		if n < 6+1+2+16 {
			break
		}
		body = append(body[:0], make([]byte, n-6)...)
		if _, err := io.ReadFull(r, body); err != nil {
			break
		}
		if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(hdr[2:]) {
			break
		}
		sl := int(binary.LittleEndian.Uint16(body[1:]))
		if 3+sl+16 != len(body) {
			break
		}
		sub := string(body[3 : 3+sl])
		id := binary.LittleEndian.Uint64(body[3+sl:])
		seq := binary.LittleEndian.Uint64(body[11+sl:])
		switch body[0] {
		case 'R':
			b.setPositionLocked(sub, nil)
		case 'O', 'P':
			p, ok := b.subs[sub]
			if !ok {
				p = newSubProgress()
				b.subs[sub] = p
			}
			if body[0] == 'O' {
				p.setOrigin(id, seq, false)
			} else {
				p.setPub(id, seq, false)
			}
		}
	}
	return nil
}

// rewriteLocked replaces the file with the current progress.
func (b *FileBookmarkStore) rewriteLocked() error {
	var buf []byte
	for name, p := range b.subs {
		buf = appendBmRec(buf, 'R', name, 0, 0)
		for _, o := range p.origins {
			buf = appendBmRec(buf, 'O', name, o.Origin, o.OriginSeq)
		}
		for id, s := range p.pubs {
			buf = appendBmRec(buf, 'P', name, id, s)
		}
		clear(p.dirtyO)
		clear(p.dirtyP)
		p.dirty = false
	}
	b.pending = b.pending[:0] // the snapshot covers it
	tmp := b.path + ".tmp"
	err := os.WriteFile(tmp, buf, 0o600)
	var f *os.File
	if err == nil {
		f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_APPEND, 0o600)
	}
	if err == nil {
		err = f.Sync()
		if err == nil {
			err = os.Rename(tmp, b.path)
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("client: bookmark store: %w", err)
	}
	if b.f != nil {
		b.f.Close()
	}
	b.f = f
	b.size = int64(len(buf))
	return nil
}

// SetPosition implements BookmarkStore (written with the next Flush).
func (b *FileBookmarkStore) SetPosition(sub string, pos []wire.PositionEntry) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.setPositionLocked(sub, pos)
	b.pending = appendBmRec(b.pending, 'R', sub, 0, 0)
	for _, e := range pos {
		b.pending = appendBmRec(b.pending, 'O', sub, e.Origin, e.OriginSeq)
	}
	return nil
}

// Discard implements BookmarkStore: memory only until Flush.
func (b *FileBookmarkStore) Discard(m *Message) error {
	b.mu.Lock()
	b.discardLocked(m, true)
	b.mu.Unlock()
	return nil
}

// Flush implements BookmarkStore.
func (b *FileBookmarkStore) Flush() error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.mu.Lock()
	if b.f == nil {
		b.mu.Unlock()
		return ErrClosed
	}
	buf := b.pending
	b.pending = nil
	for name, p := range b.subs {
		if !p.dirty {
			continue
		}
		for _, o := range p.origins {
			if p.dirtyO[o.Origin] {
				buf = appendBmRec(buf, 'O', name, o.Origin, o.OriginSeq)
			}
		}
		for id := range p.dirtyP {
			buf = appendBmRec(buf, 'P', name, id, p.pubs[id])
		}
		clear(p.dirtyO)
		clear(p.dirtyP)
		p.dirty = false
	}
	if len(buf) == 0 {
		b.mu.Unlock()
		return nil
	}
	if b.size+int64(len(buf)) > bmCompact {
		err := b.rewriteLocked()
		if err == nil && b.durability != SyncNone {
			err = b.f.Sync()
		}
		b.mu.Unlock()
		return err
	}
	f := b.f
	b.size += int64(len(buf))
	b.mu.Unlock()
	_, err := f.Write(buf)
	if err == nil && b.durability != SyncNone {
		err = f.Sync()
	}
	if err != nil {
		return fmt.Errorf("client: bookmark store %s: %w", b.path, err)
	}
	return nil
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
	if b.f != nil {
		if e := b.f.Sync(); err == nil {
			err = e
		}
		b.f.Close()
		b.f = nil
	}
	return err
}
