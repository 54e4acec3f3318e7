package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Errors. Errno values from the kernel are wrapped, so errors.Is(err,
// unix.EAGAIN) works on them as well.
var (
	ErrClosed = errors.New("uring: ring closed")
	// ErrSQFull is returned by a preparer when every SQ slot holds an SQE
	// that was not submitted yet (and Options.FlushWhenFull is off, or the
	// flush did not free a slot): Submit, then prepare again.
	ErrSQFull = errors.New("uring: submission queue full")
	// ErrBusy is returned by Submit when the kernel took none of the SQEs
	// because it is short of resources or the completion queue is
	// overflowing (-EAGAIN, -EBUSY): reap completions, then submit again.
	// The SQEs stay queued.
	ErrBusy = errors.New("uring: kernel busy, reap completions and resubmit")
	// ErrNoWake is returned by Wake on a ring made without Options.Wake.
	ErrNoWake = errors.New("uring: ring has no wake-up eventfd (Options.Wake)")
)

// wakeUserData marks the ring's own eventfd read; Reap consumes those
// completions and never returns them. Callers must not use this value.
const wakeUserData = ^uint64(0)

// Options configures New. The zero value is a 256-entry ring.
type Options struct {
	// Entries is the SQ size, rounded up to a power of two by the kernel
	// (at most 32768); default 256.
	Entries uint32
	// CQEntries is the CQ size; default (0) is twice Entries, the kernel's
	// default. Completions beyond it wait in the kernel's overflow list
	// (IORING_FEAT_NODROP) until Reap makes room.
	CQEntries uint32
	// FlushWhenFull makes a preparer submit what is queued when the SQ is
	// full, instead of returning ErrSQFull.
	FlushWhenFull bool
	// Wake arms an eventfd read on the ring so that Wake, from any
	// goroutine, ends a wait in progress.
	Wake bool
	// SingleIssuer promises that only the thread creating the ring (a
	// goroutine locked to its OS thread for the ring's whole life) submits
	// and waits on it. The ring is then set up with
	// IORING_SETUP_SINGLE_ISSUER|DEFER_TASKRUN (Linux >= 6.1): the kernel
	// queues completion work for that thread and runs it, batched, when the
	// thread enters to reap, instead of interrupting it for each network
	// completion. Older kernels fall back to COOP_TASKRUN (5.19), then to
	// neither; SetupFlags says which.
	SingleIssuer bool
}

// Setup flags New tried, most wanted first; the first the kernel accepts
// wins.
func setupChoices(opts Options) []uint32 {
	var c []uint32
	if opts.SingleIssuer {
		c = append(c, setupSingleIssuer|setupDeferTaskrun|setupTaskrunFlag|setupSubmitAll)
	}
	return append(c, setupCoopTaskrun|setupTaskrunFlag|setupSubmitAll, setupSubmitAll, 0)
}

// Ring is one io_uring instance. It is owned by one goroutine (an event
// loop, which should be locked to its OS thread: the kernel runs network
// completions as task work on the submitting thread): every method except
// Wake must be called from it.
type Ring struct {
	fd         int
	features   uint32
	setupFlags uint32
	opts       Options

	sqMem, cqMem, sqeMem []byte

	// Pointers into the SQ ring. The kernel advances kSQHead as it
	// consumes SQEs; we publish new SQEs by storing kSQTail.
	kSQHead, kSQTail, kSQFlags, kSQDropped *uint32
	sqMask, sqEntries                      uint32
	sqes                                   []SQE
	// sqeTail is the next slot a preparer hands out; sqeHead the first one
	// not yet published to the kernel (kSQTail). Both only grow.
	sqeTail, sqeHead uint32

	// Pointers into the CQ ring: the kernel posts CQEs and stores kCQTail;
	// we consume and store kCQHead.
	kCQHead, kCQTail, kCQOverflow *uint32
	cqMask, cqEntries             uint32
	cqes                          []CQE

	// timespecs holds one timeout value per SQ slot: the kernel reads it
	// during io_uring_enter, so it only has to live until Submit returns.
	timespecs []unix.Timespec
	waitTS    unix.Timespec
	waitArg   getEventsArg

	overflows uint64 // times Reap found completions parked in the kernel

	wakefd    int
	wakeBuf   [8]byte // the armed read's target; lives as long as the Ring
	wakeRearm bool    // the wake read completed and is not re-armed yet
}

// New sets up a ring: io_uring_setup, then the mmap of the SQ ring, the CQ
// ring (one mapping when the kernel has IORING_FEAT_SINGLE_MMAP) and the
// SQE array.
func New(opts Options) (*Ring, error) {
	if opts.Entries == 0 {
		opts.Entries = 256
	}
	// IORING_SETUP_SUBMIT_ALL (5.18) keeps the kernel submitting the rest
	// of a batch when one SQE fails at submission; without it the batch
	// stops there and the rest waits for the next Submit.
	var fd int
	var p params
	var err error
	for _, extra := range setupChoices(opts) {
		p = params{flags: setupClamp | extra}
		if opts.CQEntries != 0 {
			p.flags |= setupCQSize
			p.cqEntries = opts.CQEntries
		}
		if fd, err = setup(opts.Entries, &p); !errors.Is(err, unix.EINVAL) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	r := &Ring{fd: fd, features: p.features, setupFlags: p.flags, opts: opts, wakefd: -1}
	if err := r.mapRings(&p); err != nil {
		r.Close()
		return nil, err
	}
	if p.features&FeatNoDrop == 0 {
		r.Close()
		return nil, fmt.Errorf("uring: kernel lacks IORING_FEAT_NODROP (needs Linux >= 5.5)")
	}
	if opts.Wake {
		wfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("uring: eventfd: %w", err)
		}
		r.wakefd = wfd
		r.wakeRearm = true
		if _, err := r.Submit(); err != nil { // arm it now, so a Wake before the first Submit works
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

func setup(entries uint32, p *params) (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	if errno != 0 {
		return -1, fmt.Errorf("uring: io_uring_setup: %w", errno)
	}
	return int(fd), nil
}

func (r *Ring) mapRings(p *params) error {
	sqSize := uintptr(p.sqOff.array) + uintptr(p.sqEntries)*4
	cqSize := uintptr(p.cqOff.cqes) + uintptr(p.cqEntries)*unsafe.Sizeof(CQE{})
	single := p.features&FeatSingleMmap != 0
	if single && cqSize > sqSize {
		sqSize = cqSize
	}
	var err error
	r.sqMem, err = unix.Mmap(r.fd, offSQRing, int(sqSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("uring: mmap sq ring: %w", err)
	}
	if single {
		r.cqMem = r.sqMem
	} else {
		r.cqMem, err = unix.Mmap(r.fd, offCQRing, int(cqSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return fmt.Errorf("uring: mmap cq ring: %w", err)
		}
	}
	sqeSize := int(p.sqEntries) * int(unsafe.Sizeof(SQE{}))
	r.sqeMem, err = unix.Mmap(r.fd, offSQEs, sqeSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("uring: mmap sqes: %w", err)
	}

	u32 := func(mem []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }
	r.kSQHead = u32(r.sqMem, p.sqOff.head)
	r.kSQTail = u32(r.sqMem, p.sqOff.tail)
	r.kSQFlags = u32(r.sqMem, p.sqOff.flags)
	r.kSQDropped = u32(r.sqMem, p.sqOff.dropped)
	r.sqMask = *u32(r.sqMem, p.sqOff.ringMask)
	r.sqEntries = *u32(r.sqMem, p.sqOff.ringEntries)
	r.sqes = unsafe.Slice((*SQE)(unsafe.Pointer(&r.sqeMem[0])), r.sqEntries)
	// The SQ array maps ring positions to SQE indexes. We always fill the
	// SQE at position&mask, so the mapping is the identity, written once.
	array := unsafe.Slice(u32(r.sqMem, p.sqOff.array), r.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	r.sqeHead = atomic.LoadUint32(r.kSQTail)
	r.sqeTail = r.sqeHead

	r.kCQHead = u32(r.cqMem, p.cqOff.head)
	r.kCQTail = u32(r.cqMem, p.cqOff.tail)
	r.kCQOverflow = u32(r.cqMem, p.cqOff.overflow)
	r.cqMask = *u32(r.cqMem, p.cqOff.ringMask)
	r.cqEntries = *u32(r.cqMem, p.cqOff.ringEntries)
	r.cqes = unsafe.Slice((*CQE)(unsafe.Pointer(&r.cqMem[p.cqOff.cqes])), r.cqEntries)
	r.timespecs = make([]unix.Timespec, r.sqEntries)
	return nil
}

// Close closes the wake eventfd, unmaps the rings and closes the ring fd.
// The kernel cancels whatever is still in flight as it tears the ring down,
// asynchronously: buffers of cancelled receives may still be written
// until then, so to hand a buffer back for certain, cancel its request and
// reap the -ECANCELED before Close. Pages of in-flight zero-copy sends stay
// pinned by the kernel, so unmapping them after Close is memory-safe; their
// notifications are never delivered. Wake must not race Close.
func (r *Ring) Close() error {
	if r.fd < 0 {
		return ErrClosed
	}
	var errs []error
	if r.wakefd >= 0 {
		errs = append(errs, unix.Close(r.wakefd))
		r.wakefd = -1
	}
	if r.sqeMem != nil {
		errs = append(errs, unix.Munmap(r.sqeMem))
	}
	if r.cqMem != nil && len(r.sqMem) > 0 && &r.cqMem[0] != &r.sqMem[0] {
		errs = append(errs, unix.Munmap(r.cqMem))
	}
	if r.sqMem != nil {
		errs = append(errs, unix.Munmap(r.sqMem))
	}
	r.sqMem, r.cqMem, r.sqeMem, r.sqes, r.cqes = nil, nil, nil, nil, nil
	errs = append(errs, unix.Close(r.fd))
	r.fd = -1
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("uring: close: %w", err)
	}
	return nil
}

// Fd is the ring's file descriptor (for MsgRing from another ring).
func (r *Ring) Fd() int { return r.fd }

// DeferTaskrun reports whether the ring runs completion work only when its
// owner reaps (Options.SingleIssuer on Linux >= 6.1).
func (r *Ring) DeferTaskrun() bool { return r.setupFlags&setupDeferTaskrun != 0 }

// CoopTaskrun reports whether the kernel may delay completion work until
// the ring's thread enters the kernel rather than interrupting it.
func (r *Ring) CoopTaskrun() bool { return r.setupFlags&(setupCoopTaskrun|setupDeferTaskrun) != 0 }

// Features is io_uring_params.features as the kernel reported it.
func (r *Ring) Features() uint32 { return r.features }

// SQEntries and CQEntries are the sizes the kernel chose.
func (r *Ring) SQEntries() uint32 { return r.sqEntries }
func (r *Ring) CQEntries() uint32 { return r.cqEntries }

// Dropped is how many CQEs the kernel could not post or hold (only when
// even its overflow list could not grow): requests whose completions were
// lost. Non-zero means the caller's bookkeeping is wrong from then on.
func (r *Ring) Dropped() uint32 { return atomic.LoadUint32(r.kCQOverflow) }

// Overflows counts the times Submit or Reap found the CQ had overflowed (completions
// parked in the kernel, moved in at the cost of an extra io_uring_enter):
// a sign the CQ is too small for the load (raise Options.CQEntries).
func (r *Ring) Overflows() uint64 { return r.overflows }

// Pending is how many SQEs were prepared and not yet taken by the kernel.
func (r *Ring) Pending() int {
	if r.fd < 0 {
		return 0
	}
	return int(r.sqeTail - atomic.LoadUint32(r.kSQHead))
}

// Ready is how many CQEs are in the CQ ring, waiting for Reap.
func (r *Ring) Ready() int {
	if r.fd < 0 {
		return 0
	}
	return int(atomic.LoadUint32(r.kCQTail) - *r.kCQHead)
}

// GetSQE hands out the next free SQE slot, for preparers not covered by
// the Ring methods (or to set Flags, e.g. SQEIOLink, after a Prep). The
// slot is published to the kernel by the next Submit.
func (r *Ring) GetSQE() (*SQE, error) {
	s, _, err := r.getSQE()
	return s, err
}

func (r *Ring) getSQE() (*SQE, uint32, error) {
	if r.fd < 0 {
		return nil, 0, ErrClosed
	}
	if r.sqeTail-atomic.LoadUint32(r.kSQHead) >= r.sqEntries {
		if !r.opts.FlushWhenFull {
			return nil, 0, ErrSQFull
		}
		if _, err := r.Submit(); err != nil {
			return nil, 0, err
		}
		if r.sqeTail-atomic.LoadUint32(r.kSQHead) >= r.sqEntries {
			return nil, 0, ErrSQFull
		}
	}
	idx := r.sqeTail & r.sqMask
	r.sqeTail++
	return &r.sqes[idx], idx, nil
}

// flushSQ publishes the prepared SQEs (one release store of the SQ tail)
// and returns how many the kernel has not consumed.
func (r *Ring) flushSQ() uint32 {
	if r.sqeTail != r.sqeHead {
		atomic.StoreUint32(r.kSQTail, r.sqeTail)
		r.sqeHead = r.sqeTail
	}
	return r.sqeTail - atomic.LoadUint32(r.kSQHead)
}

// Submit hands every prepared SQE to the kernel with one io_uring_enter
// (none when nothing is queued and no overflow needs flushing) and returns
// how many the kernel took, the ring's own wake re-arm included.
func (r *Ring) Submit() (int, error) { return r.submit(0, -1) }

// SubmitAndWait submits, then waits until at least n CQEs are ready.
func (r *Ring) SubmitAndWait(n int) (int, error) { return r.submit(uint32(n), -1) }

// SubmitAndWaitTimeout is SubmitAndWait that gives up after d (Linux >=
// 5.11, IORING_FEAT_EXT_ARG); fewer than n CQEs may then be ready, which is
// not an error.
func (r *Ring) SubmitAndWaitTimeout(n int, d time.Duration) (int, error) {
	if d < 0 {
		return r.submit(uint32(n), -1)
	}
	return r.submit(uint32(n), d)
}

func (r *Ring) submit(wait uint32, timeout time.Duration) (int, error) {
	if r.fd < 0 {
		return 0, ErrClosed
	}
	if r.wakeRearm {
		r.armWake()
	}
	toSubmit := r.flushSQ()
	flags := uint32(0)
	sqFlags := atomic.LoadUint32(r.kSQFlags)
	if sqFlags&sqCQOverflow != 0 {
		r.overflows++
	}
	if wait > 0 || sqFlags&(sqCQOverflow|sqTaskrun) != 0 {
		flags |= enterGetEvents // also flushes overflowed CQEs into the ring
	}
	if toSubmit == 0 && flags == 0 {
		return 0, nil
	}
	var arg unsafe.Pointer
	var argSz uintptr
	var deadline time.Time
	if timeout >= 0 && wait > 0 {
		deadline = time.Now().Add(timeout)
		r.waitTS = unix.NsecToTimespec(int64(timeout))
		r.waitArg = getEventsArg{ts: uint64(uintptr(unsafe.Pointer(&r.waitTS)))}
		arg, argSz = unsafe.Pointer(&r.waitArg), unsafe.Sizeof(r.waitArg)
		flags |= enterExtArg
	}
	submitted := 0
	for {
		n, errno := r.enter(toSubmit, wait, flags, arg, argSz)
		switch errno {
		case 0:
		case unix.EINTR:
			// The kernel returns -EINTR only when it submitted nothing.
			continue
		case unix.ETIME:
			return submitted, nil
		case unix.EAGAIN, unix.EBUSY:
			return submitted, fmt.Errorf("%w (%w)", ErrBusy, errno)
		default:
			return submitted, fmt.Errorf("uring: io_uring_enter: %w", errno)
		}
		submitted += n
		toSubmit = r.sqeTail - atomic.LoadUint32(r.kSQHead)
		if wait == 0 || uint32(r.Ready()) >= wait {
			return submitted, nil
		}
		// We submitted, but the wait ended early (a signal after the
		// submission) or the kernel returned the submission count at the
		// timeout: wait again for what is left of the timeout, submitting
		// whatever is left.
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return submitted, nil
			}
			r.waitTS = unix.NsecToTimespec(int64(left))
		}
	}
}

func (r *Ring) enter(toSubmit, minComplete, flags uint32, arg unsafe.Pointer, argSz uintptr) (int, unix.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(toSubmit), uintptr(minComplete), uintptr(flags), uintptr(arg), argSz)
	return int(n), errno
}

// Reap copies up to len(dst) completions into dst, in completion order,
// advances the CQ head once, and returns how many it copied. It does not
// block and does not allocate. When the kernel parked completions in its
// overflow list (the CQ was full), Reap has it flush them into the ring
// and keeps reaping. The ring's own wake completions are consumed here.
func (r *Ring) Reap(dst []CQE) int {
	if r.fd < 0 {
		return 0
	}
	n := 0
	for {
		head := *r.kCQHead // only we store it
		tail := atomic.LoadUint32(r.kCQTail)
		for head != tail && n < len(dst) {
			c := r.cqes[head&r.cqMask]
			head++
			if c.UserData == wakeUserData {
				r.wakeRearm = true
				continue
			}
			dst[n] = c
			n++
		}
		atomic.StoreUint32(r.kCQHead, head)
		if n == len(dst) || head != tail {
			return n
		}
		if atomic.LoadUint32(r.kSQFlags)&(sqCQOverflow|sqTaskrun) == 0 {
			return n
		}
		// Room was made: ask the kernel to move overflowed CQEs in.
		r.overflows++
		if _, errno := r.enter(0, 0, enterGetEvents, nil, 0); errno != 0 && errno != unix.EINTR {
			return n
		}
		if atomic.LoadUint32(r.kCQTail) == tail {
			return n
		}
	}
}

// Wake ends a wait in progress in SubmitAndWait, or makes the next one
// return at once. Safe from any goroutine (but not concurrently with
// Close); wakes coalesce. The completion it causes is consumed by Reap.
func (r *Ring) Wake() error {
	if r.wakefd < 0 {
		return ErrNoWake
	}
	_, err := unix.Write(r.wakefd, one[:])
	if err != nil && err != unix.EAGAIN { // EAGAIN: counter saturated, a wake is pending anyway
		return fmt.Errorf("uring: wake: %w", err)
	}
	return nil
}

var one = [8]byte{1}

func (r *Ring) armWake() {
	if r.sqeTail-atomic.LoadUint32(r.kSQHead) >= r.sqEntries {
		return // SQ full: retried at the next Submit (no flush here: Submit calls us)
	}
	s := &r.sqes[r.sqeTail&r.sqMask]
	r.sqeTail++
	s.PrepRead(r.wakefd, r.wakeBuf[:], 0, wakeUserData)
	r.wakeRearm = false
}
