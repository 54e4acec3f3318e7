package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/replicate"
	"github.com/tandemhq/tandem/wire"
)

// TestReplFlags: repl-downgrade-after takes a duration or never (strict),
// from the command line and from the file; repl-hold-alarm-bytes reaches
// the replicator.
func TestReplFlags(t *testing.T) {
	file := writeConfig(t, "peer = [\"B=127.0.0.1:1\"]\nrepl-downgrade-after = \"never\"\nrepl-hold-alarm-bytes = 4096\n")
	ec, err := loadAsServe(t, file)
	if err != nil {
		t.Fatal(err)
	}
	if rc := ec.Replication; rc == nil || rc.DowngradeAfter != replicate.Never || rc.HoldAlarmBytes != 4096 {
		t.Fatalf("from the file: %+v", rc)
	}
	ec, err = loadAsServe(t, file, "--repl-downgrade-after", "3s")
	if err != nil || ec.Replication.DowngradeAfter != 3*time.Second {
		t.Fatalf("flag over file: %v, %v", ec.Replication, err)
	}
	ec, err = loadAsServe(t, writeConfig(t, "peer = [\"B=127.0.0.1:1\"]\n"), "--repl-downgrade-after", "never")
	if err != nil || ec.Replication.DowngradeAfter != replicate.Never {
		t.Fatalf("--repl-downgrade-after never: %v, %v", ec.Replication, err)
	}
	r := tandem(t, "", "serve", "--repl-downgrade-after", "sometimes", "--data", t.TempDir())
	if r.code != 2 || !strings.Contains(r.stderr, "want a duration or never") {
		t.Fatalf("serve --repl-downgrade-after sometimes: %+v", r)
	}
	r = tandem(t, "", "help", "serve")
	if help := r.stdout + r.stderr; !strings.Contains(help, "repl-hold-alarm-bytes") || !strings.Contains(help, "never: strict sync") {
		t.Fatalf("serve's help lacks the new flags:\n%s", help)
	}
}

// TestReplReset: repl-reset deletes the position of one peer's stream and
// nothing else; it says when there is none; it needs both flags.
func TestReplReset(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "repl-in-A.pos")
	keep := []string{"repl-in-C.pos", "repl-out-A.pos"}
	for _, f := range append([]string{"repl-in-A.pos"}, keep...) {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("v2 00000000000000000000000000000001 7 0000abcd\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := tandem(t, "", "repl-reset", "--data", dir, "--peer", "A")
	if r.code != 0 || !strings.Contains(r.stdout, "deleted the position of A's stream") {
		t.Fatalf("repl-reset: %+v", r)
	}
	if _, err := os.Stat(in); !os.IsNotExist(err) {
		t.Fatalf("%s still there: %v", in, err)
	}
	for _, f := range keep {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("repl-reset removed %s: %v", f, err)
		}
	}
	r = tandem(t, "", "repl-reset", "--data", dir, "--peer", "A")
	if r.code != 0 || !strings.Contains(r.stdout, "nothing to reset") {
		t.Fatalf("second repl-reset: %+v", r)
	}
	if r = tandem(t, "", "repl-reset", "--data", dir); r.code != 2 || !strings.Contains(r.stderr, "--peer") {
		t.Fatalf("repl-reset without --peer: %+v", r)
	}
	if r = tandem(t, "", "repl-reset", "--data", filepath.Join(dir, "nope"), "--peer", "A"); r.code != 1 {
		t.Fatalf("repl-reset of a missing directory: %+v", r)
	}
	if r = tandem(t, "", "help"); !strings.Contains(r.stdout, "repl-reset") {
		t.Fatalf("help lacks repl-reset: %+v", r)
	}
}

// TestStatShowsReplicationAlarms: the text of `tandem stat` names a fork
// with its reason, skipped too-large records and a hold alarm.
func TestStatShowsReplicationAlarms(t *testing.T) {
	var b strings.Builder
	printStats(&b, &wire.Stats{ReplicationListen: "127.0.0.1:1", Replication: []wire.DestinationStats{
		{Name: "B", Mode: "sync", State: "fork", Connected: true, Reason: "destination holds journal x up to seq 9"},
		{Name: "C", Mode: "async", State: "async", SkippedTooLarge: 2, HoldAlarm: true, HoldBytes: 3 << 30},
	}})
	out := b.String()
	for _, want := range []string{"B: link refused (fork): destination holds journal x up to seq 9", "repl-reset",
		"skipped-too-large=2", "HOLD-ALARM(3.0 GiB)"} {
		if !strings.Contains(out, want) {
			t.Errorf("stat output lacks %q:\n%s", want, out)
		}
	}
}
