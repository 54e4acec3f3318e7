package journal

import (
	"math/rand/v2"
	"testing"

	"github.com/tandemhq/tandem/record"
)

func appendAt(t *testing.T, j *Journal, times []int64, payload int) uint64 {
	t.Helper()
	var seq uint64
	for _, tm := range times {
		h := record.Header{Time: tm, Origin: 1, Publisher: 2}
		var err error
		if seq, err = j.Append(&h, []byte("t"), make([]byte, payload)); err != nil {
			t.Fatal(err)
		}
	}
	waitSynced(t, j, seq)
	return seq
}

// bruteFindTime is the definition: the first record in journal order whose
// time is at or after at, else the seq after the last.
func bruteFindTime(times []int64, at int64) uint64 {
	for i, tm := range times {
		if tm >= at {
			return uint64(i + 1)
		}
	}
	return uint64(len(times) + 1)
}

// Times out of order within and across segments (replicated records keep
// their origin's time): FindTime is the first record at or after the time
// in journal order, never a later-stored older one.
func TestFindTime(t *testing.T) {
	opts := memOpts(t, NewMemFS())
	opts.SegmentSize = 4 << 10
	j := mustOpen(t, opts)
	defer j.Close()
	// ~1.1 KiB records: three per 4 KiB segment.
	times := []int64{100, 300, 200, 150, 400, 120, 250, 500}
	last := appendAt(t, j, times, 1000)
	if st := j.Stats(); st.Segments < 3 {
		t.Fatalf("only %d segments", st.Segments)
	}
	for _, c := range []struct {
		at   int64
		want uint64
	}{{-1 << 62, 1}, {0, 1}, {100, 1}, {101, 2}, {160, 2}, {300, 2}, {301, 5}, {400, 5}, {401, 8}, {500, 8}, {501, last + 1}} {
		for pass := 0; pass < 2; pass++ { // the second with the sealed segments' greatest times known
			got, err := j.FindTime(c.at)
			if err != nil || got != c.want {
				t.Errorf("pass %d: FindTime(%d) = %d, %v; want %d", pass, c.at, got, err, c.want)
			}
		}
	}
}

func TestFindTimeRandom(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 7))
	opts := memOpts(t, NewMemFS())
	opts.SegmentSize = 4 << 10
	j := mustOpen(t, opts)
	defer j.Close()
	var times []int64
	for round := 0; round < 6; round++ {
		// Mostly increasing with jitter, like one instance's loops plus
		// replicated records from a peer whose clock is off.
		base := int64(round) * 1000
		batch := make([]int64, 5+rng.IntN(40))
		for i := range batch {
			batch[i] = base + int64(i)*20 + rng.Int64N(400) - 200
		}
		appendAt(t, j, batch, rng.IntN(600))
		times = append(times, batch...)
		for q := 0; q < 50; q++ {
			at := rng.Int64N(int64(round+2)*1000) - 300
			if got, err := j.FindTime(at); err != nil || got != bruteFindTime(times, at) {
				t.Fatalf("after %d records: FindTime(%d) = %d, %v; want %d", len(times), at, got, err, bruteFindTime(times, at))
			}
		}
	}
}

// Retention removed the oldest segments: the search starts at the oldest held.
func TestFindTimeAfterRetention(t *testing.T) {
	opts := memOpts(t, NewMemFS())
	opts.SegmentSize = 4 << 10
	opts.RetentionBytes = 2 * opts.SegmentSize
	j := mustOpen(t, opts)
	defer j.Close()
	times := make([]int64, 30)
	for i := range times {
		times[i] = int64(i) * 10
	}
	appendAt(t, j, times, 1000)
	if _, err := j.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	first := j.FirstSeq()
	if first == 1 {
		t.Fatal("retention removed nothing")
	}
	if got, err := j.FindTime(0); err != nil || got != first {
		t.Errorf("FindTime(0) after retention = %d, %v; want the oldest held, %d", got, err, first)
	}
	if got, err := j.FindTime(times[len(times)-1]); err != nil || got != uint64(len(times)) {
		t.Errorf("FindTime(last time) = %d, %v; want %d", got, err, len(times))
	}
}
