package journal

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCrashCloneKeepsAcknowledged crashes a MemFS at random moments while
// appenders run: everything WaitSynced acknowledged before the crash must
// survive, everything recovered must be valid, and appends must continue.
func TestCrashCloneKeepsAcknowledged(t *testing.T) {
	seed := testSeed(t)
	iters := 200
	if long() {
		iters = 5000
	}
	tornTails, recycled := 0, 0
	for it := 0; it < iters; it++ {
		rng := rand.New(rand.NewPCG(seed, uint64(it)))
		torn, rec := crashOnce(t, it, rng)
		if torn {
			tornTails++
		}
		if rec {
			recycled++
		}
	}
	t.Logf("%d crashes, %d torn tails truncated, %d with a recycled tail", iters, tornTails, recycled)
}

func crashOnce(t *testing.T, it int, rng *rand.Rand) (tornTail, recycledTail bool) {
	fs := NewMemFS()
	torn := rng.IntN(2) == 0
	// Crash either at a random moment, or at the crash point "beforeSync"
	// of a random sync: the batch is written but not synced.
	atSync := rng.IntN(2) == 0
	syncTarget := int64(1 + rng.IntN(60))
	var syncs atomic.Int64
	var acked atomic.Uint64
	var clone *MemFS
	var ackedBefore uint64
	crashRng := rand.New(rand.NewPCG(rng.Uint64(), 0)) // used by the crashing goroutine only
	crashed := make(chan struct{})
	crash := func() {
		ackedBefore = acked.Load()
		if torn {
			clone = fs.CrashCloneTorn(crashRng)
		} else {
			clone = fs.CrashClone()
		}
		close(crashed)
	}
	efs := ErrorFS{FS: fs, Inject: func(op, name string) error {
		if op == "sync" && atSync && syncs.Add(1) == syncTarget {
			crash()
		}
		return nil
	}}
	opts := memOpts(t, efs)
	opts.Logger = quietLogger()
	opts.SegmentSize = int64(2<<10 + rng.IntN(30<<10))
	opts.MaxBatchBytes = 256 + rng.IntN(8<<10)
	opts.IndexInterval = 1 + rng.IntN(8)
	if rng.IntN(2) == 0 {
		// Retention at a few segments: retired files are recycled, so
		// crashes also hit recycled tails and installs of retired files.
		opts.RetentionBytes = int64(2+rng.IntN(3)) * opts.SegmentSize
	}
	j := mustOpen(t, opts)

	var stop atomic.Bool
	var wg sync.WaitGroup
	writers := 1 + rng.IntN(3)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(batch int) {
			defer wg.Done()
			for !stop.Load() {
				var last uint64
				for i := 0; i < batch; i++ {
					seq, err := appendDetErr(j)
					if err != nil {
						return // closed
					}
					last = seq
				}
				if j.WaitSynced(context.Background(), last) != nil {
					return
				}
				for {
					a := acked.Load()
					if a >= last || acked.CompareAndSwap(a, last) {
						break
					}
				}
			}
		}(1 + rng.IntN(60))
	}
	if atSync {
		<-crashed
	} else {
		target := uint64(1 + rng.IntN(400))
		eventually(t, "acknowledged records", func() bool { return acked.Load() >= target })
		crash()
	}
	stop.Store(true)
	j.Close()
	wg.Wait()

	opts.FS = clone
	j2, err := Open(opts)
	if err != nil {
		t.Fatalf("iteration %d (torn %v, at sync %v): Open after crash: %v", it, torn, atSync, err)
	}
	last := j2.LastSeq()
	tornTail = j2.Stats().TruncatedBytes > 0
	recycledTail = j2.tail.recycled()
	if last < ackedBefore {
		t.Fatalf("iteration %d: recovered %d records, %d were acknowledged", it, last, ackedBefore)
	}
	verifyDet(t, j2, j2.FirstSeq(), last, true)
	for i := 0; i < 5; i++ {
		appendDet(t, j2)
	}
	waitSynced(t, j2, last+5)
	if err := j2.Close(); err != nil {
		t.Fatal(err)
	}
	// Recovering again (after a clean close) changes nothing.
	j3 := mustOpen(t, opts)
	verifyDet(t, j3, j3.FirstSeq(), last+5, true)
	j3.Close()
	return tornTail, recycledTail
}

func TestFailedSyncIsStickyAndNeverAcked(t *testing.T) {
	for _, op := range []string{"sync", "write"} {
		t.Run(op, func(t *testing.T) {
			injected := errors.New("injected " + op + " failure")
			var failing atomic.Bool
			efs := ErrorFS{FS: NewMemFS(), Inject: func(o, name string) error {
				if o == op && failing.Load() {
					return injected
				}
				return nil
			}}
			opts := memOpts(t, efs)
			opts.Logger = quietLogger()
			var onSync atomic.Uint64
			opts.OnSync = func(s uint64) { onSync.Store(s) }
			j := mustOpen(t, opts)
			for i := 0; i < 20; i++ {
				appendDet(t, j)
			}
			waitSynced(t, j, 20)

			failing.Store(true)
			seq := appendDet(t, j)
			err := j.WaitSynced(context.Background(), seq)
			if !errors.Is(err, injected) {
				t.Fatalf("WaitSynced after a failed %s: %v", op, err)
			}
			if j.SyncedSeq() >= seq || onSync.Load() >= seq {
				t.Fatalf("SyncedSeq %d / OnSync %d cover %d after a failed %s", j.SyncedSeq(), onSync.Load(), seq, op)
			}
			failing.Store(false) // the failure is sticky even if the disk "recovers"
			if !errors.Is(j.Err(), injected) {
				t.Fatalf("Err() = %v", j.Err())
			}
			if _, err := appendDetErr(j); !errors.Is(err, injected) {
				t.Fatalf("append after failure: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := j.WaitSynced(ctx, seq); !errors.Is(err, injected) {
				t.Fatalf("second WaitSynced: %v", err)
			}
			if j.SyncedSeq() != 20 {
				t.Fatalf("SyncedSeq moved to %d", j.SyncedSeq())
			}
			if err := j.Close(); !errors.Is(err, injected) {
				t.Fatalf("Close: %v", err)
			}
		})
	}
}

func TestFailedRotationFailsJournal(t *testing.T) {
	injected := errors.New("injected rename failure")
	var armed atomic.Bool
	efs := ErrorFS{FS: NewMemFS(), Inject: func(op, name string) error {
		if op == "rename" && armed.Load() {
			return injected
		}
		return nil
	}}
	opts := memOpts(t, efs)
	opts.Logger = quietLogger()
	opts.SegmentSize = 4 << 10
	j := mustOpen(t, opts)
	defer j.Close()
	armed.Store(true)
	var last uint64
	for {
		seq, err := appendDetErr(j)
		if err != nil {
			if !errors.Is(err, injected) {
				t.Fatal(err)
			}
			break
		}
		last = seq
		if j.WaitSynced(context.Background(), seq) != nil {
			break
		}
	}
	if !errors.Is(j.Err(), injected) {
		t.Fatalf("Err() = %v", j.Err())
	}
	if j.SyncedSeq() >= last {
		t.Fatalf("record %d in the failed rotation acknowledged", last)
	}
}
