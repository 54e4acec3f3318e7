package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// segState is what recovery rebuilds for one segment, for comparisons.
type segState struct {
	first, last, count uint64
	end                int64
	lastTime           int64
	sealed             bool
	index              []uint32
}

func journalState(j *Journal) (first, last uint64, segs []segState) {
	j.segMu.RLock()
	defer j.segMu.RUnlock()
	for _, s := range j.segs {
		n := int(s.count)
		if s.sealed {
			n = int(s.last + 1 - s.first)
		}
		segs = append(segs, segState{
			first: s.first, last: s.last, count: s.count, end: s.end, lastTime: s.lastTime, sealed: s.sealed,
			index: append([]uint32(nil), s.index[:(n+j.opts.IndexInterval-1)/j.opts.IndexInterval]...),
		})
	}
	return j.FirstSeq(), j.LastSeq(), segs
}

// stateHook is a StateCheckpoint hook whose state encodes the seq it is
// as of (and is large enough to notice).
func stateHook(j **Journal) func() (uint64, []byte, error) {
	return func() (uint64, []byte, error) {
		seq := (*j).LastSeq()
		return seq, stateFor(seq), nil
	}
}

func stateFor(seq uint64) []byte {
	b := binary.LittleEndian.AppendUint64(nil, seq)
	return append(b, bytes.Repeat([]byte("state"), 10)...)
}

func ckptFiles(t testing.TB, fs FS, dir string) map[uint64]*checkpoint {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[uint64]*checkpoint)
	for _, n := range names {
		if first, ok := parseCheckpointName(n); ok {
			c, err := readCheckpoint(fs, filepath.Join(dir, n))
			if err != nil {
				t.Fatalf("%s: %v", n, err)
			}
			m[first] = c
		}
	}
	return m
}

// buildCheckpointed writes records over several segments with a state hook
// and closes the journal; it returns the last seq and the number of
// sealed segments.
func buildCheckpointed(t *testing.T, fs FS) (Options, uint64, int) {
	t.Helper()
	opts := memOpts(t, fs)
	opts.SegmentSize = 8 << 10
	var j *Journal
	opts.StateCheckpoint = stateHook(&j)
	j = mustOpen(t, opts)
	for i := 0; i < 200; i++ {
		appendDet(t, j)
		if i%7 == 0 {
			waitSynced(t, j, j.LastSeq())
		}
	}
	last := j.LastSeq()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	sealed := len(segFiles(t, fs, opts.Dir)) - 1
	if sealed < 4 {
		t.Fatalf("only %d sealed segments", sealed)
	}
	return opts, last, sealed
}

func compareWithScan(t *testing.T, fs FS, opts Options, j *Journal) {
	t.Helper()
	fa, la, sa := journalState(j)
	vo := opts
	vo.FS = fs.(*MemFS).CrashClone()
	vo.VerifyAll = true
	vo.StateCheckpoint = nil
	v := mustOpen(t, vo)
	defer v.Close()
	if st := v.Stats(); st.CheckpointedSegments != 0 {
		t.Fatalf("VerifyAll trusted %d checkpoints", st.CheckpointedSegments)
	}
	fb, lb, sb := journalState(v)
	if fa != fb || la != lb {
		t.Fatalf("checkpointed open: first %d last %d; full scan: first %d last %d", fa, la, fb, lb)
	}
	if fmt.Sprint(sa) != fmt.Sprint(sb) {
		t.Fatalf("segments differ:\ncheckpointed %v\nfull scan    %v", sa, sb)
	}
}

func TestCheckpointReopenMatchesScan(t *testing.T) {
	fs := NewMemFS()
	opts, last, sealed := buildCheckpointed(t, fs)
	ck := ckptFiles(t, fs, opts.Dir)
	if len(ck) != sealed {
		t.Fatalf("%d checkpoints for %d sealed segments", len(ck), sealed)
	}
	withState := 0
	for _, c := range ck {
		if c.state != nil {
			withState++
		}
	}
	if withState != 1 {
		t.Fatalf("%d checkpoints hold a state, want only the newest", withState)
	}
	var j *Journal
	opts.StateCheckpoint = stateHook(&j)
	j = mustOpen(t, opts)
	defer j.Close()
	if st := j.Stats(); st.CheckpointedSegments != sealed {
		t.Fatalf("trusted %d checkpoints, want %d", st.CheckpointedSegments, sealed)
	}
	compareWithScan(t, fs, opts, j)
	seq, state := j.RecoveredState()
	if state == nil || seq == 0 || seq > last || !bytes.Equal(state, stateFor(seq)) {
		t.Fatalf("RecoveredState = %d, %q", seq, state)
	}
	if s2, st2 := j.RecoveredState(); st2 != nil || s2 != 0 {
		t.Fatal("RecoveredState handed out twice")
	}
	verifyDet(t, j, 1, last, true)
	// And it goes on: appends after a checkpointed open are readable
	// after the next one.
	for i := 0; i < 50; i++ {
		appendDet(t, j)
	}
	waitSynced(t, j, j.LastSeq())
}

// A sealed segment with a valid checkpoint is not read at Open: damage in
// the middle of its records (which the checkpoint's last-record check does
// not touch) goes unnoticed by Open, while VerifyAll and Check, which scan
// everything, still report it. The old Open scanned every segment and
// refused.
func TestOpenTrustsCheckpointedSegment(t *testing.T) {
	fs := NewMemFS()
	opts, _, _ := buildCheckpointed(t, fs)
	segs := segFiles(t, fs, opts.Dir)
	data := readAll(t, fs, segs[1])
	offs, _ := recordOffsets(data)
	off := offs[len(offs)/2] + 80
	writeAt(t, fs, segs[1], off, []byte{data[off] ^ 0x40})

	j, err := Open(opts)
	if err != nil {
		t.Fatalf("Open read a checkpointed segment: %v", err)
	}
	if st := j.Stats(); st.CheckpointedSegments < len(segs)-1 {
		t.Fatalf("trusted %d checkpoints", st.CheckpointedSegments)
	}
	j.Close()
	vo := opts
	vo.VerifyAll = true
	if _, err := Open(vo); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), filepath.Base(segs[1])) {
		t.Fatalf("Open with VerifyAll: %v, want ErrCorrupt naming %s", err, segs[1])
	}
	if _, err := Check(opts.Dir, fs); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Check: %v, want ErrCorrupt", err)
	}
}

func TestCheckpointBadFallsBackToScan(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, fs *MemFS, path string, c *checkpoint)
	}{
		{"missing", func(t *testing.T, fs *MemFS, path string, c *checkpoint) {
			if err := fs.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"flipped byte", func(t *testing.T, fs *MemFS, path string, c *checkpoint) {
			writeAt(t, fs, path, ckOffCount, []byte{byte(c.count) ^ 1})
		}},
		{"truncated", func(t *testing.T, fs *MemFS, path string, c *checkpoint) {
			f, err := fs.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(ckptHeaderSize); err != nil {
				t.Fatal(err)
			}
		}},
		{"valid CRC, claims fewer records", func(t *testing.T, fs *MemFS, path string, c *checkpoint) {
			c.count--
			c.end = int64(c.index[0]) // any wrong end
			c.index = c.index[:(c.count+uint64(c.interval)-1)/uint64(c.interval)]
			rewriteCkpt(t, fs, path, c)
		}},
		{"valid CRC, claims more records", func(t *testing.T, fs *MemFS, path string, c *checkpoint) {
			c.count += uint64(c.interval)
			c.index = append(c.index, uint32(c.end))
			rewriteCkpt(t, fs, path, c)
		}},
		{"valid CRC, other journal id", func(t *testing.T, fs *MemFS, path string, c *checkpoint) {
			c.id[0] ^= 1
			rewriteCkpt(t, fs, path, c)
		}},
		{"valid CRC, other index interval", func(t *testing.T, fs *MemFS, path string, c *checkpoint) {
			c.interval *= 2
			c.index = c.index[:(c.count+uint64(c.interval)-1)/uint64(c.interval)]
			rewriteCkpt(t, fs, path, c)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := NewMemFS()
			opts, last, sealed := buildCheckpointed(t, fs)
			// The newest checkpoint: Open reads it (and takes the older
			// segments' checkpoints from its manifest when it is usable).
			seqs := ckptSeqs(ckptFiles(t, fs, opts.Dir))
			first := seqs[len(seqs)-1]
			path := filepath.Join(opts.Dir, checkpointName(first))
			c, err := readCheckpoint(fs, path)
			if err != nil {
				t.Fatal(err)
			}
			tc.damage(t, fs, path, c)
			j := mustOpen(t, opts)
			if st := j.Stats(); st.CheckpointedSegments != sealed-1 {
				t.Fatalf("trusted %d checkpoints, want %d (all but the damaged one)", st.CheckpointedSegments, sealed-1)
			}
			compareWithScan(t, fs, opts, j)
			verifyDet(t, j, 1, last, true)
			// Open writes the checkpoint anew; the next start trusts it.
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			if got, err := readCheckpoint(fs, path); err != nil || got.count != countOf(t, fs, opts, first) {
				t.Fatalf("checkpoint not rewritten: %+v, %v", got, err)
			}
			j = mustOpen(t, opts)
			defer j.Close()
			if st := j.Stats(); st.CheckpointedSegments != sealed {
				t.Fatalf("after the rewrite trusted %d checkpoints, want %d", st.CheckpointedSegments, sealed)
			}
		})
	}
}

// countOf returns how many records the segment starting at first holds,
// by a full scan.
func countOf(t *testing.T, fs FS, opts Options, first uint64) uint64 {
	t.Helper()
	vo := opts
	vo.FS = fs.(*MemFS).CrashClone()
	vo.VerifyAll = true
	v := mustOpen(t, vo)
	defer v.Close()
	for _, s := range v.segs {
		if s.first == first {
			return s.count
		}
	}
	t.Fatalf("no segment %d", first)
	return 0
}

func rewriteCkpt(t *testing.T, fs FS, path string, c *checkpoint) {
	t.Helper()
	f, err := fs.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(c.encode(), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.SyncData(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func ckptSeqs(m map[uint64]*checkpoint) []uint64 {
	var s []uint64
	for k := range m {
		s = append(s, k)
	}
	for i := range s {
		for k := i + 1; k < len(s); k++ {
			if s[k] < s[i] {
				s[i], s[k] = s[k], s[i]
			}
		}
	}
	return s
}

// A checkpoint (with a state) copied in from another journal, under the
// name of one of this journal's segments, is ignored: its segment is
// scanned and its state is not handed out.
func TestCheckpointOfOtherJournalIgnored(t *testing.T) {
	fsA, fsB := NewMemFS(), NewMemFS()
	optsA, _, _ := buildCheckpointed(t, fsA)
	optsB, _, _ := buildCheckpointed(t, fsB)
	ckA, ckB := ckptFiles(t, fsA, optsA.Dir), ckptFiles(t, fsB, optsB.Dir)
	// Give B's state-bearing checkpoint A's newest name, with a state
	// newer than any of A's.
	newestA := ckptSeqs(ckA)[len(ckA)-1]
	var donor *checkpoint
	for _, c := range ckB {
		if c.state != nil {
			donor = c
		}
	}
	if donor == nil {
		t.Fatal("B has no state checkpoint")
	}
	donor.first = newestA
	donor.stateSeq = 1 << 40
	donor.state = stateFor(donor.stateSeq)
	rewriteCkpt(t, fsA, filepath.Join(optsA.Dir, checkpointName(newestA)), donor)

	var j *Journal
	optsA.StateCheckpoint = stateHook(&j)
	j = mustOpen(t, optsA)
	defer j.Close()
	sealed := len(segFiles(t, fsA, optsA.Dir)) - 1
	if st := j.Stats(); st.CheckpointedSegments != sealed-1 {
		t.Fatalf("trusted %d checkpoints, want %d", st.CheckpointedSegments, sealed-1)
	}
	if seq, _ := j.RecoveredState(); seq == donor.stateSeq {
		t.Fatal("state of another journal's checkpoint handed out")
	}
	compareWithScan(t, fsA, optsA, j)
}

// kill -9 after a rotation sealed a segment but before its checkpoint was
// written: the next Open scans that segment, serves everything, and writes
// the missing checkpoint; the state is the previous one.
func TestCheckpointCrashBeforeWrite(t *testing.T) {
	fs := NewMemFS()
	opts := memOpts(t, fs)
	opts.SegmentSize = 8 << 10
	var j *Journal
	opts.StateCheckpoint = stateHook(&j)
	var (
		mu      sync.Mutex
		blocked = make(chan uint64, 1)
		release = make(chan struct{})
		block   bool
	)
	opts.beforeCheckpoint = func(first uint64) {
		mu.Lock()
		b := block
		block = false // once
		mu.Unlock()
		if b {
			blocked <- first
			<-release
		}
	}
	j = mustOpen(t, opts)
	for i := 0; i < 120; i++ {
		appendDet(t, j)
	}
	waitSynced(t, j, j.LastSeq())
	eventually(t, "checkpoints written", func() bool {
		j.ckptMu.Lock()
		defer j.ckptMu.Unlock()
		return len(j.ckptJobs) == 0 && len(ckptFiles(t, fs, opts.Dir)) == len(segFiles(t, fs, opts.Dir))-1
	})
	mu.Lock()
	block = true
	mu.Unlock()
	segsBefore := len(segFiles(t, fs, opts.Dir))
	for len(segFiles(t, fs, opts.Dir)) == segsBefore {
		appendDet(t, j)
	}
	waitSynced(t, j, j.LastSeq())
	stuck := <-blocked
	crashed := fs.CrashClone() // the process dies here
	close(release)
	j.Close()

	opts.FS = crashed
	if _, ok := ckptFiles(t, crashed, opts.Dir)[stuck]; ok {
		t.Fatalf("checkpoint %d exists after the crash", stuck)
	}
	// (Appends staged while the rotation happened may have filled more
	// segments, whose checkpoints queued behind the stuck one.)
	have := len(ckptFiles(t, crashed, opts.Dir))
	sealed := len(segFiles(t, crashed, opts.Dir)) - 1
	if have >= sealed {
		t.Fatalf("%d checkpoints for %d sealed segments after the crash", have, sealed)
	}
	j = mustOpen(t, opts)
	if st := j.Stats(); st.CheckpointedSegments != have {
		t.Fatalf("trusted %d checkpoints, want %d", st.CheckpointedSegments, have)
	}
	last := j.LastSeq()
	verifyDet(t, j, 1, last, true)
	compareWithScan(t, crashed, opts, j)
	// The state of the previous checkpoint (as of the seq that was last
	// when it was written).
	if seq, state := j.RecoveredState(); state == nil || seq > last || !bytes.Equal(state, stateFor(seq)) {
		t.Fatalf("RecoveredState seq %d (state %q)", seq, state)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := ckptFiles(t, crashed, opts.Dir)[stuck]; !ok {
		t.Fatalf("checkpoint %d not written by the Open after the crash", stuck)
	}
	if n := len(ckptFiles(t, crashed, opts.Dir)); n != len(segFiles(t, crashed, opts.Dir))-1 {
		t.Fatalf("%d checkpoints after reopening, want one per sealed segment", n)
	}
}

func TestRetentionRemovesCheckpoint(t *testing.T) {
	fs := NewMemFS()
	opts, _, _ := buildCheckpointed(t, fs)
	opts.RetentionBytes = 2 * opts.SegmentSize
	j := mustOpen(t, opts)
	defer j.Close()
	before := ckptFiles(t, fs, opts.Dir)
	n, err := j.ApplyRetention()
	if err != nil || n == 0 {
		t.Fatalf("ApplyRetention = %d, %v", n, err)
	}
	after := ckptFiles(t, fs, opts.Dir)
	if len(after) != len(before)-n {
		t.Fatalf("%d checkpoints before, %d after removing %d segments", len(before), len(after), n)
	}
	for first := range after {
		if first < j.FirstSeq() {
			t.Fatalf("checkpoint %d of a removed segment left behind", first)
		}
	}
}

// A checkpoint left behind by a retention that died between removing the
// segment and its checkpoint is removed at Open.
func TestOpenRemovesOrphanCheckpoint(t *testing.T) {
	fs := NewMemFS()
	opts, _, _ := buildCheckpointed(t, fs)
	segs := segFiles(t, fs, opts.Dir)
	if err := fs.Remove(segs[0]); err != nil {
		t.Fatal(err)
	}
	j := mustOpen(t, opts)
	defer j.Close()
	if _, ok := ckptFiles(t, fs, opts.Dir)[1]; ok {
		t.Fatal("orphan checkpoint not removed")
	}
}

// The newest checkpoint's manifest stands for the older ones: Open reads
// one checkpoint file, so a damaged older file does not matter while the
// newest is good.
func TestCheckpointManifestCoversOlder(t *testing.T) {
	fs := NewMemFS()
	opts, last, sealed := buildCheckpointed(t, fs)
	seqs := ckptSeqs(ckptFiles(t, fs, opts.Dir))
	newest, err := readCheckpoint(fs, filepath.Join(opts.Dir, checkpointName(seqs[len(seqs)-1])))
	if err != nil {
		t.Fatal(err)
	}
	if len(newest.manifest) != sealed-1 {
		t.Fatalf("newest checkpoint's manifest has %d entries, want %d", len(newest.manifest), sealed-1)
	}
	writeAt(t, fs, filepath.Join(opts.Dir, checkpointName(seqs[0])), ckOffCount, []byte{0xff})
	j := mustOpen(t, opts)
	defer j.Close()
	if st := j.Stats(); st.CheckpointedSegments != sealed {
		t.Fatalf("trusted %d checkpoints, want %d", st.CheckpointedSegments, sealed)
	}
	compareWithScan(t, fs, opts, j)
	verifyDet(t, j, 1, last, true)
}
