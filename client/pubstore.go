package client

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
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
// [payloadLen u32][topic][payload] per message, live between head and
// tail. Appending reuses the slab (compacting or growing it when the tail
// reaches the end), so a steady state does not allocate.
type msgQueue struct {
	buf        []byte
	head, tail int
	count      int
	bytes      int64 // topic+payload bytes live
}

const msgHdr = 14

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

// discard drops messages with seq <= upTo from the head.
func (q *msgQueue) discard(upTo uint64) int {
	n := 0
	for q.head < q.tail {
		seq, t, p, end := q.at(q.head)
		if seq > upTo {
			break
		}
		q.head = end
		q.count--
		q.bytes -= int64(len(t) + len(p))
		n++
	}
	if q.head == q.tail {
		q.head, q.tail = 0, 0
	}
	return n
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
		if err := f(seq, t, p); err != nil {
			return err
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

// Sync implements PublishStore (nothing to do).
func (m *MemoryPublishStore) Sync() error { return nil }

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
// File format: records [len u32][crc32c u32][kind u8][seq u64][topicLen
// u16][topic][payload]; kind 'M' is a message, 'D' says every message up
// to seq is persisted (topic and payload empty). A torn or corrupt tail
// (the process died mid-write) ends the file on open. The file is rewritten
// with only the live messages on open and when it grows past 64 MiB.
type FilePublishStore struct {
	memCore
	path       string
	durability Durability
	f          *os.File

	// guarded by memCore.mu
	pending   []byte // records not yet written
	discarded uint64 // persisted up to
	written   uint64 // 'D' value last written
	size      int64  // file size
	werr      error  // first write error

	wmu   sync.Mutex // serialises writes to f
	spare []byte
}

const (
	pubRecHdr       = 4 + 4 + 1 + 8 + 2
	pubStoreCompact = 64 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// OpenFilePublishStore opens (creating it if needed) the store at path and
// loads the messages it holds that were not persisted.
func OpenFilePublishStore(path string, durability Durability, limits StoreLimits) (*FilePublishStore, error) {
	limits.defaults()
	s := &FilePublishStore{memCore: memCore{limits: limits}, path: path, durability: durability}
	if err := s.load(); err != nil {
		return nil, err
	}
	if err := s.rewrite(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *FilePublishStore) load() error {
	f, err := os.Open(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("client: publish store: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var hdr [pubRecHdr]byte
	var body []byte
	type msg struct {
		seq            uint64
		topic, payload []byte
	}
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			break // end, or a torn header
		}
		n := int(binary.LittleEndian.Uint32(hdr[0:]))
		if n < pubRecHdr || n > 1<<30 {
			break
		}
		body = append(body[:0], hdr[8:]...)
		body = append(body, make([]byte, n-pubRecHdr)...)
		if _, err := io.ReadFull(r, body[pubRecHdr-8:]); err != nil {
			break
		}
		if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(hdr[4:]) {
			break
		}
		kind := body[0]
		seq := binary.LittleEndian.Uint64(body[1:])
		tl := int(binary.LittleEndian.Uint16(body[9:]))
		if 11+tl > len(body) {
			break
		}
		switch kind {
		case 'M':
			if seq > s.discarded {
				s.q.push(seq, body[11:11+tl], body[11+tl:])
			}
			s.last = max(s.last, seq)
		case 'D':
			s.discarded = max(s.discarded, seq)
			s.last = max(s.last, seq)
			s.q.discard(seq)
		}
	}
	s.written = s.discarded
	return nil
}

// appendRec encodes one record onto dst.
func appendPubRec(dst []byte, kind byte, seq uint64, topic, payload []byte) []byte {
	n := pubRecHdr + len(topic) + len(payload)
	start := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(n))
	dst = append(dst, 0, 0, 0, 0, kind)
	dst = binary.LittleEndian.AppendUint64(dst, seq)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(topic)))
	dst = append(dst, topic...)
	dst = append(dst, payload...)
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(dst[start+8:], crcTable))
	return dst
}

// rewrite replaces the file with the live messages (and the persisted
// point); called with nothing pending.
func (s *FilePublishStore) rewrite() error {
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("client: publish store: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var rec []byte
	rec = appendPubRec(rec[:0], 'D', s.discarded, nil, nil)
	w.Write(rec)
	size := int64(len(rec))
	for off := s.q.head; off < s.q.tail; {
		seq, t, p, end := s.q.at(off)
		rec = appendPubRec(rec[:0], 'M', seq, t, p)
		w.Write(rec)
		size += int64(len(rec))
		off = end
	}
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, s.path)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("client: publish store: %w", err)
	}
	if s.f != nil {
		s.f.Close()
	}
	f.Close()
	s.f, err = os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("client: publish store: %w", err)
	}
	s.size = size
	return nil
}

// Store implements PublishStore.
func (s *FilePublishStore) Store(seq uint64, topic, payload []byte) error {
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

// Sync implements PublishStore: pending records (and the persisted point)
// are written, and synced unless the durability is SyncNone.
func (s *FilePublishStore) Sync() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	if s.f == nil {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.discarded > s.written {
		s.pending = appendPubRec(s.pending, 'D', s.discarded, nil, nil)
		s.written = s.discarded
	}
	buf := s.pending
	s.pending = s.spare[:0]
	compact := s.size+int64(len(buf)) > pubStoreCompact && s.q.bytes < pubStoreCompact/4
	s.mu.Unlock()
	if len(buf) == 0 {
		s.spare = buf
		return nil
	}
	_, err := s.f.Write(buf)
	if err == nil && s.durability != SyncNone {
		err = s.f.Sync()
	}
	s.mu.Lock()
	s.size += int64(len(buf))
	if err != nil && s.werr == nil {
		s.werr = fmt.Errorf("client: publish store %s: %w", s.path, err)
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
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	if e := s.f.Sync(); err == nil {
		err = e
	}
	if e := s.f.Close(); err == nil {
		err = e
	}
	s.f = nil
	return err
}
