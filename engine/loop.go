package engine

import (
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/engine/poll"
	"github.com/tandemhq/tandem/internal/hist"
)

// timerPeriod is how often a loop checks heartbeats and logon deadlines.
const timerPeriod = 5 * time.Millisecond

// loop is one shard: a goroutine on its own OS thread that owns a Poller, a
// listening socket and its connections. Everything below is touched only by
// the loop's goroutine except the atomics.
type loop struct {
	id     int
	cpu    int // -1: not pinned
	srv    *Server
	poller poll.Poller // the epoll backend; nil with io_uring
	ur     *uringIO    // the io_uring backend; nil with epoll
	lfd    int         // listening socket, -1 once closed

	// backendMu orders wake (any goroutine) against closeBackend.
	backendMu     sync.RWMutex
	backendClosed bool

	conns  map[int32]*conn
	events []poll.Event
	dirty  []*conn // connections with output to write this iteration
	subbed []*conn // connections with at least one subscription
	acking []*conn // connections waiting for durability (acks, flushes)

	now        int64  // time.Now().UnixNano() for this iteration
	busy       bool   // a pump stopped on its scan budget: come back without sleeping
	lastTimers int64  // when timers last ran
	synced     uint64 // journal synced seq this loop has acted on

	// sleeping is true while the loop blocks in Wait; interested while it
	// has connections waiting for the journal. The flusher wakes a loop
	// only when both are set (see Server.onSync).
	sleeping   atomic.Bool
	interested atomic.Bool

	nconns atomic.Int64
	// maxPending is the most output any connection of this loop held (a
	// test and stat hook for the per-connection memory bound).
	maxPending atomic.Int64
	nsubs      atomic.Int64
	// zero-copy deliveries: sends, bytes sent from the journal mapping,
	// and journal segment holds not yet released (notification pending).
	zcSends, zcBytes, zcHolds atomic.Int64
	// connections switched back to copying because the kernel copied
	zcCopiedConns atomic.Int64
	// zcMinReady publishes ur.zcMin to other goroutines once the ring is open
	zcMinReady atomic.Int64

	// Metrics shards (read by Server.Metrics): deliveries written, slow
	// consumers now (connections whose deliveries wait on WriteHighWater),
	// and persisted-ack latency in nanoseconds, recorded by this loop only.
	delivered atomic.Uint64
	nslow     atomic.Int64
	ackHist   hist.Histogram

	// memory placement as applied (a test and stat hook): the thread's
	// memory policy and the CPU the ring was created on (-1: no ring).
	memPolicy, ringCPU int
	tid                int // the loop's OS thread (it stays locked to it)

	// scratch for the publish path (reused, never escapes)
	batch publishBatch

	// fail-stop (failstop.go): the loop's pass ran, its drain deadline,
	// and failDone, closed (failClosed) once its connections are drained.
	failHandled, failClosed bool
	failDeadline            int64
	failDone                chan struct{}
	sec                     loopSec // logon verdicts from the workers, stalled connections (auth.go)
}

func newLoop(s *Server, id, cpu int, useUring bool) (*loop, error) {
	lp := &loop{id: id, cpu: cpu, srv: s, lfd: -1, conns: make(map[int32]*conn), ringCPU: -1, failDone: make(chan struct{})}
	lp.ackHist.Init(AckHistBase)
	if useUring {
		lp.ur = newUringIO(s.cfg.RingEntries) // the ring itself is created in run
		return lp, nil
	}
	p, err := poll.NewEpoll()
	if err != nil {
		return nil, err
	}
	lp.poller = p
	lp.events = make([]poll.Event, 256)
	return lp, nil
}

// wake interrupts the loop's wait; safe from any goroutine, also while or
// after the backend is closed (the journal's flusher may still sync).
func (lp *loop) wake() {
	lp.backendMu.RLock()
	defer lp.backendMu.RUnlock()
	if lp.backendClosed {
		return
	}
	if lp.ur != nil {
		if lp.ur.ring != nil {
			lp.ur.ring.Wake()
		}
		return
	}
	lp.poller.Wake()
}

// closeBackend releases the loop's poller or ring once it has stopped.
func (lp *loop) closeBackend() {
	lp.backendMu.Lock()
	defer lp.backendMu.Unlock()
	if lp.backendClosed {
		return
	}
	lp.backendClosed = true
	if lp.ur != nil {
		if lp.ur.ring != nil {
			lp.ur.ring.Close()
		}
		return
	}
	lp.poller.Close()
}

// listen opens this loop's SO_REUSEPORT listening socket on addr (with the
// given port when non-zero, so every loop shares the first loop's port).
func (lp *loop) listen(addr string, port int) (net.Addr, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	if port != 0 {
		ta.Port = port
	}
	family := unix.AF_INET
	var sa unix.Sockaddr
	if ip4 := ta.IP.To4(); ip4 != nil || ta.IP == nil {
		a := &unix.SockaddrInet4{Port: ta.Port}
		if ip4 != nil {
			copy(a.Addr[:], ip4)
		}
		sa = a
	} else {
		family = unix.AF_INET6
		a := &unix.SockaddrInet6{Port: ta.Port}
		copy(a.Addr[:], ta.IP.To16())
		sa = a
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("listen %s: socket: %w", addr, err)
	}
	fail := func(what string, err error) (net.Addr, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("listen %s: %s: %w", ta, what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return fail("SO_REUSEPORT", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		return fail("listen", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	if lp.poller != nil {
		if err := lp.poller.Add(fd, poll.Readable); err != nil {
			return fail("poll", err)
		}
	}
	lp.lfd = fd
	return sockaddrToTCP(got), nil
}

func sockaddrToTCP(sa unix.Sockaddr) *net.TCPAddr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	}
	return &net.TCPAddr{}
}

func (lp *loop) closeListener() {
	if lp.lfd < 0 {
		return
	}
	if lp.ur != nil {
		if lp.ur.ring != nil {
			lp.ur.closeListener(lp.lfd)
		} else {
			unix.Close(lp.lfd)
		}
	} else {
		lp.poller.Del(lp.lfd)
		unix.Close(lp.lfd)
	}
	lp.lfd = -1
}

// run is the loop's goroutine.
func (lp *loop) run(started chan<- error) {
	defer lp.srv.done.Done()
	defer lp.failExit()
	// Locked for good: the goroutine exits locked, so the runtime ends the
	// thread with it rather than handing a thread pinned to one core (and
	// with its memory policy) to other goroutines.
	runtime.LockOSThread()
	lp.tid = unix.Gettid()
	if lp.cpu >= 0 {
		if err := poll.PinThread(lp.cpu); err != nil {
			started <- err
			return
		}
		if lp.srv.cfg.MemoryPlacement != "off" {
			// Node-local pages for what this thread touches first: its
			// ring, its connections' buffers (when fresh from the OS).
			if err := poll.LocalMemPolicy(); err != nil {
				lp.srv.log.Warn("cannot set a node-local memory policy", "loop", lp.id, "err", err)
			}
		}
	}
	lp.memPolicy, _ = poll.ThreadMemPolicy()
	if lp.ur != nil {
		lp.backendMu.Lock()
		err := lp.ur.open(lp.srv.cfg.ZeroCopyMin)
		lp.ringCPU = poll.CurrentCPU()
		lp.backendMu.Unlock()
		lp.zcMinReady.Store(int64(lp.ur.zcMin))
		if err != nil {
			started <- fmt.Errorf("loop %d: %w", lp.id, err)
			return
		}
		if err := lp.ur.armAccept(lp.lfd); err != nil {
			started <- err
			return
		}
		started <- nil
		lp.runUring()
		return
	}
	started <- nil
	lp.runEpoll()
}

// runEpoll is the loop driven by epoll: readiness, then read(2)/write(2).
func (lp *loop) runEpoll() {
	s := lp.srv
	for {
		timeout := lp.timeout()
		if lp.busy {
			timeout, lp.busy = 0, false
		}
		lp.sleeping.Store(true)
		if lp.interested.Load() && s.ackPoint() > lp.synced || s.stopping.Load() {
			timeout = 0 // a sync (or stop) landed before we announced we sleep
		}
		n, err := lp.poller.Wait(lp.events, timeout)
		lp.sleeping.Store(false)
		if err != nil {
			s.log.Error("event loop wait failed", "loop", lp.id, "err", err)
			lp.shutdown()
			return
		}
		lp.now = time.Now().UnixNano()
		for i := 0; i < n; i++ {
			ev := lp.events[i]
			if int(ev.Fd) == lp.lfd {
				lp.accept()
				continue
			}
			c := lp.conns[ev.Fd]
			if c == nil {
				continue
			}
			if ev.Events&(poll.Readable|poll.Hangup|poll.Error) != 0 {
				c.onReadable()
			}
			if ev.Events&poll.Writable != 0 && !c.closed {
				c.onWritable()
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
		if s.stopping.Load() {
			if lp.stop() {
				return
			}
		}
	}
}

// timeout is how long Wait may block: until the next timer check when some
// connection has a deadline, else a second (stop and syncs wake us anyway).
func (lp *loop) timeout() int {
	if lp.sec.ready.Load() {
		return 0 // a logon verdict is waiting
	}
	if len(lp.conns) > 0 {
		return int(timerPeriod / time.Millisecond)
	}
	return 1000
}

// stop runs the shutdown sequence; it returns true when the loop may exit.
func (lp *loop) stop() bool {
	lp.closeListener()
	if !lp.srv.drained.Load() {
		// Stop taking input; wait for the journal to sync what we appended.
		for _, c := range lp.conns {
			c.pauseReading(true)
		}
		return false
	}
	lp.afterSync()
	for _, c := range lp.conns {
		c.fail(codeShutdown, "server shutting down")
	}
	lp.flushWrites()
	lp.shutdown()
	return true
}

// shutdown closes every connection.
func (lp *loop) shutdown() {
	lp.closeListener()
	for _, c := range lp.conns {
		c.close()
	}
}

func (lp *loop) accept() {
	for {
		nfd, sa, err := unix.Accept4(lp.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			if err != unix.EAGAIN && err != unix.ECONNABORTED && err != unix.EINTR {
				lp.acceptFailed(err)
			}
			return
		}
		lp.sec.acceptBackoff = 0
		c := lp.admit(nfd, sockaddrString(sa))
		if c == nil {
			continue
		}
		if err := lp.poller.Add(c.fd, poll.Readable|unix.EPOLLRDHUP); err != nil {
			lp.srv.log.Warn("register connection failed", "err", err)
			unix.Close(c.fd)
			continue
		}
		lp.addConn(c)
	}
}

func (lp *loop) addConn(c *conn) {
	lp.conns[int32(c.fd)] = c
	lp.nconns.Add(1)
}

func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	}
	return "?"
}

// afterSync sends the acks and deliveries that new durable records allow.
func (lp *loop) afterSync() {
	// Every connection with queued acks is examined, not only when the ack
	// point moved: an ack queued for a record that is already durable (a
	// Flush after everything synced, a duplicate) must go out now.
	lp.finishAuths()
	lp.resumeStalled()
	synced := lp.srv.ackPoint()
	lp.synced = synced
	if len(lp.acking) > 0 {
		k := 0
		for _, c := range lp.acking {
			c.releaseAcks(synced)
			if !c.closed && c.acks.len() > 0 {
				lp.acking[k] = c
				k++
			} else {
				c.inAcking = false
			}
		}
		clear(lp.acking[k:])
		lp.acking = lp.acking[:k]
	}
	for _, c := range lp.subbed {
		c.pump()
	}
	lp.interested.Store(len(lp.acking) > 0 || len(lp.subbed) > 0)
}

func (lp *loop) markDirty(c *conn) {
	if !c.dirty {
		c.dirty = true
		lp.dirty = append(lp.dirty, c)
	}
}

func (lp *loop) flushWrites() {
	for i, c := range lp.dirty {
		c.dirty = false
		if !c.closed {
			c.flush()
		}
		lp.dirty[i] = nil
	}
	lp.dirty = lp.dirty[:0]
}

// timers sends heartbeats and closes silent connections and those that
// never logged on.
func (lp *loop) timers() {
	lp.retryAccept()
	for _, c := range lp.conns {
		c.checkTimers(lp.now)
	}
}

func (lp *loop) removeConn(c *conn) {
	delete(lp.conns, int32(c.fd))
	lp.nconns.Add(-1)
	lp.subbed = removeFrom(lp.subbed, c)
	lp.acking = removeFrom(lp.acking, c)
}

func removeFrom(list []*conn, c *conn) []*conn {
	for i, x := range list {
		if x == c {
			last := len(list) - 1
			list[i] = list[last]
			list[last] = nil
			return list[:last]
		}
	}
	return list
}
