package journal

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tandemhq/tandem/record"
)

var (
	seedFlag = flag.Uint64("seed", 0, "seed for randomised tests (0 = from TANDEM_SEED or the clock)")
	longFlag = flag.Bool("long", false, "run randomised and kill tests for longer")
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(writerEnv); dir != "" {
		os.Exit(runWriter(dir))
	}
	os.Exit(m.Run())
}

// testSeed returns the seed for a randomised test and logs how to replay it.
func testSeed(t testing.TB) uint64 {
	seed := *seedFlag
	if seed == 0 {
		if s := os.Getenv("TANDEM_SEED"); s != "" {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				t.Fatalf("TANDEM_SEED: %v", err)
			}
			seed = v
		}
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -seed %d or TANDEM_SEED=%d)", seed, seed, seed)
	return seed
}

func long() bool { return *longFlag || os.Getenv("TANDEM_LONG") != "" }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testLogger logs through t so recovery messages show with -v.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func memOpts(t testing.TB, fs FS) Options {
	return Options{
		Dir:           "/j",
		FS:            fs,
		SegmentSize:   16 << 10,
		IndexInterval: 4,
		Logger:        testLogger(t),
	}
}

func mustOpen(t testing.TB, opts Options) *Journal {
	t.Helper()
	j, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return j
}

// Deterministic content: everything about record seq derives from seq.
func detTopic(seq uint64) []byte { return []byte("t/" + strconv.Itoa(int(seq%7))) }

func detPayload(seq uint64) []byte {
	n := int(seq*31) % 300
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(seq*7 + uint64(i))
	}
	return p
}

func detHeader(seq uint64) record.Header {
	return record.Header{Time: int64(seq) * 1000, Origin: 9, Publisher: 1000 + seq%3, PubSeq: seq * 2}
}

// appendDet appends the deterministic record for the next seq.
func appendDet(t testing.TB, j *Journal) uint64 {
	t.Helper()
	seq, err := appendDetErr(j)
	if err != nil {
		t.Fatalf("append: %v", err)
	}
	return seq
}

func appendDetErr(j *Journal) (uint64, error) {
	j.Lock()
	defer j.Unlock()
	want := j.LastSeq() + 1
	h := detHeader(want)
	seq, err := j.AppendLocked(&h, detTopic(want), detPayload(want))
	if err == nil && seq != want {
		return seq, fmt.Errorf("AppendLocked returned seq %d, want %d", seq, want)
	}
	return seq, err
}

// checkDet reports whether v is the deterministic record for seq.
func checkDet(v record.View, seq uint64) error {
	if err := v.Verify(); err != nil {
		return fmt.Errorf("seq %d: %w", seq, err)
	}
	h := detHeader(seq)
	switch {
	case v.Seq() != seq:
		return fmt.Errorf("seq %d: record has seq %d", seq, v.Seq())
	case v.Time() != h.Time || v.Origin() != h.Origin || v.Publisher() != h.Publisher || v.PubSeq() != h.PubSeq:
		return fmt.Errorf("seq %d: header mismatch", seq)
	case !bytes.Equal(v.Topic(), detTopic(seq)):
		return fmt.Errorf("seq %d: topic %q", seq, v.Topic())
	case !bytes.Equal(v.Payload(), detPayload(seq)):
		return fmt.Errorf("seq %d: payload mismatch", seq)
	}
	return nil
}

// verifyDet reads [from, to] with a cursor and checks every record, and
// that nothing beyond `to` is visible if exact.
func verifyDet(t testing.TB, j *Journal, from, to uint64, exact bool) {
	t.Helper()
	c, err := j.NewCursor(from)
	if err != nil {
		t.Fatalf("NewCursor(%d): %v", from, err)
	}
	defer c.Close()
	for seq := from; seq <= to; seq++ {
		v, ok := c.Next()
		if !ok {
			t.Fatalf("Next at seq %d: none (synced %d, err %v)", seq, j.SyncedSeq(), c.Err())
		}
		if err := checkDet(v, seq); err != nil {
			t.Fatal(err)
		}
	}
	if exact {
		if v, ok := c.Next(); ok {
			t.Fatalf("unexpected record seq %d after %d", v.Seq(), to)
		}
	}
}

func waitSynced(t testing.TB, j *Journal, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := j.WaitSynced(ctx, seq); err != nil {
		t.Fatalf("WaitSynced(%d): %v", seq, err)
	}
}

// eventually polls cond until it holds or the deadline passes. For
// conditions with no event to wait on (tests only).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
