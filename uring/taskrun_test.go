package uring

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSingleIssuerDeferTaskrun drives a SingleIssuer ring the way an event
// loop does, from one locked thread: a receive completed by a peer's write
// ends a wait; a send's completion shows up through non-waiting Submit and
// Reap calls (the kernel's deferred work runs only when we enter); a Wake
// from another goroutine ends a wait.
func TestSingleIssuerDeferTaskrun(t *testing.T) {
	runtime.LockOSThread() // the test's goroutine ends locked: its thread goes with it
	r := newRing(t, Options{Entries: 16, Wake: true, SingleIssuer: true})
	t.Logf("defer taskrun %v, coop taskrun %v", r.DeferTaskrun(), r.CoopTaskrun())
	if !r.CoopTaskrun() {
		t.Log("kernel has neither DEFER_TASKRUN (6.1) nor COOP_TASKRUN (5.19): plain ring")
	}
	a, b := tcpPair(t)
	buf := make([]byte, 64)
	if err := r.Recv(b, buf, 0, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	go unix.Write(a, []byte("hello"))
	got := collect(t, r, 1)
	if got[0].UserData != 1 || got[0].Res != 5 || string(buf[:5]) != "hello" {
		t.Fatalf("recv: %+v %q", got[0], buf[:5])
	}

	// A send, reaped without ever waiting in the kernel.
	if err := r.Send(a, []byte("world"), 0, 2); err != nil {
		t.Fatal(err)
	}
	cqes := make([]CQE, 4)
	deadline := time.Now().Add(5 * time.Second)
	n := 0
	for n == 0 {
		if time.Now().After(deadline) {
			t.Fatal("send completion never reaped by Submit+Reap without waiting")
		}
		if _, err := r.Submit(); err != nil {
			t.Fatal(err)
		}
		n = r.Reap(cqes)
	}
	if cqes[0].UserData != 2 || cqes[0].Res != 5 {
		t.Fatalf("send: %+v", cqes[0])
	}
	if err := readFull(b, buf[:5]); err != nil || string(buf[:5]) != "world" {
		t.Fatalf("peer read %q, %v", buf[:5], err)
	}

	// A wake from another goroutine ends a wait.
	woke := make(chan error, 1)
	go func() { woke <- r.Wake() }()
	start := time.Now()
	if _, err := r.SubmitAndWaitTimeout(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := <-woke; err != nil { // Wake must not race the Close at cleanup
		t.Fatal(err)
	}
	if time.Since(start) >= 5*time.Second {
		t.Fatal("the wait ran into its timeout: the wake did not end it")
	}
}

// TestSubmitAndWaitTimeoutWhileSubmitting: a wait that also submits (here a
// receive that never completes) ends at its timeout, not at twice it (the
// kernel returns the submission count at the timeout, and the wait must
// not start over with the full timeout).
func TestSubmitAndWaitTimeoutWhileSubmitting(t *testing.T) {
	r := newRing(t, Options{Entries: 8})
	_, b := tcpPair(t)
	buf := make([]byte, 16)
	if err := r.Recv(b, buf, 0, 1); err != nil {
		t.Fatal(err)
	}
	const timeout = 200 * time.Millisecond
	start := time.Now()
	if _, err := r.SubmitAndWaitTimeout(1, timeout); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	if r.Ready() != 0 || el < timeout-time.Millisecond || el >= 2*timeout-10*time.Millisecond {
		t.Fatalf("wait of %v returned after %v with %d ready", timeout, el, r.Ready())
	}
	r.CancelFd(b, 2)
	collect(t, r, 2)
}
