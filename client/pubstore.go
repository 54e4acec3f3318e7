package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/tandemhq/tandem/client/internal/logfile"
	"github.com/tandemhq/tandem/record"
)

// PublishStore keeps every published message until the server has
// persisted it, so the HA client can re-publish what a lost connection did
// not get persisted. Store is called under the client's publish lock in
// publisher-sequence order; Discard from the connection's reader goroutine
// when the persisted ack advances; Sync from the connection's writer right
// before it sends a batch; the other methods from any goroutine.
type PublishStore interface {
	// Store keeps a message. It returns ErrStoreFull (without blocking)
	// when the store is at its bound and its policy is to refuse;
	// ErrStoreFull wrapped in errWouldBlock when the caller should wait
	// (WaitSpace) and retry.
	Store(seq uint64, topic, payload []byte) error
	// Discard drops every message with sequence <= upTo: persisted.
	Discard(upTo uint64) error
	// Remove drops the one message with sequence seq, wherever it is in
	// the store (a message the server refused permanently: it must not be
	// re-published). Removing a sequence the store does not hold (already
	// persisted, removed, or never stored) is not an error.
	Remove(seq uint64) error
	// Replay calls f for every message kept, in sequence order.
	Replay(f func(seq uint64, topic, payload []byte) error) error
	// UnpersistedCount is the number of messages kept.
	UnpersistedCount() int
	// LastSeq is the highest sequence ever stored (also after restarts,
	// for a durable store); 0 if none.
	LastSeq() uint64
	// Sync makes everything stored so far as durable as the store's
	// setting promises (a file store writes and, per its setting, syncs).
	Sync() error
	// Flush waits until UnpersistedCount is 0 (every message persisted by
	// the server) or ctx ends.
	Flush(ctx context.Context) error
	// WaitSpace waits until Store would accept a message or ctx ends.
	WaitSpace(ctx context.Context) error
	Close() error
}

// ErrStoreFull: the publish store holds its maximum of unpersisted messages
// (see StoreLimits).
var ErrStoreFull = errors.New("client: publish store full")

// errWouldBlock marks ErrStoreFull when the store's policy is to block: the
// HA client waits for space and retries.
var errWouldBlock = errors.New("block")

// StoreLimits bounds a PublishStore. Zero fields take the defaults.
type StoreLimits struct {
	MaxMessages int   // default 1,048,576
	MaxBytes    int64 // topic+payload bytes; default 256 MiB
	// ErrorWhenFull makes Publish return ErrStoreFull at once when the
	// store is full; by default Publish blocks (until its context ends)
	// until the server persists enough to make room.
	ErrorWhenFull bool
}

func (l *StoreLimits) defaults() {
	if l.MaxMessages <= 0 {
		l.MaxMessages = 1 << 20
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = 256 << 20
	}
}

// msgQueue holds messages in one byte slab: [seq u64][topicLen u16]
// [payloadLen u32][removed u8][topic][payload] per message, live between
// head and tail (a removed message stays in the slab, skipped, until the
// head passes it). Appending reuses the slab (compacting or growing it when the tail
// reaches the end), so a steady state does not allocate.
type msgQueue struct {
	buf        []byte
	head, tail int
	count      int   // messages live (not removed)
	bytes      int64 // topic+payload bytes live
}

const msgHdr = 15

func (q *msgQueue) push(seq uint64, topic, payload []byte) {
	n := msgHdr + len(topic) + len(payload)
	if q.tail+n > len(q.buf) {
		live := q.tail - q.head
		if live+n <= len(q.buf)/2 || (live+n <= len(q.buf) && q.head > 0) {
			copy(q.buf, q.buf[q.head:q.tail])
		} else {
			nb := make([]byte, max(2*len(q.buf), live+n, 64<<10))
			copy(nb, q.buf[q.head:q.tail])
			q.buf = nb
		}
		q.head, q.tail = 0, live
	}
	b := q.buf[q.tail:]
	binary.LittleEndian.PutUint64(b, seq)
	binary.LittleEndian.PutUint16(b[8:], uint16(len(topic)))
	binary.LittleEndian.PutUint32(b[10:], uint32(len(payload)))
	b[14] = 0
	copy(b[msgHdr:], topic)
	copy(b[msgHdr+len(topic):], payload)
	q.tail += n
	q.count++
	q.bytes += int64(len(topic) + len(payload))
}

// at decodes the message at offset off and returns its end.
func (q *msgQueue) at(off int) (seq uint64, topic, payload []byte, end int) {
	b := q.buf[off:]
	seq = binary.LittleEndian.Uint64(b)
	tl := int(binary.LittleEndian.Uint16(b[8:]))
	pl := int(binary.LittleEndian.Uint32(b[10:]))
	topic = b[msgHdr : msgHdr+tl : msgHdr+tl]
	payload = b[msgHdr+tl : msgHdr+tl+pl : msgHdr+tl+pl]
	return seq, topic, payload, off + msgHdr + tl + pl
}

// removed reports whether the message at off was removed.
func (q *msgQueue) removed(off int) bool { return q.buf[off+14] != 0 }

// discard drops messages with seq <= upTo from the head.
func (q *msgQueue) discard(upTo uint64) int {
	n := 0
	for q.head < q.tail {
		seq, t, p, end := q.at(q.head)
		if seq > upTo {
			break
		}
		if !q.removed(q.head) {
			q.count--
			q.bytes -= int64(len(t) + len(p))
			n++
		}
		q.head = end
	}
	if q.head == q.tail || q.count == 0 {
		q.head, q.tail = 0, 0
	}
	return n
}

// remove marks the message with sequence seq removed; false if it is not
// held.
func (q *msgQueue) remove(seq uint64) bool {
	for off := q.head; off < q.tail; {
		s, t, p, end := q.at(off)
		if s > seq {
			return false
		}
		if s == seq && !q.removed(off) {
			q.buf[off+14] = 1
			q.count--
			q.bytes -= int64(len(t) + len(p))
			if q.count == 0 {
				q.head, q.tail = 0, 0
			}
			return true
		}
		off = end
	}
	return false
}

// memCore is the in-memory part shared by both stores.
type memCore struct {
	mu      sync.Mutex
	q       msgQueue
	last    uint64
	limits  StoreLimits
	changed signal // notified on Discard
}

func (m *memCore) full(size int) bool {
	return m.q.count > 0 && (m.q.count >= m.limits.MaxMessages || m.q.bytes+int64(size) > m.limits.MaxBytes)
}

func (m *memCore) storeLocked(seq uint64, topic, payload []byte) error {
	if m.full(len(topic) + len(payload)) {
		if m.limits.ErrorWhenFull {
			return ErrStoreFull
		}
		return fmt.Errorf("%w: %w", ErrStoreFull, errWouldBlock)
	}
	m.q.push(seq, topic, payload)
	m.last = max(m.last, seq)
	return nil
}

func (m *memCore) waitFor(ctx context.Context, ready func() bool) error {
	for {
		ch := m.changed.arm()
		ok := ready()
		if ok {
			m.changed.disarm()
			return nil
		}
		select {
		case <-ch:
			m.changed.disarm()
		case <-ctx.Done():
			m.changed.disarm()
			return context.Cause(ctx)
		}
	}
}

func (m *memCore) UnpersistedCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.q.count
}

func (m *memCore) LastSeq() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// Replay calls f on a copy of the live messages taken under the lock, so f
// may block (a full window waits for acks, whose Discard takes the lock).
func (m *memCore) Replay(f func(seq uint64, topic, payload []byte) error) error {
	m.mu.Lock()
	snap := msgQueue{buf: append([]byte(nil), m.q.buf[m.q.head:m.q.tail]...)}
	snap.tail = len(snap.buf)
	m.mu.Unlock()
	for off := 0; off < snap.tail; {
		seq, t, p, end := snap.at(off)
		if !snap.removed(off) {
			if err := f(seq, t, p); err != nil {
				return err
			}
		}
		off = end
	}
	return nil
}

func (m *memCore) Flush(ctx context.Context) error {
	return m.waitFor(ctx, func() bool { return m.UnpersistedCount() == 0 })
}

func (m *memCore) WaitSpace(ctx context.Context) error {
	return m.waitFor(ctx, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return !m.full(0) || m.q.count == 0
	})
}

// MemoryPublishStore keeps unpersisted messages in memory: it survives
// disconnects and failover, not the end of the process.
type MemoryPublishStore struct{ memCore }

// NewMemoryPublishStore returns an empty memory store.
func NewMemoryPublishStore(limits StoreLimits) *MemoryPublishStore {
	limits.defaults()
	return &MemoryPublishStore{memCore{limits: limits}}
}

// Store implements PublishStore.
func (m *MemoryPublishStore) Store(seq uint64, topic, payload []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.storeLocked(seq, topic, payload)
}

// Discard implements PublishStore.
func (m *MemoryPublishStore) Discard(upTo uint64) error {
	m.mu.Lock()
	n := m.q.discard(upTo)
	m.mu.Unlock()
	if n > 0 {
		m.changed.notify()
	}
	return nil
}

// Remove implements PublishStore.
func (m *MemoryPublishStore) Remove(seq uint64) error {
	m.mu.Lock()
	ok := m.q.remove(seq)
	m.mu.Unlock()
	if ok {
		m.changed.notify()
	}
	return nil
}

// Sync implements PublishStore (nothing to do).
func (m *MemoryPublishStore) Sync() error { return nil }

// Remove implements PublishStore for the memory store: the message leaves
// the slab (the messages after it move up), and waiters on space or Flush
// are woken. memCore carries it, so the file store has it too, in memory
// only, until its own Remove (which also records the removal in the file)
// replaces it.
func (m *memCore) Remove(seq uint64) error {
	m.mu.Lock()
	ok := m.q.remove(seq)
	m.mu.Unlock()
	if ok {
		m.changed.notify()
	}
	return nil
}

// Close implements PublishStore.
func (m *MemoryPublishStore) Close() error { return nil }

// Durability is what a file-backed store does before it considers data safe.
type Durability int

const (
	// SyncBatch (the default) writes each batch of stored messages to the
	// file and fdatasyncs it before the batch's frames go to the network:
	// whatever the server may hold is on the client's disk, and a machine
	// crash loses at most messages that never left the process.
	SyncBatch Durability = iota
	// SyncNone writes each batch to the file (the OS page cache) before it
	// goes to the network, without fdatasync: survives the process being
	// killed, not a machine crash.
	SyncNone
	// SyncEveryMessage writes and fdatasyncs every message before Publish
	// returns: survives a machine crash for every message Publish accepted,
	// at the price of one sync per message.
	SyncEveryMessage
)

func (d Durability) String() string {
	switch d {
	case SyncBatch:
		return "batch"
	case SyncNone:
		return "none"
	case SyncEveryMessage:
		return "message"
	}
	return fmt.Sprintf("durability(%d)", int(d))
}

// ParseDurability parses "batch", "none" or "message".
func ParseDurability(s string) (Durability, error) {
	for _, d := range []Durability{SyncBatch, SyncNone, SyncEveryMessage} {
		if d.String() == s {
			return d, nil
		}
	}
	return 0, fmt.Errorf("client: durability %q: want batch, none or message", s)
}

// FilePublishStore is a PublishStore backed by an append-only file, so
// unpersisted messages survive the client process (and, per Durability,
// the machine). The messages are also kept in memory for re-publishing.
//
// File format: logfile records (client/internal/logfile: [len u32][crc32c
// u32][body]) whose bodies are [kind u8][seq u64][topicLen u16][topic]
// [payload]:
//
//	'H'  header, first record: seq 1 (the format version), topic "tandem-pub"
//	'M'  a message: seq, topic, payload
//	'D'  every message up to seq is persisted (topic and payload empty)
//	'X'  the message seq is removed (refused by the server; empty)
//
// A file without the 'H' record (written before it existed) is read the
// same way. A body is at most 64 MiB + 64 KiB.
//
// On open: a bad record with nothing valid after it is a torn tail (the
// process or machine died mid-append): it is dropped and reported
// (Recovery; the HA client passes it to OnError). A bad record followed by
// a valid one is corruption: Open fails with an error matching
// ErrStoreCorrupt that names the file and the offset, and leaves the file
// alone; RepairFilePublishStore drops the bad bytes and reports them. A bad
// first record is corruption too (files are created whole). After
// a successful open the file is rewritten (temporary file, fsync, rename,
// fsync of the directory) with only the live messages, and again when it
// grows past 64 MiB. Files are created with mode 0600.
type FilePublishStore struct {
	memCore
	path       string
	durability Durability
	fsys       StoreFS
	log        *logfile.Log
	recovery   StoreRecovery

	// guarded by memCore.mu
	pending   []byte // records not yet written
	discarded uint64 // persisted up to
	written   uint64 // 'D' value last written
	size      int64  // file size
	werr      error  // first write error

	wmu   sync.Mutex // serialises writes to the file
	spare []byte
}

const (
	pubStoreCompact = 64 << 20
	pubBodyHdr      = 1 + 8 + 2
	// pubMaxPayload bounds a stored message's payload (and so a record's
	// length on open).
	pubMaxPayload = 64 << 20
	pubMaxBody    = pubBodyHdr + record.MaxTopic + pubMaxPayload
	pubMagic      = "tandem-pub"
	pubVersion    = 1
)

// OpenFilePublishStore opens (creating it if needed) the store at path and
// loads the messages it holds that were not persisted. A corrupt file is an
// error matching ErrStoreCorrupt naming the file and offset (see
// RepairFilePublishStore); a torn tail is dropped and reported by
// Recovery.
func OpenFilePublishStore(path string, durability Durability, limits StoreLimits, opts ...StoreOption) (*FilePublishStore, error) {
	limits.defaults()
	o := storeOpts(opts)
	s := &FilePublishStore{memCore: memCore{limits: limits}, path: path, durability: durability, fsys: o.fs}
	res, err := s.load(false)
	if err == nil {
		err = checkFirst(path, res)
	}
	if err != nil {
		return nil, fmt.Errorf("client: publish store: %w", err)
	}
	s.recovery = StoreRecovery{Path: path, Torn: res.Torn}
	if err := s.rewrite(); err != nil {
		return nil, err
	}
	return s, nil
}

// Recovery reports what Open found: a torn tail it dropped, if any.
func (s *FilePublishStore) Recovery() StoreRecovery { return s.recovery }

// load reads the file into memory; repair skips corrupt regions (listed in
// the result) instead of failing.
func (s *FilePublishStore) load(repair bool) (logfile.Result, error) {
	f, size, err := logfile.OpenExisting(s.fsys, s.path)
	if err != nil || f == nil {
		return logfile.Result{}, err
	}
	defer f.Close()
	return logfile.Scan(f, size, s.path, pubMaxBody, repair, func(off int64, body []byte) error {
		if len(body) < pubBodyHdr {
			return fmt.Errorf("%w: %d-byte body", ErrStoreCorrupt, len(body))
		}
		kind := body[0]
		seq := binary.LittleEndian.Uint64(body[1:])
		tl := int(binary.LittleEndian.Uint16(body[9:]))
		if pubBodyHdr+tl > len(body) {
			return fmt.Errorf("%w: topic length %d past the record", ErrStoreCorrupt, tl)
		}
		topic, payload := body[pubBodyHdr:pubBodyHdr+tl], body[pubBodyHdr+tl:]
		switch kind {
		case 'H':
			if off != 0 || string(topic) != pubMagic {
				return fmt.Errorf("%w: not a publish store (header %q at offset %d)", ErrStoreCorrupt, topic, off)
			}
			if seq != pubVersion {
				return fmt.Errorf("%w: publish store format version %d, want %d", ErrStoreCorrupt, seq, pubVersion)
			}
		case 'M':
			if seq > s.discarded {
				s.q.push(seq, topic, payload)
			}
			s.last = max(s.last, seq)
		case 'D':
			s.discarded = max(s.discarded, seq)
			s.last = max(s.last, seq)
			s.q.discard(seq)
		case 'X':
			s.q.remove(seq)
		default:
			return fmt.Errorf("%w: unknown record kind %q", ErrStoreCorrupt, kind)
		}
		return nil
	})
}

// appendPubRec encodes one record onto dst.
func appendPubRec(dst []byte, kind byte, seq uint64, topic, payload []byte) []byte {
	dst, start := logfile.Begin(dst)
	dst = append(dst, kind)
	dst = binary.LittleEndian.AppendUint64(dst, seq)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(topic)))
	dst = append(dst, topic...)
	dst = append(dst, payload...)
	return logfile.Finish(dst, start)
}

// rewrite replaces the file with the live messages (and the persisted
// point); called with nothing pending.
func (s *FilePublishStore) rewrite() error {
	log, err := logfile.Replace(s.fsys, s.path, func(w io.Writer) error {
		rec := appendPubRec(nil, 'H', pubVersion, []byte(pubMagic), nil)
		rec = appendPubRec(rec, 'D', s.discarded, nil, nil)
		if _, err := w.Write(rec); err != nil {
			return err
		}
		for off := s.q.head; off < s.q.tail; {
			seq, t, p, end := s.q.at(off)
			if !s.q.removed(off) {
				rec = appendPubRec(rec[:0], 'M', seq, t, p)
				if _, err := w.Write(rec); err != nil {
					return err
				}
			}
			off = end
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("client: publish store: %w", err)
	}
	if s.log != nil {
		s.log.Close()
	}
	s.log = log
	s.size = log.Size()
	s.written = s.discarded
	return nil
}

// Store implements PublishStore.
func (s *FilePublishStore) Store(seq uint64, topic, payload []byte) error {
	if len(payload) > pubMaxPayload {
		return fmt.Errorf("client: publish store: %d-byte payload: the file store keeps at most %d", len(payload), pubMaxPayload)
	}
	s.mu.Lock()
	if s.werr != nil {
		s.mu.Unlock()
		return s.werr
	}
	if err := s.storeLocked(seq, topic, payload); err != nil {
		s.mu.Unlock()
		return err
	}
	s.pending = appendPubRec(s.pending, 'M', seq, topic, payload)
	big := len(s.pending) >= 1<<20
	s.mu.Unlock()
	if s.durability == SyncEveryMessage || big {
		return s.Sync()
	}
	return nil
}

// Discard implements PublishStore. The persisted point reaches the file
// with the next write.
func (s *FilePublishStore) Discard(upTo uint64) error {
	s.mu.Lock()
	n := s.q.discard(upTo)
	if upTo > s.discarded {
		s.discarded = upTo
	}
	s.mu.Unlock()
	if n > 0 {
		s.changed.notify()
	}
	return nil
}

// Remove implements PublishStore. The removal reaches the file with the
// next write (a crash before it re-publishes the message once more, and
// the server refuses it again).
func (s *FilePublishStore) Remove(seq uint64) error {
	s.mu.Lock()
	ok := s.q.remove(seq)
	if ok {
		s.pending = appendPubRec(s.pending, 'X', seq, nil, nil)
	}
	s.mu.Unlock()
	if ok {
		s.changed.notify()
	}
	return nil
}

// Sync implements PublishStore: pending records (and the persisted point)
// are written, and synced unless the durability is SyncNone.
func (s *FilePublishStore) Sync() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	if s.log == nil {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.werr != nil {
		s.mu.Unlock()
		return s.werr
	}
	if s.discarded > s.written {
		s.pending = appendPubRec(s.pending, 'D', s.discarded, nil, nil)
		s.written = s.discarded
	}
	buf := s.pending
	s.pending = s.spare[:0]
	compact := s.size+int64(len(buf)) > pubStoreCompact && s.q.bytes < pubStoreCompact/4
	log := s.log
	s.mu.Unlock()
	if len(buf) == 0 {
		s.spare = buf
		return nil
	}
	err := log.Append(buf)
	if err == nil && s.durability != SyncNone {
		err = log.Sync()
	}
	s.mu.Lock()
	s.size = log.Size()
	if err != nil && s.werr == nil {
		s.werr = fmt.Errorf("client: publish store: %w", err)
	}
	if err != nil {
		err = s.werr
	}
	if compact && err == nil && len(s.pending) == 0 {
		err = s.rewrite()
	}
	s.mu.Unlock()
	s.spare = buf[:0]
	return err
}

// Close implements PublishStore: pending records are written and synced.
func (s *FilePublishStore) Close() error {
	err := s.Sync()
	if errors.Is(err, ErrClosed) {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return nil
	}
	if e := s.log.Sync(); err == nil {
		err = e
	}
	if e := s.log.Close(); err == nil {
		err = e
	}
	s.log = nil
	return err
}

// RepairFilePublishStore rewrites the publish store at path without its bad
// records and reports exactly what it dropped: each corrupt region (offset,
// bytes, and the sequences of the valid messages around it: what was in
// between may be lost) and a torn tail. The original file is kept as
// path+".corrupt" when anything was dropped. A clean file is left as it is.
func RepairFilePublishStore(path string, opts ...StoreOption) (StoreRepair, error) {
	o := storeOpts(opts)
	var limits StoreLimits
	limits.defaults()
	limits.MaxMessages, limits.MaxBytes = 1<<62, 1<<62
	s := &FilePublishStore{memCore: memCore{limits: limits}, path: path, fsys: o.fs}
	rep := StoreRepair{Path: path}
	// Sequences of the valid records around each region, found by a
	// second look at the scan's record offsets.
	type at struct {
		off int64
		seq uint64
	}
	var recs []at
	orig, ok, err := logfile.ReadExisting(o.fs, path)
	if err != nil {
		return rep, fmt.Errorf("client: publish store: %w", err)
	}
	if !ok {
		return rep, nil
	}
	size := int64(len(orig))
	_, _ = logfile.Scan(bytesReaderAt(orig), size, path, pubMaxBody, true, func(off int64, body []byte) error {
		if len(body) >= pubBodyHdr && body[0] != 'H' {
			recs = append(recs, at{off, binary.LittleEndian.Uint64(body[1:])})
		}
		return nil
	})
	res, err := s.load(true)
	if err != nil {
		return rep, fmt.Errorf("client: publish store: %w", err)
	}
	for _, r := range res.Skipped {
		d := DroppedRegion{Offset: r.Offset, Bytes: r.Bytes}
		for _, x := range recs {
			if x.off < r.Offset {
				d.After = x.seq
			} else if d.Before == 0 {
				d.Before = x.seq
			}
		}
		rep.Dropped = append(rep.Dropped, d)
	}
	rep.Torn = res.Torn
	if len(rep.Dropped) == 0 && rep.Torn.Bytes == 0 {
		return rep, nil
	}
	if err := keepCorrupt(o.fs, path, orig); err != nil {
		return rep, fmt.Errorf("client: publish store: %w", err)
	}
	rep.Backup = path + ".corrupt"
	if err := s.rewrite(); err != nil {
		return rep, err
	}
	rep.Messages = s.q.count
	return rep, s.log.Close()
}
