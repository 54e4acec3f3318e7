package uring

import (
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Buffer lifetime. A preparer stores the address of the caller's buffer in
// the SQE; the kernel reads or writes it until the request's final CQE (for
// SendZC: until its notification). The garbage collector does not see that
// address, so the caller must keep the buffer reachable (a field of the
// connection, the journal mapping) until then. Buffers passed here are
// forced onto the heap (see escape), so a stack move cannot pull one away.

// escapeSink and alwaysFalse make escape analysis believe every buffer
// handed to a preparer leaks, so the compiler never keeps one on a
// goroutine stack (which moves when it grows). It costs no allocation for
// buffers that are already on the heap. The same trick as reflect's escapes.
var (
	alwaysFalse bool
	escapeSink  unsafe.Pointer
)

func escape(p unsafe.Pointer) {
	if alwaysFalse {
		escapeSink = p
	}
}

func bufAddr(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	p := unsafe.Pointer(unsafe.SliceData(b))
	escape(p)
	return uint64(uintptr(p))
}

func (s *SQE) prep(op Op, fd int, addr uint64, length uint32, off uint64, ud uint64) {
	*s = SQE{Opcode: op, Fd: int32(fd), Addr: addr, Len: length, Off: off, UserData: ud}
}

// PrepNop prepares a no-op: a CQE with Res 0.
func (s *SQE) PrepNop(ud uint64) { s.prep(OpNop, -1, 0, 0, 0, ud) }

// PrepRead prepares read(2) of fd at off (-1: the file position; for
// pipes, sockets and eventfds the offset is ignored).
func (s *SQE) PrepRead(fd int, buf []byte, off int64, ud uint64) {
	s.prep(OpRead, fd, bufAddr(buf), uint32(len(buf)), uint64(off), ud)
}

// PrepWrite prepares write(2) of buf to fd at off (-1: the file position).
func (s *SQE) PrepWrite(fd int, buf []byte, off int64, ud uint64) {
	s.prep(OpWrite, fd, bufAddr(buf), uint32(len(buf)), uint64(off), ud)
}

// PrepWritev prepares writev(2). The iovec array is read during Submit
// (IORING_FEAT_SUBMIT_STABLE) and must live until Submit returns; the
// buffers it points to, until the CQE.
func (s *SQE) PrepWritev(fd int, iovs []unix.Iovec, off int64, ud uint64) {
	var addr uint64
	if len(iovs) > 0 {
		p := unsafe.Pointer(unsafe.SliceData(iovs))
		escape(p)
		addr = uint64(uintptr(p))
	}
	s.prep(OpWritev, fd, addr, uint32(len(iovs)), uint64(off), ud)
}

// PrepFsync prepares fsync(2) of fd, or fdatasync(2) when datasync is set
// (IORING_FSYNC_DATASYNC): the journal's sync.
func (s *SQE) PrepFsync(fd int, datasync bool, ud uint64) {
	s.prep(OpFsync, fd, 0, 0, 0, ud)
	if datasync {
		s.OpFlags = fsyncDatasync
	}
}

// PrepRecv prepares recv(2) into buf. One CQE: Res is the byte count, 0 at
// EOF, or -errno.
func (s *SQE) PrepRecv(fd int, buf []byte, msgFlags int, ud uint64) {
	s.prep(OpRecv, fd, bufAddr(buf), uint32(len(buf)), 0, ud)
	s.OpFlags = uint32(msgFlags)
}

// PrepSend prepares send(2) of buf. On a stream socket a send may be
// partial (Res < len(buf)) unless msgFlags has MSG_WAITALL, in which case
// the kernel retries until everything is queued or an error occurs. The
// buffer may be reused as soon as the CQE arrives.
func (s *SQE) PrepSend(fd int, buf []byte, msgFlags int, ud uint64) {
	s.prep(OpSend, fd, bufAddr(buf), uint32(len(buf)), 0, ud)
	s.OpFlags = uint32(msgFlags)
}

// PrepSendZC prepares a zero-copy send (IORING_OP_SEND_ZC, Linux >= 6.0;
// usage reporting needs >= 6.2). It yields two CQEs with the same user
// data: the result (Res as for PrepSend) with CQEFMore set, then a
// notification with CQEFNotif once the kernel no longer reads buf. A
// result without CQEFMore has no notification; an error result may still
// have one (Linux 6.18 sets CQEFMore on -EBADF), so trust the flag. buf
// must stay unmodified and mapped until CQE.ReleasesBuffer is true; see
// ZeroCopySend.
func (s *SQE) PrepSendZC(fd int, buf []byte, msgFlags int, ud uint64) {
	s.prep(OpSendZC, fd, bufAddr(buf), uint32(len(buf)), 0, ud)
	s.OpFlags = uint32(msgFlags)
	s.IoPrio = sendZCReportUsage
}

// PrepSendmsg prepares sendmsg(2) with msg (its iovecs gather several
// buffers into one send). The kernel copies msg and its iovec array while
// the request is prepared, so they must live until Submit returns
// (IORING_FEAT_SUBMIT_STABLE); the buffers they point to, until the CQE.
// A stream socket may take part of it (Res < total), as with PrepSend.
func (s *SQE) PrepSendmsg(fd int, msg *unix.Msghdr, msgFlags int, ud uint64) {
	p := unsafe.Pointer(msg)
	escape(p)
	s.prep(OpSendmsg, fd, uint64(uintptr(p)), 1, 0, ud)
	s.OpFlags = uint32(msgFlags)
}

// PrepSendmsgZC is PrepSendmsg without the copy (IORING_OP_SENDMSG_ZC,
// Linux >= 6.1): the CQE contract of PrepSendZC, for every buffer the
// iovecs point to. They must stay unmodified and mapped until the
// notification.
func (s *SQE) PrepSendmsgZC(fd int, msg *unix.Msghdr, msgFlags int, ud uint64) {
	s.PrepSendmsg(fd, msg, msgFlags, ud)
	s.Opcode = OpSendmsgZC
	s.IoPrio = sendZCReportUsage
}

// AcceptAddr receives the peer address of an accepted connection. The
// kernel writes it at completion, so it must stay reachable until then.
type AcceptAddr struct {
	Raw unix.RawSockaddrAny
	Len uint32
}

// PrepAccept prepares accept4(2) on a listening socket; flags are
// accept4's (SOCK_NONBLOCK|SOCK_CLOEXEC). Res is the new fd. addr may be
// nil.
func (s *SQE) PrepAccept(fd int, addr *AcceptAddr, flags int, ud uint64) {
	var a, alen uint64
	if addr != nil {
		escape(unsafe.Pointer(addr))
		addr.Len = uint32(unsafe.Sizeof(addr.Raw))
		a = uint64(uintptr(unsafe.Pointer(&addr.Raw)))
		alen = uint64(uintptr(unsafe.Pointer(&addr.Len)))
	}
	s.prep(OpAccept, fd, a, 0, alen, ud)
	s.OpFlags = uint32(flags)
}

// PrepAcceptMultishot prepares a multishot accept (Linux >= 5.19): one CQE
// per accepted connection, each with CQEFMore while the request stays
// armed. A CQE without CQEFMore ends it (error, cancel): re-arm then.
func (s *SQE) PrepAcceptMultishot(fd int, flags int, ud uint64) {
	s.PrepAccept(fd, nil, flags, ud)
	s.IoPrio = acceptMultishot
}

// PrepPollAdd prepares a one-shot poll for events (unix.POLLIN, ...) on fd;
// Res is the returned events mask.
func (s *SQE) PrepPollAdd(fd int, events uint32, ud uint64) {
	s.prep(OpPollAdd, fd, 0, 0, 0, ud)
	s.OpFlags = events // poll32_events, little-endian layout
}

// PrepPollMultishot prepares a multishot poll (Linux >= 5.13): a CQE with
// CQEFMore at each readiness edge until cancelled or an error.
func (s *SQE) PrepPollMultishot(fd int, events uint32, ud uint64) {
	s.PrepPollAdd(fd, events, ud)
	s.Len = pollAddMulti
}

// PrepPollRemove removes the poll whose user data is target.
func (s *SQE) PrepPollRemove(target uint64, ud uint64) {
	s.prep(OpPollRemove, -1, target, 0, 0, ud)
}

// PrepCancel cancels the request whose user data is target. The target
// completes with -ECANCELED (or with its result if it was already done);
// the cancel's own Res is 0, -ENOENT (not found) or -EALREADY (running).
func (s *SQE) PrepCancel(target uint64, ud uint64) {
	s.prep(OpAsyncCancel, -1, target, 0, 0, ud)
}

// PrepCancelFd cancels every request on fd (Linux >= 5.19); the cancel's
// Res is how many were found. Closing an fd does not cancel its requests
// (each holds a file reference): cancel by fd first, then close.
func (s *SQE) PrepCancelFd(fd int, ud uint64) {
	s.prep(OpAsyncCancel, fd, 0, 0, 0, ud)
	s.OpFlags = cancelFd | cancelAll
}

// PrepClose prepares close(2) of fd.
func (s *SQE) PrepClose(fd int, ud uint64) { s.prep(OpClose, fd, 0, 0, 0, ud) }

// PrepTimeout prepares a timeout that completes with -ETIME after ts, or
// with Res 0 once count other requests completed (count 0: time only). ts
// is read during Submit and must live until Submit returns.
func (s *SQE) PrepTimeout(ts *unix.Timespec, count uint32, ud uint64) {
	escape(unsafe.Pointer(ts))
	s.prep(OpTimeout, -1, uint64(uintptr(unsafe.Pointer(ts))), 1, uint64(count), ud)
}

// PrepMsgRing posts a CQE with user data targetUD and Res res on the ring
// whose fd is targetFd (Linux >= 5.18): a lock-free message or wake-up from
// one shard's ring to another's, submitted by the sender's owner.
func (s *SQE) PrepMsgRing(targetFd int, res int32, targetUD uint64, ud uint64) {
	s.prep(OpMsgRing, targetFd, msgRingData, uint32(res), targetUD, ud)
}

// The Ring methods below take an SQE and prepare it: one call per
// operation, published by the next Submit. They return ErrSQFull (or a
// flush error with Options.FlushWhenFull) when no slot is free.

// Nop queues PrepNop.
func (r *Ring) Nop(ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepNop(ud)
	return nil
}

// Read queues PrepRead.
func (r *Ring) Read(fd int, buf []byte, off int64, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepRead(fd, buf, off, ud)
	return nil
}

// Write queues PrepWrite.
func (r *Ring) Write(fd int, buf []byte, off int64, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepWrite(fd, buf, off, ud)
	return nil
}

// Writev queues PrepWritev.
func (r *Ring) Writev(fd int, iovs []unix.Iovec, off int64, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepWritev(fd, iovs, off, ud)
	return nil
}

// Fsync queues an fsync(2) of fd.
func (r *Ring) Fsync(fd int, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepFsync(fd, false, ud)
	return nil
}

// Fdatasync queues an fdatasync(2) of fd (IORING_FSYNC_DATASYNC).
func (r *Ring) Fdatasync(fd int, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepFsync(fd, true, ud)
	return nil
}

// Recv queues PrepRecv.
func (r *Ring) Recv(fd int, buf []byte, msgFlags int, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepRecv(fd, buf, msgFlags, ud)
	return nil
}

// Send queues PrepSend.
func (r *Ring) Send(fd int, buf []byte, msgFlags int, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepSend(fd, buf, msgFlags, ud)
	return nil
}

// SendZC queues PrepSendZC. buf belongs to the kernel until the CQE whose
// ReleasesBuffer is true.
func (r *Ring) SendZC(fd int, buf []byte, msgFlags int, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepSendZC(fd, buf, msgFlags, ud)
	return nil
}

// Sendmsg queues PrepSendmsg.
func (r *Ring) Sendmsg(fd int, msg *unix.Msghdr, msgFlags int, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepSendmsg(fd, msg, msgFlags, ud)
	return nil
}

// SendmsgZC queues PrepSendmsgZC.
func (r *Ring) SendmsgZC(fd int, msg *unix.Msghdr, msgFlags int, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepSendmsgZC(fd, msg, msgFlags, ud)
	return nil
}

// Accept queues PrepAccept.
func (r *Ring) Accept(fd int, addr *AcceptAddr, flags int, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepAccept(fd, addr, flags, ud)
	return nil
}

// AcceptMultishot queues PrepAcceptMultishot.
func (r *Ring) AcceptMultishot(fd int, flags int, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepAcceptMultishot(fd, flags, ud)
	return nil
}

// PollAdd queues PrepPollAdd.
func (r *Ring) PollAdd(fd int, events uint32, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepPollAdd(fd, events, ud)
	return nil
}

// PollMultishot queues PrepPollMultishot.
func (r *Ring) PollMultishot(fd int, events uint32, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepPollMultishot(fd, events, ud)
	return nil
}

// PollRemove queues PrepPollRemove.
func (r *Ring) PollRemove(target uint64, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepPollRemove(target, ud)
	return nil
}

// Cancel queues PrepCancel (by user data).
func (r *Ring) Cancel(target uint64, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepCancel(target, ud)
	return nil
}

// CancelFd queues PrepCancelFd (every request on fd).
func (r *Ring) CancelFd(fd int, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepCancelFd(fd, ud)
	return nil
}

// CloseFd queues close(2) of fd.
func (r *Ring) CloseFd(fd int, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepClose(fd, ud)
	return nil
}

// Timeout queues a timeout of d (see PrepTimeout); the ring keeps the
// timespec in a per-slot array, so nothing has to outlive the call.
func (r *Ring) Timeout(d time.Duration, count uint32, ud uint64) error {
	s, idx, err := r.getSQE()
	if err != nil {
		return err
	}
	r.timespecs[idx] = unix.NsecToTimespec(int64(d))
	s.PrepTimeout(&r.timespecs[idx], count, ud)
	return nil
}

// MsgRing queues PrepMsgRing towards target.
func (r *Ring) MsgRing(target *Ring, res int32, targetUD uint64, ud uint64) error {
	s, _, err := r.getSQE()
	if err != nil {
		return err
	}
	s.PrepMsgRing(target.fd, res, targetUD, ud)
	return nil
}
