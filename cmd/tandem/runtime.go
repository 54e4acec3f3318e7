package main

import (
	"os"
	"runtime"
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
// loops most of the time, and the goroutines on the ack path (replication
// senders, link readers and ack loops) wait for that monitor: measured,
// 200-300 µs p50 and several ms p99 from a sync to the sender shipping it
// (bench stage synced-shipped). So serve gives the runtime one P per core
// plus one per thread that blocks that way, unless GOMAXPROCS is set in
// the environment or --gomaxprocs is given.
func serveGOMAXPROCS(flag, loops int) (procs int, why string) {
	if flag > 0 {
		return flag, "--gomaxprocs"
	}
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0), "GOMAXPROCS environment variable"
	}
	if loops <= 0 {
		loops = runtime.NumCPU() // the engine's default
	}
	return runtime.NumCPU() + loops + 1, "cores + event loops + flusher"
}
