package replicate

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/uring"
)

// Link I/O through io_uring (Config.IO = IORing).
//
// The handshake runs on the net.Conn; then the link takes a duplicate of
// the socket's fd and closes the net.Conn (which takes the socket out of
// Go's netpoller, whose edge-triggered wake-ups would otherwise follow every
// packet; the net.Conn stays referenced for its addresses, and is never
// read or written again) and moves every byte through two rings:
//
//   - the reader goroutine owns a ring of its own and does one recv at a
//     time into the frameReader's buffer (ringReader);
//   - the writers (the sender's batches, acks, heartbeats), serialized by
//     link.wmu as on the net.Conn, share a second ring owned under that
//     lock (ringWriter).
//
// A batch is not copied: its iovecs are the frame header (24 bytes in the
// outBatch) and runs of stored records straight from the journal mapping
// (records adjacent in memory are merged into one iovec), and the batch
// holds one journal.Hold per segment it touches. It goes out with
// IORING_OP_SENDMSG_ZC when it is at least ZeroCopyMin bytes and the kernel
// has it, else with a copying IORING_OP_SENDMSG (the kernel copies, we do
// not). A copying send is done with its buffers at its result CQE; a
// zero-copy one only at its notification CQE, so the outBatch (header,
// iovecs, holds) waits in ringWriter.awaiting until every notification of
// its sends arrived, and only then are the holds released and the outBatch
// reused. A link never releases a hold the kernel may still read through:
// at teardown it waits for the outstanding notifications, aborting the
// connection (SO_LINGER 0, which drops the unsent queue and so releases
// the pages) if they do not come while the peer drains it, and as a last
// resort leaks the holds rather than drop them.
//
// Deadlines: a wait for a request's CQE is bounded by the deadline the
// net.Conn had (SubmitAndWaitTimeout); when it passes, or the link closes,
// the request is cancelled and its CQE still awaited (its buffer is the
// kernel's until then). link.close shuts the socket down (shutdown(2)
// completes every recv and send on it) and wakes both rings; the fd itself
// is closed only once neither ring can submit on it any more (ringIO.finish,
// at the end of the reader goroutine), so its number cannot be reused under
// a request.

const (
	udRecv   uint64 = 1
	udCancel uint64 = 2
	udFirst  uint64 = 16 // writer requests: udFirst, udFirst+1, ...

	// maxBatchIovecs bounds a batch's iovecs (UIO_MAXIOV is 1024): a
	// batch of scattered records (a topic filter) ends there.
	maxBatchIovecs = 1024
	// cancelGrace: after cancelling a request, how long to wait for its CQE
	// before shutting the socket down to force it.
	cancelGrace = time.Second
	// drainGrace: at teardown, how long the peer has to drain what is
	// queued (and the kernel to deliver its notifications) before the
	// connection is aborted to release the pages.
	drainGrace = 250 * time.Millisecond
	// abortGrace: how long to wait for notifications after the abort;
	// beyond it the holds are leaked, never released early.
	abortGrace = 5 * time.Second
	// zcCopiedLimit: after this many notifications saying the kernel copied
	// the data anyway (loopback, a device without scatter-gather), a link
	// stops using zero copy: it pinned pages and took a second completion
	// for nothing.
	zcCopiedLimit = 16
)

// ioStats counts what the ring links did (all links of a Replicator).
type ioStats struct {
	zcSends    atomic.Int64 // batches sent with SENDMSG_ZC
	copySends  atomic.Int64 // batches sent with a copying SENDMSG
	zcCopied   atomic.Int64 // notifications reporting the kernel copied anyway
	zcOff      atomic.Int64 // links that turned zero copy off (copied anyway, or refused)
	holds      atomic.Int64 // journal holds kept for batches not released yet
	multiSeg   atomic.Int64 // batches that held more than one segment
	leaked     atomic.Int64 // batches whose notifications never came (holds leaked)
	ringLinks  atomic.Int64 // links that went to io_uring
	fellBack   atomic.Int64 // links that asked for io_uring and fell back to net
	iovecsSent atomic.Int64 // record iovecs of all batches (merged runs)
	recsSent   atomic.Int64 // records of all batches
}

// leakedBatches keeps the batches whose zero-copy notifications never came
// (see ringWriter.drain): their holds stay, so the mappings stay.
var leakedBatches struct {
	sync.Mutex
	b []*outBatch
}

// outBatch is one Batch frame gathered from the journal mapping.
type outBatch struct {
	hdr      [batchHeaderSize]byte
	iovs     []unix.Iovec // [0] is hdr; then runs of records in the mapping
	holds    []journal.Hold
	recBytes int
	recs     int
	msg      unix.Msghdr
	notifs   int  // zero-copy notifications still due
	sending  bool // in ringWriter.sendBatch
}

func (b *outBatch) frameLen() int { return batchHeaderSize + b.recBytes }

// full reports whether another run may not fit the iovec array.
func (b *outBatch) full() bool { return len(b.iovs) >= maxBatchIovecs }

// add appends a record the cursor just returned (its View's bytes),
// taking a hold on its segment unless the batch holds it already, and
// merging it into the previous run when it follows it in memory.
func (b *outBatch) add(cur *journal.Cursor, rec []byte, st *ioStats) {
	if n := len(b.holds); n == 0 || !b.holds[n-1].Same(cur) {
		b.holds = append(b.holds, cur.Hold())
		st.holds.Add(1)
	}
	b.recBytes += len(rec)
	b.recs++
	if len(rec) == 0 {
		return
	}
	last := &b.iovs[len(b.iovs)-1]
	start := uintptr(unsafe.Pointer(unsafe.SliceData(rec)))
	if len(b.iovs) > 1 && uintptr(unsafe.Pointer(last.Base))+uintptr(last.Len) == start {
		last.SetLen(int(last.Len) + len(rec))
		return
	}
	var iov unix.Iovec
	iov.Base = unsafe.SliceData(rec)
	iov.SetLen(len(rec))
	b.iovs = append(b.iovs, iov)
}

// ringIO is a link's io_uring state.
type ringIO struct {
	r        *Replicator
	conn     net.Conn // closed by start; kept for its addresses
	fd       int      // a duplicate of conn's, ours from start on; closed by finish
	fdClosed bool
	rd       *ringReader
	wr       *ringWriter

	mu       sync.Mutex // rings' Wake against their Close
	rdClosed bool
	wrClosed bool
	shutOnce sync.Once

	freeMu sync.Mutex
	free   []*outBatch
}

// dupConnFd returns a duplicate (close-on-exec) of the socket fd under c.
func dupConnFd(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%T has no file descriptor", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := raw.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, derr
}

// start hands the socket over to the rings as the link starts: the
// net.Conn is closed (Go's netpoller lets go of the socket; our duplicate
// keeps it open) and the socket switched to blocking mode (the rings poll
// it themselves; some kernels fail a recv on an O_NONBLOCK socket with
// -EAGAIN instead of waiting).
func (rio *ringIO) start() {
	rio.conn.Close()
	if err := unix.SetNonblock(rio.fd, false); err != nil {
		rio.r.log.Warn("replication link: cannot clear O_NONBLOCK", "err", err)
	}
}

// closeFd closes the socket (our duplicate: the last reference once start
// closed the net.Conn).
func (rio *ringIO) closeFd() {
	if !rio.fdClosed {
		rio.fdClosed = true
		unix.Close(rio.fd)
	}
}

// newRingIO sets up the rings of a link on c (after its handshake).
func newRingIO(r *Replicator, c net.Conn, closed <-chan struct{}) (*ringIO, error) {
	fd, err := dupConnFd(c)
	if err != nil {
		return nil, err
	}
	rr, err := uring.New(uring.Options{Entries: 8, Wake: true, FlushWhenFull: true})
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	wr, err := uring.New(uring.Options{Entries: 32, CQEntries: 512, Wake: true, FlushWhenFull: true})
	if err != nil {
		rr.Close()
		unix.Close(fd)
		return nil, err
	}
	rio := &ringIO{r: r, conn: c, fd: fd}
	rio.rd = &ringReader{rio: rio, ring: rr, closed: closed}
	rio.wr = &ringWriter{rio: rio, ring: wr, nextUD: udFirst, awaiting: map[uint64]*outBatch{},
		zc: r.zcOK, zcMin: r.cfg.ZeroCopyMin, keepZC: r.keepZC}
	return rio, nil
}

// abandon closes the rings and our fd of a link that never started
// (nothing was submitted on them); the caller closes the net.Conn.
func (rio *ringIO) abandon() {
	rio.mu.Lock()
	defer rio.mu.Unlock()
	rio.closeFd()
	if !rio.rdClosed {
		rio.rd.ring.Close()
		rio.rdClosed = true
	}
	if !rio.wrClosed {
		rio.wr.ring.Close()
		rio.wrClosed = true
	}
}

// shutdown completes every request on the socket (recv returns 0, send an
// error or a short count) and wakes both rings' waiters. From link.close,
// any goroutine.
func (rio *ringIO) shutdown() {
	rio.shutOnce.Do(func() { unix.Shutdown(rio.fd, unix.SHUT_RDWR) })
	rio.mu.Lock()
	if !rio.rdClosed {
		rio.rd.ring.Wake()
	}
	if !rio.wrClosed {
		rio.wr.ring.Wake()
	}
	rio.mu.Unlock()
}

// finish tears the link's I/O down, on the reader goroutine once it has
// stopped reading (the link is closed): the reader's ring, then, under
// wmu (no writer can be in the ring), the writer's notifications, the
// connection and the writer's ring.
func (rio *ringIO) finish(l *link) {
	rio.mu.Lock()
	rio.rd.ring.Close()
	rio.rdClosed = true
	rio.mu.Unlock()
	l.wmu.Lock()
	defer l.wmu.Unlock()
	rio.wr.drain()
	rio.mu.Lock()
	rio.wr.ring.Close()
	rio.wrClosed = true
	rio.mu.Unlock()
}

func (rio *ringIO) getBatch() *outBatch {
	rio.freeMu.Lock()
	var b *outBatch
	if n := len(rio.free); n > 0 {
		b = rio.free[n-1]
		rio.free = rio.free[:n-1]
	}
	rio.freeMu.Unlock()
	if b == nil {
		b = &outBatch{iovs: make([]unix.Iovec, 0, 64)}
	}
	b.iovs = append(b.iovs[:0], unix.Iovec{Base: &b.hdr[0]})
	b.iovs[0].SetLen(batchHeaderSize)
	return b
}

// release drops b's holds and makes it reusable. Only once the kernel is
// done with it: never submitted, or after its last result and
// notification.
func (rio *ringIO) release(b *outBatch) {
	for i := range b.holds {
		b.holds[i].Release()
		b.holds[i] = journal.Hold{}
	}
	rio.r.io.holds.Add(-int64(len(b.holds)))
	b.holds = b.holds[:0]
	clear(b.iovs) // no pointers into mappings kept alive by the free list
	b.iovs = b.iovs[:0]
	b.recBytes, b.recs, b.notifs, b.sending = 0, 0, 0, false
	b.msg = unix.Msghdr{}
	rio.freeMu.Lock()
	if len(rio.free) < 64 {
		rio.free = append(rio.free, b)
	}
	rio.freeMu.Unlock()
}

// await waits for the CQE of request ud on ring, passing every other CQE to
// other. When the deadline passes or closed is closed, it cancels the
// request and goes on waiting for its CQE (the request's buffers are the
// kernel's until then), shutting the socket down if even the cancel does
// not end it within cancelGrace; it then returns the CQE and the reason.
func (rio *ringIO) await(ring *uring.Ring, ud uint64, deadline time.Time, closed <-chan struct{},
	cqes []uring.CQE, other func(uring.CQE)) (uring.CQE, error) {
	var why error
	var cancelledAt time.Time
	for {
		if why == nil {
			select {
			case <-closed:
				why = errLinkClosed
			default:
				if !deadline.IsZero() && !time.Now().Before(deadline) {
					why = os.ErrDeadlineExceeded
				}
			}
			if why != nil {
				ring.Cancel(ud, udCancel)
				cancelledAt = time.Now()
			}
		} else if time.Since(cancelledAt) > cancelGrace {
			rio.shutOnce.Do(func() { unix.Shutdown(rio.fd, unix.SHUT_RDWR) })
		}
		wait := time.Duration(-1)
		switch {
		case why != nil:
			wait = cancelGrace
		case !deadline.IsZero():
			wait = max(time.Until(deadline), 0)
		}
		// One io_uring_enter submits and waits (at most wait); should it
		// return early, the loop waits for what is left.
		if _, err := ring.SubmitAndWaitTimeout(1, wait); err != nil && !errors.Is(err, uring.ErrBusy) {
			// The ring itself failed: the request may still be in flight,
			// so it cannot be abandoned. Force it to an end and keep
			// reaping, without spinning.
			if why == nil {
				why = err
				cancelledAt = time.Now().Add(-cancelGrace)
			}
			time.Sleep(time.Millisecond)
		}
		n := ring.Reap(cqes)
		var res uring.CQE
		got := false
		for _, c := range cqes[:n] {
			if c.UserData == ud && !c.Notif() {
				res, got = c, true
				continue
			}
			if other != nil {
				other(c)
			}
		}
		if got {
			return res, why
		}
	}
}

// ringReader is the link's reader side: Read is one recv through the
// reader's ring. Only the reader goroutine uses it.
type ringReader struct {
	rio      *ringIO
	ring     *uring.Ring
	closed   <-chan struct{}
	deadline time.Time
	cqes     [8]uring.CQE
}

func (rr *ringReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if err := rr.ring.Recv(rr.rio.fd, p, 0, udRecv); err != nil {
			return 0, err
		}
		c, err := rr.rio.await(rr.ring, udRecv, rr.deadline, rr.closed, rr.cqes[:], nil)
		if err != nil {
			return 0, err
		}
		switch {
		case c.Res > 0:
			return int(c.Res), nil
		case c.Res == 0:
			return 0, io.EOF
		case c.Err() == unix.EAGAIN || c.Err() == unix.EINTR:
			continue
		}
		return 0, os.NewSyscallError("recv", c.Err())
	}
}

// ringWriter is the link's writer side, used under link.wmu.
type ringWriter struct {
	rio    *ringIO
	ring   *uring.Ring
	cqes   [32]uring.CQE
	nextUD uint64
	// awaiting: zero-copy sends whose notification is due, by user data.
	awaiting map[uint64]*outBatch
	zc       bool // zero copy in use on this link
	zcMin    int
	keepZC   bool // tests and benchmarks: never turn zero copy off
	copied   int  // notifications saying the kernel copied anyway

	plain    [1]unix.Iovec
	plainMsg unix.Msghdr
}

const sendFlags = unix.MSG_WAITALL | unix.MSG_NOSIGNAL

// write sends p (whole frames) with a copying send.
func (w *ringWriter) write(p []byte, deadline time.Time, closed <-chan struct{}) error {
	if len(p) == 0 {
		return nil
	}
	w.reap()
	w.plain[0].Base = unsafe.SliceData(p)
	w.plain[0].SetLen(len(p))
	err := w.sendv(w.plain[:], len(p), &w.plainMsg, nil, false, deadline, closed)
	w.plain[0] = unix.Iovec{}
	return err
}

// sendBatch sends b; on return b belongs to the writer, which releases it
// once the kernel is done with it.
func (w *ringWriter) sendBatch(b *outBatch, deadline time.Time, closed <-chan struct{}) error {
	w.reap()
	st := &w.rio.r.io
	zc := w.zc && b.frameLen() >= w.zcMin
	if zc {
		st.zcSends.Add(1)
	} else {
		st.copySends.Add(1)
	}
	st.iovecsSent.Add(int64(len(b.iovs) - 1))
	st.recsSent.Add(int64(b.recs))
	if len(b.holds) > 1 {
		st.multiSeg.Add(1)
	}
	b.sending = true
	err := w.sendv(b.iovs, b.frameLen(), &b.msg, b, zc, deadline, closed)
	b.sending = false
	if b.notifs == 0 {
		w.rio.release(b)
	}
	return err
}

// sendv sends the total bytes iovs describe with msg, resubmitting the
// rest after a short send. With zc each submission is a SENDMSG_ZC whose
// notification owner (the batch the buffers belong to) waits for.
func (w *ringWriter) sendv(iovs []unix.Iovec, total int, msg *unix.Msghdr, owner *outBatch, zc bool,
	deadline time.Time, closed <-chan struct{}) error {
	i := 0
	for sent := 0; sent < total; {
		select {
		case <-closed:
			return errLinkClosed
		default:
		}
		msg.Iov = &iovs[i]
		msg.SetIovlen(len(iovs) - i)
		ud := w.nextUD
		w.nextUD++
		var err error
		switch {
		case zc:
			err = w.ring.SendmsgZC(w.rio.fd, msg, sendFlags, ud)
		case len(iovs)-i == 1: // an ack, a heartbeat, the rest of a batch
			err = w.ring.Send(w.rio.fd, unsafe.Slice(iovs[i].Base, iovs[i].Len), sendFlags, ud)
		default:
			err = w.ring.Sendmsg(w.rio.fd, msg, sendFlags, ud)
		}
		if err != nil {
			return err
		}
		if zc {
			// Until its result says otherwise, a notification is due.
			owner.notifs++
			w.awaiting[ud] = owner
		}
		c, err := w.rio.await(w.ring, ud, deadline, closed, w.cqes[:], w.onCQE)
		if zc && !c.More() {
			w.notified(ud) // no notification follows this result
		}
		if err != nil {
			return err
		}
		if c.Res < 0 {
			switch e := c.Err(); {
			case e == unix.EAGAIN || e == unix.EINTR:
				continue
			case zc && e == unix.EOPNOTSUPP:
				// The socket does not take zero-copy sends (an MPTCP socket,
				// even fallen back to TCP): copy from now on.
				zc = false
				w.noZC("the socket refuses zero-copy sends")
				continue
			}
			return os.NewSyscallError("sendmsg", c.Err())
		}
		if c.Res == 0 {
			return io.ErrShortWrite
		}
		sent += int(c.Res)
		for n := int(c.Res); n > 0 && i < len(iovs); {
			if l := int(iovs[i].Len); n >= l {
				n -= l
				i++
			} else {
				iovs[i].Base = (*byte)(unsafe.Add(unsafe.Pointer(iovs[i].Base), n))
				iovs[i].SetLen(l - n)
				n = 0
			}
		}
	}
	return nil
}

// onCQE handles a CQE that is not the result being waited for: a
// zero-copy notification (or the ring's cancel results, ignored).
func (w *ringWriter) onCQE(c uring.CQE) {
	if !c.Notif() {
		return
	}
	if c.ZCCopied() {
		w.rio.r.io.zcCopied.Add(1)
		w.copied++
		if !w.keepZC && w.copied >= zcCopiedLimit {
			w.noZC("the kernel copies the data anyway (loopback, or a device without scatter-gather)")
		}
	}
	w.notified(c.UserData)
}

// noZC turns zero copy off for the link.
func (w *ringWriter) noZC(why string) {
	if !w.zc {
		return
	}
	w.zc = false
	w.rio.r.io.zcOff.Add(1)
	w.rio.r.log.Debug("replication link stops using zero-copy sends", "reason", why)
}

// notified records that the kernel is done with the buffers of send ud.
func (w *ringWriter) notified(ud uint64) {
	b := w.awaiting[ud]
	if b == nil {
		return
	}
	delete(w.awaiting, ud)
	b.notifs--
	if b.notifs == 0 && !b.sending {
		w.rio.release(b)
	}
}

// reap handles the completions already posted (notifications of earlier
// zero-copy sends), without waiting.
func (w *ringWriter) reap() {
	for {
		n := w.ring.Reap(w.cqes[:])
		for _, c := range w.cqes[:n] {
			w.onCQE(c)
		}
		if n < len(w.cqes) {
			return
		}
	}
}

// waitNotifs waits up to d for the outstanding notifications.
func (w *ringWriter) waitNotifs(d time.Duration) {
	deadline := time.Now().Add(d)
	for len(w.awaiting) > 0 {
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		if _, err := w.ring.Submit(); err != nil && !errors.Is(err, uring.ErrBusy) {
			return
		}
		if _, err := w.ring.SubmitAndWaitTimeout(1, left); err != nil && !errors.Is(err, uring.ErrBusy) {
			return
		}
		w.reap()
	}
}

// drain ends the writer: every send has its result (sendv returns only
// then), so only notifications can be outstanding. The peer gets
// drainGrace to take what is queued; then the connection is aborted, which
// drops the unsent data and with it the kernel's references to the pages.
// A batch whose notification still does not come is leaked with its holds.
func (w *ringWriter) drain() {
	w.reap()
	if len(w.awaiting) > 0 {
		w.waitNotifs(drainGrace)
	}
	if len(w.awaiting) > 0 {
		unix.SetsockoptLinger(w.rio.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	}
	w.rio.closeFd()
	if len(w.awaiting) > 0 {
		w.waitNotifs(abortGrace)
	}
	if len(w.awaiting) > 0 {
		seen := map[*outBatch]bool{}
		leakedBatches.Lock()
		for _, b := range w.awaiting {
			if !seen[b] {
				seen[b] = true
				leakedBatches.b = append(leakedBatches.b, b)
				w.rio.r.io.leaked.Add(1)
			}
		}
		leakedBatches.Unlock()
		w.rio.r.log.Error("replication link: zero-copy sends not released by the kernel; keeping their journal segments mapped",
			"batches", len(seen))
		clear(w.awaiting)
	}
}
