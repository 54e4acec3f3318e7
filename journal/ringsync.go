package journal

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/uring"
)

// Group commit through io_uring (Options.SyncVia = SyncUring).
//
// The flusher owns a small ring, created on its own (locked, possibly
// pinned) OS thread. Each part of a batch (the whole batch, or the two
// sides of a rotation) becomes one chain of linked SQEs: the write of the
// records, the write that completes their last page with zeros (see
// writePart), and the fdatasync, each but the last flagged IOSQE_IO_LINK,
// handed over with one io_uring_enter that also waits for all of their
// completions. The kernel starts an SQE of a chain only once the previous
// one completed in full; a failed or short one completes the rest with
// -ECANCELED. So a short write is continued (its rest, then whatever
// followed it, again as one chain) until the fdatasync ran after every
// byte was written. Any other error fails the journal with the message the
// syscall path gives (same operation, path and errno). If the ring cannot
// be set up, or io_uring_enter itself fails before taking the chain, the
// journal logs it once and uses pwrite and fdatasync from then on.

// Values of Options.SyncVia and Stats.SyncVia.
const (
	SyncSyscall = "syscall"
	SyncUring   = "uring"
)

// defaultSyncVia is what an empty Options.SyncVia selects. The tests set
// it from TANDEM_JOURNAL_SYNC, to run the whole suite on either path.
var defaultSyncVia = SyncSyscall

// chainMax is the longest chain: records, page completion, fdatasync.
const chainMax = 3

// chainOp is one SQE of a chain: a write of buf at off, or the fdatasync.
type chainOp struct {
	buf  []byte // write: the bytes still to write
	off  int64  // write: where buf goes
	at   int64  // write: the offset its error names (where it began)
	sync bool
}

// chainRunner runs ops as one linked chain on fd and stores each op's
// result (a byte count, 0 for the sync, or -errno) in res, in ops' order.
// An error means the chain was not run to completion by the kernel; ran
// says whether any of it may have run. The uring implementation is
// uringRunner; tests substitute fakes (short writes, failures).
type chainRunner interface {
	runChain(fd int, ops []chainOp, res []int32) (ran bool, err error)
	Close() error
}

// ringOpener makes the flusher's runner (Options.openRing; default
// openSyncRing).
type ringOpener func() (chainRunner, error)

// ringSync is the flusher's state for the ring path, allocated once so
// that a batch allocates nothing.
type ringSync struct {
	run chainRunner
	ops [chainMax]chainOp
	res [chainMax]int32
}

// openSyncRing checks that io_uring is usable here and sets up a ring
// just large enough for one chain.
func openSyncRing() (chainRunner, error) {
	if err := uring.Available(); err != nil {
		return nil, err
	}
	r, err := uring.New(uring.Options{Entries: 4})
	if err != nil {
		return nil, err
	}
	return &uringRunner{r: r}, nil
}

// uringRunner runs chains on a private ring: nothing else is ever in
// flight on it, and the flusher waits for every completion of a chain
// before it returns, so the buffers (the flusher's taken buffer and
// zeroPage, both on the heap) outlive the requests.
type uringRunner struct {
	r    *uring.Ring
	cqes [2 * chainMax]uring.CQE
}

func (u *uringRunner) Close() error { return u.r.Close() }

func (u *uringRunner) runChain(fd int, ops []chainOp, res []int32) (bool, error) {
	for i := range ops {
		s, err := u.r.GetSQE()
		if err != nil {
			// Never happens on an idle ring of 4 entries. The ring is
			// closed next, so the SQEs prepared so far never run.
			return false, err
		}
		if op := &ops[i]; op.sync {
			s.PrepFsync(fd, true, uint64(i))
		} else {
			s.PrepWrite(fd, op.buf, op.off, uint64(i))
		}
		if i < len(ops)-1 {
			s.Flags |= uring.SQEIOLink
		}
	}
	want, got := len(ops), 0
	for got < want {
		if _, err := u.r.SubmitAndWait(want - got); err != nil {
			// The kernel took none of the chain only if all of it is
			// still pending (e.g. ErrBusy at the first enter).
			return got > 0 || u.r.Pending() < want, err
		}
		n := u.r.Reap(u.cqes[:])
		for _, c := range u.cqes[:n] {
			if c.UserData >= uint64(want) {
				return true, fmt.Errorf("uring: unexpected completion (user data %d)", c.UserData)
			}
			res[c.UserData] = c.Res
		}
		got += n
	}
	return true, nil
}

// openRing sets up the flusher's ring (on the flusher's thread), or logs
// why it cannot and leaves the syscall path in place.
func (j *Journal) openRing() {
	open := j.opts.openRing
	if open == nil {
		open = openSyncRing
	}
	run, err := open()
	if err != nil {
		j.log.Warn("journal: cannot use io_uring; group commits use pwrite and fdatasync", "err", err)
		return
	}
	j.ring = &ringSync{run: run}
	j.viaRing.Store(true)
}

// closeRing closes the flusher's ring; the syscall path takes over.
func (j *Journal) closeRing() {
	if j.ring == nil {
		return
	}
	if err := j.ring.run.Close(); err != nil {
		j.log.Warn("journal: closing the io_uring ring", "err", err)
	}
	j.ring = nil
	j.viaRing.Store(false)
}

// writeSyncRing is writePart then SyncData, as linked chains on the ring.
func (j *Journal) writeSyncRing(seg *segment, f fdFile, b []byte, off int64) error {
	rs := j.ring
	ops := rs.ops[:prepareChain(&rs.ops, b, off, seg.size, seg.recycled())]
	fd := int(f.Fd())
	for len(ops) > 0 {
		ran, err := rs.run.runChain(fd, ops, rs.res[:len(ops)])
		if err != nil {
			if ran {
				// Part of the chain may have run, with an outcome we will
				// never learn: as after a failed fdatasync, stop.
				return fmt.Errorf("journal: sync %s: %w", seg.name, err)
			}
			j.log.Warn("journal: io_uring failed; group commits use pwrite and fdatasync from now on", "err", err)
			j.closeRing()
			return runChainSyscalls(seg, f, ops)
		}
		next, bad, err := settleChain(ops, rs.res[:len(ops)])
		if err != nil {
			return chainOpError(seg, f.Name(), &ops[bad], err)
		}
		ops = ops[next:]
	}
	return nil
}

// prepareChain fills ops with the chain that writes b at off in a segment
// of size bytes and syncs it: the write (none if b is empty), the write
// completing its last page (see writePart), the fdatasync. It returns how
// many ops it filled.
func prepareChain(ops *[chainMax]chainOp, b []byte, off, size int64, recycled bool) int {
	n := 0
	if len(b) > 0 {
		ops[n] = chainOp{buf: b, off: off, at: off}
		n++
		end := off + int64(len(b))
		if pad := pagePad(end, size, recycled); pad > 0 {
			ops[n] = chainOp{buf: zeroPage[:pad], off: end, at: end}
			n++
		}
	}
	ops[n] = chainOp{sync: true}
	return n + 1
}

// settleChain applies the results of a chain (res[i] for ops[i]) and
// returns the index of the first op that must run again: len(ops) when
// all completed. A short write is advanced past what it wrote and runs
// again, with everything after it, which the kernel cancelled (-ECANCELED)
// or, if it says otherwise, runs again anyway: rewriting the same bytes
// and syncing again are harmless. -EINTR reruns the op, as the syscall
// path does. Any other error, even after the chain broke, is returned with
// the index of its op: a failed fdatasync is never retried. A write that
// wrote nothing fails with io.ErrUnexpectedEOF, as os.File.WriteAt does.
func settleChain(ops []chainOp, res []int32) (next, bad int, err error) {
	next = len(ops)
	for i := range ops {
		r := res[i]
		cut := next < len(ops)
		if r < 0 {
			e := unix.Errno(-r)
			if e == unix.EINTR || (cut && e == unix.ECANCELED) {
				if !cut {
					next = i
				}
				continue
			}
			return 0, i, e
		}
		op := &ops[i]
		if cut || op.sync || int(r) >= len(op.buf) {
			continue
		}
		if r == 0 {
			return 0, i, io.ErrUnexpectedEOF
		}
		op.buf = op.buf[r:]
		op.off += int64(r)
		next = i
	}
	return next, -1, nil
}

// chainOpError is the journal error for op failing with err: the message
// the syscall path gives (writePart and SyncData through os.File).
func chainOpError(seg *segment, name string, op *chainOp, err error) error {
	if op.sync {
		return fmt.Errorf("journal: sync %s: %w", seg.name, &os.PathError{Op: "fdatasync", Path: name, Err: err})
	}
	return fmt.Errorf("journal: write %s at %d: %w", seg.name, op.at, &os.PathError{Op: "write", Path: name, Err: err})
}

// runChainSyscalls runs what is left of a chain with pwrite and fdatasync
// (after the ring failed without running any of it).
func runChainSyscalls(seg *segment, f File, ops []chainOp) error {
	for i := range ops {
		op := &ops[i]
		if op.sync {
			if err := f.SyncData(); err != nil {
				return fmt.Errorf("journal: sync %s: %w", seg.name, err)
			}
		} else if _, err := f.WriteAt(op.buf, op.off); err != nil {
			return fmt.Errorf("journal: write %s at %d: %w", seg.name, op.at, err)
		}
	}
	return nil
}
