package journal

import (
	"errors"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// TestPreallocFailureIsRetried: a failed preallocation of the next segment
// (a full disk, for a moment) does not fail the journal: it is retried in
// the background before the segment is needed, counted, and rotations then
// go on as usual.
func TestPreallocFailureIsRetried(t *testing.T) {
	const failures = 3
	var injected atomic.Int32
	efs := ErrorFS{FS: NewMemFS(), Inject: func(op, name string) error {
		if op == "create" && strings.Contains(name, "next-") && injected.Load() < failures {
			injected.Add(1)
			return syscall.ENOSPC
		}
		return nil
	}}
	j := mustOpen(t, memOpts(t, efs))
	defer j.Close()
	eventually(t, "three failed preallocations", func() bool { return injected.Load() == failures })
	var seq uint64
	for j.Stats().Rotations < 3 {
		seq = appendDet(t, j)
		if j.Stats().StagedBytes > 8<<10 {
			waitSynced(t, j, seq)
		}
	}
	waitSynced(t, j, seq)
	if err := j.Err(); err != nil {
		t.Fatalf("journal failed after transient preallocation failures: %v", err)
	}
	verifyDet(t, j, 1, seq, true)
	if got := j.Stats().PreallocFailures; got != failures {
		t.Fatalf("Stats.PreallocFailures = %d, want %d", got, failures)
	}
}

// TestPreallocFailureWhenNeededFailsJournal: when preallocation keeps
// failing, the rotation that needs the segment fails the journal (after
// one immediate retry) with an error naming the cause, OnFail is called
// once with it, and everything before the rotation stays durable.
func TestPreallocFailureWhenNeededFailsJournal(t *testing.T) {
	efs := ErrorFS{FS: NewMemFS(), Inject: func(op, name string) error {
		if op == "create" && strings.Contains(name, "next-") {
			return syscall.ENOSPC
		}
		return nil
	}}
	opts := memOpts(t, efs)
	var fails atomic.Int32
	var failErr atomic.Pointer[error]
	opts.OnFail = func(err error) { fails.Add(1); failErr.Store(&err) }
	j := mustOpen(t, opts)
	defer j.Close()
	first := appendDet(t, j)
	waitSynced(t, j, first)
	var err error
	for i := 0; i < 10000 && err == nil; i++ {
		_, err = appendDetErr(j)
		if err == nil && j.Stats().StagedBytes > 8<<10 {
			j.WaitSynced(t.Context(), j.LastSeq())
		}
		if err == nil {
			err = j.Err()
		}
	}
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "preallocating segment") {
		t.Fatalf("appends across a failing rotation: %v", err)
	}
	eventually(t, "OnFail", func() bool { return fails.Load() == 1 })
	if p := failErr.Load(); p == nil || !errors.Is(*p, syscall.ENOSPC) {
		t.Fatalf("OnFail error %v", p)
	}
	if synced := j.SyncedSeq(); synced < first {
		t.Fatalf("SyncedSeq %d went below %d", synced, first)
	}
	verifyDet(t, j, 1, j.SyncedSeq(), true)
	if n := j.Stats().PreallocFailures; n < 2 {
		t.Fatalf("PreallocFailures = %d, want at least 2 (one in the background, one immediate retry)", n)
	}
	if fails.Load() != 1 {
		t.Fatalf("OnFail called %d times", fails.Load())
	}
}
