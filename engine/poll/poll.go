// Package poll is the readiness layer under Tandem's event loops: a small
// Poller interface and its epoll implementation, plus a wake-up channel that
// other goroutines (the journal flusher, the server) use to interrupt a
// loop blocked in Wait. It knows nothing of frames or journals.
//
// A Poller is owned by one event loop: Add, Mod, Del and Wait are called only
// from that loop's goroutine; Wake is safe from any goroutine.
package poll

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Event bits, the epoll values (an io_uring backend maps to the same bits).
const (
	Readable = unix.EPOLLIN
	Writable = unix.EPOLLOUT
	Hangup   = unix.EPOLLHUP | unix.EPOLLRDHUP
	Error    = unix.EPOLLERR
)

// Event is one readiness notification.
type Event struct {
	Fd     int32
	Events uint32
}

// Poller waits for readiness on file descriptors.
type Poller interface {
	// Add starts watching fd for events (level-triggered).
	Add(fd int, events uint32) error
	// Mod changes the events watched on fd.
	Mod(fd int, events uint32) error
	// Del stops watching fd.
	Del(fd int) error
	// Wait fills evs with ready descriptors and returns how many, blocking
	// for at most timeoutMillis (-1: no limit). A Wake makes it return; the
	// wake itself is consumed and not reported as an event.
	Wait(evs []Event, timeoutMillis int) (int, error)
	// Wake interrupts a Wait in progress, or makes the next one return at
	// once. Safe from any goroutine; wakes coalesce.
	Wake() error
	// Name says which backend this is ("epoll").
	Name() string
	Close() error
}

// Epoll is the epoll(7) Poller, with an eventfd for Wake.
type Epoll struct {
	epfd   int
	wakefd int
	raw    []unix.EpollEvent
	wbuf   [8]byte
}

// ErrClosed is returned by a Poller used after Close.
var ErrClosed = errors.New("poll: closed")

// NewEpoll creates an epoll instance and its wake eventfd.
func NewEpoll() (*Epoll, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("poll: epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("poll: eventfd: %w", err)
	}
	p := &Epoll{epfd: epfd, wakefd: wakefd, raw: make([]unix.EpollEvent, 256)}
	if err := p.Add(wakefd, Readable); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Name implements Poller.
func (p *Epoll) Name() string { return "epoll" }

// Add implements Poller.
func (p *Epoll) Add(fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("poll: epoll_ctl add %d: %w", fd, err)
	}
	return nil
}

// Mod implements Poller.
func (p *Epoll) Mod(fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, fd, &ev); err != nil {
		return fmt.Errorf("poll: epoll_ctl mod %d: %w", fd, err)
	}
	return nil
}

// Del implements Poller.
func (p *Epoll) Del(fd int) error {
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
		return fmt.Errorf("poll: epoll_ctl del %d: %w", fd, err)
	}
	return nil
}

// Wait implements Poller.
func (p *Epoll) Wait(evs []Event, timeoutMillis int) (int, error) {
	raw := p.raw
	if len(evs) < len(raw) {
		raw = raw[:len(evs)]
	}
	n, err := unix.EpollWait(p.epfd, raw, timeoutMillis)
	if err != nil {
		if err == unix.EINTR {
			return 0, nil
		}
		return 0, fmt.Errorf("poll: epoll_wait: %w", err)
	}
	out := 0
	for i := 0; i < n; i++ {
		if int(raw[i].Fd) == p.wakefd {
			// Drain the counter; EAGAIN means another drain got it.
			unix.Read(p.wakefd, p.wbuf[:])
			continue
		}
		evs[out] = Event{Fd: raw[i].Fd, Events: raw[i].Events}
		out++
	}
	return out, nil
}

var one = [8]byte{1}

// Wake implements Poller.
func (p *Epoll) Wake() error {
	_, err := unix.Write(p.wakefd, one[:])
	if err != nil && err != unix.EAGAIN { // EAGAIN: counter saturated, a wake is pending anyway
		return fmt.Errorf("poll: wake: %w", err)
	}
	return nil
}

// Close implements Poller.
func (p *Epoll) Close() error {
	err1 := unix.Close(p.wakefd)
	err2 := unix.Close(p.epfd)
	return errors.Join(err1, err2)
}

// Available reports whether epoll works here (it always does on Linux; the
// io_uring backend has a real probe).
func Available() error {
	if _, err := os.Stat("/proc/self"); err != nil {
		return err
	}
	return nil
}
