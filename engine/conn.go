package engine

import (
	"bytes"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/engine/poll"
	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// Aliases so the loop reads like the protocol.
const (
	codeShutdown = wire.CodeShutdown
	maxNameLen   = 256
	// maxScanPerPump bounds how many journal records one subscription pump
	// examines, so a filtered replay over a long journal cannot monopolise
	// its loop; the loop comes back for more without blocking in Wait.
	maxScanPerPump = 16384
	// maxReadsPerEvent bounds reads per readiness event, for fairness.
	maxReadsPerEvent = 4
)

// conn is one client connection, owned by its loop.
//
// Memory per connection is bounded: the read buffer is ReadBuffer bytes and
// grows only to hold one frame of at most MaxFrame; pending output stays
// below WriteHighWater plus one frame, because deliveries stop at the high
// water mark and the loop stops reading a connection whose output is above
// it. A slow subscriber therefore costs no memory beyond that: it is served
// from the journal, at its own pace, by its cursor.
type conn struct {
	lp     *loop
	fd     int
	remote string

	rbuf []byte
	rn   int // bytes of rbuf filled
	wbuf []byte
	woff int // bytes of wbuf already written (epoll)

	// io_uring: the buffer a Send in flight reads from (the kernel holds a
	// pointer into it, so it is never appended to until the Send completes)
	// and the operations this connection has in flight.
	id           uint64
	sbuf         []byte
	soff         int
	recvInFlight bool
	sendInFlight bool
	// cancelInFlight (io_uring): a cancel by this connection's fd is
	// queued or running: the fd is not closed before it completes, or the
	// kernel could apply it to a new connection that reuses the number.
	cancelInFlight bool
	// closeAfterSend: fail() queued an Error frame; close once it is sent
	// (epoll too during the fail-stop drain, failDrain).
	closeAfterSend bool
	// statOnly: logged on after a storage failure; only stat requests and
	// heartbeats are served (failstop.go). storageHeld: a publish found the
	// journal failed; nothing more is read until the fail-stop pass.
	statOnly, storageHeld bool
	// linger: once the Error frame is written, half-close (FIN) and discard
	// input until the client closes (lingering), rather than close at once:
	// closing with unread input sends a reset, which can make the client
	// lose the Error frame (fail-stop; failCheck bounds the wait).
	linger, lingering bool

	// Zero-copy output (zerocopy.go): journal slices that go out between
	// the bytes of wbuf (wz) and of the send in flight (sz), the slot sbuf
	// belongs to when it carries such slices (-1: none), the buffers
	// waiting for the kernel's notifications, and the gather list.
	wz, sz   zcRefs
	zcCopied bool // the kernel reported copying our zero-copy sends: copy instead
	sslot    int
	zslots   [zcSlots]zcSlot
	iovs     []unix.Iovec
	msg      unix.Msghdr

	created, lastRecv, lastSend int64
	hb                          int64 // heartbeat interval in ns; 0: none

	client  *clientInfo // nil until logon
	version uint16      // protocol version of the session
	pub     *publisher
	sec     connSec // user, pending logon verification, permission caches (auth.go)

	subs []*subscription

	acks          ackQueue
	maxLocal      uint64 // highest local seq this connection's publishes map to
	inAcking      bool
	slow          bool // counted in lp.nslow: deliveries wait for output to drain
	dirty         bool
	closed        bool
	watchingWrite bool
	readPaused    bool
	// skip: bytes of an oversized Publish still to drop (oversizedPublish)
	skip int
	// peerMaxRecord: the largest record every sync destination takes (0:
	// no limit known), read once per publish batch
	peerMaxRecord int

	// the publish batch being parsed from one read (journal lock held while
	// locked is true)
	locked        bool
	wantReceived  bool
	receivedSeq   uint64
	wantPersisted bool
	persistedSeq  uint64
	lastTopic     []byte
	lastTopicCnt  *topicCount
}

type subscription struct {
	id     uint32
	m      *matcher
	cur    *journal.Cursor
	resume *resumeFilter // nil unless the subscription resumed from progress
	perm   *readPerm     // nil unless deliveries are filtered by the user's permissions
}

// publishBatch is per-loop scratch for building record headers.
type publishBatch struct {
	hdr record.Header
}

func newConn(lp *loop, fd int, remote string) *conn {
	return newConnSized(lp, fd, remote, lp.srv.cfg.ReadBuffer)
}

// newConnSized makes a connection with a read buffer of rbufSize bytes;
// accepted connections start with a small one (LogonBuffer, see admit).
func newConnSized(lp *loop, fd int, remote string, rbufSize int) *conn {
	return &conn{
		lp: lp, fd: fd, remote: remote,
		rbuf:    make([]byte, rbufSize),
		created: lp.now, lastRecv: lp.now, lastSend: lp.now,
		sslot: -1,
	}
}

func (c *conn) pending() int {
	return len(c.wbuf) - c.woff + c.wz.bytes + c.stotal() - c.soff
}

// buffered is the output not yet handed to the kernel: with io_uring, a
// send in flight (sbuf) does not count, so the next buffer fills while the
// kernel drains the current one (per connection: at most two high water
// marks of output).
func (c *conn) buffered() int { return len(c.wbuf) - c.woff + c.wz.bytes }

// onReadable reads what the socket has and handles every whole frame.
func (c *conn) onReadable() {
	if c.lingering {
		c.discardInput()
		return
	}
	for i := 0; i < maxReadsPerEvent && !c.closed && !c.readPaused; i++ {
		if c.rn == len(c.rbuf) {
			c.fail(wire.CodeMalformed, "read buffer full") // cannot happen: process grows it
			return
		}
		n, err := unix.Read(c.fd, c.rbuf[c.rn:])
		if n > 0 {
			c.rn += n
			c.lastRecv = c.lp.now
			c.process()
			continue
		}
		if err == unix.EAGAIN || err == unix.EINTR {
			return
		}
		// EOF or a socket error: the peer is gone.
		c.close()
		return
	}
}

// process handles the whole frames in the read buffer, then keeps the
// partial frame at the front (the only copy on the read path).
func (c *conn) process() {
	off := 0
	for !c.closed && !c.closeAfterSend && !c.storageHeld && !c.sec.authPending && !c.sec.stalled { // nothing after an Error frame, once held, or while a logon is verified
		maxFrame := c.frameLimit()
		if c.skip > 0 { // the rest of an oversized Publish: drop it unread
			n := min(c.skip, c.rn-off)
			c.skip -= n
			off += n
			if c.skip > 0 {
				break
			}
			continue
		}
		f, n, err := wire.Split(c.rbuf[off:c.rn], maxFrame)
		if err != nil && c.oversizedPublish(c.rbuf[off:c.rn]) {
			if c.rn-off < wire.HeaderSize+8 {
				break // wait for its publisher sequence
			}
			continue
		}
		if err != nil {
			c.endBatch()
			code, text := wire.CodeMalformed, err.Error()
			if n == 0 && len(c.rbuf[off:c.rn]) >= 4 && wire.Need(c.rbuf[off:c.rn]) > maxFrame {
				code = wire.CodeTooLarge
				if c.client == nil && maxFrame < c.lp.srv.cfg.MaxFrame {
					text = fmt.Sprintf("frame of %d bytes before logon (at most %d until logged on: logon-buffer)", wire.Need(c.rbuf[off:c.rn]), maxFrame)
				}
			}
			c.fail(code, text)
			return
		}
		if n == 0 {
			break
		}
		if f.Type == wire.TypeStatRequest && c.pending() > c.lp.srv.cfg.WriteHighWater {
			c.stall() // a StatRequest flood: keep within the output bound
			break
		}
		off += n
		c.handle(f)
	}
	c.endBatch()
	if c.closed || c.closeAfterSend || c.storageHeld {
		return
	}
	if off > 0 {
		c.rn = copy(c.rbuf, c.rbuf[off:c.rn])
	}
	if need := wire.Need(c.rbuf[:c.rn]); need > len(c.rbuf) && need <= c.frameLimit() {
		nb := make([]byte, need)
		copy(nb, c.rbuf[:c.rn])
		c.rbuf = nb
	} else if c.rn == 0 && len(c.rbuf) > c.lp.srv.cfg.ReadBuffer {
		c.rbuf = make([]byte, c.lp.srv.cfg.ReadBuffer) // give back a big frame's buffer
	}
	if c.pending() > c.lp.srv.cfg.WriteHighWater {
		c.pauseReading(true) // the client is not reading its acks: stop reading it
	}
}

// syncPeers is the persisted ack's sync-peer count (version 2 sessions).
func (c *conn) syncPeers(local uint64) uint8 {
	if c.version < wire.Version2 {
		return 0
	}
	return c.lp.srv.syncPeers(local)
}

// oversizedPublish handles a Publish frame longer than max-frame from a
// logged-on client: such a message can never be stored, so it is refused
// (too-large, with the limit) and its bytes are skipped without being
// buffered, and the connection stays up. It reports whether buf starts
// with one; with fewer than its first 16 bytes, it consumes nothing yet.
func (c *conn) oversizedPublish(buf []byte) bool {
	if c.client == nil || len(buf) < wire.HeaderSize || wire.Type(buf[4]) != wire.TypePublish {
		return false
	}
	size := wire.Need(buf)
	if size <= c.lp.srv.cfg.MaxFrame || size < wire.HeaderSize+8 {
		return false
	}
	if len(buf) < wire.HeaderSize+8 {
		return true
	}
	pubSeq := uint64(buf[8]) | uint64(buf[9])<<8 | uint64(buf[10])<<16 | uint64(buf[11])<<24 |
		uint64(buf[12])<<32 | uint64(buf[13])<<40 | uint64(buf[14])<<48 | uint64(buf[15])<<56
	c.refusePublish(pubSeq, wire.CodeTooLarge,
		fmt.Sprintf("publish %d: frame of %d bytes > max-frame %d", pubSeq, size, c.lp.srv.cfg.MaxFrame))
	c.skip = size
	return true
}

// refusePublish answers one publish with a permanent refusal, in order
// with the acks queued before it; the connection stays up. A refusal is
// sent whatever ack level the publish asked for.
func (c *conn) refusePublish(pubSeq uint64, code wire.Code, text string) {
	if c.wantPersisted {
		c.wantPersisted = false
		c.queueAck(wire.AckKindPersisted, c.persistedSeq)
	}
	c.acks.push(pendingAck{local: c.maxLocal, seq: pubSeq, kind: wire.AckKindPersisted, code: code, text: text})
	if !c.inAcking {
		c.inAcking = true
		c.lp.acking = append(c.lp.acking, c)
		c.lp.interested.Store(true)
	}
	c.lp.srv.refusals.Add(1)
}

func (c *conn) handle(f wire.Frame) {
	if f.Type != wire.TypePublish && f.Type != wire.TypeHeartbeat && f.Type != wire.TypeFlush {
		c.endBatch() // other frames may touch the journal's readers: drop the append lock
	}
	if c.client == nil && f.Type != wire.TypeLogon {
		c.fail(wire.CodeNotLoggedOn, fmt.Sprintf("%s before logon", f.Type))
		return
	}
	if c.statOnly && f.Type != wire.TypeStatRequest && f.Type != wire.TypeHeartbeat {
		c.fail(wire.CodeStorageFailed, c.lp.srv.failText()+"; this instance serves only stat")
		return
	}
	switch f.Type {
	case wire.TypePublish:
		c.onPublish(f.Body)
	case wire.TypeHeartbeat:
	case wire.TypeFlush:
		c.onFlush(f.Body)
	case wire.TypeLogon:
		c.onLogon(f.Body)
	case wire.TypeSubscribe:
		c.onSubscribe(f.Body)
	case wire.TypeUnsubscribe:
		c.onUnsubscribe(f.Body)
	case wire.TypeStatRequest:
		if !c.mayStat() {
			c.fail(wire.CodeNotPermitted, "not-permitted: stat needs an admin user")
			return
		}
		c.wbuf = wire.AppendStatReply(c.wbuf, c.lp.srv.statsJSON())
		if p := int64(c.pending()); p > c.lp.maxPending.Load() {
			c.lp.maxPending.Store(p)
		}
		c.lp.markDirty(c)
	default:
		c.fail(wire.CodeUnknownFrame, fmt.Sprintf("unexpected frame %s from a client", f.Type))
	}
}

func (c *conn) onPublish(body []byte) {
	var m wire.Publish
	if err := wire.DecodePublish(body, &m); err != nil {
		c.fail(wire.CodeMalformed, err.Error())
		return
	}
	if len(m.Topic) == 0 || len(m.Topic) > c.lp.srv.cfg.MaxTopic {
		c.refusePublish(m.PubSeq, wire.CodeBadTopic, fmt.Sprintf("publish %d: topic of %d bytes (1..%d allowed)", m.PubSeq, len(m.Topic), c.lp.srv.cfg.MaxTopic))
		return
	}
	if m.PubSeq == 0 {
		c.fail(wire.CodeMalformed, "publish with publisher sequence 0 (sequences start at 1)")
		return
	}
	if c.sec.user != nil && !c.mayPublish(m.Topic) {
		c.refuseNotPermitted(m.PubSeq, m.Topic)
		return
	}
	s := c.lp.srv
	if !c.locked {
		s.j.Lock()
		c.locked = true
		if s.repl != nil { // once per read batch: what every sync peer can take
			c.peerMaxRecord = s.repl.MaxRecord()
		}
	}
	if c.peerMaxRecord > 0 && record.Size(len(m.Topic), len(m.Payload)) > c.peerMaxRecord {
		// A sync destination could never store it: the ack could never
		// mean "on every sync peer's disk".
		c.refusePublish(m.PubSeq, wire.CodeTooLarge, fmt.Sprintf("publish %d: record of %d bytes > %d, the largest a sync replication peer takes (its max-frame)",
			m.PubSeq, record.Size(len(m.Topic), len(m.Payload)), c.peerMaxRecord))
		return
	}
	p := c.pub
	var local uint64
	digest := messageDigest(m.Topic, m.Payload)
	if p.has(m.PubSeq) {
		if p.conflicts(m.PubSeq, digest) {
			// The sequence names another message here: storing neither
			// and acking it as the other would lose one of them.
			s.idx.conflicts.Add(1)
			c.refusePublish(m.PubSeq, wire.CodeSequenceReused, fmt.Sprintf(
				"publish %d: publisher sequence %d is already stored with a different topic or payload (a publisher restarted without its store? use a file store or a new name)",
				m.PubSeq, m.PubSeq))
			return
		}
		// Already stored: acknowledge, do not store again. The original may
		// not be synced yet; the publisher's newest record covers it.
		s.idx.duplicates.Add(1)
		local = p.lastLocal
	} else {
		h := &c.lp.batch.hdr
		h.Time = c.lp.now
		h.Origin = s.origin
		h.Publisher = p.id
		h.PubSeq = m.PubSeq
		seq, err := s.j.AppendLocked(h, m.Topic, m.Payload)
		if errors.Is(err, journal.ErrTooLarge) {
			c.refusePublish(m.PubSeq, wire.CodeTooLarge, fmt.Sprintf("publish %d: %v (%d bytes of topic and payload)", m.PubSeq, err, len(m.Topic)+len(m.Payload)))
			return
		}
		if err != nil && s.j.Err() != nil {
			// The journal failed: hold the connection (read nothing more)
			// for the fail-stop sequence, which sends the acks the ack
			// point covers, then storage-failed (failstop.go).
			c.endBatch()
			c.storageHeld = true
			c.pauseReading(true)
			return
		}
		if err != nil {
			c.endBatch()
			c.wbuf = wire.AppendAck(c.wbuf, wire.AckKindPersisted, wire.CodeStorage, m.PubSeq, err.Error())
			c.fail(wire.CodeStorage, "journal: "+err.Error())
			return
		}
		local = seq
		if !s.stages.busy(c.lp.now) {
			s.stages.claim(probeClient, seq, c.lp.now, stageNow())
		}
		p.add(m.PubSeq, seq)
		p.remember(m.PubSeq, seq, digest)
		s.idx.selfOwnLocked(seq)
		if c.lastTopicCnt == nil || !bytes.Equal(m.Topic, c.lastTopic) {
			c.lastTopicCnt = s.idx.topicLocked(m.Topic)
			c.lastTopic = append(c.lastTopic[:0], m.Topic...)
		}
		c.lastTopicCnt.n.Add(1)
		s.idx.stored.Add(1)
	}
	if local > c.maxLocal {
		c.maxLocal = local
	}
	switch m.Ack {
	case wire.AckReceived:
		c.wantReceived, c.receivedSeq = true, m.PubSeq
	case wire.AckPersisted:
		c.wantPersisted, c.persistedSeq = true, m.PubSeq
	}
}

// endBatch releases the journal lock taken for a run of publishes and
// queues the acks the run asked for.
func (c *conn) endBatch() {
	if c.locked {
		c.lp.srv.j.Unlock()
		c.locked = false
	}
	if c.wantReceived {
		c.wantReceived = false
		c.wbuf = wire.AppendAck(c.wbuf, wire.AckKindReceived, 0, c.receivedSeq, "")
		c.lp.markDirty(c)
	}
	if c.wantPersisted {
		c.wantPersisted = false
		c.queueAck(wire.AckKindPersisted, c.persistedSeq)
	}
}

func (c *conn) onFlush(body []byte) {
	token, err := wire.DecodeFlush(body)
	if err != nil {
		c.endBatch()
		c.fail(wire.CodeMalformed, err.Error())
		return
	}
	if c.wantPersisted { // keep acks in the order the client sent
		c.wantPersisted = false
		c.queueAck(wire.AckKindPersisted, c.persistedSeq)
	}
	c.queueAck(wire.AckKindFlushed, token)
}

// queueAck queues an ack that goes out once the journal has synced through
// everything this connection has published so far.
func (c *conn) queueAck(kind wire.AckKind, seq uint64) {
	c.acks.push(pendingAck{local: c.maxLocal, seq: seq, kind: kind, at: c.lp.now})
	if !c.inAcking {
		c.inAcking = true
		c.lp.acking = append(c.lp.acking, c)
		c.lp.interested.Store(true)
	}
}

// releaseAcks sends the queued acks that synced now covers, coalescing
// consecutive persisted acks into one.
func (c *conn) releaseAcks(synced uint64) {
	if c.closeAfterSend {
		return // the Error frame is queued: nothing may follow it
	}
	var persisted, persistedLocal uint64
	have := false
	for c.acks.len() > 0 && c.acks.front().local <= synced {
		a := c.acks.pop()
		if a.kind == wire.AckKindPersisted && a.code == 0 {
			persisted, persistedLocal, have = a.seq, a.local, true
			if a.at > 0 {
				c.lp.ackHist.Observe(c.lp.now - a.at)
			}
			continue
		}
		if have {
			c.wbuf = wire.AppendAckPeers(c.wbuf, wire.AckKindPersisted, c.syncPeers(persistedLocal), 0, persisted, "")
			c.lp.srv.stages.done(probeClient, persistedLocal)
			have = false
		}
		c.wbuf = wire.AppendAck(c.wbuf, a.kind, a.code, a.seq, a.text)
		c.lp.markDirty(c)
	}
	if have {
		c.wbuf = wire.AppendAckPeers(c.wbuf, wire.AckKindPersisted, c.syncPeers(persistedLocal), 0, persisted, "")
		c.lp.markDirty(c)
		c.lp.srv.stages.done(probeClient, persistedLocal)
	}
}

func (c *conn) onLogon(body []byte) {
	var m wire.Logon
	if err := wire.DecodeLogon(body, &m); err != nil {
		c.fail(wire.CodeMalformed, err.Error())
		return
	}
	if c.client != nil {
		c.fail(wire.CodeAlreadyLoggedOn, "second logon on one connection")
		return
	}
	lo, hi := max(m.MinVersion, wire.MinVersion), min(m.MaxVersion, wire.MaxVersion)
	if lo > hi {
		c.fail(wire.CodeVersion, fmt.Sprintf("no common protocol version: client speaks %d..%d, server %d..%d",
			m.MinVersion, m.MaxVersion, wire.MinVersion, wire.MaxVersion))
		return
	}
	if len(m.Name) == 0 || len(m.Name) > maxNameLen || !utf8.Valid(m.Name) {
		c.fail(wire.CodeMalformed, fmt.Sprintf("client name must be 1..%d bytes of UTF-8", maxNameLen))
		return
	}
	c.startLogon(string(m.Name), m.Credentials, hi, m.HeartbeatMillis)
}

// completeLogon registers an authenticated logon and replies.
func (c *conn) completeLogon(name string, hi uint16, hbMillis uint32) {
	s := c.lp.srv
	if c.refuseAfterFailure(name) {
		return
	}
	ci, err := s.logon(name, c.remote, c.lp.id)
	if err != nil {
		c.fail(wire.CodeNameInUse, fmt.Sprintf("client name %q is already logged on (one connection per name)", name))
		return
	}
	c.client, c.pub, c.version = ci, ci.pub, hi
	if hbMillis > 0 {
		hb := time.Duration(hbMillis) * time.Millisecond
		hb = min(max(hb, s.cfg.MinHeartbeat), s.cfg.MaxHeartbeat)
		c.hb = int64(hb)
	}
	last, acked := s.pubSeqs(ci.pub)
	c.wbuf = wire.AppendLogonReply(c.wbuf, &wire.LogonReply{
		Version:         hi,
		HeartbeatMillis: uint32(c.hb / int64(time.Millisecond)),
		LastPubSeq:      last,
		AckedPubSeq:     acked,
		MaxFrame:        uint32(s.cfg.MaxFrame),
		MaxTopic:        uint16(min(s.cfg.MaxTopic, wire.MaxField)),
		Instance:        []byte(s.cfg.Name),
	})
	c.lp.markDirty(c)
}

func (c *conn) onSubscribe(body []byte) {
	var m wire.Subscribe
	if err := wire.DecodeSubscribe(body, &m); err != nil {
		c.fail(wire.CodeMalformed, err.Error())
		return
	}
	refuse := func(code wire.Code, text string) {
		c.wbuf = wire.AppendAck(c.wbuf, wire.AckKindSubscribed, code, uint64(m.SubID), text)
		c.lp.markDirty(c)
	}
	for _, sub := range c.subs {
		if sub.id == m.SubID {
			refuse(wire.CodeSubIDInUse, fmt.Sprintf("subscription id %d is already active", m.SubID))
			return
		}
	}
	if len(m.Topic) == 0 || len(m.Topic) > c.lp.srv.cfg.MaxTopic {
		refuse(wire.CodeBadTopic, fmt.Sprintf("topic of %d bytes (1..%d allowed)", len(m.Topic), c.lp.srv.cfg.MaxTopic))
		return
	}
	if len(c.subs) >= c.lp.srv.cfg.MaxSubscriptions {
		refuse(wire.CodeLimit, fmt.Sprintf("this connection already has %d subscriptions (max-subscriptions)", len(c.subs)))
		return
	}
	if m.Match == wire.MatchRegex && len(m.Topic) > c.lp.srv.cfg.MaxPattern {
		refuse(wire.CodeBadPattern, fmt.Sprintf("regular expression of %d bytes (at most %d: max-pattern)", len(m.Topic), c.lp.srv.cfg.MaxPattern))
		return
	}
	perm, denied := c.subscribePerm(m.Match, m.Topic)
	if denied != "" {
		refuse(wire.CodeNotPermitted, denied)
		return
	}
	mt, err := newMatcher(m.Match, m.Topic)
	if err != nil {
		refuse(wire.CodeBadPattern, err.Error())
		return
	}
	j := c.lp.srv.j
	var from uint64
	var resume *resumeFilter
	var position []wire.PositionEntry
	switch m.Start {
	case wire.StartNow:
		from, position = c.lp.srv.nowPosition()
	case wire.StartEpoch:
		from = j.FirstSeq()
		position = []wire.PositionEntry{}
	case wire.StartResume:
		resume = newResumeFilter(&m)
		from = c.lp.srv.resumeStart(resume)
	case wire.StartTime:
		// The first record at or after the time in journal order (see
		// journal.FindTime and docs/wire.md 10.3).
		seq, err := j.FindTime(m.Time())
		if err != nil {
			refuse(wire.CodeBadBookmark, fmt.Sprintf("start at time %d: %v", m.Time(), err))
			return
		}
		from = max(seq, j.FirstSeq())
		position = c.lp.srv.positionAt(from)
	case wire.StartBookmark:
		b := m.Bookmark(0)
		if b.Seq < j.FirstSeq() {
			from = j.FirstSeq() // older than the journal holds: start at its beginning
			break
		}
		seq, err := j.Find(b)
		if err != nil {
			refuse(wire.CodeBadBookmark, fmt.Sprintf("bookmark %s: %v", b, err))
			return
		}
		from = seq + 1
	}
	if m.Start == wire.StartBookmark {
		position = c.lp.srv.positionAt(from)
	}
	cur, err := j.NewCursor(from)
	if err != nil {
		refuse(wire.CodeBadBookmark, fmt.Sprintf("cannot start at %d: %v", from, err))
		return
	}
	c.subs = append(c.subs, &subscription{id: m.SubID, m: mt, cur: cur, resume: resume, perm: perm})
	if len(c.subs) == 1 {
		c.lp.subbed = append(c.lp.subbed, c)
		c.lp.interested.Store(true)
	}
	c.lp.nsubs.Add(1)
	c.client.subs.Add(1)
	refuse(0, "") // the Subscribed ack goes before any delivery
	if position != nil {
		c.wbuf = wire.AppendPosition(c.wbuf, m.SubID, position)
	}
	c.pump()
}

func (c *conn) onUnsubscribe(body []byte) {
	id, err := wire.DecodeUnsubscribe(body)
	if err != nil {
		c.fail(wire.CodeMalformed, err.Error())
		return
	}
	for i, sub := range c.subs {
		if sub.id == id {
			sub.cur.Close()
			c.subs = append(c.subs[:i], c.subs[i+1:]...)
			c.lp.nsubs.Add(-1)
			c.client.subs.Add(-1)
			if len(c.subs) == 0 {
				c.setSlow(false)
				c.lp.subbed = removeFrom(c.lp.subbed, c)
			}
			c.wbuf = wire.AppendAck(c.wbuf, wire.AckKindUnsubscribed, 0, uint64(id), "")
			c.lp.markDirty(c)
			return
		}
	}
	c.wbuf = wire.AppendAck(c.wbuf, wire.AckKindUnsubscribed, wire.CodeUnknownSub, uint64(id), fmt.Sprintf("no active subscription %d", id))
	c.lp.markDirty(c)
}

// pump moves durable records from each subscription's cursor into the
// output buffer until the buffer reaches the high water mark, every cursor
// is caught up, or the scan budget is spent.
func (c *conn) pump() {
	if c.closed || c.closeAfterSend {
		return
	}
	highWater := c.lp.srv.cfg.WriteHighWater
	zcMin := c.zeroCopyMin()
	wrote := false
	var delivered uint64
	for _, sub := range c.subs {
		for scanned := 0; c.buffered() < highWater; scanned++ {
			if scanned == maxScanPerPump {
				c.lp.busy = true
				break
			}
			v, ok := sub.cur.Next()
			if !ok {
				break
			}
			if sub.m.match(v.Topic()) && (sub.resume == nil || sub.resume.wants(v)) && (sub.perm == nil || sub.perm.allowed(v.Topic())) {
				rec := v.Bytes()
				if zcMin > 0 && len(rec) >= zcMin {
					c.addZeroCopy(sub.id, rec, sub.cur)
				} else {
					c.wbuf = wire.AppendDeliver(c.wbuf, sub.id, rec)
				}
				wrote = true
				delivered++
			}
		}
	}
	if delivered > 0 {
		c.lp.delivered.Add(delivered)
	}
	c.setSlow(len(c.subs) > 0 && c.buffered() >= highWater)
	if wrote {
		if p := int64(c.pending()); p > c.lp.maxPending.Load() {
			c.lp.maxPending.Store(p)
		}
		c.lp.markDirty(c)
	}
}

// flush writes pending output without blocking.
func (c *conn) flush() {
	if c.lp.ur != nil {
		c.lp.ur.flush(c)
		return
	}
	for c.woff < len(c.wbuf) {
		n, err := unix.Write(c.fd, c.wbuf[c.woff:])
		if n > 0 {
			c.woff += n
			c.lastSend = c.lp.now
			continue
		}
		if err == unix.EAGAIN {
			c.watchWrite(true)
			return
		}
		if err == unix.EINTR {
			continue
		}
		c.close()
		return
	}
	c.wbuf, c.woff = c.wbuf[:0], 0
	c.watchWrite(false)
	if c.closeAfterSend { // fail-stop drain: the Error frame is written
		c.finishAfterSend()
		return
	}
	if c.readPaused && !c.lp.srv.stopping.Load() && !c.storageHeld {
		c.pauseReading(false)
	}
}

func (c *conn) onWritable() {
	c.flush()
	if !c.closed && c.pending() == 0 && len(c.subs) > 0 {
		c.pump()
		c.lp.markDirty(c)
	}
}

func (c *conn) events() uint32 {
	ev := uint32(unix.EPOLLRDHUP)
	if !c.readPaused {
		ev |= poll.Readable
	}
	if c.watchingWrite {
		ev |= poll.Writable
	}
	return ev
}

func (c *conn) watchWrite(on bool) {
	if c.lp.ur != nil {
		return // io_uring: a Send completes when written; nothing to watch
	}
	if c.watchingWrite != on && !c.closed {
		c.watchingWrite = on
		c.lp.poller.Mod(c.fd, c.events())
	}
}

func (c *conn) pauseReading(on bool) {
	if c.readPaused == on || c.closed || !on && (c.sec.authPending || c.sec.stalled) {
		return
	}
	c.readPaused = on
	if c.lp.ur != nil {
		if !on {
			c.lp.ur.armRecv(c)
		}
		return
	}
	c.lp.poller.Mod(c.fd, c.events())
}

// checkTimers enforces the logon deadline and heartbeats. (A failed
// journal is the fail-stop sequence's business, failstop.go.)
func (c *conn) checkTimers(now int64) {
	s := c.lp.srv
	if c.closeAfterSend {
		return // its Error frame is queued or sent: nothing may follow
	}
	switch {
	case c.client == nil && now-c.created > int64(s.cfg.LogonTimeout):
		c.fail(wire.CodeNotLoggedOn, fmt.Sprintf("no logon within %v", s.cfg.LogonTimeout))
	case c.hb > 0 && now-c.lastRecv > 2*c.hb && !c.storageHeld: // held: not read
		c.fail(wire.CodeHeartbeat, fmt.Sprintf("silent for more than two heartbeat intervals (%v)", time.Duration(2*c.hb)))
	case c.hb > 0 && now-c.lastSend >= c.hb && c.pending() == 0:
		c.wbuf = wire.AppendHeartbeat(c.wbuf)
		c.lp.markDirty(c)
	}
}

// fail sends an Error frame (best effort, after pending output) and closes.
func (c *conn) fail(code wire.Code, text string) {
	if c.closed || c.closeAfterSend {
		return
	}
	if code != codeShutdown {
		if ok, n := c.lp.srv.sec.logClose.allow(); ok { // rate-limited: a flood must not flood the log
			c.lp.srv.log.Info("closing connection", "remote", c.remote, "client", c.name(), "code", code.String(), "reason", text, "suppressed", n)
		}
	}
	c.endBatch()
	c.wbuf = wire.AppendError(c.wbuf, code, text)
	if c.lp.ur != nil {
		// The Error frame goes out through the ring; close when it has.
		c.closeAfterSend = true
		c.readPaused = true
		c.flush()
		if !c.sendInFlight {
			c.close()
		}
		return
	}
	c.flush()
	c.close()
}

func (c *conn) name() string {
	if c.client == nil {
		return ""
	}
	return c.client.name
}

func (c *conn) close() {
	if c.closed {
		return
	}
	c.endBatch()
	c.closed = true
	if c.lp.ur != nil {
		c.lp.ur.release(c) // cancels what is in flight; closes the fd after
	} else {
		c.lp.poller.Del(c.fd)
		unix.Close(c.fd)
	}
	for _, sub := range c.subs {
		sub.cur.Close()
		c.lp.nsubs.Add(-1)
	}
	c.subs = nil
	c.setSlow(false)
	if c.client != nil {
		c.lp.srv.logoff(c.client)
	}
	c.uncountUser()
	c.lp.removeConn(c)
}

// setSlow counts the connection as a slow consumer (tandem_slow_consumers)
// while its deliveries wait for its output to drain below WriteHighWater.
// pump re-evaluates it each time it runs (after every drain).
func (c *conn) setSlow(on bool) {
	if c.slow == on {
		return
	}
	c.slow = on
	if on {
		c.lp.nslow.Add(1)
	} else {
		c.lp.nslow.Add(-1)
	}
}

// ackQueue is a FIFO of acks waiting for the journal to sync.
type ackQueue struct {
	q    []pendingAck
	head int
}

type pendingAck struct {
	local uint64 // journal seq that must be synced first
	seq   uint64 // publisher sequence, flush token
	kind  wire.AckKind
	code  wire.Code // non-zero: a refusal of publish seq, with text
	text  string
	at    int64 // loop time when queued (0: not timed): the publishes were appended
}

func (q *ackQueue) len() int { return len(q.q) - q.head }

func (q *ackQueue) front() pendingAck { return q.q[q.head] }

func (q *ackQueue) push(a pendingAck) {
	if q.head > 0 && q.head == len(q.q) {
		q.q, q.head = q.q[:0], 0
	}
	q.q = append(q.q, a)
}

func (q *ackQueue) pop() pendingAck {
	a := q.q[q.head]
	q.head++
	if q.head == len(q.q) {
		q.q, q.head = q.q[:0], 0
	}
	return a
}
