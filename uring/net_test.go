package uring

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSendRecvSocketpair(t *testing.T) {
	r := newRing(t, Options{Entries: 16})
	a, b := socketpair(t)
	out := []byte("publish fx.eurusd 1.0842")
	in := make([]byte, 64)
	// Recv first: it parks until the Send in the same batch lands.
	if err := r.Recv(b, in, 0, 2); err != nil {
		t.Fatal(err)
	}
	if err := r.Send(a, out, 0, 1); err != nil {
		t.Fatal(err)
	}
	got := map[uint64]CQE{}
	for _, c := range collect(t, r, 2) {
		got[c.UserData] = c
	}
	if got[1].Res != int32(len(out)) || got[2].Res != int32(len(out)) || !bytes.Equal(in[:len(out)], out) {
		t.Fatalf("send %+v recv %+v data %q", got[1], got[2], in[:max(0, got[2].Res)])
	}
	// EOF: Recv returns 0 after the peer shuts down its write side.
	unix.Shutdown(a, unix.SHUT_WR)
	r.Recv(b, in, 0, 3)
	if c := collect(t, r, 1)[0]; c.Res != 0 {
		t.Fatalf("recv at EOF: %+v", c)
	}
}

// TestSendRecvTCPPartial sends 1 MiB over loopback TCP through a 32 KiB
// SO_SNDBUF: without MSG_WAITALL a send may be short and the remainder is
// resubmitted; with MSG_WAITALL the kernel finishes each send itself. A
// plain reader on the other side checks every byte. (Small send buffers
// make loopback TCP itself slow here, ~2 MB/s with plain write(2) too,
// hence only 1 MiB.)
func TestSendRecvTCPPartial(t *testing.T) {
	for _, waitAll := range []bool{false, true} {
		name := "short-sends"
		if waitAll {
			name = "waitall"
		}
		t.Run(name, func(t *testing.T) {
			r := newRing(t, Options{Entries: 16})
			c, s := tcpPair(t)
			if err := unix.SetsockoptInt(c, unix.SOL_SOCKET, unix.SO_SNDBUF, 32<<10); err != nil {
				t.Fatal(err)
			}
			data := make([]byte, 1<<20)
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			got := make([]byte, len(data))
			var wg sync.WaitGroup
			var rerr error
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(5 * time.Millisecond) // let the send buffer fill first
				rerr = readFull(s, got)
			}()
			flags := 0
			if waitAll {
				flags = unix.MSG_WAITALL
			}
			short, sends := 0, 0
			for off := 0; off < len(data); {
				if err := r.Send(c, data[off:], flags, uint64(off)); err != nil {
					t.Fatal(err)
				}
				cq := collect(t, r, 1)[0]
				if cq.Res <= 0 {
					t.Fatalf("send at %d: %+v", off, cq)
				}
				sends++
				if int(cq.Res) < len(data)-off {
					short++
				}
				off += int(cq.Res)
			}
			wg.Wait()
			if rerr != nil {
				t.Fatal(rerr)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("received bytes differ")
			}
			t.Logf("%d sends, %d short", sends, short)
			if waitAll && short != 0 {
				t.Fatalf("MSG_WAITALL send returned short %d times", short)
			}
			if !waitAll && short == 0 {
				t.Fatal("expected at least one short send through a 32 KiB send buffer")
			}
		})
	}
}

// TestSendZCNotification checks the zero-copy contract: the result CQE
// carries CQEFMore and does not release the buffer; the notification
// comes after it and does.
func TestSendZCNotification(t *testing.T) {
	r := newRing(t, Options{Entries: 16})
	if p, _ := r.Probe(); !p.Supports(OpSendZC) {
		t.Skip("kernel lacks IORING_OP_SEND_ZC (Linux >= 6.0)")
	}
	c, s := tcpPair(t)
	for _, size := range []int{100, 256 << 10} {
		buf := bytes.Repeat([]byte{'z'}, size)
		got := make([]byte, size)
		done := make(chan error, 1)
		go func() { done <- readFull(s, got) }()
		var z ZeroCopySend
		if err := r.SendZC(c, buf, unix.MSG_WAITALL, 9); err != nil {
			t.Fatal(err)
		}
		z.Start()
		if z.Reusable() {
			t.Fatal("buffer reusable while in flight")
		}
		first := collect(t, r, 1)[0]
		if first.Notif() {
			t.Fatalf("size %d: notification before the result: %+v", size, first)
		}
		if first.Res != int32(size) || !first.More() || first.ReleasesBuffer() {
			t.Fatalf("size %d: result CQE %+v (more %v)", size, first, first.More())
		}
		if z.Observe(first) || z.Reusable() || z.State != ZCAwaitingNotif || z.Result != int32(size) {
			t.Fatalf("after the result: %+v, want awaiting notification", z)
		}
		notif := collect(t, r, 1)[0]
		if !notif.Notif() || notif.UserData != 9 || notif.More() || !notif.ReleasesBuffer() {
			t.Fatalf("size %d: second CQE %+v is not the notification", size, notif)
		}
		if !z.Observe(notif) || !z.Reusable() {
			t.Fatalf("after the notification: %+v", z)
		}
		t.Logf("size %d: copied=%v (loopback copies)", size, z.Copied)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, buf) {
			t.Fatal("data differs")
		}
	}
	// An error result: the flags, not the result, say whether a
	// notification follows (this kernel may send one even for EBADF).
	var z ZeroCopySend
	r.SendZC(-1, []byte("x"), 0, 10)
	z.Start()
	e := collect(t, r, 1)[0]
	if !errors.Is(e.Err(), unix.EBADF) {
		t.Fatalf("send_zc on a bad fd: %+v", e)
	}
	if released := z.Observe(e); released == e.More() {
		t.Fatalf("error result with more=%v: released=%v", e.More(), released)
	}
	if e.More() {
		if n := collect(t, r, 1)[0]; !n.Notif() || !z.Observe(n) {
			t.Fatalf("after an error with CQEFMore: %+v", n)
		}
	}
	if !z.Reusable() {
		t.Fatalf("not reusable at the end: %+v", z)
	}
}

func TestAccept(t *testing.T) {
	r := newRing(t, Options{Entries: 16})
	lfd, port := listenTCP(t)
	var addr AcceptAddr
	if err := r.Accept(lfd, &addr, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	client := dialTCP(t, port)
	c := collect(t, r, 1)[0]
	if c.Res < 0 {
		t.Fatalf("accept: %v", c.Err())
	}
	nfd := int(c.Res)
	defer unix.Close(nfd)
	if addr.Raw.Addr.Family != unix.AF_INET || addr.Len != unix.SizeofSockaddrInet4 {
		t.Fatalf("peer address family %d len %d", addr.Raw.Addr.Family, addr.Len)
	}
	csa, _ := unix.Getsockname(client)
	in4 := (*unix.RawSockaddrInet4)(unsafePointer(&addr.Raw))
	if port := int(in4.Port>>8 | in4.Port<<8); port != csa.(*unix.SockaddrInet4).Port {
		t.Fatalf("peer port %d, client has %d", port, csa.(*unix.SockaddrInet4).Port)
	}
	if fl, _ := unix.FcntlInt(uintptr(nfd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
		t.Fatal("accepted fd is not non-blocking")
	}

	t.Run("multishot", func(t *testing.T) {
		if err := r.AcceptMultishot(lfd, unix.SOCK_CLOEXEC, 2); err != nil {
			t.Fatal(err)
		}
		r.Submit()
		for i := 0; i < 3; i++ {
			dialTCP(t, port)
		}
		for i, c := range collect(t, r, 3) {
			if c.UserData != 2 || c.Res < 0 || !c.More() {
				t.Fatalf("multishot accept %d: %+v", i, c)
			}
			unix.Close(int(c.Res))
		}
		r.Cancel(2, 3)
		got := map[uint64]CQE{}
		for _, c := range collect(t, r, 2) {
			got[c.UserData] = c
		}
		if !errors.Is(got[2].Err(), unix.ECANCELED) || got[2].More() || got[3].Res != 0 {
			t.Fatalf("cancel of multishot accept: %+v", got)
		}
	})
}

// TestCancelPendingRecv: a Recv with no data parks in the kernel; it ends
// with -ECANCELED when cancelled by user data, and when cancelled by fd
// before the fd is closed (closing alone would not end it).
func TestCancelPendingRecv(t *testing.T) {
	r := newRing(t, Options{Entries: 16})
	a, b := socketpair(t)
	_ = a
	buf := make([]byte, 64)
	r.Recv(b, buf, 0, 1)
	r.Submit()
	if _, err := r.SubmitAndWaitTimeout(1, 10*time.Millisecond); err != nil || r.Ready() != 0 {
		t.Fatalf("recv with no data completed: ready %d, %v", r.Ready(), err)
	}
	r.Cancel(1, 2)
	got := map[uint64]CQE{}
	for _, c := range collect(t, r, 2) {
		got[c.UserData] = c
	}
	if !errors.Is(got[1].Err(), unix.ECANCELED) || got[2].Res != 0 {
		t.Fatalf("cancel by user data: %+v", got)
	}
	r.Cancel(12345, 3)
	if c := collect(t, r, 1)[0]; !errors.Is(c.Err(), unix.ENOENT) {
		t.Fatalf("cancel of nothing: %+v", c)
	}

	// On close: cancel everything on the fd, then close it through the ring.
	c, s := tcpPair(t)
	_ = c
	dup, _ := unix.Dup(s)
	r.Recv(dup, buf, 0, 10)
	r.Recv(dup, buf[32:], 0, 11)
	r.Submit()
	r.CancelFd(dup, 12)
	sqe, _ := r.GetSQE()
	r.sqes[(r.sqeTail-2)&r.sqMask].Flags |= SQEIOLink
	sqe.PrepClose(dup, 13)
	got = map[uint64]CQE{}
	for _, c := range collect(t, r, 4) {
		got[c.UserData] = c
	}
	if !errors.Is(got[10].Err(), unix.ECANCELED) || !errors.Is(got[11].Err(), unix.ECANCELED) {
		t.Fatalf("recvs after cancel by fd: %+v", got)
	}
	if got[12].Res != 2 || got[13].Res != 0 {
		t.Fatalf("cancel-fd found %d (want 2), close %+v", got[12].Res, got[13])
	}
}

func TestPollMultishot(t *testing.T) {
	r := newRing(t, Options{Entries: 8})
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	r.PollMultishot(efd, unix.POLLIN, 5)
	r.Submit()
	var v [8]byte
	for i := 0; i < 3; i++ {
		unix.Write(efd, one[:])
		c := collect(t, r, 1)[0]
		if c.UserData != 5 || uint32(c.Res)&unix.POLLIN == 0 || !c.More() {
			t.Fatalf("poll event %d: %+v", i, c)
		}
		unix.Read(efd, v[:])
	}
	r.PollRemove(5, 6)
	got := map[uint64]CQE{}
	for _, c := range collect(t, r, 2) {
		got[c.UserData] = c
	}
	if got[5].More() || got[6].Res != 0 {
		t.Fatalf("poll remove: %+v", got)
	}
	// One-shot poll.
	r.PollAdd(efd, unix.POLLIN, 7)
	unix.Write(efd, one[:])
	if c := collect(t, r, 1)[0]; c.UserData != 7 || c.More() {
		t.Fatalf("one-shot poll: %+v", c)
	}
}

// TestRecvNonblockingSocket records how the kernel treats an O_NONBLOCK
// socket: the engine's sockets are non-blocking (for the epoll backend).
func TestRecvNonblockingSocket(t *testing.T) {
	r := newRing(t, Options{Entries: 8})
	a, b := socketpair(t)
	unix.SetNonblock(b, true)
	buf := make([]byte, 16)
	r.Recv(b, buf, 0, 1)
	r.SubmitAndWaitTimeout(1, 10*time.Millisecond)
	if r.Ready() == 1 {
		c := collect(t, r, 1)[0]
		if !errors.Is(c.Err(), unix.EAGAIN) {
			t.Fatalf("nonblocking recv: %+v", c)
		}
		t.Log("recv on an O_NONBLOCK socket returns -EAGAIN: the io_uring engine must clear O_NONBLOCK")
		return
	}
	unix.Write(a, []byte("x"))
	if c := collect(t, r, 1)[0]; c.Res != 1 {
		t.Fatalf("recv: %+v", c)
	}
	t.Log("recv on an O_NONBLOCK socket parks until data arrives")
}

// TestSendmsgGather sends several buffers (a header, a large body, a
// trailer) with one sendmsg, copying and zero-copy, and checks the bytes
// arrive in order and, for the zero-copy op, the notification contract.
func TestSendmsgGather(t *testing.T) {
	r := newRing(t, Options{Entries: 16})
	p, _ := r.Probe()
	c, s := tcpPair(t)
	for _, zc := range []bool{false, true} {
		if zc && !p.Supports(OpSendmsgZC) {
			t.Log("kernel lacks IORING_OP_SENDMSG_ZC (Linux >= 6.1): zero-copy half skipped")
			continue
		}
		parts := [][]byte{[]byte("head"), bytes.Repeat([]byte{'b'}, 200<<10), []byte("tail")}
		var want []byte
		iovs := make([]unix.Iovec, len(parts))
		for i, b := range parts {
			want = append(want, b...)
			iovs[i].Base = &b[0]
			iovs[i].SetLen(len(b))
		}
		var msg unix.Msghdr
		msg.Iov = &iovs[0]
		msg.SetIovlen(len(iovs))
		got := make([]byte, len(want))
		done := make(chan error, 1)
		go func() { done <- readFull(s, got) }()
		var err error
		if zc {
			err = r.SendmsgZC(c, &msg, unix.MSG_WAITALL, 21)
		} else {
			err = r.Sendmsg(c, &msg, unix.MSG_WAITALL, 21)
		}
		if err != nil {
			t.Fatal(err)
		}
		res := collect(t, r, 1)[0]
		if res.Res != int32(len(want)) || res.Notif() {
			t.Fatalf("zc=%v: result %+v, want %d bytes", zc, res, len(want))
		}
		if zc != res.More() {
			t.Fatalf("zc=%v: result more=%v", zc, res.More())
		}
		if zc {
			if n := collect(t, r, 1)[0]; !n.Notif() || n.UserData != 21 || !n.ReleasesBuffer() {
				t.Fatalf("second CQE %+v is not the notification", n)
			}
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("zc=%v: gathered bytes differ", zc)
		}
	}
}
