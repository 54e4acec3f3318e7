package uring

import (
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// newRing returns a ring closed at the end of the test, or skips the test
// when io_uring cannot be used here, saying why.
func newRing(t testing.TB, opts Options) *Ring {
	t.Helper()
	if err := Available(); err != nil {
		t.Skipf("io_uring not available: %v", err)
	}
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// collect waits for n CQEs (at most 5 s) and returns them in order.
func collect(t testing.TB, r *Ring, n int) []CQE {
	t.Helper()
	out := make([]CQE, 0, n)
	buf := make([]CQE, 64)
	deadline := time.Now().Add(5 * time.Second)
	for len(out) < n {
		if time.Now().After(deadline) {
			t.Fatalf("got %d of %d CQEs in 5s: %+v", len(out), n, out)
		}
		if _, err := r.SubmitAndWaitTimeout(1, 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		k := r.Reap(buf[:min(len(buf), n-len(out))])
		out = append(out, buf[:k]...)
	}
	return out
}

func socketpair(t testing.TB) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

// listenTCP opens a blocking loopback listener and returns it and its port.
func listenTCP(t testing.TB) (int, int) {
	t.Helper()
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(lfd) })
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(lfd, 64); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(lfd)
	if err != nil {
		t.Fatal(err)
	}
	return lfd, sa.(*unix.SockaddrInet4).Port
}

func dialTCP(t testing.TB, port int) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	return fd
}

// tcpPair returns a connected loopback TCP pair (client, server side).
func tcpPair(t testing.TB) (int, int) {
	t.Helper()
	lfd, port := listenTCP(t)
	c := dialTCP(t, port)
	s, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s) })
	unix.SetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	return c, s
}

// readFull reads exactly len(b) bytes with plain read(2).
func readFull(fd int, b []byte) error {
	for off := 0; off < len(b); {
		n, err := unix.Read(fd, b[off:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return unix.ECONNRESET
		}
		off += n
	}
	return nil
}

func unsafePointer(p *unix.RawSockaddrAny) unsafe.Pointer { return unsafe.Pointer(p) }
