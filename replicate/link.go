package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemhq/tandem/internal/rsm"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// frameReader takes whole frames off a connection (the net.Conn, or the
// link's ring reader once the handshake is done), growing its buffer for a
// frame larger than it (up to maxFrame).
type frameReader struct {
	c        io.Reader
	buf      []byte
	off, n   int
	maxFrame int
}

func newFrameReader(c io.Reader, size int) *frameReader {
	return &frameReader{c: c, buf: make([]byte, size), maxFrame: DefaultMaxFrame}
}

// next returns the next frame; its body is valid until the next call.
func (fr *frameReader) next() (wire.Frame, error) {
	for {
		f, n, err := wire.Split(fr.buf[fr.off:fr.n], fr.maxFrame)
		if err != nil {
			return wire.Frame{}, err
		}
		if n > 0 {
			fr.off += n
			return f, nil
		}
		if fr.off > 0 {
			fr.n = copy(fr.buf, fr.buf[fr.off:fr.n])
			fr.off = 0
		}
		if need := wire.Need(fr.buf[:fr.n]); need > len(fr.buf) {
			nb := make([]byte, need)
			copy(nb, fr.buf[:fr.n])
			fr.buf = nb
		} else if fr.n == len(fr.buf) {
			nb := make([]byte, 2*len(fr.buf))
			copy(nb, fr.buf[:fr.n])
			fr.buf = nb
		}
		m, err := fr.c.Read(fr.buf[fr.n:])
		fr.n += m
		if err != nil && m == 0 {
			return wire.Frame{}, err
		}
	}
}

// link is one authenticated connection to a peer. It carries both
// directions: our stream to the peer (if the peer is one of our
// destinations) and the peer's stream to us (if we are one of its).
type link struct {
	r    *Replicator
	c    net.Conn
	fr   *frameReader
	peer string
	// peerID: the peer's id on the journal it runs on (record.OriginID):
	// the via of every record it ships here (rsm.Filter).
	peerID uint64
	// peerJournal: the id of the peer's journal (its Hello): the stream it
	// ships over this link. peerMaxFrame: the largest frame it reads.
	peerJournal  record.JournalID
	peerMaxFrame int
	// peerEpoch, peerLast: the peer's run and how far its journal is
	// durable (its Hello).
	peerEpoch uint32
	peerLast  uint64
	// resume: the position our Resume carries (the one our Hello named,
	// covered by the handshake proofs); peerResume: the one the peer's
	// Hello named, which its Resume must equal.
	resume     position
	peerResume position
	dialer     string // the instance that dialed this connection
	// rio, when set, moves the link's bytes through io_uring (Config.IO
	// IORing, ringio.go) on its own duplicate of c's socket; c is closed
	// as the link starts, and kept only for its addresses.
	rio *ringIO

	wmu      sync.Mutex
	lastSend atomic.Int64
	lastRecv atomic.Int64

	acks      chan rsm.PendingAck
	closed    chan struct{}
	closeOnce sync.Once
	err       error
	ctx       context.Context
	cancel    context.CancelFunc
}

func newLink(r *Replicator, c net.Conn, fr *frameReader, theirs *hello, dialer string) *link {
	ctx, cancel := context.WithCancel(r.ctx)
	peer := theirs.From
	maxFrame := int(theirs.MaxFrame)
	if maxFrame == 0 {
		maxFrame = DefaultMaxFrame
	}
	fr.maxFrame = r.cfg.MaxFrame
	l := &link{r: r, c: c, fr: fr, peer: peer, peerID: record.OriginEpochID(peer, theirs.Journal, theirs.Epoch), peerJournal: theirs.Journal, peerMaxFrame: maxFrame,
		peerEpoch: theirs.Epoch, peerLast: theirs.Last,
		peerResume: theirs.Resume, dialer: dialer, acks: make(chan rsm.PendingAck, 4096), closed: make(chan struct{}), ctx: ctx, cancel: cancel}
	now := time.Now().UnixNano()
	l.lastSend.Store(now)
	l.lastRecv.Store(now)
	if r.ioMode == IORing {
		rio, err := newRingIO(r, c, l.closed)
		if err != nil {
			r.io.fellBack.Add(1)
			r.log.Warn("replication link falls back to net I/O: cannot set up its rings", "peer", peer, "err", err)
		} else {
			r.io.ringLinks.Add(1)
			l.rio = rio
			fr.c = rio.rd // the frames the handshake read ahead stay buffered in fr
		}
	}
	return l
}

// abandon closes a link that was never started (a duplicate, or the
// replicator closing): its rings and its connection.
func (l *link) abandon() {
	if l.rio != nil {
		l.rio.abandon()
	}
	l.c.Close()
}

func (l *link) start() {
	if l.rio != nil {
		l.rio.start()
	}
	if d := l.r.byName[l.peer]; d != nil {
		d.maxRecord.Store(int64(l.peerMaxFrame - batchHeaderSize))
		d.linkUp(l)
	}
	// Tell the peer where its stream to us is durable, so it resumes there
	// (or refuses: a fork). A peer on another journal than the one we hold
	// a position of ships its new journal from the start: that stream is
	// followed from here on.
	src := l.r.source(l.peer)
	// The position sent is the one our Hello named (the proofs cover it);
	// should this stream have advanced since (a link being replaced), the
	// source resends from there and de-duplication drops what is held.
	src.follow(l.peerJournal, l.r.log)
	if err := l.write(appendResume(nil, l.resume)); err != nil {
		l.close(err)
	}
	l.r.wg.Add(3)
	go l.readLoop(src)
	go l.ackLoop(src)
	go l.heartbeatLoop()
}

func (l *link) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

func (l *link) close(err error) {
	l.closeOnce.Do(func() {
		l.err = err
		l.cancel()
		close(l.closed)
		if l.rio != nil {
			// Completes the recv and sends in flight; the socket is closed
			// by rio.finish once no ring can submit on it.
			l.rio.shutdown()
		} else {
			l.c.Close()
		}
		if l.r.ctx.Err() == nil {
			// A flapping link logs at most logBurst lines per logEvery.
			if n := l.r.limit.allow("link-down "+l.peer, time.Now()); n >= 0 {
				l.r.log.Info("replication link down", "peer", l.peer, "reason", err, "suppressed", n)
			}
		}
		l.r.linkClosed(l)
	})
}

// write sends one or more whole frames.
func (l *link) write(b []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.isClosed() {
		return errLinkClosed
	}
	deadline := time.Now().Add(l.writeTimeout())
	var err error
	if l.rio != nil {
		err = l.rio.wr.write(b, deadline, l.closed)
	} else {
		l.c.SetWriteDeadline(deadline)
		_, err = l.c.Write(b)
	}
	if err != nil {
		return err
	}
	l.lastSend.Store(time.Now().UnixNano())
	return nil
}

func (l *link) writeTimeout() time.Duration { return 3 * l.r.cfg.Heartbeat * 4 }

// sendBatch sends a batch gathered from the journal mapping (ring links
// only). b belongs to the link from here on, sent or not: its holds are
// released once the kernel is done with it.
func (l *link) sendBatch(b *outBatch) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.isClosed() {
		l.rio.release(b)
		return errLinkClosed
	}
	if err := l.rio.wr.sendBatch(b, time.Now().Add(l.writeTimeout()), l.closed); err != nil {
		return err
	}
	l.lastSend.Store(time.Now().UnixNano())
	return nil
}

// reapSends lets a ring link's writer release batches whose zero-copy
// notifications arrived while the link was idle.
func (l *link) reapSends() {
	if l.rio == nil {
		return
	}
	l.wmu.Lock()
	if !l.isClosed() {
		l.rio.wr.reap()
	}
	l.wmu.Unlock()
}

var errLinkClosed = errors.New("replicate: link closed")

func (l *link) readLoop(src *source) {
	defer l.r.wg.Done()
	if l.rio != nil {
		// The kernel completes network requests as task work on the thread
		// that submitted them: keep the reader's ring on one thread.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer l.rio.finish(l) // every return below closed the link first
	}
	var views []record.View
	for {
		if deadline := time.Now().Add(3 * l.r.cfg.Heartbeat); l.rio != nil {
			l.rio.rd.deadline = deadline
		} else {
			l.c.SetReadDeadline(deadline)
		}
		f, err := l.fr.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("peer closed the connection")
			}
			l.close(err)
			return
		}
		l.lastRecv.Store(time.Now().UnixNano())
		switch f.Type {
		case wire.TypeHeartbeat:
		case typeBatch:
			views, err = l.onBatch(src, f.Body, views[:0])
		case typeBatchAck:
			var through uint64
			if through, err = decodeU64(f.Type, f.Body); err == nil {
				if d := l.r.byName[l.peer]; d != nil {
					d.onAck(l, through)
				}
			}
		case typeResume:
			var pos position
			if pos, err = decodeResume(f.Body); err == nil && pos != l.peerResume {
				err = fmt.Errorf("resume %s/%d differs from the %s/%d its handshake covered", pos.Journal, pos.Seq, l.peerResume.Journal, l.peerResume.Seq)
			}
			if err == nil {
				if d := l.r.byName[l.peer]; d != nil {
					d.onResume(l, pos)
				}
			}
		case typeRefuse:
			var reason uint16
			var text string
			if reason, text, err = decodeRefuse(f.Body); err == nil && !src.refused.Swap(true) {
				l.r.log.Error("peer refuses to ship its stream to this instance from the position held here; "+
					"stop this instance and run `tandem repl-reset --peer "+l.peer+"` to take its stream afresh (docs/replication.md)",
					"peer", l.peer, "reason_code", reason, "reason", text)
			}
		case wire.TypeError:
			err = remoteError(f.Body)
		default:
			err = fmt.Errorf("unexpected %s frame on a replication link", typeName(f.Type))
		}
		if err != nil {
			if n := l.r.limit.allow("link-error "+l.peer, time.Now()); n >= 0 {
				l.r.log.Warn("replication link error", "peer", l.peer, "err", err, "suppressed", n)
			}
			l.write(wire.AppendError(nil, wire.CodeMalformed, err.Error()))
			l.close(err)
			return
		}
	}
}

// onBatch verifies a batch (continuity with what we hold of this peer's
// stream, structure and CRC of every record), stores the new records and
// queues the acknowledgment that goes out once they are durable here.
func (l *link) onBatch(src *source, body []byte, views []record.View) ([]record.View, error) {
	from, through, throughCRC, recs, err := decodeBatch(body)
	if err != nil {
		return views, err
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if err := src.m.Batch(l.peerJournal, from); err != nil {
		return views, fmt.Errorf("%s's stream: %w", l.peer, err)
	}
	src.refused.Store(false)
	prev := from - 1
	for off := 0; off < len(recs); {
		v, n, err := record.Parse(recs[off:])
		if err != nil {
			return views, fmt.Errorf("batch [%d, %d] at offset %d: %w", from, through, off, err)
		}
		if err := v.Verify(); err != nil {
			return views, fmt.Errorf("batch [%d, %d] record seq %d: %w", from, through, v.Seq(), err)
		}
		if v.Seq() <= prev || v.Seq() > through {
			return views, fmt.Errorf("batch [%d, %d]: record seq %d out of order (after %d)", from, through, v.Seq(), prev)
		}
		prev = v.Seq()
		if src.m.Fresh(v.Seq()) { // earlier ones arrived before (a resend after reconnect)
			views = append(views, v)
		}
		off += n
	}
	var stored uint64
	if len(views) > 0 {
		if stored, err = l.r.store.StoreReplicated(views, l.peerID); err != nil {
			return views, fmt.Errorf("storing batch from %s: %w", l.peer, err)
		}
	}
	// The acknowledgment also waits for records of this range skipped above,
	// stored from an earlier batch (over a link since replaced) whose append
	// may not be durable yet: rsm.Source.Received.
	a := src.m.Received(through, throughCRC, stored)
	select {
	case l.acks <- a:
	case <-l.closed:
	}
	return views, nil
}

// ackLoop acknowledges batches, in order, once what they stored is
// durable: the order and the coalescing are rsm.AckQueue's.
func (l *link) ackLoop(src *source) {
	defer l.r.wg.Done()
	var q rsm.AckQueue
	var frame []byte // reused: write returns once the bytes are sent
	for {
		if q.Len() == 0 {
			select {
			case a := <-l.acks:
				q.Push(a)
			case <-l.closed:
				return
			}
		}
		// Take every acknowledgment already queued, then wait for the oldest.
	drain:
		for {
			select {
			case a := <-l.acks:
				q.Push(a)
			default:
				break drain
			}
		}
		if w, _ := q.Next(); w > l.r.j.SyncedSeq() {
			if err := l.r.j.WaitSynced(l.ctx, w); err != nil {
				l.close(fmt.Errorf("waiting for local sync: %w", err))
				return
			}
		}
		a, ok := q.Ready(l.r.j.SyncedSeq())
		if !ok {
			continue
		}
		frame = appendU64Frame(frame[:0], typeBatchAck, a.Through)
		if err := l.write(frame); err != nil {
			l.close(err)
			return
		}
		if h := l.r.hooks.AckSent; h != nil && a.WaitFor > 0 {
			h(a.WaitFor)
		}
		src.setDurable(position{Journal: l.peerJournal, Seq: a.Through, CRC: a.CRC})
	}
}

func (l *link) heartbeatLoop() {
	defer l.r.wg.Done()
	hb := l.r.cfg.Heartbeat
	t := time.NewTicker(hb / 2)
	defer t.Stop()
	frame := wire.AppendHeartbeat(nil)
	for {
		select {
		case <-l.closed:
			return
		case now := <-t.C:
			if now.UnixNano()-l.lastSend.Load() >= int64(hb) {
				if err := l.write(frame); err != nil {
					l.close(err)
					return
				}
			} else {
				l.reapSends()
			}
		}
	}
}

// source is what we know of one peer's stream to us: the machine
// (rsm.Source, guarded by mu) and a copy of its durable position for
// readers that must not wait for mu (guarded by posMu, never held with
// anything else).
type source struct {
	name string
	id   uint64
	// refused: the peer refused its stream (logged once per episode).
	refused atomic.Bool
	mu      sync.Mutex
	m       *rsm.Source
	posMu   sync.Mutex
	durable position
}

// follow makes journal the stream followed from this peer and returns the
// position to report in Resume: the one held, even of another journal (the
// source logs and decides; a stream of another journal starts afresh).
func (s *source) follow(journal record.JournalID, log *slog.Logger) position {
	s.mu.Lock()
	defer s.mu.Unlock()
	held, switched := s.m.Follow(journal)
	if switched {
		log.Info("peer runs on another journal than the one whose stream is held here: following its new stream from its start",
			"peer", s.name, "journal", journal.String(), "held_journal", held.Journal.String(), "held_seq", held.Seq)
	}
	s.posMu.Lock()
	s.durable = s.m.Durable()
	s.posMu.Unlock()
	return held
}

// position returns how far the peer's stream is durable here.
func (s *source) position() position {
	s.posMu.Lock()
	defer s.posMu.Unlock()
	return s.durable
}

func (s *source) setDurable(p position) {
	s.mu.Lock()
	s.m.Acked(p)
	d := s.m.Durable()
	s.mu.Unlock()
	s.posMu.Lock()
	s.durable = d
	s.posMu.Unlock()
}
