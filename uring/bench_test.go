package uring

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkNop measures the ring's own cost per operation: one Submit
// (io_uring_enter) per batch, one Reap per batch.
func BenchmarkNop(b *testing.B) {
	for _, batch := range []int{1, 8, 32, 128} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			r := newRing(b, Options{Entries: 256})
			cqes := make([]CQE, batch)
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; done += batch {
				for i := 0; i < batch; i++ {
					r.Nop(uint64(i))
				}
				r.SubmitAndWait(batch)
				for got := 0; got < batch; {
					got += r.Reap(cqes[got:])
				}
			}
		})
	}
}

// BenchmarkSendRecv moves 128-byte messages from one socket to its peer:
// through the ring (sends and the receive in one io_uring_enter) and with
// plain write(2)/read(2). batch is messages per iteration: the ring
// submits them all at once, the syscall path pays one write each.
func BenchmarkSendRecv(b *testing.B) {
	const size = 128
	for _, transport := range []string{"unix", "tcp"} {
		for _, batch := range []int{1, 16} {
			for _, method := range []string{"uring", "syscalls"} {
				b.Run(fmt.Sprintf("%s/batch=%d/%s", transport, batch, method), func(b *testing.B) {
					var a, c int
					if transport == "unix" {
						a, c = socketpair(b)
					} else {
						a, c = tcpPair(b)
					}
					out := make([]byte, size)
					in := make([]byte, size*batch)
					b.SetBytes(size)
					b.ReportAllocs()
					if method == "syscalls" {
						b.ResetTimer()
						for done := 0; done < b.N; done += batch {
							for i := 0; i < batch; i++ {
								unix.Write(a, out)
							}
							readFull(c, in)
						}
						return
					}
					r := newRing(b, Options{Entries: 64})
					cqes := make([]CQE, batch+1)
					b.ResetTimer()
					for done := 0; done < b.N; done += batch {
						for i := 0; i < batch; i++ {
							r.Send(a, out, 0, uint64(i))
						}
						r.Recv(c, in, unix.MSG_WAITALL, 1000)
						r.SubmitAndWait(batch + 1)
						for got := 0; got < batch+1; {
							got += r.Reap(cqes[got:])
						}
					}
				})
			}
		}
	}
}

// BenchmarkSendZCvsSend streams messages of each size over loopback TCP
// with up to 4 sends in flight, through IORING_OP_SEND and SEND_ZC; a
// goroutine drains the other end with read(2). For SEND_ZC a slot is free
// only after its notification. The "copied" metric is the fraction of
// zero-copy sends the kernel reported as copied (loopback always copies).
//
// On the 2-vCPU development VM (Linux 6.18, medians of -count=5) SEND_ZC
// lost at 1 KiB (340 vs 936 MB/s), broke even at 4 KiB, won from 16 KiB to
// 256 KiB (64 KiB: 6443 vs 1954 MB/s) and lost again at 1 MiB (1683 vs
// 2797 MB/s, pinning 256 pages per send). Loopback copies at delivery, so
// this is not the NIC-level crossover: measure again on real hardware.
func BenchmarkSendZCvsSend(b *testing.B) {
	const window = 4
	for _, size := range []int{1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20} {
		for _, zc := range []bool{false, true} {
			name := "send"
			if zc {
				name = "sendzc"
			}
			b.Run(fmt.Sprintf("size=%dKiB/%s", size>>10, name), func(b *testing.B) {
				r := newRing(b, Options{Entries: 64})
				if p, _ := r.Probe(); zc && !p.Supports(OpSendZC) {
					b.Skip("no SEND_ZC")
				}
				c, s := tcpPair(b)
				done := make(chan struct{})
				received := 0
				go func() {
					defer close(done)
					buf := make([]byte, 1<<20)
					for {
						n, err := unix.Read(s, buf)
						if n <= 0 && err != unix.EINTR {
							return
						}
						received += max(n, 0)
					}
				}()
				bufs := make([][]byte, window)
				for i := range bufs {
					bufs[i] = make([]byte, size)
				}
				var zs [window]ZeroCopySend
				busy := [window]bool{}
				cqes := make([]CQE, 2*window)
				copied, notifs := 0, 0
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				sent := 0
				inflight := 0
				for sent < b.N || inflight > 0 {
					for i := 0; i < window && sent < b.N; i++ {
						if busy[i] {
							continue
						}
						if zc {
							r.SendZC(c, bufs[i], unix.MSG_WAITALL, uint64(i))
							zs[i].Start()
						} else {
							r.Send(c, bufs[i], unix.MSG_WAITALL, uint64(i))
						}
						busy[i] = true
						inflight++
						sent++
					}
					r.SubmitAndWait(1)
					n := r.Reap(cqes)
					for _, cq := range cqes[:n] {
						i := cq.UserData
						if cq.Err() != nil || (!cq.Notif() && int(cq.Res) != size) {
							b.Fatalf("send: %+v (%v), want %d bytes", cq, cq.Err(), size)
						}
						if zc {
							if !zs[i].Observe(cq) {
								continue
							}
							if cq.Notif() {
								notifs++
								if zs[i].Copied {
									copied++
								}
							}
						}
						busy[i] = false
						inflight--
					}
				}
				b.StopTimer()
				unix.Shutdown(c, unix.SHUT_WR)
				<-done
				if received != b.N*size {
					b.Fatalf("receiver got %d bytes, sent %d", received, b.N*size)
				}
				if zc && notifs > 0 {
					b.ReportMetric(float64(copied)/float64(notifs), "copied")
				}
			})
		}
	}
}
