package uring

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestNopBatches(t *testing.T) {
	r := newRing(t, Options{Entries: 256})
	if r.SQEntries() != 256 || r.CQEntries() != 512 {
		t.Fatalf("sizes %d/%d, want 256/512", r.SQEntries(), r.CQEntries())
	}
	next := uint64(1)
	for _, batch := range []int{1, 7, 64, 256} {
		first := next
		for i := 0; i < batch; i++ {
			if err := r.Nop(next); err != nil {
				t.Fatalf("batch %d, nop %d: %v", batch, i, err)
			}
			next++
		}
		if r.Pending() != batch {
			t.Fatalf("Pending = %d, want %d", r.Pending(), batch)
		}
		n, err := r.SubmitAndWait(batch)
		if err != nil || n != batch {
			t.Fatalf("SubmitAndWait(%d) = %d, %v", batch, n, err)
		}
		if r.Ready() != batch {
			t.Fatalf("Ready = %d, want %d", r.Ready(), batch)
		}
		cqes := collect(t, r, batch)
		for i, c := range cqes {
			if c.UserData != first+uint64(i) || c.Res != 0 || c.Flags != 0 {
				t.Fatalf("batch %d: cqe %d = %+v, want user data %d res 0", batch, i, c, first+uint64(i))
			}
		}
	}
	if r.Ready() != 0 || r.Pending() != 0 {
		t.Fatalf("after reaping: ready %d pending %d", r.Ready(), r.Pending())
	}
}

// TestBatchWithBadSQE: an SQE the kernel rejects gets its own error CQE
// and does not hold back the rest of the batch.
func TestBatchWithBadSQE(t *testing.T) {
	r := newRing(t, Options{Entries: 8})
	r.Nop(1)
	s, _ := r.GetSQE()
	s.PrepNop(2)
	s.Opcode = Op(250) // no such operation
	r.Nop(3)
	got := map[uint64]CQE{}
	for _, c := range collect(t, r, 3) {
		got[c.UserData] = c
	}
	if got[1].Res != 0 || !errors.Is(got[2].Err(), unix.EINVAL) || got[3].Res != 0 || r.Pending() != 0 {
		t.Fatalf("batch with a bad opcode: %+v, pending %d", got, r.Pending())
	}
}

func TestSQFull(t *testing.T) {
	r := newRing(t, Options{Entries: 4})
	for i := 0; i < 4; i++ {
		if err := r.Nop(uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Nop(99); !errors.Is(err, ErrSQFull) {
		t.Fatalf("fifth Nop on a 4-entry SQ: %v, want ErrSQFull", err)
	}
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	if err := r.Nop(4); err != nil {
		t.Fatalf("after Submit: %v", err)
	}
	collect(t, r, 5)

	f := newRing(t, Options{Entries: 4, FlushWhenFull: true})
	for i := 0; i < 10; i++ {
		if err := f.Nop(uint64(i)); err != nil {
			t.Fatalf("FlushWhenFull nop %d: %v", i, err)
		}
	}
	cqes := collect(t, f, 10)
	for i, c := range cqes {
		if c.UserData != uint64(i) {
			t.Fatalf("cqe %d has user data %d", i, c.UserData)
		}
	}
}

// TestCQOverflow fills a 4-entry CQ with 3x as many completions before
// reaping: none may be lost, and order is kept.
func TestCQOverflow(t *testing.T) {
	r := newRing(t, Options{Entries: 4, CQEntries: 4})
	if r.CQEntries() != 4 {
		t.Fatalf("CQ entries %d, want 4", r.CQEntries())
	}
	const total = 12
	for i := 0; i < total; i += 4 {
		for j := 0; j < 4; j++ {
			if err := r.Nop(uint64(i + j)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := r.Submit(); err != nil && !errors.Is(err, ErrBusy) {
			t.Fatal(err)
		}
	}
	if got := atomicFlags(r); got&sqCQOverflow == 0 {
		t.Logf("kernel did not flag IORING_SQ_CQ_OVERFLOW (flags %#x)", got)
	}
	var got []CQE
	buf := make([]CQE, 3) // smaller than the CQ on purpose
	for tries := 0; len(got) < total && tries < 100; tries++ {
		if _, err := r.Submit(); err != nil && !errors.Is(err, ErrBusy) {
			t.Fatal(err)
		}
		n := r.Reap(buf)
		got = append(got, buf[:n]...)
	}
	if len(got) != total {
		t.Fatalf("reaped %d of %d", len(got), total)
	}
	for i, c := range got {
		if c.UserData != uint64(i) {
			t.Fatalf("cqe %d has user data %d (order lost)", i, c.UserData)
		}
	}
	if r.Dropped() != 0 || r.Overflows() == 0 {
		t.Fatalf("Dropped = %d, Overflows = %d", r.Dropped(), r.Overflows())
	}
}

func atomicFlags(r *Ring) uint32 { return *r.kSQFlags }

func TestWakeFromAnotherGoroutine(t *testing.T) {
	r := newRing(t, Options{Entries: 8, Wake: true})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(20 * time.Millisecond)
		if err := r.Wake(); err != nil {
			t.Error(err)
		}
	}()
	start := time.Now()
	if _, err := r.SubmitAndWait(1); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("wait took %v", d)
	}
	wg.Wait()
	buf := make([]CQE, 4)
	if n := r.Reap(buf); n != 0 {
		t.Fatalf("Reap returned the wake completion: %+v", buf[:n])
	}
	// Re-armed: a second wake works too, and so does a wake before the wait.
	if err := r.Wake(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SubmitAndWaitTimeout(1, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if r.Ready() == 0 {
		t.Fatal("a wake before the wait did not end it")
	}
	r.Reap(buf)
	// Without a wake, a timed wait times out with nothing ready.
	start = time.Now()
	if _, err := r.SubmitAndWaitTimeout(1, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if r.Ready() != 0 || time.Since(start) < 15*time.Millisecond {
		t.Fatalf("timed wait: ready %d after %v", r.Ready(), time.Since(start))
	}
	noWake := newRing(t, Options{Entries: 2})
	if err := noWake.Wake(); !errors.Is(err, ErrNoWake) {
		t.Fatalf("Wake without Options.Wake: %v", err)
	}
}

func TestFdatasyncAndWritev(t *testing.T) {
	r := newRing(t, Options{Entries: 8})
	f, err := os.Create(filepath.Join(t.TempDir(), "seg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	a, b := []byte("hello, "), []byte("journal\n")
	iovs := []unix.Iovec{{Base: &a[0]}, {Base: &b[0]}}
	iovs[0].SetLen(len(a))
	iovs[1].SetLen(len(b))
	if err := r.Writev(fd, iovs, 0, 1); err != nil {
		t.Fatal(err)
	}
	// Linked so the sync runs after the write; then a plain Write at an offset.
	if s, err := r.GetSQE(); err != nil {
		t.Fatal(err)
	} else {
		r.sqes[(r.sqeTail-2)&r.sqMask].Flags |= SQEIOLink
		s.PrepFsync(fd, true, 2)
	}
	tail := []byte("more")
	if err := r.Write(fd, tail, int64(len(a)+len(b)), 3); err != nil {
		t.Fatal(err)
	}
	if err := r.Fsync(fd, 4); err != nil {
		t.Fatal(err)
	}
	cqes := collect(t, r, 4)
	res := map[uint64]int32{}
	for _, c := range cqes {
		res[c.UserData] = c.Res
	}
	if res[1] != int32(len(a)+len(b)) || res[2] != 0 || res[3] != 4 || res[4] != 0 {
		t.Fatalf("results %v", res)
	}
	if err := r.Fdatasync(fd, 5); err != nil {
		t.Fatal(err)
	}
	if c := collect(t, r, 1)[0]; c.UserData != 5 || c.Res != 0 {
		t.Fatalf("fdatasync: %+v", c)
	}
	got, _ := os.ReadFile(f.Name())
	if string(got) != "hello, journal\nmore" {
		t.Fatalf("file holds %q", got)
	}
	// fsync of something that cannot sync reports the errno in Res.
	if err := r.Fdatasync(-1, 6); err != nil {
		t.Fatal(err)
	}
	if c := collect(t, r, 1)[0]; !errors.Is(c.Err(), unix.EBADF) {
		t.Fatalf("fdatasync(-1): %+v (%v)", c, c.Err())
	}
}

func TestTimeoutAndProbe(t *testing.T) {
	r := newRing(t, Options{Entries: 8})
	start := time.Now()
	if err := r.Timeout(10*time.Millisecond, 0, 7); err != nil {
		t.Fatal(err)
	}
	c := collect(t, r, 1)[0]
	if c.UserData != 7 || !errors.Is(c.Err(), unix.ETIME) || time.Since(start) < 9*time.Millisecond {
		t.Fatalf("timeout: %+v after %v", c, time.Since(start))
	}
	p, err := r.Probe()
	if err != nil {
		t.Fatal(err)
	}
	if m := p.Missing(RequiredOps...); len(m) != 0 {
		t.Fatalf("Available passed but ops %v are missing", m)
	}
	if p.Supports(Op(250)) {
		t.Fatal("probe claims opcode 250")
	}
	t.Logf("last op %v; SEND_ZC %v; MSG_RING %v", p.LastOp(), p.Supports(OpSendZC), p.Supports(OpMsgRing))
}

func TestClosedRing(t *testing.T) {
	r := newRing(t, Options{Entries: 2})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Nop(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Nop after Close: %v", err)
	}
	if _, err := r.Submit(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after Close: %v", err)
	}
	if r.Reap(make([]CQE, 1)) != 0 || r.Ready() != 0 || r.Pending() != 0 {
		t.Fatal("closed ring reports work")
	}
	if err := r.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

func TestMsgRing(t *testing.T) {
	a := newRing(t, Options{Entries: 4})
	b := newRing(t, Options{Entries: 4})
	if p, _ := a.Probe(); !p.Supports(OpMsgRing) {
		t.Skip("kernel lacks IORING_OP_MSG_RING")
	}
	if err := a.MsgRing(b, 42, 1000, 1); err != nil {
		t.Fatal(err)
	}
	if c := collect(t, a, 1)[0]; c.Res != 0 {
		t.Fatalf("sender: %+v", c)
	}
	if c := collect(t, b, 1)[0]; c.UserData != 1000 || c.Res != 42 {
		t.Fatalf("target: %+v", c)
	}
}

// TestZeroAllocCycle: prepare, submit, wait and reap allocate nothing.
func TestZeroAllocCycle(t *testing.T) {
	r := newRing(t, Options{Entries: 64, Wake: true})
	a, b := socketpair(t)
	msg := make([]byte, 128)
	in := make([]byte, 128)
	cqes := make([]CQE, 16)
	cycle := func() {
		for i := 0; i < 8; i++ {
			r.Nop(uint64(i))
		}
		r.Send(a, msg, 0, 100)
		r.Recv(b, in, unix.MSG_WAITALL, 101)
		r.Timeout(time.Millisecond, 1, 102)
		r.Wake()
		got := 0
		for got < 11 {
			r.SubmitAndWait(1)
			got += r.Reap(cqes)
		}
	}
	cycle()
	if allocs := testing.AllocsPerRun(200, cycle); allocs != 0 {
		t.Fatalf("%.1f allocations per prepare+submit+reap cycle, want 0", allocs)
	}
}

func TestUnavailableReasons(t *testing.T) {
	for _, tc := range []struct {
		errno           unix.Errno
		disabled, group string
		want            string
	}{
		{unix.ENOSYS, "", "", "seccomp"},
		{unix.EPERM, "2", "", "io_uring_disabled=2"},
		{unix.EPERM, "1", "1001", "gid 1001"},
		{unix.EPERM, "0", "", "seccomp filter or a security module"},
		{unix.ENOMEM, "", "", "RLIMIT_MEMLOCK"},
	} {
		if got := unavailableReason(tc.errno, tc.disabled, tc.group); !contains(got, tc.want) {
			t.Errorf("%v disabled=%q: %q lacks %q", tc.errno, tc.disabled, got, tc.want)
		}
	}
	if err := Available(); err != nil {
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Available error does not wrap ErrUnavailable: %v", err)
		}
		t.Logf("unavailable here: %v", err)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
