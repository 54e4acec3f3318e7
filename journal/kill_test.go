package journal

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// writerEnv makes the test binary run as the kill test's writer process
// (see TestMain): it appends deterministic records to the journal in the
// directory named by the variable and prints "ack N" after WaitSynced(N).
const writerEnv = "TANDEM_JOURNAL_WRITER"

func killTestOptions(dir string) Options {
	return Options{
		Dir:           dir,
		SegmentSize:   256 << 10,
		MaxBatchBytes: 64 << 10,
		IndexInterval: 16,
		Logger:        quietLogger(),
	}
}

func runWriter(dir string) int {
	j, err := Open(killTestOptions(dir))
	if err != nil {
		fmt.Fprintln(os.Stderr, "writer: open:", err)
		return 2
	}
	fmt.Printf("start %d\n", j.LastSeq())
	var mu sync.Mutex // serialises acks on stdout
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var last uint64
				for i := 0; i < 20; i++ {
					seq, err := appendDetErr(j)
					if err != nil {
						fmt.Fprintln(os.Stderr, "writer: append:", err)
						os.Exit(3)
					}
					last = seq
				}
				if err := j.WaitSynced(context.Background(), last); err != nil {
					fmt.Fprintln(os.Stderr, "writer: wait:", err)
					os.Exit(3)
				}
				mu.Lock()
				// Unbuffered: the line is in the pipe before we go on.
				fmt.Fprintf(os.Stdout, "ack %d\n", last)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return 0
}

// TestKillWriter runs the test binary as a writer, SIGKILLs it at a seeded
// random moment, and checks recovery: everything acknowledged is there and
// correct, every record is valid, appends continue.
func TestKillWriter(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 2))
	rounds := 20
	if long() {
		rounds = 200
	}
	dir := t.TempDir()
	start := time.Now()
	for round := 0; round < rounds; round++ {
		killAcks := 1 + rng.IntN(60) // kill after this many ack lines
		extra := time.Duration(rng.IntN(3000)) * time.Microsecond
		acked := killRound(t, dir, killAcks, extra)

		rep, cerr := Check(dir, nil)
		j, err := Open(killTestOptions(dir))
		if err != nil {
			t.Fatalf("round %d: Open after kill: %v (Check: %+v, %v)", round, err, rep, cerr)
		}
		last := j.LastSeq()
		if last < acked {
			t.Fatalf("round %d: LastSeq %d < acknowledged %d", round, last, acked)
		}
		verifyDet(t, j, 1, last, true)
		// Appends continue after recovery.
		seq := appendDet(t, j)
		waitSynced(t, j, seq)
		verifyDet(t, j, last, seq, true)
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		if testing.Verbose() {
			t.Logf("round %d: killed after %d acks (+%v): acked %d, recovered %d, torn %v", round, killAcks, extra, acked, last, rep.TornTail)
		}
	}
	t.Logf("%d rounds in %v", rounds, time.Since(start).Round(time.Millisecond))
}

// killRound starts a writer, kills it once it printed killAcks acks (plus
// a short random extra delay) and returns the highest acknowledged seq.
func killRound(t *testing.T, dir string, killAcks int, extra time.Duration) uint64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), writerEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var acked uint64
	acks := 0
	killed := false
	kill := func() {
		if !killed {
			killed = true
			cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	timer := time.AfterFunc(30*time.Second, kill) // a stuck writer fails the round below
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		n, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil || f[0] != "ack" {
			continue
		}
		acked = max(acked, n)
		if acks++; acks == killAcks {
			if extra > 0 {
				// Let the writer run on for a random moment: where the kill
				// lands is the point of the test, not a synchronisation.
				time.AfterFunc(extra, kill)
			} else {
				kill()
			}
		}
	}
	timer.Stop()
	err = cmd.Wait()
	if acks < killAcks {
		t.Fatalf("writer exited after %d acks (want %d): %v", acks, killAcks, err)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("writer did not die by SIGKILL: %v", err)
	}
	return acked
}
