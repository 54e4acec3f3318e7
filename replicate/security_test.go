package replicate

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/wire"
)

// relayAttack plays a third party that knows no secret, between two
// listening peers: it dials victim claiming to be claimed, and dials
// oracle (the real claimed instance) claiming to be victim, to make the
// oracle compute the proof the victim asks for. It reports the first
// frame the victim sends after the forged proof (a Resume or Batch means
// the attacker was taken for claimed), or the error that ended it.
func relayAttack(t *testing.T, victimAddr, victim, oracleAddr, claimed string) (wire.Type, error) {
	t.Helper()
	cv, err := net.Dial("tcp", victimAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer cv.Close()
	cv.SetDeadline(time.Now().Add(5 * time.Second))
	mine := hello{Version: protoVersion, From: claimed, To: victim, Nonce: newNonce(), MaxFrame: DefaultMaxFrame}
	if _, err := cv.Write(appendHello(nil, &mine)); err != nil {
		t.Fatal(err)
	}
	frv := newFrameReader(cv, 64<<10)
	f, err := frv.next()
	if err != nil {
		return 0, err
	}
	var hv hello
	if err := decodeHello(f.Body, &hv); err != nil {
		return 0, err
	}

	co, err := net.Dial("tcp", oracleAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	co.SetDeadline(time.Now().Add(5 * time.Second))
	// Mirror everything the victim said, so that a transcript-bound proof
	// would match as closely as the attacker can make it.
	ask := hv
	ask.From, ask.To, ask.Proof = victim, claimed, [proofSize]byte{}
	if _, err := co.Write(appendHello(nil, &ask)); err != nil {
		t.Fatal(err)
	}
	fro := newFrameReader(co, 64<<10)
	if f, err = fro.next(); err != nil {
		return 0, err
	}
	var ho hello
	if err := decodeHello(f.Body, &ho); err != nil {
		return 0, err
	}
	if _, err := cv.Write(appendProof(nil, ho.Proof)); err != nil {
		return 0, err
	}
	f, err = frv.next()
	if err != nil {
		return 0, err
	}
	if f.Type == wire.TypeError {
		return f.Type, remoteError(f.Body)
	}
	return f.Type, nil
}

// TestReplRelayAttack: with both peers listening and sharing a secret, a
// man in the middle who does not know it authenticates to neither.
func TestReplRelayAttack(t *testing.T) {
	ja, jb := openTestJournal(t, 1<<20), openTestJournal(t, 1<<20)
	appendDet(t, ja, "A", 1, 10)
	appendDet(t, jb, "B", 1, 10)
	a := startReplicator(t, Config{Self: "A", Listen: "127.0.0.1:0", Destinations: []Destination{{Name: "B", Mode: Async}}}, ja)
	b := startReplicator(t, Config{Self: "B", Listen: "127.0.0.1:0", Destinations: []Destination{{Name: "A", Mode: Async}}}, jb)
	for _, tc := range []struct{ victimAddr, victim, oracleAddr, claimed string }{
		{b.Addr().String(), "B", a.Addr().String(), "A"},
		{a.Addr().String(), "A", b.Addr().String(), "B"},
	} {
		typ, err := relayAttack(t, tc.victimAddr, tc.victim, tc.oracleAddr, tc.claimed)
		if err == nil {
			t.Errorf("a relay authenticated to %s as %s: %s sent %s", tc.victim, tc.claimed, tc.victim, typeName(typ))
		} else {
			t.Logf("relay to %s as %s refused: %v", tc.victim, tc.claimed, err)
		}
	}
	if a.LinkCount() != 0 || b.LinkCount() != 0 {
		t.Errorf("links up after the relay: A %d, B %d", a.LinkCount(), b.LinkCount())
	}
}

// rawHello dials addr, sends a Hello from `from` to `to` and returns the
// first frame the listener answers (its body copied).
func rawHello(t *testing.T, addr, from, to string) (wire.Type, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	h := hello{Version: protoVersion, From: from, To: to, Nonce: newNonce(), MaxFrame: DefaultMaxFrame}
	if _, err := c.Write(appendHello(nil, &h)); err != nil {
		t.Fatal(err)
	}
	f, err := newFrameReader(c, 64<<10).next()
	if err != nil {
		t.Fatalf("no answer to a hello from %q: %v", from, err)
	}
	return f.Type, append([]byte(nil), f.Body...)
}

// TestReplUnlistedAndBadNamesRefused: a peer that is not listed is refused
// before the listener sends its Hello (so before it proves anything or
// names a file), whether or not it knows the secret; so is a name that is
// not a valid peer name (a path).
func TestReplUnlistedAndBadNamesRefused(t *testing.T) {
	ja, jb := openTestJournal(t, 1<<20), openTestJournal(t, 1<<20)
	appendDet(t, jb, "B", 1, 10)
	dir := t.TempDir()
	b := startReplicator(t, Config{Self: "B", Listen: "127.0.0.1:0", StateDir: dir,
		Destinations: []Destination{{Name: "A", Mode: Async}}}, jb)
	for _, from := range []string{"C", "../../escape", "..", ".", "a/b", "-x", strings.Repeat("x", 65)} {
		typ, body := rawHello(t, b.Addr().String(), from, "B")
		var e wire.Error
		if typ != wire.TypeError || wire.DecodeError(body, &e) != nil || e.Code != wire.CodeAuth {
			t.Errorf("hello from %q answered %s %q, want an auth error", from, typeName(typ), body)
		}
	}
	// C knows the secret, but is not listed: refused, B ships nothing.
	c := startReplicator(t, Config{Self: "C", Destinations: []Destination{{Name: "B", Addr: b.Addr().String(), Mode: Async}}}, ja)
	waitUntil(t, 10*time.Second, "C's dial to be refused", func() bool { return c.refusals.Load() > 0 && b.refusals.Load() > 0 })
	if b.LinkCount() != 0 || ja.LastSeq() != 0 {
		t.Fatalf("unlisted C linked: B links %d, C holds %d records", b.LinkCount(), ja.LastSeq())
	}
	entries, _ := os.ReadDir(filepath.Dir(dir))
	for _, e := range entries {
		if strings.Contains(e.Name(), "escape") {
			t.Fatalf("a file named by a peer outside the state directory: %s", e.Name())
		}
	}
	if _, err := ResetPeer(dir, "../x"); !errors.Is(err, ErrConfig) {
		t.Fatalf("ResetPeer(../x) = %v", err)
	}
}

// TestReplHandshakeCap: connections that never prove anything are capped
// (MaxHandshakes): one more is closed at once, and a listed peer gets in
// again once the silent ones hit the handshake deadline.
func TestReplHandshakeCap(t *testing.T) {
	ja, jb := openTestJournal(t, 1<<20), openTestJournal(t, 1<<20)
	appendDet(t, ja, "A", 1, 20)
	b := startReplicator(t, Config{Self: "B", Listen: "127.0.0.1:0", MaxHandshakes: 2, Heartbeat: 50 * time.Millisecond,
		Destinations: []Destination{{Name: "A", ReceiveOnly: true}}}, jb)
	var silent []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", b.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	waitUntil(t, 5*time.Second, "two handshakes in progress", func() bool { return b.handshakes.Load() == 2 })
	c, err := net.Dial("tcp", b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || n != 0 {
		t.Fatalf("a third unproven connection was kept: read %d, %v", n, err)
	}
	// The silent ones are closed at the handshake deadline (1 s here).
	for _, s := range silent {
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := s.Read(make([]byte, 1)); err == nil {
			t.Fatal("a silent connection got data")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("a silent connection outlived the handshake deadline")
		}
	}
	a := startReplicator(t, Config{Self: "A", Heartbeat: 50 * time.Millisecond,
		Destinations: []Destination{{Name: "B", Addr: b.Addr().String(), Mode: Async}}}, ja)
	_ = a
	waitUntil(t, 10*time.Second, "A's records at B", func() bool { return jb.SyncedSeq() >= 20 })
}

// TestPositionFileMode: positions files are created 0600.
func TestPositionFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "repl-in-A.pos")
	if err := writePositionFile(path, position{Seq: 3}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("positions file mode %04o, want 0600", st.Mode().Perm())
	}
}

// TestLogLimiter: a key logs logBurst lines per logEvery, then reports
// how many it suppressed; keys are independent.
func TestLogLimiter(t *testing.T) {
	var l logLimiter
	t0 := time.Unix(1000, 0)
	for i := range logBurst {
		if n := l.allow("k", t0.Add(time.Duration(i)*time.Millisecond)); n != 0 {
			t.Fatalf("line %d: %d", i, n)
		}
	}
	for i := range 5 {
		if n := l.allow("k", t0.Add(time.Second+time.Duration(i))); n != -1 {
			t.Fatalf("line %d past the burst logged (%d)", logBurst+i, n)
		}
	}
	if n := l.allow("other", t0.Add(time.Second)); n != 0 {
		t.Fatalf("another key: %d", n)
	}
	if n := l.allow("k", t0.Add(logEvery)); n != 5 {
		t.Fatalf("after the window: %d suppressed reported, want 5", n)
	}
}
