package bench

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// Pacing. time.Sleep on these machines sleeps at least ~1 ms, far too
// coarse to hold 10k or 100k msgs/s without bursts. The fixed-rate
// publisher runs on a locked OS thread with a 1 ns timer slack and paces
// itself with nanosleep, which wakes within tens of microseconds. How late
// each message went out relative to its schedule is measured and reported
// (PacerLag); it is included in the corrected latencies, as it would be for
// a real application's send.

// lockForPacing locks the goroutine to its thread and sets the thread's
// timer slack to 1 ns; call unlock when done.
func lockForPacing() (unlock func()) {
	runtime.LockOSThread()
	old, _ := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	return func() {
		if old > 0 {
			_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(old), 0, 0, 0)
		}
		runtime.UnlockOSThread()
	}
}

// sleepUntil waits until clk reaches due (ns), sleeping in short steps.
func sleepUntil(clk monoClock, due int64) {
	for {
		d := due - clk.now()
		if d <= 0 {
			return
		}
		step := int64(10 * time.Microsecond)
		if d > int64(200*time.Microsecond) {
			step = d - int64(120*time.Microsecond)
		}
		ts := unix.NsecToTimespec(step)
		_ = unix.Nanosleep(&ts, nil)
	}
}
