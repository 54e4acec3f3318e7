package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/record"
)

// TestRecoveryTiming measures start-up (New: journal Open plus index
// rebuild) on a large journal, with checkpoints and with VerifyAll (every
// segment scanned, every record replayed: what start-up did before
// checkpoints), warm and, as root, with a cold page cache. It is a tool,
// not a unit test: it runs only with TANDEM_RECOVERY_DIR set (an empty
// directory on the disk to measure; it is removed afterwards) and
// TANDEM_RECOVERY_MSGS (default 16M) messages of 128-byte payloads
// (TANDEM_RECOVERY_SKIP_FULL=1 skips the slow VerifyAll runs):
//
//	TANDEM_RECOVERY_DIR=/work/tmp/rec TANDEM_RECOVERY_MSGS=16000000 \
//	    go test -run TestRecoveryTiming -v -timeout 30m ./engine
func TestRecoveryTiming(t *testing.T) {
	dir := os.Getenv("TANDEM_RECOVERY_DIR")
	if dir == "" {
		t.Skip("set TANDEM_RECOVERY_DIR (and TANDEM_RECOVERY_MSGS) to measure recovery on a large journal")
	}
	msgs := 16_000_000
	if s := os.Getenv("TANDEM_RECOVERY_MSGS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("TANDEM_RECOVERY_MSGS: %v", err)
		}
		msgs = n
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := func(verify bool) func(*Config) {
		return func(c *Config) {
			c.Journal = journal.Options{SegmentSize: journal.DefaultSegmentSize, VerifyAll: verify}
		}
	}
	keep := os.Getenv("TANDEM_RECOVERY_KEEP") != "" // keep the journal for the next run
	if !keep {
		defer os.RemoveAll(dir)
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*.seg")); keep && len(names) > 0 {
		t.Logf("reusing the journal in %s (%d segments)", dir, len(names))
	} else {
		buildTimingJournal(t, dir, msgs, cfg(false))
	}

	cold := os.Geteuid() == 0
	if !cold {
		t.Log("not root: cannot drop the page cache, measuring warm only")
	}
	measure := func(name string, verify, dropCaches bool) {
		var runs []time.Duration
		replayed := 0
		for range 3 {
			if dropCaches {
				if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
					t.Logf("dropping caches: %v; skipping %s", err, name)
					return
				}
			}
			t0 := time.Now()
			s := openNoStart(t, dir, cfg(verify))
			runs = append(runs, time.Since(t0))
			replayed = s.replayed
			s.Close()
		}
		sort.Slice(runs, func(a, b int) bool { return runs[a] < runs[b] })
		t.Logf("%-28s median %8v  (runs %v; replayed %d records)", name, runs[1].Round(time.Millisecond), runs, replayed)
	}
	full := os.Getenv("TANDEM_RECOVERY_SKIP_FULL") == ""
	measureJournal := func(name string) {
		var runs []time.Duration
		for range 3 {
			if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
				return
			}
			t0 := time.Now()
			j, err := journal.Open(journal.Options{Dir: dir, Logger: discardLogger()})
			if err != nil {
				t.Fatal(err)
			}
			runs = append(runs, time.Since(t0))
			j.Close()
		}
		sort.Slice(runs, func(a, b int) bool { return runs[a] < runs[b] })
		t.Logf("%-28s median %8v  (runs %v)", name, runs[1].Round(time.Millisecond), runs)
	}
	measure("warm, checkpoints", false, false)
	if full {
		measure("warm, VerifyAll (full scan)", true, false)
	}
	if cold {
		measure("cold, checkpoints", false, true)
		measureJournal("cold, journal.Open only")
		if full {
			measure("cold, VerifyAll (full scan)", true, true)
		}
	}
}

// buildTimingJournal writes msgs messages (and then fills the tail, see
// below) into a new journal in dir.
func buildTimingJournal(t *testing.T, dir string, msgs int, mod func(*Config)) {
	start := time.Now()
	s := openNoStart(t, dir, mod)
	payload := make([]byte, 128)
	var recs []record.View
	buf := make([]byte, 0, 4<<20)
	i := 0
	store := func(n int) {
		for end := i + n; i < end; {
			i++
			for k := range payload {
				payload[k] = byte(i + k)
			}
			h := record.Header{Seq: uint64(i), Time: int64(i), Origin: record.ID("origin"), Publisher: record.ID(fmt.Sprintf("pub%d", i%8)),
				PubSeq: uint64(i/8 + 1), OriginSeq: uint64(i)}
			off := len(buf)
			buf = record.Append(buf, &h, []byte(fmt.Sprintf("topic/%d", i%16)), payload)
			v, _, err := record.Parse(buf[off:])
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, v)
			if len(buf) > cap(buf)-512 || i == end {
				if _, err := s.StoreReplicated(recs, record.ID("origin")); err != nil {
					t.Fatal(err)
				}
				recs, buf = recs[:0], make([]byte, 0, 4<<20)
			}
		}
	}
	store(msgs)
	// Then fill the tail to ~93% after a rotation whose checkpoint (with
	// the state) is written: a restart (graceful or kill -9: Close writes
	// no state without a rotation) then scans an almost full tail and
	// replays its ~300k records, the worst case short of a crash right
	// after a rotation.
	perSeg := int(journal.DefaultSegmentSize / int64(record.Size(len("topic/15"), len(payload))))
	var prevCkpt string // the checkpoint of the segment before the tail
	tail := func() (first uint64, in int) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.j.WaitSynced(ctx, s.j.LastSeq()); err != nil {
			t.Fatal(err)
		}
		names, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
		sort.Strings(names)
		first, _ = strconv.ParseUint(strings.TrimSuffix(filepath.Base(names[len(names)-1]), ".seg"), 10, 64)
		if len(names) > 1 {
			prevCkpt = strings.TrimSuffix(names[len(names)-2], ".seg") + ".ckpt"
		}
		return first, int(s.j.LastSeq() + 1 - first)
	}
	_, in := tail()
	if in > perSeg*90/100 {
		store(perSeg - in + 1000) // into the next segment
		_, in = tail()
	}
	for deadline := time.Now().Add(time.Minute); ; {
		if _, err := os.Stat(prevCkpt); err == nil || prevCkpt == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("checkpoint of the segment before the tail not written")
		}
		time.Sleep(10 * time.Millisecond) // a tool: no event to wait on from here
	}
	store(perSeg*93/100 - in)
	msgs = i
	st := s.j.Stats()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("built %d messages, %d segments, %.2f GB in %v", msgs, st.Segments, float64(st.Bytes)/1e9, time.Since(start).Round(time.Millisecond))

}
