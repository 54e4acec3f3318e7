package engine

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/uring"
	"github.com/tandemhq/tandem/wire"
)

// The io_uring backend. Where epoll reports readiness and the loop then
// calls read(2) and write(2), here the loop keeps operations in flight on
// its ring: a multishot accept on its listening socket, one receive per
// connection into the connection's read buffer, and at most one send per
// connection from a buffer that nothing appends to while the kernel reads
// it. Everything prepared in an iteration goes to the kernel with one
// io_uring_enter, which also waits for completions: no syscall per message,
// and no syscall per connection either.
//
// Memory safety: the kernel holds raw pointers into rbuf and sbuf while an
// operation is in flight. A connection stays reachable (in uringIO.byID)
// until every operation on it has completed, so the buffers cannot be
// collected, and rbuf is replaced (process growing it) only when no receive
// is in flight.

// A completion's user data: the operation kind in the low opBits bits, the
// zero-copy slot (opSendZC) in the next slotBits, the connection id (0 for
// the listener) above.
const (
	opAccept uint64 = 1
	opRecv   uint64 = 2
	opSend   uint64 = 3
	opCancel uint64 = 4
	opSendZC uint64 = 5
	opBits          = 3
	slotBits        = 5
	idShift         = opBits + slotBits
)

func userData(id uint64, slot int, op uint64) uint64 {
	return id<<idShift | uint64(slot)<<opBits | op
}

type uringIO struct {
	ring    *uring.Ring // nil until the loop's thread created it (open)
	entries int
	cqes    []uring.CQE
	byID    map[uint64]*conn
	nextID  uint64
	zcMin   int // records of at least this size are delivered zero-copy; 0: never
}

// defaultRingEntries is the submission queue size per loop.
const defaultRingEntries = 1024

func newUringIO(entries int) *uringIO {
	if entries <= 0 {
		entries = defaultRingEntries
	}
	return &uringIO{entries: entries, byID: map[uint64]*conn{}}
}

// open creates the ring. The loop calls it on its own thread once pinned,
// so the kernel allocates the rings on the loop's NUMA node (first touch).
// zcMin is Config.ZeroCopyMin; zero-copy needs IORING_OP_SENDMSG_ZC.
func (u *uringIO) open(zcMin int) error {
	r, err := uring.New(uring.Options{Entries: uint32(u.entries), FlushWhenFull: true, Wake: true, SingleIssuer: true})
	if err != nil {
		return err
	}
	u.cqes = make([]uring.CQE, 2*u.entries)
	if p, err := r.Probe(); err == nil && p.Supports(uring.OpSendmsgZC) && zcMin >= 0 {
		if zcMin == 0 {
			zcMin = DefaultZeroCopyMin
		}
		u.zcMin = zcMin
	}
	u.ring = r
	return nil
}

func (u *uringIO) armAccept(lfd int) error {
	return u.ring.AcceptMultishot(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, opAccept)
}

func (u *uringIO) closeListener(lfd int) {
	u.ring.CancelFd(lfd, opCancel)
	u.ring.Submit()
	unix.Close(lfd)
}

func (u *uringIO) armRecv(c *conn) {
	if c.recvInFlight || c.closed || c.readPaused {
		return
	}
	if c.rn == len(c.rbuf) {
		c.fail(wire.CodeMalformed, "read buffer full")
		return
	}
	if err := u.ring.Recv(c.fd, c.rbuf[c.rn:], 0, userData(c.id, 0, opRecv)); err != nil {
		c.close()
		return
	}
	c.recvInFlight = true
}

// flush starts sending what the connection has buffered, unless a send is
// already in flight (its completion continues the work).
func (u *uringIO) flush(c *conn) {
	if c.sendInFlight || c.closed {
		return
	}
	if c.soff == c.stotal() {
		if len(c.wbuf) == 0 {
			return
		}
		slot := -1
		if len(c.wz.parts) > 0 {
			if slot = c.freeSlot(); slot < 0 {
				return // every slot waits for a notification, which flushes again
			}
			c.zslots[slot].inUse = true
		}
		c.sbuf, c.wbuf = c.wbuf, c.sbuf[:0]
		c.sz, c.wz = c.wz, c.sz
		c.sslot, c.soff = slot, 0
	}
	var err error
	if c.sslot < 0 {
		err = u.ring.Send(c.fd, c.sbuf[c.soff:], unix.MSG_NOSIGNAL, userData(c.id, 0, opSend))
	} else {
		iovs := c.iovecs(c.soff)
		c.msg.Iov = &iovs[0]
		c.msg.SetIovlen(len(iovs))
		err = u.ring.SendmsgZC(c.fd, &c.msg, unix.MSG_NOSIGNAL, userData(c.id, c.sslot, opSendZC))
		c.lp.zcSends.Add(1)
	}
	if err != nil {
		c.close()
		return
	}
	c.sendInFlight = true
}

// release is close's io_uring half: cancel what is in flight, close the
// socket once nothing refers to its buffers any more.
func (u *uringIO) release(c *conn) {
	if c.zcOutstanding() && !c.recvInFlight && !c.sendInFlight {
		return // the last notification forgets it
	}
	if c.recvInFlight || c.sendInFlight {
		if !c.cancelInFlight {
			c.cancelInFlight = true
			u.ring.CancelFd(c.fd, userData(c.id, 0, opCancel))
		}
		return
	}
	if c.cancelInFlight {
		return // forgotten when the cancel completes
	}
	u.forget(c)
}

func (u *uringIO) forget(c *conn) {
	delete(u.byID, c.id)
	unix.Close(c.fd)
	c.zcReleaseAll()
}

// runUring is the loop driven by io_uring.
func (lp *loop) runUring() {
	s, u := lp.srv, lp.ur
	for {
		timeout := time.Duration(lp.timeout()) * time.Millisecond
		if lp.busy {
			timeout, lp.busy = 0, false
		}
		lp.sleeping.Store(true)
		if lp.interested.Load() && s.ackPoint() > lp.synced || s.stopping.Load() {
			timeout = 0
		}
		var err error
		if timeout == 0 || u.ring.Ready() > 0 {
			_, err = u.ring.Submit()
		} else {
			_, err = u.ring.SubmitAndWaitTimeout(1, timeout)
		}
		lp.sleeping.Store(false)
		if err != nil && err != uring.ErrBusy {
			s.log.Error("event loop ring failed", "loop", lp.id, "err", err)
			lp.shutdown()
			lp.drainRing()
			return
		}
		lp.now = time.Now().UnixNano()
		for {
			n := u.ring.Reap(u.cqes)
			for i := 0; i < n; i++ {
				lp.complete(u.cqes[i])
			}
			if n < len(u.cqes) {
				break
			}
		}
		lp.afterSync()
		if lp.now-lp.lastTimers >= int64(timerPeriod) {
			lp.lastTimers = lp.now
			lp.timers()
		}
		lp.flushWrites()
		if s.failing.Load() {
			lp.failCheck()
		}
		if s.stopping.Load() && lp.stop() {
			lp.drainRing()
			return
		}
	}
}

// drainRing waits (boundedly) for the operations still in flight on closed
// connections, so no buffer is released while the kernel may use it.
func (lp *loop) drainRing() {
	u := lp.ur
	deadline := time.Now().Add(2 * time.Second)
	for len(u.byID) > 0 && time.Now().Before(deadline) {
		u.ring.SubmitAndWaitTimeout(1, 10*time.Millisecond)
		n := u.ring.Reap(u.cqes)
		for i := 0; i < n; i++ {
			lp.complete(u.cqes[i])
		}
	}
}

func (lp *loop) complete(cqe uring.CQE) {
	u := lp.ur
	op, id := cqe.UserData&(1<<opBits-1), cqe.UserData>>idShift
	slot := int(cqe.UserData>>opBits) & (1<<slotBits - 1)
	if op == opAccept {
		lp.accepted(cqe)
		return
	}
	c := u.byID[id]
	if c == nil {
		return
	}
	if op == opSendZC && cqe.Notif() {
		// The kernel is done with a zero-copy send's buffers.
		c.zcNotified(cqe.ZCCopied())
		s := &c.zslots[slot]
		if s.notifs--; s.notifs == 0 && s.sent {
			c.zcFree(slot)
			if !c.closed && c.pending() > 0 {
				u.flush(c) // it may have waited for a free slot
			}
		}
		lp.forgetIfDone(c)
		return
	}
	switch op {
	case opCancel:
		c.cancelInFlight = false
		lp.forgetIfDone(c)
		return
	case opRecv:
		c.recvInFlight = false
		switch {
		case c.closed:
		case c.lingering && cqe.Res > 0:
			u.armRecv(c) // discarded (rn stays 0) until the client closes
		case c.lingering && cqe.Res != -int32(unix.EAGAIN) && cqe.Res != -int32(unix.EINTR):
			c.close()
		case cqe.Res > 0 && !c.closeAfterSend:
			c.rn += int(cqe.Res)
			c.lastRecv = lp.now
			c.process()
			u.armRecv(c)
		case cqe.Res == -int32(unix.EAGAIN) || cqe.Res == -int32(unix.EINTR):
			u.armRecv(c)
		case c.closeAfterSend:
		default: // 0: the peer closed; <0: a socket error
			c.close()
		}
	case opSend, opSendZC:
		c.sendInFlight = false
		if op == opSendZC && cqe.More() {
			c.zslots[slot].notifs++ // a notification follows
		}
		if c.closed {
			break
		}
		if cqe.Res < 0 {
			c.close()
			break
		}
		c.soff += int(cqe.Res)
		c.lastSend = lp.now
		if c.soff == c.stotal() {
			if op == opSendZC {
				lp.zcBytes.Add(int64(c.sz.bytes))
				c.zcSent(slot)
			} else {
				c.sbuf, c.soff = c.sbuf[:0], 0
			}
		}
		if len(c.subs) > 0 && !c.closeAfterSend {
			c.pump() // refill while the kernel still has the socket busy
		}
		switch {
		case c.pending() > 0:
			u.flush(c) // the rest of a partial send, or what was buffered meanwhile
		case c.closeAfterSend:
			c.finishAfterSend()
		}
		if c.readPaused && !c.closed && !c.closeAfterSend && !c.storageHeld && !lp.srv.stopping.Load() &&
			c.pending() <= lp.srv.cfg.WriteHighWater {
			c.pauseReading(false) // output drained below the mark: read again
		}
	}
	lp.forgetIfDone(c)
}

// forgetIfDone forgets a closed connection once the kernel holds nothing
// of it: no operation in flight, no zero-copy notification due.
func (lp *loop) forgetIfDone(c *conn) {
	u := lp.ur
	if c.closed && !c.recvInFlight && !c.sendInFlight && !c.cancelInFlight && !c.zcOutstanding() {
		if _, ok := u.byID[c.id]; ok {
			u.forget(c)
		}
	}
}

func (lp *loop) accepted(cqe uring.CQE) {
	u := lp.ur
	if cqe.Res < 0 {
		if cqe.Res != -int32(unix.ECANCELED) && lp.lfd >= 0 {
			if lp.acceptFailed(unix.Errno(-cqe.Res)) {
				return // re-armed by retryAccept after the back-off
			}
		}
	} else {
		lp.sec.acceptBackoff = 0
		nfd := int(cqe.Res)
		remote := "?"
		if sa, err := unix.Getpeername(nfd); err == nil {
			remote = sockaddrString(sa)
		}
		if c := lp.admit(nfd, remote); c != nil {
			u.nextID++
			c.id = u.nextID
			u.byID[c.id] = c
			lp.addConn(c)
			u.armRecv(c)
		}
	}
	if !cqe.More() && lp.lfd >= 0 && !lp.srv.stopping.Load() && !lp.sec.acceptPaused {
		if err := u.armAccept(lp.lfd); err != nil {
			lp.srv.log.Error("re-arming accept failed", "loop", lp.id, "err", err)
		}
	}
}
