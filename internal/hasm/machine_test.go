package hasm

import (
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var seedFlag = flag.Uint64("seed", 0, "seed of TestDeterministic (0: a fresh one)")

// upMachine returns a machine with a store, logged on to "a".
func upMachine(t testing.TB) *Machine {
	m := New(Config{Name: "p", Chooser: NewDefaultChooser("a", "b"), Delay: &ExponentialDelay{}, Store: true, MaxFrame: 1 << 20})
	m.Step(Input{Kind: InStart})
	m.Advance()
	m.Step(Input{Kind: InDialed, Conn: 1})
	m.Advance()
	m.Step(Input{Kind: InAttached, Conn: 1})
	m.Advance()
	if m.Phase() != PhaseUp {
		t.Fatalf("phase %v", m.Phase())
	}
	return m
}

// The publish, ack and delivery paths do not allocate.
func TestHotPathsDoNotAllocate(t *testing.T) {
	m := upMachine(t)
	allocs := testing.AllocsPerRun(10000, func() {
		seq := m.NextPubSeq()
		if v := m.Stored(seq, 5, 200); v != VerdictSend {
			t.Fatalf("verdict %v", v)
		}
		m.Step(Input{Kind: InAcked, Conn: 1, Seq: seq})
		for _, a := range m.Ready().Actions {
			if a.Kind != ActStoreDiscard || a.Seq != seq {
				t.Fatalf("action %+v", a)
			}
		}
		m.Advance()
	})
	if allocs != 0 {
		t.Fatalf("publish+ack: %v allocations per message", allocs)
	}

	var f SubFilter
	seq := uint64(0)
	allocs = testing.AllocsPerRun(10000, func() {
		seq++
		if !f.Admit(7, seq, nil) {
			t.Fatal("refused a new message")
		}
		f.Delivered(7, seq)
		if f.Admit(7, seq, nil) {
			t.Fatal("admitted a duplicate")
		}
	})
	if allocs != 0 {
		t.Fatalf("delivery: %v allocations per message", allocs)
	}
}

// A refused re-publish is removed from the store and reported; the
// connection stays.
func TestReplayedRefusesWhatCannotFit(t *testing.T) {
	m := New(Config{Chooser: NewDefaultChooser("a"), Delay: &FixedDelay{}, Store: true, MaxFrame: 1000})
	m.Step(Input{Kind: InStart})
	m.Advance()
	m.Step(Input{Kind: InDialed, Conn: 1, Logon: Logon{LastPubSeq: 9, AckedPubSeq: 4, MaxFrame: 100}})
	if a := m.Ready().Actions; len(a) != 1 || a[0].Kind != ActAttach || a[0].Seq != 4 {
		t.Fatalf("attach: %+v", a)
	}
	m.Advance()
	if v := m.Replayed(1, 3, 1, 50); v != VerdictSkip {
		t.Fatalf("3: %v", v)
	}
	if v := m.Replayed(1, 5, 1, 50); v != VerdictSend {
		t.Fatalf("5: %v", v)
	}
	if v := m.Replayed(1, 6, 1, 150); v != VerdictRefuse {
		t.Fatalf("6: %v", v)
	}
	a := m.Ready().Actions
	if len(a) != 2 || a[0].Kind != ActStoreRemove || a[1].Kind != ActFailedWrite || a[1].Reason != "150 bytes > max-frame 100" {
		t.Fatalf("refusal: %+v", a)
	}
	m.Advance()
	m.Step(Input{Kind: InAttached, Conn: 1, Seq: 6})
	if a := m.Ready().Actions; a[0].Kind != ActNextSeq || a[0].Seq != 10 {
		t.Fatalf("next seq: %+v", a[0])
	}
}

// The same seed gives the same trace; a run prints its seed and replays
// from it with -seed.
func TestDeterministic(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (replay: go test -run TestDeterministic -seed %d ./internal/hasm)", seed, seed)
	a, b := randomRun(seed), randomRun(seed)
	if a != b {
		t.Fatalf("seed %d: two runs differ", seed)
	}
	for i := uint64(1); i <= 50; i++ {
		if randomRun(seed+i) != randomRun(seed+i) {
			t.Fatalf("seed %d: two runs differ", seed+i)
		}
	}
}

// randomRun drives a machine with random inputs from seed and returns a
// digest of its trace.
func randomRun(seed uint64) string {
	r := rand.New(rand.NewPCG(seed, 1))
	m := New(Config{Name: "p", Chooser: NewDefaultChooser("a", "b", "c"),
		Delay: &ExponentialDelay{JitterPPM: 200000, MaxTotal: int64(5 * time.Second), Rand: rand.New(rand.NewPCG(seed, 2))},
		Store: true, MaxFrame: 1000, Rand: rand.New(rand.NewPCG(seed, 3))})
	h := fnv.New64a()
	var now int64
	var dial, attach, cur ConnID
	var subs []Action
	m.Step(Input{Kind: InStart})
	for step := 0; step < 300 && m.Phase() != PhaseStopped; step++ {
		for _, a := range m.Ready().Actions {
			fmt.Fprintf(h, "%s|", actionString(a, now))
			switch a.Kind {
			case ActDial:
				dial = a.Conn
			case ActAttach:
				attach = a.Conn
			case ActUp:
				cur = a.Conn
			case ActSubscribe:
				subs = append(subs, a)
			}
		}
		m.Advance()
		now += int64(r.IntN(50)) * int64(time.Millisecond)
		var in Input
		switch r.IntN(9) {
		case 0:
			m.Tick(now)
			continue
		case 1:
			in = Input{Kind: InDialed, Conn: dial, Logon: Logon{LastPubSeq: uint64(r.IntN(20)), AckedPubSeq: uint64(r.IntN(20)), MaxFrame: 100 + r.IntN(900)}}
		case 2:
			in = Input{Kind: InDialFailed, Conn: dial, Err: errors.New("refused"), Cause: Cause(r.IntN(3))}
		case 3:
			for s := m.NextPubSeq() - 10; s < m.NextPubSeq(); s++ {
				fmt.Fprintf(h, "r%v|", m.Replayed(attach, s, 1, r.IntN(1200)))
			}
			in = Input{Kind: InAttached, Conn: attach, Seq: m.NextPubSeq() - 1}
		case 4:
			in = Input{Kind: InLost, Conn: cur, Err: errors.New("cut"), Cause: Cause(r.IntN(5))}
		case 5:
			fmt.Fprintf(h, "p%v|", m.Stored(m.NextPubSeq(), 1, r.IntN(1200)))
			continue
		case 6:
			in = Input{Kind: InAcked, Conn: cur, Seq: uint64(r.IntN(int(m.NextPubSeq())))}
		case 7:
			m.AddSub("", "t", StartKind(r.IntN(4)))
			continue
		case 8:
			if len(subs) == 0 {
				continue
			}
			a := subs[0]
			subs = subs[1:]
			in = Input{Kind: InSubscribed, Conn: a.Conn, Sub: a.Sub, Initial: a.Initial}
			if r.IntN(4) == 0 {
				in.Err, in.Cause = errors.New("no"), CauseServerRefused
			}
		}
		in.Now = now
		m.Step(in)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%x %v", h.Sum64(), m.Phase())
	return sb.String()
}
