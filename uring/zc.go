package uring

import "golang.org/x/sys/unix"

// More reports whether more CQEs will follow for this request (multishot
// accept and poll, and a SendZC result that a notification will follow).
func (c CQE) More() bool { return c.Flags&CQEFMore != 0 }

// Notif reports whether this CQE is a SendZC notification: it carries no
// result, only the news that the kernel is done with the buffer.
func (c CQE) Notif() bool { return c.Flags&CQEFNotif != 0 }

// ReleasesBuffer reports, for a CQE of a SendZC, whether the buffer may be
// reused or unmapped now: on the notification, or on a result that no
// notification will follow (no CQEFMore). Errors may carry CQEFMore too:
// trust the flag, not the result.
func (c CQE) ReleasesBuffer() bool { return c.Notif() || !c.More() }

// ZCCopied reports, for a SendZC notification, whether the kernel fell
// back to copying the data (it does on loopback, and for devices without
// scatter-gather): the send cost a copy after all.
func (c CQE) ZCCopied() bool { return c.Notif() && uint32(c.Res)&notifUsageZCCopied != 0 }

// Err is nil for Res >= 0 and for SendZC notifications (whose Res is a
// usage bit mask, see ZCCopied), else the errno (no allocation: errno
// values are small).
func (c CQE) Err() error {
	if c.Res >= 0 || c.Notif() {
		return nil
	}
	return unix.Errno(-c.Res)
}

// ZCState is where one zero-copy send is in its life.
type ZCState uint8

const (
	// ZCIdle: nothing in flight; the buffer belongs to the caller.
	ZCIdle ZCState = iota
	// ZCInFlight: submitted, no CQE yet; the kernel owns the buffer.
	ZCInFlight
	// ZCAwaitingNotif: the result arrived (Result is set) but the kernel
	// may still read the buffer (it sits in a socket queue or a NIC ring);
	// it must not be modified, reused or unmapped.
	ZCAwaitingNotif
)

func (s ZCState) String() string {
	switch s {
	case ZCIdle:
		return "idle"
	case ZCInFlight:
		return "in-flight"
	case ZCAwaitingNotif:
		return "awaiting-notification"
	}
	return "ZCState(" + itoa(int(s)) + ")"
}

// ZeroCopySend tracks the buffer of one SendZC through its two CQEs, so
// that the owner of the buffer (a journal segment mapping, a replication
// batch) holds it exactly as long as the kernel does:
//
//	z.Start()                    // after preparing SendZC with buf
//	...
//	if z.Observe(cqe) { release(buf) } // for each CQE with the send's user data
//
// Observe returns true exactly once per send: on the notification, or on a
// result that has no notification. Result is the send's byte count (it may
// be short: send the rest from buf[Result:]) or -errno.
type ZeroCopySend struct {
	State  ZCState
	Result int32
	Copied bool // the kernel reported it copied instead (see CQE.ZCCopied)
}

// Start records that the send was prepared; the buffer now belongs to the
// kernel.
func (z *ZeroCopySend) Start() { *z = ZeroCopySend{State: ZCInFlight} }

// Observe feeds one CQE of this send and reports whether the buffer was
// released by it.
func (z *ZeroCopySend) Observe(c CQE) bool {
	if c.Notif() {
		z.Copied = c.ZCCopied()
		z.State = ZCIdle
		return true
	}
	z.Result = c.Res
	if c.More() {
		z.State = ZCAwaitingNotif
		return false
	}
	z.State = ZCIdle
	return true
}

// Reusable reports whether the buffer may be touched again.
func (z *ZeroCopySend) Reusable() bool { return z.State == ZCIdle }
