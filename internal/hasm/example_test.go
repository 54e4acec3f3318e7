package hasm_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/tandemhq/tandem/internal/hasm"
)

// A driver with a fake server and logical time: server "a" refuses the
// first attempt, "b" takes the logon and holds messages up to 2 (acked
// through 1); the store's messages above 1 are re-published, then a new
// message goes straight out.
func Example() {
	seed := uint64(1)
	m := hasm.New(hasm.Config{
		Name:    "pub",
		Chooser: hasm.NewDefaultChooser("a", "b"),
		Delay:   &hasm.ExponentialDelay{Initial: int64(10 * time.Millisecond), Rand: rand.New(rand.NewPCG(seed, 0))},
		Store:   true, NextPubSeq: 4, MaxFrame: 1 << 20,
	})
	store := []uint64{1, 2, 3} // a publish store left by an earlier run
	var now int64              // logical nanoseconds
	var timer int64 = -1

	// The fake server: every other attempt fails.
	attempts := 0
	serve := func(a hasm.Action) hasm.Input {
		attempts++
		if a.URI == "a" {
			return hasm.Input{Kind: hasm.InDialFailed, Conn: a.Conn, Err: errors.New("connection refused")}
		}
		return hasm.Input{Kind: hasm.InDialed, Conn: a.Conn, Logon: hasm.Logon{LastPubSeq: 2, AckedPubSeq: 1, Instance: "B"}}
	}

	m.Step(hasm.Input{Kind: hasm.InStart, Now: now})
	for step := 0; step < 20; step++ {
		if !m.HasReady() {
			if timer < 0 {
				break
			}
			now, timer = timer, -1 // nothing else to do: time passes to the timer
			m.Tick(now)
			continue
		}
		acts := append([]hasm.Action(nil), m.Ready().Actions...)
		m.Advance()
		for _, a := range acts {
			switch a.Kind {
			case hasm.ActDial:
				fmt.Printf("%v: dial %s\n", time.Duration(now), a.URI)
				in := serve(a)
				in.Now = now
				m.Step(in)
			case hasm.ActTimer:
				timer = a.At
			case hasm.ActAttach:
				var kept []uint64
				for _, seq := range store {
					if seq <= a.Seq {
						continue // discarded: durable on the server
					}
					kept = append(kept, seq)
					if m.Replayed(a.Conn, seq, 1, 64) == hasm.VerdictSend {
						fmt.Printf("re-publish %d\n", seq)
					}
				}
				store = kept
				m.Step(hasm.Input{Kind: hasm.InAttached, Now: now, Conn: a.Conn, Seq: 3})
			case hasm.ActEvent:
				fmt.Printf("event %v %s\n", a.Event.State, a.Event.URI)
			case hasm.ActError:
				fmt.Printf("error: %v\n", a.Err)
			}
		}
	}
	seq := m.NextPubSeq()
	store = append(store, seq)
	fmt.Printf("publish %d: %v\n", seq, m.Stored(seq, 1, 64))
	// Output:
	// event reconnecting a
	// 0s: dial a
	// error: client: connect to a: connection refused
	// event reconnecting b
	// 0s: dial b
	// re-publish 2
	// re-publish 3
	// event connected b
	// publish 4: send
}
