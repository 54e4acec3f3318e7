package hasm

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/wire"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/*.txt")

// The scripts in testdata/*.txt drive a Machine with a model world (a
// publish store, a bookmark store, a server that answers as told) in the
// style of etcd-io/raft's interaction tests. Each block is a command line,
// "----", and the trace it produced (up to a blank line); -rewrite
// regenerates the traces. Commands:
//
//	new [servers=a,b] [store] [max-failures=N] [delay=exp|fixed] [initial=D]
//	    [max=D] [max-total=D] [fixed=D] [stable-after=D] [max-frame=N] [seed=N] [name=S]
//	start                        InStart
//	tick D                       advance logical time by D, then Tick
//	connect [last=N] [acked=N] [instance=S] [max-frame=N] [max-topic=N]
//	                             the pending dial logs on (the attach and its replay are carried out)
//	fail [standby|refused|fatal] [last] [err=S]  the pending dial fails (last: the driver's context ended)
//	cut [standby|going-away|silent] [err=S]  the current connection ends
//	publish [topic=N] [size=N]   store and publish a message (topic length, payload size)
//	ack N                        persisted ack through N on the current connection
//	refuse N [code=S]            the server refuses N for good
//	subscribe [name=S] [topic=S] [from=now|epoch|most-recent|other] [refuse]
//	refuse-sub N                 the server refuses sub N's next subscribe
//	deliver sub=N pub=N seq=N [origin=N oseq=N]
//	discard sub=N pub=N seq=N [origin=N oseq=N]
//	position sub=N origin=N seq=N  a Position frame (taken if the subscribe asked for it)
//	crash                        the client process dies: a new machine over the same stores
//	close | cancel
//	state                        print phase, next publisher sequence, store contents
func TestInteraction(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no scripts")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { runScript(t, f) })
	}
}

type block struct {
	cmd  string
	want string
}

func parseScript(t *testing.T, path string) []block {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []block
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		b := block{cmd: l}
		if i+1 >= len(lines) || strings.TrimSpace(lines[i+1]) != "----" {
			t.Fatalf("%s:%d: no ---- after %q", path, i+1, l)
		}
		i += 2
		var out []string
		for ; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
			out = append(out, lines[i])
		}
		b.want = strings.Join(out, "\n")
		blocks = append(blocks, b)
	}
	return blocks
}

func runScript(t *testing.T, path string) {
	blocks := parseScript(t, path)
	w := &world{}
	var sb strings.Builder
	sb.WriteString("# " + scriptHeader(path) + "\n")
	failed := false
	for _, b := range blocks {
		got := strings.TrimRight(w.run(t, b.cmd), "\n")
		if got == "" {
			got = "ok"
		}
		if !*rewrite && got != b.want {
			t.Errorf("%s: %s\n got:\n%s\nwant:\n%s", path, b.cmd, got, b.want)
			failed = true
		}
		fmt.Fprintf(&sb, "%s\n----\n%s\n\n", b.cmd, got)
	}
	if *rewrite && !failed {
		if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// scriptHeader keeps a script's first comment line.
func scriptHeader(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	if s.Scan() {
		if l := s.Text(); strings.HasPrefix(l, "# ") {
			return l[2:]
		}
	}
	return ""
}

// storedMsg is one message of the model publish store.
type storedMsg struct {
	seq            uint64
	topicLen, size int
}

// modelProgress is the model bookmark store's entry for one subscription.
type modelProgress struct {
	origins map[uint64]*RangeSet
	pubs    map[uint64]*RangeSet
}

func (p *modelProgress) set(m map[uint64]*RangeSet, id, seq uint64) {
	s := m[id]
	if s == nil {
		s = &RangeSet{}
		m[id] = s
	}
	s.Add(seq)
}

// world is the machine's environment in a script.
type world struct {
	m         *Machine
	cfg       Config
	now       int64
	store     []storedMsg
	last      uint64 // store's LastSeq
	bms       map[string]*modelProgress
	subs      map[SubID]*modelSub
	dial      ConnID // pending dial
	dialTo    string
	cur       ConnID
	timer     int64
	delayArgs args
	out       *strings.Builder
}

type modelSub struct {
	name      string
	filter    SubFilter
	setPos    bool
	refuseNxt bool
	ended     bool
}

// MostRecent implements Bookmarks (floors, origins then publishers, by id).
func (w *world) MostRecent(sub string) ([]wire.ResumeEntry, bool) {
	p, ok := w.bms[sub]
	if !ok {
		return nil, false
	}
	var out []wire.ResumeEntry
	for _, id := range sortedKeys(p.origins) {
		out = append(out, wire.ResumeEntry{ID: id, Seq: p.origins[id].Floor(), Kind: wire.ResumeOrigin})
	}
	for _, id := range sortedKeys(p.pubs) {
		out = append(out, wire.ResumeEntry{ID: id, Seq: p.pubs[id].Floor(), Kind: wire.ResumePublisher})
	}
	return out, true
}

func sortedKeys(m map[uint64]*RangeSet) []uint64 {
	var ks []uint64
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i] < ks[j] })
	return ks
}

// discardCheck is the model store's answer for one delivery.
type discardCheck struct {
	p                      *modelProgress
	origin, oseq, pub, seq uint64
}

func (d discardCheck) IsDiscarded() bool {
	if d.p == nil {
		return false
	}
	if s := d.p.pubs[d.pub]; s != nil && s.Contains(d.seq) {
		return true
	}
	if s := d.p.origins[d.origin]; s != nil && s.Contains(d.oseq) {
		return true
	}
	return false
}

type args map[string]string

func parseArgs(fields []string) args {
	a := args{}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		a[k] = v
	}
	return a
}

func (a args) has(k string) bool { _, ok := a[k]; return ok }

func (a args) u64(t *testing.T, k string, def uint64) uint64 {
	v, ok := a[k]
	if !ok {
		return def
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", k, v, err)
	}
	return n
}

func (a args) dur(t *testing.T, k string, def time.Duration) int64 {
	v, ok := a[k]
	if !ok {
		return int64(def)
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", k, v, err)
	}
	return int64(d)
}

func (w *world) printf(format string, args ...any) { fmt.Fprintf(w.out, format+"\n", args...) }

func (w *world) run(t *testing.T, line string) string {
	var sb strings.Builder
	w.out = &sb
	fields := strings.Fields(line)
	cmd, a := fields[0], parseArgs(fields[1:])
	in := Input{Now: w.now}
	switch cmd {
	case "new":
		w.create(t, a)
		return sb.String()
	case "crash":
		// The process dies: connections and memory go; the stores stay.
		w.printf("crashed; store holds %s", w.storeString())
		w.cfg.NextPubSeq = w.last + 1
		w.cfg.Chooser = NewDefaultChooser(w.cfg.Chooser.(*DefaultChooser).URIs...)
		w.cfg.Delay = newDelay(t, w.delayArgs)
		w.m = New(w.cfg)
		w.subs = map[SubID]*modelSub{}
		w.dial, w.cur = 0, 0
		return sb.String()
	case "start":
		in.Kind = InStart
	case "tick":
		d, err := time.ParseDuration(fields[1])
		if err != nil {
			t.Fatal(err)
		}
		w.now += int64(d)
		w.m.Tick(w.now)
		w.drain(t)
		return sb.String()
	case "connect":
		if w.dial == 0 {
			w.printf("no dial pending")
			return sb.String()
		}
		in.Kind, in.Conn = InDialed, w.dial
		in.Logon = Logon{LastPubSeq: a.u64(t, "last", 0), AckedPubSeq: a.u64(t, "acked", a.u64(t, "last", 0)),
			MaxFrame: int(a.u64(t, "max-frame", 0)), MaxTopic: int(a.u64(t, "max-topic", 0)), Instance: a["instance"]}
		w.dial = 0
	case "fail":
		if w.dial == 0 {
			w.printf("no dial pending")
			return sb.String()
		}
		in.Kind, in.Conn, in.Err = InDialFailed, w.dial, errors.New(orDefault(a["err"], "connection refused"))
		switch {
		case a.has("standby"):
			in.Cause = CauseStandby
		case a.has("refused"):
			in.Cause = CauseLogonRefused
		case a.has("fatal"):
			in.Cause = CauseFatal
		}
		in.Last = a.has("last")
		w.dial = 0
	case "cut":
		in.Kind, in.Conn, in.Err = InLost, w.cur, errors.New(orDefault(a["err"], "connection reset"))
		switch {
		case a.has("standby"):
			in.Cause = CauseStandby
		case a.has("going-away"):
			in.Cause = CauseGoingAway
		case a.has("silent"):
			in.Cause = CauseSilent
		}
	case "publish":
		seq := w.m.NextPubSeq()
		tl, sz := int(a.u64(t, "topic", 1)), int(a.u64(t, "size", 100))
		w.store = append(w.store, storedMsg{seq, tl, sz})
		w.last = max(w.last, seq)
		v := w.m.Stored(seq, tl, sz)
		w.printf("publish %d -> %v", seq, v)
		w.drain(t)
		return sb.String()
	case "ack":
		in.Kind, in.Conn, in.Seq = InAcked, w.cur, mustU64(t, fields[1])
	case "refuse":
		in.Kind, in.Conn, in.Seq = InRefused, w.cur, mustU64(t, fields[1])
		in.Code, in.Reason = wire.CodeSequenceReused, "stored with another payload"
		switch a["code"] {
		case "not-permitted":
			in.Code, in.Reason = wire.CodeNotPermitted, "not permitted"
		case "storage-failed":
			in.Code, in.Reason = wire.CodeStorageFailed, "disk full"
		}
	case "subscribe":
		start := StartNow
		switch a["from"] {
		case "epoch":
			start = StartEpoch
		case "most-recent":
			start = StartMostRecent
		case "other":
			start = StartOther
		}
		id, name := w.m.AddSub(a["name"], orDefault(a["topic"], "t"), start)
		w.subs[id] = &modelSub{name: name, refuseNxt: a.has("refuse")}
		w.printf("sub %d is %q", id, name)
		w.drain(t)
		return sb.String()
	case "refuse-sub":
		w.subs[SubID(mustU64(t, fields[1]))].refuseNxt = true
		return sb.String()
	case "deliver":
		s := w.subs[SubID(a.u64(t, "sub", 1))]
		pub, seq := a.u64(t, "pub", 1), a.u64(t, "seq", 0)
		origin, oseq := a.u64(t, "origin", 1), a.u64(t, "oseq", seq)
		chk := discardCheck{w.bms[s.name], origin, oseq, pub, seq}
		if s.filter.Admit(pub, seq, chk) {
			s.filter.Delivered(pub, seq)
			w.printf("delivered p%d:%d", pub, seq)
		} else {
			w.printf("duplicate p%d:%d (%d so far)", pub, seq, s.filter.Duplicates())
		}
		return sb.String()
	case "discard":
		s := w.subs[SubID(a.u64(t, "sub", 1))]
		pub, seq := a.u64(t, "pub", 1), a.u64(t, "seq", 0)
		origin, oseq := a.u64(t, "origin", 1), a.u64(t, "oseq", seq)
		p := w.progress(s.name)
		p.set(p.origins, origin, oseq)
		p.set(p.pubs, pub, seq)
		e, _ := w.MostRecent(s.name)
		w.printf("progress %s", entriesString(e))
		return sb.String()
	case "position":
		s := w.subs[SubID(a.u64(t, "sub", 1))]
		if !s.setPos {
			w.printf("position ignored (the subscription resumed)")
			return sb.String()
		}
		p := &modelProgress{origins: map[uint64]*RangeSet{}, pubs: map[uint64]*RangeSet{}}
		p.origins[a.u64(t, "origin", 1)] = &RangeSet{floor: a.u64(t, "seq", 0)}
		w.bms[s.name] = p
		e, _ := w.MostRecent(s.name)
		w.printf("progress %s", entriesString(e))
		return sb.String()
	case "close":
		in.Kind, in.Err = InClose, errors.New("client: closed")
	case "cancel":
		in.Kind, in.Err = InCancel, errors.New("context canceled")
	case "state":
		w.printf("phase=%v next-seq=%d store=%s reconnects=%d failovers=%d", w.m.Phase(), w.m.NextPubSeq(), w.storeString(), w.m.Reconnects(), w.m.Failovers())
		return sb.String()
	default:
		t.Fatalf("unknown command %q", cmd)
	}
	if err := w.m.Step(in); err != nil {
		w.printf("step: %v", err)
	}
	w.drain(t)
	return sb.String()
}

func (w *world) progress(name string) *modelProgress {
	p := w.bms[name]
	if p == nil {
		p = &modelProgress{origins: map[uint64]*RangeSet{}, pubs: map[uint64]*RangeSet{}}
		w.bms[name] = p
	}
	return p
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func mustU64(t *testing.T, s string) uint64 {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (w *world) create(t *testing.T, a args) {
	servers := strings.Split(orDefault(a["servers"], "a,b"), ",")
	if v, ok := a["servers"]; ok && v == "" {
		servers = nil
	}
	ch := NewDefaultChooser(servers...)
	ch.MaxFailures = int(a.u64(t, "max-failures", 0))
	w.delayArgs = a
	w.cfg = Config{Name: orDefault(a["name"], "pub"), Chooser: ch, Delay: newDelay(t, a), Bookmarks: w,
		Rand:        rand.New(rand.NewPCG(a.u64(t, "seed", 1), 0)),
		StableAfter: a.dur(t, "stable-after", time.Second), Store: a.has("store"),
		MaxFrame: int(a.u64(t, "max-frame", 1<<20)), NextPubSeq: 1}
	w.m = New(w.cfg)
	w.bms = map[string]*modelProgress{}
	w.subs = map[SubID]*modelSub{}
	w.store, w.last, w.now = nil, 0, 0
}

func newDelay(t *testing.T, a args) Delay {
	if a["delay"] == "fixed" {
		return &FixedDelay{Delay: a.dur(t, "fixed", 100*time.Millisecond), MaxTotal: a.dur(t, "max-total", 0)}
	}
	return &ExponentialDelay{Initial: a.dur(t, "initial", 10*time.Millisecond), Max: a.dur(t, "max", time.Second),
		MaxTotal: a.dur(t, "max-total", 60*time.Second)}
}

// drain carries out the machine's actions, printing each, feeding back
// the outcomes the model world decides at once (attach, subscribe).
func (w *world) drain(t *testing.T) {
	var q []Action
	pull := func() {
		q = append(q, w.m.Ready().Actions...)
		w.m.Advance()
	}
	pull()
	for len(q) > 0 {
		a := q[0]
		q = q[1:]
		w.printf("%s", actionString(a, w.now))
		switch a.Kind {
		case ActDial:
			w.dial, w.dialTo = a.Conn, a.URI
		case ActTimer:
			w.timer = a.At
		case ActAttach:
			if w.cfg.Store {
				w.discard(a.Seq)
				for _, m := range append([]storedMsg(nil), w.store...) {
					if m.seq <= a.Seq {
						continue
					}
					v := w.m.Replayed(a.Conn, m.seq, m.topicLen, m.size)
					w.printf("  replay %d -> %v", m.seq, v)
				}
			}
			w.m.Step(Input{Kind: InAttached, Now: w.now, Conn: a.Conn, Seq: w.last})
			pull()
		case ActUp:
			w.cur = a.Conn
		case ActDown:
			w.cur = 0
		case ActStoreDiscard:
			w.discard(a.Seq)
		case ActStoreRemove:
			for i, m := range w.store {
				if m.seq == a.Seq {
					w.store = append(w.store[:i], w.store[i+1:]...)
					break
				}
			}
		case ActSubscribe:
			s := w.subs[a.Sub]
			in := Input{Kind: InSubscribed, Now: w.now, Conn: a.Conn, Sub: a.Sub, Initial: a.Initial}
			if s.refuseNxt {
				s.refuseNxt = false
				in.Err, in.Cause = errors.New("tandem server: not-permitted"), CauseServerRefused
			} else {
				s.setPos = a.SetPosition
			}
			w.m.Step(in)
			pull()
		case ActSubEnded:
			if s := w.subs[a.Sub]; s != nil {
				s.ended = true
			}
		}
	}
}

func (w *world) discard(upTo uint64) {
	i := 0
	for i < len(w.store) && w.store[i].seq <= upTo {
		i++
	}
	w.store = w.store[i:]
}

func (w *world) storeString() string {
	var parts []string
	for _, m := range w.store {
		parts = append(parts, strconv.FormatUint(m.seq, 10))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func actionString(a Action, now int64) string {
	if a.Kind == ActTimer {
		return fmt.Sprintf("%v (in %s)", a, time.Duration(a.At-now))
	}
	return a.String()
}
