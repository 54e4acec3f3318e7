package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/trace"
)

// Go runtime settings for tandem serve (docs/operations.md, "Runtime
// settings").
//
// GOMAXPROCS. Every event loop, and the journal flusher when it owns an
// io_uring ring or is pinned, is a goroutine locked to its OS thread that
// spends its idle time blocked in a system call (epoll_wait,
// io_uring_enter, fdatasync). A P whose thread is in a system call is not
// free for other goroutines until the runtime's monitor takes it back,
// after 20 µs at best and up to 10 ms when it has been idle. With Go's
// default of one P per core, a 2-core machine has its 2 Ps held by blocked
// loops most of the time, and the goroutines on a replicated ack path
// (senders, link readers, ack loops) wait for that monitor: measured,
// 200-300 µs p50 and several ms p99 from a sync to the sender shipping it
// (bench stage synced-shipped). So with replication configured serve gives
// the runtime one P per core plus one per thread that blocks that way. A
// single instance has no goroutine on its ack path besides the loops and
// the flusher, and the extra Ps only added idle spinning (durable publish
// of 64 B measured 0.80x), so it keeps Go's default. GOMAXPROCS in the
// environment or --gomaxprocs win.
func serveGOMAXPROCS(flag, loops int, replicated bool) (procs int, why string) {
	if flag > 0 {
		return flag, "--gomaxprocs"
	}
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0), "GOMAXPROCS environment variable"
	}
	if !replicated {
		return runtime.GOMAXPROCS(0), "Go default (no replication)"
	}
	if loops <= 0 {
		loops = runtime.NumCPU() // the engine's default
	}
	return runtime.NumCPU() + loops + 1, "cores + event loops + flusher (replication)"
}

// startTrace writes the Go execution tracer's output for the whole life of
// the process to DIR/trace-PID.out when TANDEM_TRACE=DIR is set (a
// diagnostic for latency work: `go tool trace -pprof=sched FILE` shows
// where goroutines waited for a P). It returns the function that stops it.
func startTrace() (stop func()) {
	dir := os.Getenv("TANDEM_TRACE")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("trace-%d.out", os.Getpid())))
	if err != nil {
		fmt.Fprintf(os.Stderr, "tandem serve: TANDEM_TRACE: %v\n", err)
		return func() {}
	}
	if err := trace.Start(f); err != nil {
		fmt.Fprintf(os.Stderr, "tandem serve: TANDEM_TRACE: %v\n", err)
		f.Close()
		return func() {}
	}
	return func() {
		trace.Stop()
		f.Close()
	}
}
