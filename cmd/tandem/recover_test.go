package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/record"
)

func TestRecoverConfig(t *testing.T) {
	ec, err := loadAsServe(t, writeConfig(t, "name = \"a\"\n"))
	if err != nil || ec.Journal.RecoverTruncate {
		t.Fatalf("default: RecoverTruncate %v, %v; want false", ec.Journal.RecoverTruncate, err)
	}
	ec, err = loadAsServe(t, writeConfig(t, `recover = "truncate"`+"\n"))
	if err != nil || !ec.Journal.RecoverTruncate {
		t.Fatalf("recover = truncate: RecoverTruncate %v, %v", ec.Journal.RecoverTruncate, err)
	}
	ec, err = loadAsServe(t, writeConfig(t, "name = \"a\"\n"), "--recover", "truncate")
	if err != nil || !ec.Journal.RecoverTruncate {
		t.Fatalf("--recover truncate: RecoverTruncate %v, %v", ec.Journal.RecoverTruncate, err)
	}
	if _, err := loadAsServe(t, writeConfig(t, `recover = "yes"`+"\n")); err == nil || !strings.Contains(err.Error(), `recover: "yes"`) {
		t.Fatalf("recover = yes: %v", err)
	}
}

// TestRecoverTruncateServe: `tandem serve` refuses a journal whose last
// batch is corrupt (a byte flipped in an acknowledged record), saying how to
// repair; with --recover truncate it starts, cutting at the bad record and
// logging what it dropped.
func TestRecoverTruncateServe(t *testing.T) {
	dir := t.TempDir()
	const segSize = 1 << 20
	jopts := journal.Options{Dir: dir, SegmentSize: segSize, Logger: slog.New(slog.DiscardHandler)}
	j, err := journal.Open(jopts)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{5, 3} { // two batches: seqs 1..5, 6..8
		var seq uint64
		j.Lock()
		for i := 0; i < n; i++ {
			h := record.Header{Origin: 1, Publisher: 2, PubSeq: j.LastSeq() + 1}
			if seq, err = j.AppendLocked(&h, []byte("t"), []byte(strings.Repeat("payload ", 10))); err != nil {
				t.Fatal(err)
			}
		}
		j.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := j.WaitSynced(ctx, seq)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	// Flip a payload byte of seq 7.
	path := filepath.Join(dir, "00000000000000000001.seg")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := 64
	for seq := 1; seq < 7; seq++ {
		off += record.Length(data[off:])
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{data[off+record.HeaderSize+3] ^ 0x10}, int64(off+record.HeaderSize+3)); err != nil {
		t.Fatal(err)
	}
	f.Close()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	args := []string{"serve", "--engine", testEngine, "--listen", addr, "--data", dir, "--name", "rt", "--segment-size", "1048576"}
	r := tandem(t, "", args...)
	if r.code == 0 || !strings.Contains(r.stderr, "corrupt") || !strings.Contains(r.stderr, "seq 7") || !strings.Contains(r.stderr, "--recover truncate") {
		t.Fatalf("serve on a corrupt journal: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	t.Log(strings.TrimSpace(r.stderr))

	p, err := spawnServe(t, addr, append(args, "--recover", "truncate")...)
	if err != nil {
		t.Fatal(err)
	}
	p.terminate(t)
	log := p.log()
	for _, want := range []string{"RecoverTruncate", "first_seq=7 ", "last_seq=8 ", "bytes="} {
		if !strings.Contains(log, want) {
			t.Fatalf("serve --recover truncate log does not say %q:\n%s", want, log)
		}
	}
	j, err = journal.Open(jopts)
	if err != nil {
		t.Fatalf("Open after the repair: %v", err)
	}
	defer j.Close()
	if j.LastSeq() != 6 {
		t.Fatalf("after the repair the journal ends at seq %d, want 6", j.LastSeq())
	}
}
