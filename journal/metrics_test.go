package journal

import (
	"sync/atomic"
	"testing"

	"github.com/tandemhq/tandem/record"
)

// Stats' used bytes are the headers and records written, not the
// preallocated segment files (what `tandem stat` used to show); across
// rotations and a reopen.
func TestUsedBytes(t *testing.T) {
	fs := NewMemFS()
	opts := memOpts(t, fs)
	opts.SegmentSize = 4 << 10
	j := mustOpen(t, opts)
	if st := j.Stats(); st.UsedBytes != segHeaderSize || st.Bytes != opts.SegmentSize {
		t.Fatalf("empty journal: used %d, files %d", st.UsedBytes, st.Bytes)
	}
	var recs int64
	var last uint64
	for i := 0; i < 100; i++ {
		last = appendDet(t, j)
		recs += int64(record.Size(len(detTopic(last)), len(detPayload(last))))
	}
	waitSynced(t, j, last)
	st := j.Stats()
	if st.Segments < 3 {
		t.Fatalf("only %d segments", st.Segments)
	}
	if want := recs + int64(st.Segments)*segHeaderSize; st.UsedBytes != want {
		t.Errorf("used %d bytes, want %d (%d segments, %d record bytes)", st.UsedBytes, want, st.Segments, recs)
	}
	if st.UsedBytes >= st.Bytes {
		t.Errorf("used %d not below the files' %d", st.UsedBytes, st.Bytes)
	}
	j.Close()
	j = mustOpen(t, opts)
	defer j.Close()
	if st2 := j.Stats(); st2.UsedBytes != st.UsedBytes {
		t.Errorf("reopened: used %d bytes, want %d", st2.UsedBytes, st.UsedBytes)
	}
}

// The group-commit histograms count every sync and every record.
func TestSyncHistograms(t *testing.T) {
	j := mustOpen(t, memOpts(t, NewMemFS()))
	defer j.Close()
	var last uint64
	for i := 0; i < 50; i++ {
		last = appendDet(t, j)
		if i%10 == 9 {
			waitSynced(t, j, last)
		}
	}
	syncs := j.Stats().Syncs
	lat, batch := j.SyncLatency(), j.BatchRecords()
	if lat.Count() != syncs || batch.Count() != syncs || syncs < 5 {
		t.Errorf("%d syncs: latency %d samples, batches %d", syncs, lat.Count(), batch.Count())
	}
	if batch.Sum != last {
		t.Errorf("batches hold %d records, want %d", batch.Sum, last)
	}
}

// RetentionHeldBytes is what retention would delete but the hold keeps.
func TestRetentionHeldBytes(t *testing.T) {
	opts := memOpts(t, NewMemFS())
	opts.SegmentSize = 4 << 10
	opts.RetentionBytes = 5 * opts.SegmentSize
	var hold atomic.Uint64
	hold.Store(1)
	opts.RetentionHold = hold.Load
	j := mustOpen(t, opts)
	defer j.Close()
	last := appendStamped(t, j, 200)
	st := j.Stats()
	over := st.Bytes - opts.RetentionBytes
	if got := j.RetentionHeldBytes(); got != over {
		t.Errorf("hold 1: held %d bytes, want %d (%d segments over the limit)", got, over, over/opts.SegmentSize)
	}
	hold.Store(last + 1)
	if got := j.RetentionHeldBytes(); got != 0 {
		t.Errorf("no hold: held %d bytes", got)
	}
}
