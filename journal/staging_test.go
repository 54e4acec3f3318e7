package journal

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tandemhq/tandem/record"
)

// TestAppendWhileFlusherBehindDoesNotAllocate: while the flusher is stuck
// in a write (appenders outrunning it, as in a replication catch-up), the
// staged bytes pile up to MaxStagedBytes without the staging buffer ever
// growing: no allocation on the append path. Before the buffers were
// reserved at Open, each doubling copied everything staged.
func TestAppendWhileFlusherBehindDoesNotAllocate(t *testing.T) {
	release := make(chan struct{})
	blocked := make(chan struct{}, 1)
	var armed atomic.Bool
	prealloced := make(chan struct{}, 1)
	fs := ErrorFS{FS: NewMemFS(), Inject: func(op, name string) error {
		if op == "sync" && strings.Contains(name, "next-") {
			select { // the preallocator's file is written: it allocates no more
			case prealloced <- struct{}{}:
			default:
			}
		}
		// The tail's writes (its file keeps the name it was created
		// with), not the preallocator's zeros.
		if armed.Load() && op == "write" && !strings.Contains(name, "next-") {
			select {
			case blocked <- struct{}{}:
			default:
			}
			<-release
		}
		return nil
	}}
	opts := memOpts(t, fs)
	opts.SegmentSize = 4 << 20
	opts.MaxBatchBytes = 1 << 20
	opts.MaxStagedBytes = 16 << 20
	j := mustOpen(t, opts)
	armed.Store(true)
	defer func() {
		close(release)
		j.Close()
	}()
	h := record.Header{Publisher: 1}
	topic, payload := []byte("t"), make([]byte, 128)
	if _, err := j.Append(&h, topic, payload); err != nil {
		t.Fatal(err)
	}
	<-blocked    // the flusher took the first record and waits in its write
	<-prealloced // (MemFS allocates as the preallocator writes its zeros)
	per := opts.MaxStagedBytes / 4 / record.Size(len(topic), len(payload))
	allocs := testing.AllocsPerRun(2, func() { // 3 calls: 3/4 of MaxStagedBytes
		for i := 0; i < per; i++ {
			h.Time = 1
			if _, err := j.Append(&h, topic, payload); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per %d appends behind a stalled flusher, want 0", allocs, per)
	}
}
