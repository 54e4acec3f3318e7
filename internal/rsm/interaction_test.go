package rsm

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/record"
)

// Scripted interaction tests, in the style of etcd-io/raft's
// interaction_test.go: each file in testdata/ is a series of commands,
// each followed by "----" and the output it must produce (a blank line
// ends it). `go test ./internal/rsm -run TestInteraction -rewrite`
// rewrites the expected output from what the machines do now.
//
// The harness is one source instance S (its journal: records 1..n, CRC
// of seq s = 1000+s) shipping to one destination D through a Dest, and
// D's Source and AckQueue for S's stream. Commands:
//
//	journal n=N                    S's journal holds 1..N, all durable
//	dest sync=B down=D up=D window=N   a new Dest (a start or a restart)
//	restore acked=N                the positions file S saved
//	connect / cut                  the link comes up / goes down
//	resume seq=N crc=N journal=self|other   D's Resume arrives at S
//	ship through=N n=N bytes=N     S's sender did this with [.., N]
//	ack through=N                  D's batch acknowledgment arrives
//	tick t=D lag=D                 the evaluation tick at time t
//	follow journal=self|other      (at D) a Hello names S's journal
//	batch from=N through=N stored=N journal=self|other   (at D) a batch
//	synced seq=N                   (at D) D's journal is durable to N
var rewrite = flag.Bool("rewrite", false, "rewrite testdata/*.txt expected output")

type harness struct {
	self, other record.JournalID
	last        uint64
	d           *Dest
	src         *Source
	q           AckQueue
	run         uint64
	fresh       []uint64
}

func newHarness() *harness {
	h := &harness{src: NewSource(Position{})}
	h.self[0], h.other[0] = 1, 2
	return h
}

func (h *harness) journal(s string) record.JournalID {
	if s == "other" {
		return h.other
	}
	return h.self
}

func (h *harness) destLine() string {
	if h.d == nil {
		return "no dest"
	}
	n, b := h.d.InFlight()
	w := "open"
	if !h.d.WindowOpen() {
		w = "full"
	}
	return fmt.Sprintf("dest: state=%v connected=%v forked=%v run=%d acked=%d sent=%d inflight=%d/%dB window=%s",
		h.d.State(), h.d.Connected(), h.d.Forked(), h.d.Run(), h.d.Acked(), h.d.Sent(), n, b, w)
}

func (h *harness) do(cmd string, args map[string]string) (string, error) {
	num := func(k string) uint64 {
		v, _ := strconv.ParseUint(args[k], 10, 64)
		return v
	}
	dur := func(k string) int64 {
		if args[k] == "never" {
			return Never
		}
		d, _ := time.ParseDuration(args[k])
		return int64(d)
	}
	var out []string
	switch cmd {
	case "journal":
		h.last = num("n")
		return fmt.Sprintf("journal: 1..%d durable", h.last), nil
	case "dest":
		h.d = NewDest(DestConfig{Sync: args["sync"] == "true", DowngradeAfter: dur("down"), UpgradeBelow: dur("up"), Window: int(num("window"))}, 0)
	case "restore":
		h.d.Restore(num("acked"))
	case "connect":
		h.d.LinkUp()
	case "cut":
		h.d.LinkDown()
	case "resume":
		pos := Position{Journal: h.journal(args["journal"]), Seq: num("seq"), CRC: uint32(num("crc"))}
		from, v, reason := CheckResume(h.self, pos, 1, h.last, func(seq uint64) (uint32, error) { return uint32(1000 + seq), nil })
		if v == ResumeFork {
			first := h.d.Fork()
			out = append(out, fmt.Sprintf("verdict: fork (first=%v): %s", first, reason))
		} else {
			var unforked bool
			h.run, unforked = h.d.Resume(from)
			out = append(out, fmt.Sprintf("verdict: %v from=%d run=%d unforked=%v", v, from, h.run, unforked))
		}
	case "ship":
		adv := h.d.Ship(h.run, num("through"), int(num("n")), int(num("bytes")))
		out = append(out, fmt.Sprintf("advanced=%v", adv))
	case "ack":
		run := h.run
		if args["run"] != "" {
			run = num("run")
		}
		out = append(out, fmt.Sprintf("advanced=%v", h.d.Ack(run, num("through"))))
	case "tick":
		st, away, ch := h.d.Evaluate(dur("t"), dur("lag"))
		out = append(out, fmt.Sprintf("evaluate: %v changed=%v away=%v", st, ch, time.Duration(away)))
	case "follow":
		held, sw := h.src.Follow(h.journal(args["journal"]))
		h.q.Reset()
		return fmt.Sprintf("resume with: seq=%d crc=%d switched=%v", held.Seq, held.CRC, sw), nil
	case "batch":
		if err := h.src.Batch(h.journal(args["journal"]), num("from")); err != nil {
			return "batch refused: " + err.Error(), nil
		}
		var fresh []string
		for s := num("from"); s <= num("through"); s++ {
			if h.src.Fresh(s) {
				fresh = append(fresh, strconv.FormatUint(s, 10))
			}
		}
		a := h.src.Received(num("through"), uint32(1000+num("through")), num("stored"))
		h.q.Push(a)
		return fmt.Sprintf("fresh=[%s] queued ack through=%d waitFor=%d", strings.Join(fresh, " "), a.Through, a.WaitFor), nil
	case "synced":
		a, ok := h.q.Ready(num("seq"))
		if ok {
			h.src.Acked(Position{Journal: h.src.Journal(), Seq: a.Through, CRC: a.CRC})
			return fmt.Sprintf("send ack through=%d; durable=%d; waiting=%d", a.Through, h.src.Durable().Seq, h.q.Len()), nil
		}
		return fmt.Sprintf("no ack yet; durable=%d; waiting=%d", h.src.Durable().Seq, h.q.Len()), nil
	default:
		return "", errors.New("unknown command " + cmd)
	}
	out = append(out, h.destLine())
	return strings.Join(out, "\n"), nil
}

func TestInteraction(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no testdata/*.txt")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) { runScript(t, path) })
	}
}

func runScript(t *testing.T, path string) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	f.Close()
	h := newHarness()
	var outFile strings.Builder
	for i := 0; i < len(lines); {
		line := lines[i]
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			outFile.WriteString(line + "\n")
			i++
			continue
		}
		// a command, "----", the expected output up to a blank line
		cmdLine := line
		i++
		if i >= len(lines) || lines[i] != "----" {
			t.Fatalf("%s:%d: %q is not followed by ----", path, i, cmdLine)
		}
		i++
		var want []string
		for ; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
			want = append(want, lines[i])
		}
		fields := strings.Fields(cmdLine)
		args := map[string]string{}
		for _, a := range fields[1:] {
			k, v, _ := strings.Cut(a, "=")
			args[k] = v
		}
		got, err := h.do(fields[0], args)
		if err != nil {
			t.Fatalf("%s: %s: %v", path, cmdLine, err)
		}
		outFile.WriteString(cmdLine + "\n----\n" + got + "\n")
		if !*rewrite && got != strings.Join(want, "\n") {
			t.Errorf("%s: %s\n got:\n%s\nwant:\n%s", path, cmdLine, got, strings.Join(want, "\n"))
		}
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(outFile.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
