// Package uring is Tandem's own thin io_uring ring on golang.org/x/sys/unix:
// setup, the three mappings, preparers for the operations the engine needs,
// batched submission and allocation-free reaping. It knows nothing of
// connections or journals; the engine decides what to submit.
//
// # Ring layout
//
// io_uring_setup returns a file descriptor and the offsets of three shared
// regions, which New maps (the SQ and CQ rings are one mapping when the
// kernel reports IORING_FEAT_SINGLE_MMAP):
//
//	SQ ring (off 0)                 SQE array (off 0x10000000)
//	+------+------+------+-------+  +--------+--------+-----+
//	| head | tail | mask | flags |  | SQE 0  | SQE 1  | ... |  64 bytes each
//	+------+------+------+-------+  +--------+--------+-----+
//	| dropped | array[entries]   |      ^ array[i] = i (written once)
//	+--------------------------+
//	CQ ring (off 0x8000000, or inside the SQ mapping)
//	+------+------+------+----------+-------------------------+
//	| head | tail | mask | overflow | CQE[entries], 16 bytes  |
//	+------+------+------+----------+-------------------------+
//
// We own the SQ tail and the CQ head; the kernel owns the SQ head and the
// CQ tail. A preparer fills the SQE at slot tail&mask (so the SQ index
// array is the identity and never rewritten) and advances a private tail;
// Submit publishes all of them with one store of the SQ tail and one
// io_uring_enter. Reap copies CQEs out by value from head to the kernel's
// tail and stores the head once.
//
// # Memory ordering
//
// Every load of a kernel-owned index (SQ head, CQ tail, SQ flags) and every
// store of ours (SQ tail, CQ head) is a sync/atomic operation on the mapped
// uint32; Go's atomics are sequentially consistent, which covers the
// kernel's smp_load_acquire/smp_store_release pairs: SQE contents are
// written before the tail store that publishes them, and a CQE is read
// after the tail load that made it visible and before the head store that
// gives its slot back. Plain loads are used only for words no one else
// writes (our own CQ head, the constant mask and sizes).
//
// # Overflow, full queues, signals
//
// A full SQ makes a preparer return ErrSQFull (or submit first, with
// Options.FlushWhenFull). A full CQ does not lose completions: the kernel
// (IORING_FEAT_NODROP, required) parks them and sets IORING_SQ_CQ_OVERFLOW;
// Reap and Submit then enter with IORING_ENTER_GETEVENTS to move them in.
// -EINTR is retried, -ETIME (a wait timeout) is not an error, -EAGAIN and
// -EBUSY come back as ErrBusy with the SQEs still queued.
//
// # Buffer lifetime and the SendZC contract
//
// The kernel reads or writes a request's buffer until its final CQE, through
// an address the garbage collector does not see: callers keep buffers
// reachable until then (preparers force them onto the heap so that a
// growing stack cannot move one). A plain Send is done with its buffer at
// its CQE. A SendZC is not: its first CQE (the result, CQEFMore set) only
// says how much was queued; the pages are still referenced by socket
// buffers or the NIC until a second CQE with CQEFNotif arrives. Only then
// may the buffer be modified, reused, or its journal segment unmapped.
// CQE.ReleasesBuffer and ZeroCopySend encode this; a result without
// CQEFMore has no notification, and an error result may still have one:
// the flag decides, never the result. On loopback the kernel copies
// the data anyway and says so in the notification (CQE.ZCCopied).
//
// # Waking a ring
//
// With Options.Wake the ring keeps a read of an eventfd in flight; Wake,
// from any goroutine, writes the eventfd, the read completes and
// SubmitAndWait returns. Reap consumes that completion and re-arms the read
// at the next Submit. (IORING_OP_MSG_RING, MsgRing, does the same from one
// ring's owner to another ring without a syscall of its own.)
//
// Availability: Available explains why io_uring cannot be used here
// (ENOSYS, EPERM from kernel.io_uring_disabled or seccomp, ...), so the
// engine can fall back to epoll and say why.
package uring
