package journal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/uring"
)

// BenchmarkAppendSync measures durable throughput on the real disk: b.N
// records with 128-byte payloads appended by N goroutines, until all are
// synced. Latency is from append to the sync that covered the record,
// sampled every 64th record. sync= is Options.SyncVia: each batch's
// writes and fdatasync as one linked io_uring chain, or pwrite and
// fdatasync system calls.
//
// retain=grow is a new journal growing (retention at 2 GiB, beyond what
// a run writes): every segment is a new file. retain=steady is a journal
// at its retention limit (256 MiB, filled before the timer starts):
// retention retires a segment at every rotation, and the next one reuses
// its file (or, with recycling off or in older releases, a new zero-filled
// one).
func BenchmarkAppendSync(b *testing.B) {
	for _, retain := range []string{"grow", "steady"} {
		for _, via := range []string{SyncUring, SyncSyscall} {
			for _, n := range []int{1, 8} {
				b.Run(fmt.Sprintf("retain=%s/sync=%s/appenders=%d", retain, via, n), func(b *testing.B) {
					if via == SyncUring {
						if err := uring.Available(); err != nil {
							b.Skipf("io_uring not available: %v", err)
						}
					}
					benchAppendSync(b, n, via, retain == "steady")
				})
			}
		}
	}
}

const sampleEvery = 64

func benchAppendSync(b *testing.B, appenders int, via string, steady bool) {
	base := time.Now()
	syncSeq := make([]uint64, 0, 1<<18)
	syncAt := make([]int64, 0, 1<<18)
	retain := int64(2 << 30) // keeps long runs from filling the disk
	if steady {
		retain = 4 * DefaultSegmentSize
	}
	var recording atomic.Bool
	opts := Options{
		Dir:            b.TempDir(),
		RetentionBytes: retain,
		// Bound the queue (like the prototype's 50,000 unsynced records) so
		// latency is not just the depth of a 64 MiB backlog.
		MaxStagedBytes: 8 << 20,
		SyncVia:        via,
		Logger:         quietLogger(),
		OnSync: func(s uint64) {
			if recording.Load() && len(syncSeq) < cap(syncSeq) {
				syncSeq = append(syncSeq, s)
				syncAt = append(syncAt, int64(time.Since(base)))
			}
		},
	}
	j, err := Open(opts)
	if err != nil {
		b.Fatal(err)
	}
	topic := []byte("bench/topic")
	payload := make([]byte, 128)
	if steady {
		// Fill up to the limit and two segments beyond, so retention has
		// retired segments before the timer starts.
		h := record.Header{Publisher: 99}
		for n := int64(0); n < retain+2*DefaultSegmentSize; n += int64(record.Size(len(topic), len(payload))) {
			h.Time = 0
			if _, err := j.Append(&h, topic, payload); err != nil {
				b.Fatal(err)
			}
		}
		if err := j.WaitSynced(context.Background(), j.LastSeq()); err != nil {
			b.Fatal(err)
		}
	}
	recording.Store(true)
	type sample struct {
		seq uint64
		at  int64
	}
	samples := make([][]sample, appenders)
	per := b.N / appenders
	for i := range samples {
		samples[i] = make([]sample, 0, per/sampleEvery+2)
	}
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for a := 0; a < appenders; a++ {
		n := per
		if a == 0 {
			n += b.N % appenders
		}
		wg.Add(1)
		go func(a, n int) {
			defer wg.Done()
			h := record.Header{Publisher: uint64(a + 1)}
			var now int64
			for i := 0; i < n; i++ {
				// The record time as the engine gives it: a clock read
				// per batch of appends (its loop's time of the read
				// batch), here per 64 records, not one per record.
				if i%sampleEvery == 0 {
					now = time.Now().UnixNano()
				}
				h.PubSeq, h.Time = uint64(i), now
				seq, err := j.Append(&h, topic, payload)
				if err != nil {
					b.Error(err)
					return
				}
				if i%sampleEvery == 0 {
					samples[a] = append(samples[a], sample{seq, int64(time.Since(base))})
				}
			}
		}(a, n)
	}
	wg.Wait()
	if err := j.WaitSynced(context.Background(), j.LastSeq()); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if got := j.Stats().SyncVia; got != via {
		b.Fatalf("synced via %s, want %s", got, via)
	}
	if err := j.Close(); err != nil {
		b.Fatal(err)
	}
	var lat []float64
	for _, ss := range samples {
		for _, s := range ss {
			i, _ := slices.BinarySearch(syncSeq, s.seq)
			if i < len(syncSeq) {
				lat = append(lat, float64(syncAt[i]-s.at)/1e3)
			}
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	if len(lat) > 0 {
		b.ReportMetric(lat[len(lat)/2], "p50-us")
		b.ReportMetric(lat[len(lat)*99/100], "p99-us")
	}
	b.ReportMetric(float64(b.N)/float64(max(len(syncSeq), 1)), "records/sync")
}

func BenchmarkCursorNext(b *testing.B) {
	j, err := Open(Options{Dir: b.TempDir(), Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	payload := make([]byte, 128)
	const n = 200000
	for i := 0; i < n; i++ {
		var h record.Header
		if _, err := j.Append(&h, []byte("bench/topic"), payload); err != nil {
			b.Fatal(err)
		}
	}
	if err := j.WaitSynced(context.Background(), n); err != nil {
		b.Fatal(err)
	}
	c, _ := j.NewCursor(1)
	defer c.Close()
	b.ReportAllocs()
	b.ResetTimer()
	var sum int
	for i := 0; i < b.N; i++ {
		v, ok := c.Next()
		if !ok {
			c.Seek(1)
			v, _ = c.Next()
		}
		sum += v.Len()
	}
	_ = sum
}

// BenchmarkPreparedSync measures what a group commit costs on a segment
// file prepared each way the journal could: a 4 KiB write plus fdatasync,
// sequentially through a 64 MiB file. zeros: written with O_DIRECT (the
// preallocator's way for new files); recycled: a file whose blocks were
// all written before (what recycling reuses); zero-range and plain:
// fallocate leaving unwritten extents (each first write converts one, a
// metadata update per sync); write-zeroes: FALLOC_FL_WRITE_ZEROES (Linux
// 6.17+; skipped where the device cannot do it, ext4 then refuses it).
func BenchmarkPreparedSync(b *testing.B) {
	const size = 64 << 20
	for _, how := range []string{"zeros", "recycled", "zero-range", "plain", "write-zeroes"} {
		b.Run(how, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "seg")
			switch how {
			case "zeros", "recycled":
				f, err := OSFS{}.CreateZeroed(path, size, nil)
				if err != nil {
					b.Fatal(err)
				}
				if how == "recycled" {
					junk := bytes.Repeat([]byte{0xa5}, 1<<20)
					for off := int64(0); off < size; off += int64(len(junk)) {
						if _, err := f.WriteAt(junk, off); err != nil {
							b.Fatal(err)
						}
					}
					if err := f.SyncData(); err != nil {
						b.Fatal(err)
					}
				}
				f.Close()
			default:
				mode := map[string]uint32{"zero-range": unix.FALLOC_FL_ZERO_RANGE, "plain": 0, "write-zeroes": unix.FALLOC_FL_WRITE_ZEROES}[how]
				f, err := os.Create(path)
				if err != nil {
					b.Fatal(err)
				}
				if how != "plain" {
					if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
						b.Fatal(err)
					}
				}
				if err := unix.Fallocate(int(f.Fd()), mode, 0, size); err != nil {
					f.Close()
					if how == "write-zeroes" && errors.Is(err, unix.EOPNOTSUPP) {
						b.Skipf("FALLOC_FL_WRITE_ZEROES: %v (the device has no write-zeroes support)", err)
					}
					b.Fatal(err)
				}
				f.Close()
			}
			f, err := OSFS{}.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			buf := bytes.Repeat([]byte{1}, 4096)
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if _, err := f.WriteAt(buf, int64(i*4096)%size); err != nil {
					b.Fatal(err)
				}
				if err := f.SyncData(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "syncs/s")
		})
	}
}
