package engine

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/engine/poll"
	"github.com/tandemhq/tandem/wire"
)

// BenchmarkFraming is the comparison docs/architecture.md promises between
// an epoll event loop and Go's netpoller (a goroutine per connection), for
// framing only: no journal, no acks. Each client connection writes b.N/clients
// Publish frames (128-byte payloads, prebuilt with wire.AppendPublish, 2048
// frames per write) over loopback as fast as it can; the server side reads,
// splits and decodes every frame (wire.Split + wire.DecodePublish) and counts
// them. The work unit is one frame: b.N frames in total per run.
//
//   - loop=epoll: one goroutine locked to its OS thread, a poll.Epoll, a raw
//     non-blocking listening socket and non-blocking accepted sockets,
//     level-triggered, up to framingReadsPerEvent reads per event into a
//     per-connection buffer (the shape of engine/loop.go).
//   - loop=netpoll: net.Listen and a goroutine per connection doing
//     net.Conn.Read into the same kind of buffer.
//
// The clients are identical in both variants (net.Dial, blocking writes) and
// run in this process, so they share the machine's CPUs with the server.
func BenchmarkFraming(b *testing.B) {
	for _, variant := range []string{"epoll", "netpoll"} {
		b.Run("loop="+variant, func(b *testing.B) {
			for _, clients := range []int{1, 4} {
				b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
					benchFraming(b, variant, clients)
				})
			}
		})
	}
}

const (
	framingPayload       = 128
	framingBatch         = 2048      // frames per client write
	framingReadBuf       = 256 << 10 // per-connection read buffer, both variants
	framingReadsPerEvent = 4         // like maxReadsPerEvent in conn.go
)

// framingServer is one side of the comparison: it accepts n connections,
// then counts frames until every connection has closed.
type framingServer interface {
	addr() string
	// serve runs until all n connections are accepted and closed; it
	// returns the frames counted.
	serve(n int) (uint64, error)
	close()
}

func benchFraming(b *testing.B, variant string, clients int) {
	var srv framingServer
	var err error
	switch variant {
	case "epoll":
		srv, err = newEpollFramingServer()
	case "netpoll":
		srv, err = newNetpollFramingServer()
	}
	if err != nil {
		b.Fatal(err)
	}
	defer srv.close()

	// One batch buffer shared (read-only) by every client.
	topic := []byte("bench")
	payload := make([]byte, framingPayload)
	for i := range payload {
		payload[i] = byte(i)
	}
	var batch []byte
	for i := 0; i < framingBatch; i++ {
		batch = wire.AppendPublish(batch, uint64(i+1), wire.AckNone, topic, payload)
	}
	frameSize := len(batch) / framingBatch

	type result struct {
		n   uint64
		err error
	}
	served := make(chan result, 1)
	go func() {
		n, err := srv.serve(clients)
		served <- result{n, err}
	}()
	conns := make([]net.Conn, clients)
	for i := range conns {
		c, err := net.DialTimeout("tcp", srv.addr(), 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}

	b.SetBytes(int64(frameSize))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, clients)
	for i, c := range conns {
		per := b.N / clients
		if i < b.N%clients {
			per++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close() // EOF tells the server this connection is done
			c.SetWriteDeadline(time.Now().Add(5 * time.Minute))
			for left := per; left > 0; {
				k := min(left, framingBatch)
				if _, err := c.Write(batch[:k*frameSize]); err != nil {
					errs[i] = err
					return
				}
				left -= k
			}
		}()
	}
	var res result
	select {
	case res = <-served:
	case <-time.After(5 * time.Minute):
		b.Fatal("framing server did not finish")
	}
	el := time.Since(start)
	b.StopTimer()
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	if res.err != nil {
		b.Fatal(res.err)
	}
	if res.n != uint64(b.N) {
		b.Fatalf("server counted %d frames, clients sent %d", res.n, b.N)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "frames/s")
}

// framingParser is the per-connection state both servers share: a read
// buffer and the parse of every whole frame in it.
type framingParser struct {
	buf    []byte
	n      int // bytes of buf filled
	frames uint64
}

// parse splits and decodes every whole frame in buf[:n] and keeps the
// partial frame at the front.
func (p *framingParser) parse() error {
	off := 0
	var m wire.Publish
	for {
		f, k, err := wire.Split(p.buf[off:p.n], len(p.buf))
		if err != nil {
			return err
		}
		if k == 0 {
			break
		}
		off += k
		if f.Type != wire.TypePublish {
			return fmt.Errorf("framing: got %s", f.Type)
		}
		if err := wire.DecodePublish(f.Body, &m); err != nil {
			return err
		}
		if len(m.Payload) != framingPayload {
			return fmt.Errorf("framing: payload of %d bytes", len(m.Payload))
		}
		p.frames++
	}
	if off > 0 {
		p.n = copy(p.buf, p.buf[off:p.n])
	}
	return nil
}

// netpollFramingServer: a goroutine per connection, net.Conn.Read.
type netpollFramingServer struct {
	ln net.Listener
}

func newNetpollFramingServer() (*netpollFramingServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return &netpollFramingServer{ln: ln}, nil
}

func (s *netpollFramingServer) addr() string { return s.ln.Addr().String() }
func (s *netpollFramingServer) close()       { s.ln.Close() }

func (s *netpollFramingServer) serve(n int) (uint64, error) {
	var total atomic.Uint64
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		c, err := s.ln.Accept()
		if err != nil {
			return 0, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			p := &framingParser{buf: make([]byte, framingReadBuf)}
			for {
				k, err := c.Read(p.buf[p.n:])
				if k > 0 {
					p.n += k
					if err := p.parse(); err != nil {
						errs[i] = err
						return
					}
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					errs[i] = err
					return
				}
			}
			total.Add(p.frames)
		}()
	}
	wg.Wait()
	return total.Load(), errors.Join(errs...)
}

// epollFramingServer: one OS thread, poll.Epoll, raw non-blocking sockets,
// level-triggered.
type epollFramingServer struct {
	lfd int
	ep  *poll.Epoll
	a   string
}

func newEpollFramingServer() (*epollFramingServer, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	sa := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Listen(fd, 128); err != nil {
		unix.Close(fd)
		return nil, err
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ep, err := poll.NewEpoll()
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := ep.Add(fd, poll.Readable); err != nil {
		ep.Close()
		unix.Close(fd)
		return nil, err
	}
	return &epollFramingServer{lfd: fd, ep: ep, a: sockaddrToTCP(got).String()}, nil
}

func (s *epollFramingServer) addr() string { return s.a }

func (s *epollFramingServer) close() {
	unix.Close(s.lfd)
	s.ep.Close()
}

func (s *epollFramingServer) serve(n int) (uint64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	conns := make(map[int32]*framingParser)
	defer func() {
		for fd := range conns {
			unix.Close(int(fd))
		}
	}()
	evs := make([]poll.Event, 256)
	accepted, closed := 0, 0
	var total uint64
	deadline := time.Now().Add(5 * time.Minute)
	for closed < n {
		k, err := s.ep.Wait(evs, 100)
		if err != nil {
			return total, err
		}
		if k == 0 && time.Now().After(deadline) {
			return total, errors.New("framing: epoll server timed out")
		}
		for _, ev := range evs[:k] {
			if int(ev.Fd) == s.lfd {
				for accepted < n {
					nfd, _, err := unix.Accept4(s.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
					if err == unix.EAGAIN {
						break
					}
					if err != nil {
						return total, err
					}
					if err := s.ep.Add(nfd, poll.Readable|unix.EPOLLRDHUP); err != nil {
						unix.Close(nfd)
						return total, err
					}
					conns[int32(nfd)] = &framingParser{buf: make([]byte, framingReadBuf)}
					accepted++
				}
				continue
			}
			p := conns[ev.Fd]
			if p == nil {
				continue
			}
			for i := 0; i < framingReadsPerEvent; i++ {
				r, err := unix.Read(int(ev.Fd), p.buf[p.n:])
				if r > 0 {
					p.n += r
					if err := p.parse(); err != nil {
						return total, err
					}
					continue
				}
				if err == unix.EAGAIN || err == unix.EINTR {
					break
				}
				if err != nil {
					return total, err
				}
				// EOF: this client is done.
				total += p.frames
				s.ep.Del(int(ev.Fd))
				unix.Close(int(ev.Fd))
				delete(conns, ev.Fd)
				closed++
				break
			}
		}
	}
	return total, nil
}
