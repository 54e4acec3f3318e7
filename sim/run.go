package sim

import (
	"fmt"
	"strings"

	"github.com/tandemhq/tandem/internal/rsm"
)

// Sim is one simulated cluster and its clients.
type Sim struct {
	w     *World
	net   *Network
	chk   *Checker
	insts []*Instance
	pubs  []*Publisher
	subs  []*Subscriber
	nodes []string
}

func (s *Sim) inst(name string) *Instance { return s.insts[s.instIndex(name)] }

func (s *Sim) instIndex(name string) int {
	for i, in := range s.insts {
		if in.name == name {
			return i
		}
	}
	panic("sim: no instance " + name)
}

// Topologies.
var Topologies = []string{"single", "sync-pair", "async-pair", "strict-pair", "chain", "triangle"}

// Result is one seed's outcome.
type Result struct {
	Seed       int64
	Topology   string
	Violations []string
	Schedule   []string
	Digest     uint64
	Events     int
	Acked      int
	Tail       string
}

// Options change a run (tests).
type Options struct {
	// Topology forces one topology (else the seed picks).
	Topology string
	// Verbose keeps the whole trace (Result.Tail then holds it all).
	Verbose bool
	// NoRestore leaves "restore a data directory from a backup" out of the
	// faults.
	NoRestore bool
}

const (
	settleAt   = 6 * Second // every fault healed, every process up
	endAt      = 10 * Second
	faultUntil = 2500 * Millisecond
)

// Run runs one seed.
func Run(seed int64, o Options) *Result {
	w := newWorld(seed)
	w.verbose = o.Verbose
	s := &Sim{w: w}
	s.net = newNetwork(w)
	s.chk = newChecker(s)
	topo := o.Topology
	if topo == "" {
		topo = Topologies[w.Intn(len(Topologies))]
	}
	s.build(topo)
	res := &Result{Seed: seed, Topology: topo}
	w.Tracef("seed %d topology %s", seed, topo)
	for _, in := range s.insts {
		in.Start()
	}
	for _, p := range s.pubs {
		p.Start()
	}
	for _, b := range s.subs {
		b.Start()
	}
	res.Schedule = s.schedule(o)
	w.runUntil(settleAt)
	s.heal()
	// An operator resolves the forks the logs reported (repl-reset), once
	// the links are back.
	w.runUntil(settleAt + Second)
	for _, in := range s.insts {
		in.ReplReset()
	}
	w.runUntil(endAt)
	s.chk.final()
	res.Violations = s.chk.viol
	res.Digest = w.Digest()
	res.Events = w.traceN
	for _, m := range s.chk.order {
		if m.acked {
			res.Acked++
		}
	}
	if o.Verbose {
		res.Tail = strings.Join(w.lines, "\n")
	} else {
		res.Tail = w.TraceTail()
	}
	return res
}

// build sets up a topology: instances, two HA publishers and two HA
// subscribers (one with a file store and one with a memory store each).
func (s *Sim) build(topo string) {
	w := s.w
	hb := 20 * Millisecond
	down, up := 150*Millisecond, 50*Millisecond
	mk := func(name string, dests []DestCfg, accept ...string) {
		cfg := InstanceCfg{Name: name, Dests: dests, Accept: accept, DowngradeAfter: down, UpgradeBelow: up, Heartbeat: hb}
		if topo == "strict-pair" {
			cfg.DowngradeAfter = rsm.Never
		}
		s.insts = append(s.insts, newInstance(s, cfg))
		s.nodes = append(s.nodes, name)
	}
	var pubServers, subServers []string
	switch topo {
	case "single":
		mk("A", nil)
		pubServers, subServers = []string{"A"}, []string{"A"}
	case "sync-pair", "strict-pair":
		mk("A", []DestCfg{{Name: "B", Sync: true}}, "B")
		mk("B", []DestCfg{{Name: "A", Sync: true}}, "A")
		pubServers, subServers = []string{"A", "B"}, []string{"B", "A"}
	case "async-pair":
		mk("A", []DestCfg{{Name: "B"}}, "B")
		mk("B", []DestCfg{{Name: "A"}}, "A")
		pubServers, subServers = []string{"A", "B"}, []string{"B", "A"}
	case "chain":
		mk("A", []DestCfg{{Name: "B", Sync: true}})
		mk("B", []DestCfg{{Name: "C", Passthrough: true}}, "A")
		mk("C", nil, "B")
		pubServers, subServers = []string{"A", "B"}, []string{"C", "B"}
	case "triangle":
		mk("A", []DestCfg{{Name: "B", Passthrough: true}}, "C")
		mk("B", []DestCfg{{Name: "C", Passthrough: true}}, "A")
		mk("C", []DestCfg{{Name: "A", Passthrough: true}}, "B")
		pubServers, subServers = []string{"A", "B", "C"}, []string{"C", "A", "B"}
	default:
		panic("sim: unknown topology " + topo)
	}
	rot := func(l []string, k int) []string {
		out := make([]string, len(l))
		for i := range l {
			out[i] = l[(i+k)%len(l)]
		}
		return out
	}
	for i := 0; i < 2; i++ {
		kind := StoreFile
		if i == 1 && w.Chance(1, 2) {
			kind = StoreMemory
		}
		p := newPublisher(s, fmt.Sprintf("pub%d", i), rot(pubServers, i), kind, 150+w.Intn(150), w.Between(2, 6)*Millisecond, "t")
		p.naive = kind == StoreMemory && w.Chance(1, 3)
		s.pubs = append(s.pubs, p)
		s.nodes = append(s.nodes, p.name)
	}
	for i := 0; i < 2; i++ {
		kind := StoreFile
		if i == 1 {
			kind = StoreMemory
		}
		b := newSubscriber(s, fmt.Sprintf("sub%d", i), rot(subServers, i), kind, "t")
		s.subs = append(s.subs, b)
		s.nodes = append(s.nodes, b.name)
	}
}

// schedule draws the fault schedule: a few faults in [0, faultUntil],
// each with its own end.
func (s *Sim) schedule(o Options) []string {
	w := s.w
	var out []string
	n := 2 + w.Intn(5)
	for i := 0; i < n; i++ {
		at := w.Between(50*Millisecond, faultUntil)
		d := w.Between(20*Millisecond, 600*Millisecond)
		var desc string
		var f func()
		in := s.insts[w.Intn(len(s.insts))]
		switch k := w.Intn(100); {
		case k < 22: // crash and restart
			silent := w.Chance(1, 2)
			desc = fmt.Sprintf("crash %s silent=%v for %dms", in.name, silent, d/Millisecond)
			f = func() {
				if !in.up {
					return
				}
				keep := w.Intn(int(in.j.LastSeq()-in.j.SyncedSeq()) + 1)
				in.Stop(silent, keep)
				w.After(d, func() { s.restart(in) })
			}
		case k < 27 && len(s.insts) > 1: // lose the data directory
			desc = fmt.Sprintf("wipe %s, down %dms", in.name, d/Millisecond)
			f = func() {
				if !in.up {
					return
				}
				in.Stop(false, 0)
				in.Wipe()
				w.After(d, func() { s.restart(in) })
			}
		case k < 31 && len(s.insts) > 1 && !o.NoRestore: // restore an old copy of it
			desc = fmt.Sprintf("restore %s from a backup, down %dms", in.name, d/Millisecond)
			backupAt := w.Between(0, at)
			w.At(backupAt, func() { in.Backup() })
			f = func() {
				if !in.up {
					return
				}
				in.Stop(false, 0)
				if in.Restore() {
					w.After(d, func() { s.restart(in) })
				} else {
					s.restart(in)
				}
			}
		case k < 55: // partition
			a, b := s.pick2()
			both := w.Chance(1, 2)
			desc = fmt.Sprintf("partition %s->%s both=%v for %dms", a, b, both, d/Millisecond)
			f = func() {
				s.net.Partition(a, b, both)
				w.After(d, func() { s.net.Heal(a, b); w.Tracef("heal %s-%s", a, b) })
			}
		case k < 58: // connection cut: every connection of an instance reset
			desc = fmt.Sprintf("cut %s's connections", in.name)
			f = func() { in.Cut() }
		case k < 60: // slow disk: every fdatasync takes longer
			extra := w.Between(2, 40) * Millisecond
			desc = fmt.Sprintf("slow disk on %s +%dms per sync for %dms", in.name, extra/Millisecond, d/Millisecond)
			f = func() {
				in.j.slow = extra
				w.After(d, func() { in.j.slow = 0 })
			}
		case k < 63: // slow link
			a, b := s.pick2()
			extra := w.Between(1, 30) * Millisecond
			desc = fmt.Sprintf("delay %s->%s +%dms for %dms", a, b, extra/Millisecond, d/Millisecond)
			f = func() {
				s.net.slow[[2]string{a, b}] = extra
				w.After(d, func() { delete(s.net.slow, [2]string{a, b}) })
			}
		case k < 69: // fsync error
			desc = fmt.Sprintf("fsync error on %s, operator restarts it after %dms", in.name, d/Millisecond)
			f = func() {
				if !in.up {
					return
				}
				in.j.failNextSync = true
				w.After(d, func() { s.restart(in) })
			}
		case k < 74: // full disk
			desc = fmt.Sprintf("disk full on %s, freed after %dms", in.name, d/Millisecond)
			f = func() {
				if !in.up {
					return
				}
				in.j.full = true
				w.After(d, func() {
					in.j.full = false
					s.restart(in)
				})
			}
		case k < 87: // publisher crash
			p := s.pubs[w.Intn(len(s.pubs))]
			desc = fmt.Sprintf("crash %s (%v store) for %dms", p.name, p.store, d/Millisecond)
			f = func() {
				p.Crash()
				w.After(d, func() {
					if !p.up {
						p.Start()
					}
				})
			}
		default: // subscriber crash
			b := s.subs[w.Intn(len(s.subs))]
			desc = fmt.Sprintf("crash %s (%v store) for %dms", b.name, b.store, d/Millisecond)
			f = func() {
				b.Crash()
				w.After(d, func() {
					if !b.up {
						b.Start()
					}
				})
			}
		}
		desc = fmt.Sprintf("%d.%03ds %s", at/Second, (at%Second)/Millisecond, desc)
		out = append(out, desc)
		dd := desc
		w.At(at, func() { w.Tracef("fault %s", dd); f() })
	}
	return out
}

// pick2 returns two different nodes, at least one an instance.
func (s *Sim) pick2() (string, string) {
	w := s.w
	a := s.insts[w.Intn(len(s.insts))].name
	for {
		b := s.nodes[w.Intn(len(s.nodes))]
		if b != a {
			if w.Chance(1, 2) {
				return a, b
			}
			return b, a
		}
	}
}

// restart starts a stopped instance (an operator after a fail-stop, or
// the machine back after a crash).
func (s *Sim) restart(in *Instance) {
	if in.up {
		return
	}
	in.j.full = false
	in.Start()
}

// heal ends every fault: partitions and delays go, every instance and
// client process is up.
func (s *Sim) heal() {
	s.w.Tracef("heal everything")
	s.net.HealAll(s.nodes)
	for _, in := range s.insts {
		in.j.full, in.j.failNextSync, in.j.slow = false, false, 0
		s.restart(in)
	}
	for _, p := range s.pubs {
		if !p.up {
			p.Start()
		}
	}
	for _, b := range s.subs {
		if !b.up {
			b.Start()
		}
	}
}
