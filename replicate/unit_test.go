package replicate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

func TestParseDestination(t *testing.T) {
	for _, tc := range []struct {
		in          string
		name, addr  string
		mode        Mode
		topics      string // "" = no filter
		passthrough bool
	}{
		{in: "B=127.0.0.1:7500", name: "B", addr: "127.0.0.1:7500", mode: Sync},
		{in: "B=127.0.0.1:7500,sync", name: "B", addr: "127.0.0.1:7500", mode: Sync},
		{in: "B=127.0.0.1:7500,async", name: "B", addr: "127.0.0.1:7500", mode: Async},
		{in: "B=[::1]:7500,async,passthrough", name: "B", addr: "[::1]:7500", mode: Async, passthrough: true},
		{in: "dmz", name: "dmz", mode: Sync},
		{in: "dmz,async,passthrough", name: "dmz", mode: Async, passthrough: true},
		{in: "B=h:1,topics=^orders\\.", name: "B", addr: "h:1", mode: Sync, topics: "^orders\\."},
		// commas inside the regex belong to it, up to the next option
		{in: "B=h:1,topics=^a{1,3}(b|c){2,}$,async,passthrough", name: "B", addr: "h:1", mode: Async,
			topics: "^a{1,3}(b|c){2,}$", passthrough: true},
		{in: "B=h:1,passthrough,topics=x,y,z", name: "B", addr: "h:1", mode: Sync, topics: "x,y,z", passthrough: true},
		{in: "B=h:1,async,sync", name: "B", addr: "h:1", mode: Sync}, // last mode wins
	} {
		d, err := ParseDestination(tc.in)
		if err != nil {
			t.Errorf("ParseDestination(%q): %v", tc.in, err)
			continue
		}
		topics := ""
		if d.Topics != nil {
			topics = d.Topics.String()
		}
		if d.Name != tc.name || d.Addr != tc.addr || d.Mode != tc.mode || topics != tc.topics || d.Passthrough != tc.passthrough {
			t.Errorf("ParseDestination(%q) = %+v (topics %q), want name %q addr %q mode %v topics %q passthrough %v",
				tc.in, d, topics, tc.name, tc.addr, tc.mode, tc.topics, tc.passthrough)
			continue
		}
		// String renders a form that parses back to the same destination.
		d2, err := ParseDestination(d.String())
		if err != nil {
			t.Errorf("ParseDestination(String() = %q): %v", d.String(), err)
			continue
		}
		if d2.String() != d.String() {
			t.Errorf("round trip of %q: %q then %q", tc.in, d.String(), d2.String())
		}
	}

	for _, tc := range []struct{ in, want string }{
		{"B=h:1,fast", "unknown option"},
		{"B=h:1,semi-sync", "unknown option"},
		{"B=h:1,", "unknown option"},
		{"B=h:1,topics=(unclosed", "topics regex"},
		{"B=h:1,topics=a{2,1}", "topics regex"},
		{"=h:1", "bad peer name"},
		{"", "bad peer name"},
		{",async", "bad peer name"},
		{"..=h:1", "bad peer name"},
		{"../x", "bad peer name"},
		{"B=h:1|nohostport", "address"},
		{"B=h:1,receive-only", "receive-only"},
		{"B=nohostport", "address"},
		{"B=", "address"},
		{"B=h:1:2", "address"},
	} {
		_, err := ParseDestination(tc.in)
		if err == nil {
			t.Errorf("ParseDestination(%q) accepted", tc.in)
			continue
		}
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseDestination(%q) = %v, want ErrConfig mentioning %q", tc.in, err, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	dest := func(s string) Destination {
		d, err := ParseDestination(s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	ok := []Config{
		{Self: "A"},
		{Self: "A", Listen: "127.0.0.1:0", Destinations: []Destination{dest("B=h:1"), dest("C,async")}},
		{Self: "A", DowngradeAfter: time.Second, UpgradeBelow: 999 * time.Millisecond},
		{Self: "A", UpgradeBelow: 5 * time.Second},                  // only one set: the other takes its default later
		{Self: "A", DowngradeAfter: Never, UpgradeBelow: time.Hour}, // strict
		{Self: "A", MaxFrame: minMaxFrame, HoldAlarmBytes: -1},
	}
	for _, c := range ok {
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%+v): %v", c, err)
		}
	}
	bad := []struct {
		c    Config
		want string
	}{
		{Config{}, "bad peer name"},
		{Config{Self: "a/b"}, "bad peer name"},
		{Config{Self: "A", Destinations: []Destination{{Name: "..", Mode: Async}}}, "bad peer name"},
		{Config{Self: "A", Destinations: []Destination{dest("A=h:1")}}, "this instance itself"},
		{Config{Self: "A", Destinations: []Destination{dest("A")}}, "this instance itself"},
		{Config{Self: "A", Destinations: []Destination{dest("B=h:1"), dest("C=h:2"), dest("B,async")}}, "listed twice"},
		{Config{Self: "A", Destinations: []Destination{{Name: "B", Mode: Mode(7)}}}, "unknown mode"},
		{Config{Self: "A", Listen: "nope"}, "repl-listen"},
		{Config{Self: "A", DowngradeAfter: time.Second, UpgradeBelow: time.Second}, "must be below"},
		{Config{Self: "A", DowngradeAfter: time.Second, UpgradeBelow: 2 * time.Second}, "must be below"},
		{Config{Self: "A", DowngradeAfter: -time.Second}, "negative"},
		{Config{Self: "A", MaxFrame: minMaxFrame - 1}, "max-frame"},
	}
	for _, tc := range bad {
		err := tc.c.Validate()
		if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want ErrConfig mentioning %q", tc.c, err, tc.want)
		}
	}
	// New refuses what Validate refuses.
	if _, err := New(Config{Self: "A", Destinations: []Destination{dest("A")}}, nil, nil, nil, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("New with itself as a peer: %v", err)
	}
}

func view(t *testing.T, origin, via uint64, topic string) record.View {
	t.Helper()
	b := record.Append(nil, &record.Header{Seq: 1, Origin: origin, Publisher: record.ID("p"), PubSeq: 1, Via: via},
		[]byte(topic), []byte("x"))
	v, _, err := record.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestFilterWants(t *testing.T) {
	A, B, C, D := record.ID("A"), record.ID("B"), record.ID("C"), record.ID("D")
	dest := func(s string) Destination {
		d, err := ParseDestination(s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, tc := range []struct {
		dest        string
		origin, via uint64
		topic       string
		want        bool
	}{
		// first published here: every destination whose filter matches
		{"B=h:1", A, 0, "t", true},
		{"B=h:1,passthrough", A, 0, "t", true},
		// received by replication: only passthrough destinations
		{"B=h:1", C, C, "t", false},
		{"B=h:1,passthrough", C, C, "t", true},
		{"B=h:1,passthrough", C, D, "t", true},
		// never back to its origin or to where this copy came from
		{"B=h:1,passthrough", B, B, "t", false},
		{"B=h:1,passthrough", B, C, "t", false},
		{"B=h:1,passthrough", C, B, "t", false},
		// topic filter, on both kinds
		{"B=h:1,topics=^orders\\.", A, 0, "orders.eu", true},
		{"B=h:1,topics=^orders\\.", A, 0, "quotes.eu", false},
		{"B=h:1,topics=^orders\\.,passthrough", C, C, "orders.eu", true},
		{"B=h:1,topics=^orders\\.,passthrough", C, C, "quotes.eu", false},
		{"B=h:1,topics=^orders\\.", C, C, "orders.eu", false},
		// published here before this journal had an id (origin ID(name)
		// rather than OriginID(name, journal)): still this instance's own
		{"B=h:1", record.ID("legacy-A"), 0, "t", true},
		// the destination's records from an older journal of its (origin
		// differs from its current one) never go back to it directly
		{"B=h:1,passthrough", record.ID("B-old-journal"), B, "t", false},
	} {
		f := newFilter(A, dest(tc.dest))
		f.setDest(B)
		v := view(t, tc.origin, tc.via, tc.topic)
		for i := 0; i < 2; i++ { // second time from the verdict cache
			if got := f.wants(v); got != tc.want {
				t.Errorf("dest %q, origin %x via %x topic %q (call %d): wants = %v, want %v", tc.dest, tc.origin, tc.via, tc.topic, i, got, tc.want)
			}
		}
	}
	// The verdict cache is bounded (rsm's TestFilterCacheBounded) and
	// stays correct past its bound.
	f := newFilter(A, dest("B=h:1,topics=7$"))
	for i := 0; i < 4096+100; i++ {
		topic := "t" + strings.Repeat("x", i%3) + string(rune('0'+i%10)) + itoa(i)
		want := strings.HasSuffix(topic, "7")
		if got := f.wants(view(t, A, 0, topic)); got != want {
			t.Fatalf("topic %q: wants %v", topic, got)
		}
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	s := ""
	for ; i > 0; i /= 10 {
		s = string(rune('0'+i%10)) + s
	}
	return s
}

func TestNextState(t *testing.T) {
	const down, up = time.Second, 100 * time.Millisecond
	for _, tc := range []struct {
		mode      Mode
		cur       State
		connected bool
		away      time.Duration
		lag       time.Duration
		want      State
	}{
		{Async, StateAsync, true, 0, 0, StateAsync},
		{Async, StateAsync, false, time.Hour, time.Hour, StateAsync},
		{Async, StateSync, true, 0, 0, StateAsync}, // reconfigured: async never holds acks
		{Sync, StateSync, true, 0, 0, StateSync},
		{Sync, StateSync, true, 0, down, StateSync}, // at the limit: not yet
		{Sync, StateSync, true, 0, down + 1, StateDowngraded},
		// away: governed by the downgrade age too, not downgraded at once
		{Sync, StateSync, false, 0, 0, StateSync},
		{Sync, StateSync, false, 10 * time.Millisecond, 0, StateSync},
		{Sync, StateSync, false, down, 0, StateSync},
		{Sync, StateSync, false, down + 1, 0, StateDowngraded},
		{Sync, StateSync, false, 0, down + 1, StateDowngraded},
		{Sync, StateSync, true, 0, 500 * time.Millisecond, StateSync}, // between the ages: stays
		{Sync, StateDowngraded, false, 0, 0, StateDowngraded},
		{Sync, StateDowngraded, false, time.Hour, 0, StateDowngraded},
		{Sync, StateDowngraded, true, 0, up, StateDowngraded}, // not below yet
		{Sync, StateDowngraded, true, 0, up - 1, StateSync},
		{Sync, StateDowngraded, true, 0, 0, StateSync},
		{Sync, StateDowngraded, true, 0, 500 * time.Millisecond, StateDowngraded}, // hysteresis
		{Sync, StateAsync, true, 0, 0, StateSync},
		{Sync, StateAsync, false, 0, 0, StateDowngraded},
	} {
		if got := nextState(tc.mode, tc.cur, tc.connected, tc.away, tc.lag, down, up); got != tc.want {
			t.Errorf("nextState(%v, %v, connected=%v, away=%v, lag=%v) = %v, want %v", tc.mode, tc.cur, tc.connected, tc.away, tc.lag, got, tc.want)
		}
	}
	// Never: strict, whatever the absence or the lag.
	for _, d := range []time.Duration{0, time.Second, 365 * 24 * time.Hour, Never - 1} {
		if got := nextState(Sync, StateSync, false, d, d, Never, up); got != StateSync {
			t.Errorf("strict: away and lag %v: %v", d, got)
		}
	}
	for s, want := range map[State]string{StateSync: "sync", StateAsync: "async", StateDowngraded: "downgraded"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q", s, s.String())
		}
	}
}

// split takes exactly one frame off b.
func split(t *testing.T, b []byte, want wire.Type) []byte {
	t.Helper()
	f, n, err := wire.Split(b, len(b)+1)
	if err != nil || n != len(b) {
		t.Fatalf("split %d bytes: frame of %d, %v", len(b), n, err)
	}
	if f.Type != want {
		t.Fatalf("frame type %v, want %v", f.Type, want)
	}
	return f.Body
}

func TestProtoRoundTrips(t *testing.T) {
	h := hello{Version: protoVersion, From: "alpha", To: "beta-2", Nonce: newNonce(), MaxFrame: 1<<31 + 5}
	copy(h.Journal[:], "0123456789abcdef")
	h.Resume = position{Journal: h.Journal, Seq: 1<<40 + 3, CRC: 0xdeadbeef}
	h.Proof = handshakeMAC([]byte("k"), labelAcceptor, &h, &h)
	var got hello
	if err := decodeHello(split(t, appendHello([]byte("prefix"), &h)[6:], typeHello), &got); err != nil {
		t.Fatal(err)
	}
	if got != h {
		t.Fatalf("hello: got %+v, want %+v", got, h)
	}
	// empty names round trip too (rejected later, by the handshake)
	if err := decodeHello(split(t, appendHello(nil, &hello{Version: protoVersion}), typeHello), &got); err != nil || got.From != "" || got.To != "" {
		t.Fatalf("empty hello: %+v, %v", got, err)
	}
	// another version is errVersion, named, before any layout check (a
	// version 1 hello is shorter)
	for _, v := range []uint16{1, 2, 9} {
		b := split(t, appendHello(nil, &hello{Version: v, From: "x"}), typeHello)
		if err := decodeHello(b[:helloFixed-24], &got); !errors.Is(err, errVersion) || got.Version != v {
			t.Fatalf("hello version %d: %+v, %v", v, got, err)
		}
	}
	for _, p := range []position{{}, {Seq: 1, CRC: 0xffffffff}, {Journal: h.Journal, Seq: ^uint64(0), CRC: 7}} {
		if got, err := decodeResume(split(t, appendResume(nil, p), typeResume)); err != nil || got != p {
			t.Fatalf("resume %+v: got %+v, %v", p, got, err)
		}
	}
	if reason, text, err := decodeRefuse(split(t, appendRefuse(nil, refuseFork, "fork: why"), typeRefuse)); err != nil || reason != refuseFork || text != "fork: why" {
		t.Fatalf("refuse: %d %q %v", reason, text, err)
	}

	p := handshakeMAC([]byte("k"), labelDialer, &h, &h)
	if body := split(t, appendProof(nil, p), typeProof); string(body) != string(p[:]) {
		t.Fatalf("proof body %x", body)
	}

	for _, typ := range []wire.Type{typeBatchAck} {
		for _, v := range []uint64{0, 1, 1 << 40, ^uint64(0)} {
			got, err := decodeU64(typ, split(t, appendU64Frame(nil, typ, v), typ))
			if err != nil || got != v {
				t.Fatalf("%s %d: got %d, %v", typeName(typ), v, got, err)
			}
		}
	}

	// batches: with records, and empty (a range the destination gets nothing of)
	r1 := record.Append(nil, &record.Header{Seq: 5, Origin: 1, Publisher: 2, PubSeq: 3}, []byte("t"), []byte("one"))
	r2 := record.Append(nil, &record.Header{Seq: 7, Origin: 1, Publisher: 2, PubSeq: 4}, []byte("t"), []byte("two"))
	b, s := startBatch([]byte("xx"))
	b = append(b, r1...)
	b = append(b, r2...)
	b = finishBatch(b, s, 5, 9, 0xdeadbeef)
	from, through, crc, recs, err := decodeBatch(split(t, b[2:], typeBatch))
	if err != nil || from != 5 || through != 9 || crc != 0xdeadbeef || string(recs) != string(r1)+string(r2) {
		t.Fatalf("batch: [%d, %d] crc %x %d bytes, %v", from, through, crc, len(recs), err)
	}
	b, s = startBatch(nil)
	b = finishBatch(b, s, 10, 20, 1)
	if from, through, crc, recs, err := decodeBatch(split(t, b, typeBatch)); err != nil || from != 10 || through != 20 || crc != 1 || len(recs) != 0 {
		t.Fatalf("empty batch: [%d, %d] %d bytes, %v", from, through, len(recs), err)
	}
	// from == through+1 is an empty range: allowed
	b, s = startBatch(nil)
	if _, _, _, _, err := decodeBatch(split(t, finishBatch(b, s, 4, 3, 0), typeBatch)); err != nil {
		t.Fatalf("batch [4, 3]: %v", err)
	}

	for _, typ := range []wire.Type{typeHello, typeProof, typeResume, typeBatch, typeBatchAck, typeRefuse} {
		if strings.Contains(typeName(typ), "(") || typeName(typ) == "" {
			t.Errorf("typeName(%d) = %q", typ, typeName(typ))
		}
	}
}

func TestProtoDecodeErrors(t *testing.T) {
	good := appendHello(nil, &hello{Version: protoVersion, From: "ab", To: "cd"})
	body := split(t, good, typeHello)
	var h hello
	for name, b := range map[string][]byte{
		"short":         body[:helloFixed-1],
		"empty":         nil,
		"names too big": append(append([]byte{}, body[:2]...), append([]byte{9, 0}, body[4:]...)...),
		"trailing byte": append(append([]byte{}, body...), 'x'),
		"truncated to":  body[:len(body)-1],
	} {
		if err := decodeHello(b, &h); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("hello %s: %v", name, err)
		}
	}
	for _, n := range []int{0, 7, 9, 16} {
		if _, err := decodeU64(typeBatchAck, make([]byte, n)); !errors.Is(err, wire.ErrMalformed) || !strings.Contains(err.Error(), "batch-ack") {
			t.Errorf("batch-ack of %d bytes: %v", n, err)
		}
	}
	for _, n := range []int{0, 8, 31, 33} {
		if _, err := decodeResume(make([]byte, n)); !errors.Is(err, wire.ErrMalformed) || !strings.Contains(err.Error(), "resume") {
			t.Errorf("resume of %d bytes: %v", n, err)
		}
	}
	if _, _, err := decodeRefuse(make([]byte, refuseFixed-1)); !errors.Is(err, wire.ErrMalformed) {
		t.Errorf("short refuse: %v", err)
	}
	batch := func(from, through uint64) []byte {
		b, s := startBatch(nil)
		return split(t, finishBatch(b, s, from, through, 0), typeBatch)
	}
	for name, b := range map[string][]byte{
		"short":     make([]byte, batchFixed-1),
		"from 0":    batch(0, 5),
		"backwards": batch(9, 5),
	} {
		if _, _, _, _, err := decodeBatch(b); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("batch %s: %v", name, err)
		}
	}
}

func TestHandshakeMAC(t *testing.T) {
	n1, n2 := newNonce(), newNonce()
	if n1 == n2 {
		t.Fatal("two nonces are equal")
	}
	var j1, j2 record.JournalID
	copy(j1[:], "journal-one-....")
	copy(j2[:], "journal-two-....")
	d := hello{From: "A", To: "B", Nonce: n1, Journal: j1, MaxFrame: 1 << 20, Resume: position{Journal: j2, Seq: 5, CRC: 9}}
	a := hello{From: "B", To: "A", Nonce: n2, Journal: j2, MaxFrame: 2 << 20, Resume: position{Journal: j1, Seq: 7, CRC: 3}}
	key := []byte("secret")
	base := handshakeMAC(key, labelDialer, &d, &a)
	if base != handshakeMAC(key, labelDialer, &d, &a) {
		t.Fatal("handshakeMAC is not deterministic")
	}
	a2 := a
	a2.Proof = newNonce2()
	if base != handshakeMAC(key, labelDialer, &d, &a2) {
		t.Fatal("the proof field is covered by the MAC")
	}
	change := func(f func(d, a *hello)) [proofSize]byte {
		d2, a2 := d, a
		f(&d2, &a2)
		return handshakeMAC(key, labelDialer, &d2, &a2)
	}
	for name, p := range map[string][proofSize]byte{
		"secret":           handshakeMAC([]byte("secreT"), labelDialer, &d, &a),
		"empty key":        handshakeMAC(nil, labelDialer, &d, &a),
		"role":             handshakeMAC(key, labelAcceptor, &d, &a),
		"direction":        handshakeMAC(key, labelDialer, &a, &d),
		"dialer nonce":     change(func(d, a *hello) { d.Nonce = n2 }),
		"acceptor nonce":   change(func(d, a *hello) { a.Nonce = n1 }),
		"dialer name":      change(func(d, a *hello) { d.From = "C" }),
		"acceptor name":    change(func(d, a *hello) { a.From = "C" }),
		"name split":       change(func(d, a *hello) { d.From, a.From = "A|", "B" }), // the lengths are in the MAC
		"name split2":      change(func(d, a *hello) { d.From, a.From = "", "AB" }),
		"dialer journal":   change(func(d, a *hello) { d.Journal = j2 }),
		"acceptor journal": change(func(d, a *hello) { a.Journal = j1 }),
		"dialer frame":     change(func(d, a *hello) { d.MaxFrame++ }),
		"acceptor frame":   change(func(d, a *hello) { a.MaxFrame++ }),
		"dialer resume":    change(func(d, a *hello) { d.Resume.Seq++ }),
		"acceptor resume":  change(func(d, a *hello) { a.Resume.CRC++ }),
		"resume journal":   change(func(d, a *hello) { a.Resume.Journal = j2 }),
	} {
		if p == base {
			t.Errorf("changing the %s does not change the proof", name)
		}
	}
	if !proofEqual(base[:], base) || proofEqual(base[:31], base) {
		t.Error("proofEqual")
	}
}

func newNonce2() (p [proofSize]byte) {
	n := newNonce()
	copy(p[:], n[:])
	return p
}

func TestCheckResume(t *testing.T) {
	var self, other record.JournalID
	copy(self[:], "journal-one-....")
	copy(other[:], "journal-two-....")
	// the source holds seqs [10, 20]; the CRC of seq s is 1000+s
	crcAt := func(seq uint64) (uint32, error) {
		if seq < 10 || seq > 20 {
			t.Fatalf("crcAt(%d) outside the journal", seq)
		}
		return uint32(1000 + seq), nil
	}
	for _, tc := range []struct {
		name string
		pos  position
		from uint64
		want resumeVerdict
	}{
		{"same id and crc: resume after it", position{Journal: self, Seq: 15, CRC: 1015}, 16, resumeAt},
		{"same id, at the last record", position{Journal: self, Seq: 20, CRC: 1020}, 21, resumeAt},
		{"same id, at the first record", position{Journal: self, Seq: 10, CRC: 1010}, 11, resumeAt},
		{"nothing held", position{}, 10, resumeNewStream},
		{"this journal, nothing held", position{Journal: self, Seq: 0, CRC: 0}, 10, resumeNewStream},
		{"other id: from the first retained", position{Journal: other, Seq: 15, CRC: 1015}, 10, resumeNewStream},
		{"other id, beyond our last", position{Journal: other, Seq: 500, CRC: 1}, 10, resumeNewStream},
		{"no id (a version 1 positions file)", position{Seq: 15}, 10, resumeNewStream},
		{"behind retention: cannot be checked", position{Journal: self, Seq: 5, CRC: 1}, 10, resumeBehind},
		{"ahead of our last: fork", position{Journal: self, Seq: 21, CRC: 1021}, 0, resumeFork},
		{"far ahead: fork", position{Journal: self, Seq: 500, CRC: 1}, 0, resumeFork},
		{"crc mismatch: fork", position{Journal: self, Seq: 15, CRC: 1016}, 0, resumeFork},
	} {
		from, v, reason := checkResume(self, tc.pos, 10, 20, crcAt)
		if from != tc.from || v != tc.want || (v == resumeFork) != (reason != "") {
			t.Errorf("%s: checkResume(%+v) = from %d, %v (%q), want from %d, %v", tc.name, tc.pos, from, v, reason, tc.from, tc.want)
		}
	}
	// A journal that cannot read the record is a fork too: never resume
	// on a position that could not be checked.
	if _, v, _ := checkResume(self, position{Journal: self, Seq: 15, CRC: 1015}, 10, 20, func(uint64) (uint32, error) {
		return 0, errors.New("unreadable")
	}); v != resumeFork {
		t.Errorf("unreadable record: %v", v)
	}
	// An empty journal (first 1, last 0): a position in it is ahead.
	if _, v, _ := checkResume(self, position{Journal: self, Seq: 1, CRC: 5}, 1, 0, crcAt); v != resumeFork {
		t.Errorf("position in an empty journal: %v", v)
	}
	if from, v, _ := checkResume(self, position{Journal: other, Seq: 7, CRC: 5}, 1, 0, crcAt); from != 1 || v != resumeNewStream {
		t.Errorf("other journal, empty source: from %d, %v", from, v)
	}
}

func TestPositionFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "repl-in-B.pos")
	if _, ok, err := readPositionFile(path); ok || err != nil {
		t.Fatalf("missing file: ok %v, %v", ok, err)
	}
	var id record.JournalID
	copy(id[:], "0123456789abcdef")
	for _, p := range []position{{}, {Journal: id, Seq: 1, CRC: 0xffffffff}, {Journal: id, Seq: ^uint64(0)}} {
		if err := writePositionFile(path, p); err != nil {
			t.Fatal(err)
		}
		got, ok, err := readPositionFile(path)
		if err != nil || !ok || got != p {
			t.Fatalf("wrote %+v, read %+v (%v, %v)", p, got, ok, err)
		}
		if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("temporary file left: %v", err)
		}
	}
	// version 1: a seq alone, no journal
	os.WriteFile(path, []byte("42\n"), 0o644)
	if got, ok, err := readPositionFile(path); err != nil || !ok || got != (position{Seq: 42}) {
		t.Fatalf("version 1 file: %+v %v %v", got, ok, err)
	}
	for _, bad := range []string{"", "x", "v2 00 1 0", "v2 " + strings.Repeat("0", 32) + " -1 0", "v2 " + strings.Repeat("0", 32) + " 1 zz", "v3 a b c"} {
		os.WriteFile(path, []byte(bad), 0o644)
		if _, _, err := readPositionFile(path); !errors.Is(err, errPositionFile) {
			t.Errorf("bad file %q: %v", bad, err)
		}
	}
	// ResetPeer deletes the position; a second reset finds nothing.
	writePositionFile(PositionFile(dir, "B"), position{Journal: id, Seq: 9})
	if ok, err := ResetPeer(dir, "B"); !ok || err != nil {
		t.Fatalf("reset: %v %v", ok, err)
	}
	if _, ok, _ := readPositionFile(PositionFile(dir, "B")); ok {
		t.Fatal("position still there after reset")
	}
	if ok, err := ResetPeer(dir, "B"); ok || err != nil {
		t.Fatalf("second reset: %v %v", ok, err)
	}
	if _, err := ResetPeer(dir, "../B"); !errors.Is(err, ErrConfig) {
		t.Fatalf("reset of a path: %v", err)
	}
}

func TestSyncedPeersAndMaxRecord(t *testing.T) {
	j, err := journal.Open(journal.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var dests []Destination
	for _, s := range []string{"B=127.0.0.1:1", "C=127.0.0.1:1,async", "D=127.0.0.1:1", "E"} {
		d, err := ParseDestination(s)
		if err != nil {
			t.Fatal(err)
		}
		dests = append(dests, d)
	}
	r, err := New(Config{Self: "A", Destinations: dests, JournalID: j.ID()}, j, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	B, C, D, E := r.byName["B"], r.byName["C"], r.byName["D"], r.byName["E"]
	B.acked.Store(10)
	C.acked.Store(100) // async: never counts
	D.acked.Store(5)
	E.acked.Store(20)
	for seq, want := range map[uint64]int{0: 3, 1: 3, 5: 3, 6: 2, 10: 2, 11: 1, 20: 1, 21: 0, 1000: 0} {
		if got := r.SyncedPeers(seq); got != want {
			t.Errorf("SyncedPeers(%d) = %d, want %d", seq, got, want)
		}
	}
	E.forked.Store(true) // a refused link never counts
	if got := r.SyncedPeers(11); got != 0 {
		t.Errorf("SyncedPeers(11) with E forked = %d", got)
	}
	if n := testing.AllocsPerRun(1000, func() { r.SyncedPeers(7) }); n != 0 {
		t.Errorf("SyncedPeers allocates %v times a call", n)
	}

	if got := r.MaxRecord(); got != 0 {
		t.Errorf("MaxRecord with no limit known = %d", got)
	}
	C.maxRecord.Store(100) // async: not counted
	B.maxRecord.Store(5000)
	if got := r.MaxRecord(); got != 5000 {
		t.Errorf("MaxRecord = %d, want 5000", got)
	}
	D.maxRecord.Store(3000)
	if got := r.MaxRecord(); got != 3000 {
		t.Errorf("MaxRecord = %d, want 3000", got)
	}
	if n := testing.AllocsPerRun(1000, func() { r.MaxRecord() }); n != 0 {
		t.Errorf("MaxRecord allocates %v times a call", n)
	}
}

func TestHeldBytes(t *testing.T) {
	// seq 100 written at 1000 bytes, 200 at 2000, 300 at 5000
	samples := []holdSample{{100, 1000}, {200, 2000}, {300, 5000}}
	now := holdSample{400, 6000}
	for _, tc := range []struct {
		acked uint64
		want  int64
	}{
		{400, 0}, {500, 0},
		{300, 1000},       // at a sample
		{200, 4000},       // at a sample
		{250, 2500},       // interpolated: 2000 + 3000/2 = 3500 written at 250
		{350, 1000},       // after the last sample: from it
		{100, 5000},       // the oldest sample
		{50, 5000 + 50*7}, // before the oldest: avg bytes each
	} {
		if got := heldBytes(samples, tc.acked, now, 7); got != tc.want {
			t.Errorf("heldBytes(acked %d) = %d, want %d", tc.acked, got, tc.want)
		}
	}
	if got := heldBytes(nil, 10, holdSample{20, 0}, 3); got != 30 {
		t.Errorf("no samples: %d", got)
	}
}
