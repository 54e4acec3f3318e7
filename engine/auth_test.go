package engine

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/auth"
	"github.com/tandemhq/tandem/wire"
)

// testUsers: al may publish orders and md.*, read md.*; bob may do
// everything and is an admin; carol has no password (certificate only).
func testUsers(t testing.TB) *auth.Users {
	t.Helper()
	p := auth.Params{MemoryKiB: 64, Time: 1, Threads: 1} // cheap: tests log on a lot
	ha, _ := auth.HashWith([]byte("pw-al"), p)
	hb, _ := auth.HashWith([]byte("pw-bob"), p)
	us, err := auth.Parse([]byte(fmt.Sprintf(`
[[user]]
name = "al"
password = %q
publish = ["orders", "md.*"]
subscribe = ["md.*"]

[[user]]
name = "bob"
password = %q
publish = ["*"]
subscribe = ["*"]
admin = true

[[user]]
name = "carol"
subscribe = ["*"]
`, ha, hb)))
	if err != nil {
		t.Fatal(err)
	}
	return us
}

func withUsers(t testing.TB) func(*Config) {
	us := testUsers(t)
	return func(c *Config) { c.Users = us }
}

// logonAs sends a Logon with password credentials and returns the first
// frame of the answer.
func (r *rawClient) logonAs(name, user, password string) wire.Frame {
	r.t.Helper()
	var cred []byte
	if user != "" {
		cred = auth.Credentials(user, []byte(password))
	}
	r.send(wire.AppendLogon(nil, &wire.Logon{MinVersion: wire.MinVersion, MaxVersion: wire.MaxVersion, Name: []byte(name), Credentials: cred}))
	return r.nextSkipping(10 * time.Second)
}

func (r *rawClient) mustLogonAs(name, user, password string) {
	r.t.Helper()
	if f := r.logonAs(name, user, password); f.Type != wire.TypeLogonReply {
		r.t.Fatalf("logon %s as %s: got %s %s", name, user, f.Type, describe(f))
	}
}

func errorOf(t testing.TB, f wire.Frame) wire.Error {
	t.Helper()
	if f.Type != wire.TypeError {
		t.Fatalf("want an Error frame, got %s %s", f.Type, describe(f))
	}
	var e wire.Error
	if err := wire.DecodeError(f.Body, &e); err != nil {
		t.Fatal(err)
	}
	e.Text = append([]byte(nil), e.Text...)
	return e
}

// Issue 13: without access control a client could log on under another
// publisher's name and pre-store its future sequences. With a users file,
// a logon must authenticate and may use only its user's client names.
func TestLogonMustAuthenticateAndOwnItsName(t *testing.T) {
	s := testServer(t, t.TempDir(), withUsers(t))
	defer s.Close()
	for _, tc := range []struct {
		name, user, pw, want string
	}{
		{"al", "", "", "needs credentials"},
		{"al", "al", "wrong", "unknown user or wrong password"},
		{"al", "mallory", "x", "unknown user or wrong password"},
		{"al", "bob", "pw-bob", `may not log on as client "al"`},
		{"al-pub-1", "bob", "pw-bob", `may not log on as client "al-pub-1"`},
		{"bob", "carol", "", "certificate"},
	} {
		c := dialRaw(t, s)
		e := errorOf(t, c.logonAs(tc.name, tc.user, tc.pw))
		if e.Code != wire.CodeAuth || !strings.Contains(string(e.Text), tc.want) {
			t.Errorf("logon %s as %s/%s: %s %q, want auth error saying %q", tc.name, tc.user, tc.pw, e.Code, e.Text, tc.want)
		}
	}
	al := dialRaw(t, s)
	al.mustLogonAs("al-pub-1", "al", "pw-al")
	al.publishN("orders", "o", 1, 1, wire.AckPersisted)
	al.waitAck(wire.AckKindPersisted, 1)
}

// A publish outside the user's permissions is refused for that message;
// the connection stays up.
func TestPublishNotPermitted(t *testing.T) {
	s := testServer(t, t.TempDir(), withUsers(t))
	defer s.Close()
	c := dialRaw(t, s)
	c.mustLogonAs("al", "al", "pw-al")
	c.publishN("orders", "o", 1, 1, wire.AckPersisted)
	c.publishN("secret", "s", 2, 1, wire.AckPersisted)
	a := c.waitRefusal(2)
	if a.Code != wire.CodeNotPermitted || string(a.Text) != `not-permitted: publish to "secret"` {
		t.Fatalf("refusal %s %q", a.Code, a.Text)
	}
	c.publishN("md.eu", "m", 3, 1, wire.AckPersisted)
	c.waitAck(wire.AckKindPersisted, 3)
	if n := s.Stats().Topics; len(n) != 2 {
		t.Fatalf("topics stored: %+v (want orders and md.eu only)", n)
	}
}

// A subscriber receives only what it may read; a subscription that can
// match nothing readable is refused.
func TestSubscribePermissions(t *testing.T) {
	s := testServer(t, t.TempDir(), withUsers(t))
	defer s.Close()
	pub := dialRaw(t, s)
	pub.mustLogonAs("bob", "bob", "pw-bob")
	sub := dialRaw(t, s)
	sub.mustLogonAs("al", "al", "pw-al")
	for _, tc := range []struct {
		match wire.MatchKind
		topic string
	}{{wire.MatchExact, "orders"}, {wire.MatchPrefix, "x"}, {wire.MatchPrefix, "mdx"}} {
		if a := sub.subscribe(wire.AppendSubscribe(nil, 9, wire.StartEpoch, tc.match, []byte(tc.topic))); a.Code != wire.CodeNotPermitted {
			t.Fatalf("subscribe %v %q: %s %s, want not-permitted", tc.match, tc.topic, a.Code, a.Text)
		}
	}
	if a := sub.subscribe(wire.AppendSubscribe(nil, 1, wire.StartEpoch, wire.MatchPrefix, []byte("m"))); a.Code != 0 {
		t.Fatalf("subscribe m*: %s %s", a.Code, a.Text)
	}
	if a := sub.subscribe(wire.AppendSubscribe(nil, 2, wire.StartEpoch, wire.MatchRegex, []byte("."))); a.Code != 0 {
		t.Fatalf("subscribe regex: %s %s", a.Code, a.Text)
	}
	pub.publishN("mx", "no", 1, 1, wire.AckNone)
	pub.publishN("orders", "no", 2, 1, wire.AckNone)
	pub.publishN("md.1", "yes", 3, 1, wire.AckPersisted)
	pub.waitAck(wire.AckKindPersisted, 3)
	for i := 0; i < 2; i++ {
		d := sub.nextDelivery(5 * time.Second)
		if d.topic != "md.1" {
			t.Fatalf("delivered %q to a user who may read md.* only", d.topic)
		}
	}
	pub.publishN("md.2", "yes", 4, 1, wire.AckPersisted)
	if d := sub.nextDelivery(5 * time.Second); d.topic != "md.2" {
		t.Fatalf("delivered %q", d.topic)
	}
}

func TestStatNeedsAdmin(t *testing.T) {
	s := testServer(t, t.TempDir(), withUsers(t))
	defer s.Close()
	al := dialRaw(t, s)
	al.mustLogonAs("al", "al", "pw-al")
	al.send(wire.AppendStatRequest(nil))
	if e := errorOf(t, al.nextSkipping(5*time.Second)); e.Code != wire.CodeNotPermitted {
		t.Fatalf("stat by a non-admin: %s %s", e.Code, e.Text)
	}
	bob := dialRaw(t, s)
	bob.mustLogonAs("bob", "bob", "pw-bob")
	bob.send(wire.AppendStatRequest(nil))
	if f := bob.nextSkipping(5 * time.Second); f.Type != wire.TypeStatReply {
		t.Fatalf("stat by an admin: %s %s", f.Type, describe(f))
	}
}

// Credentials are verified off the event loop: a slow verification does
// not stall the other connections of its loop.
func TestSlowAuthenticationDoesNotStallTheLoop(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	s := testServer(t, t.TempDir(), func(c *Config) {
		c.Loops = 1
		c.Authenticate = func(name string, cred []byte) error {
			if name == "slow" {
				entered <- struct{}{}
				<-release
			}
			return nil
		}
	})
	defer s.Close()
	defer close(release)
	slow := dialRaw(t, s)
	slow.send(wire.AppendLogon(nil, &wire.Logon{MinVersion: wire.MinVersion, MaxVersion: wire.MaxVersion, Name: []byte("slow")}))
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow logon never reached Authenticate")
	}
	fast := dialRaw(t, s)
	fast.logon("fast", 0)
	fast.publishN("t", "x", 1, 1, wire.AckPersisted)
	fast.waitAck(wire.AckKindPersisted, 1)
}

// Frames sent right behind the Logon wait for its verdict, then run.
func TestPipelinedFramesAfterAsyncLogon(t *testing.T) {
	s := testServer(t, t.TempDir(), withUsers(t))
	defer s.Close()
	c := dialRaw(t, s)
	b := wire.AppendLogon(nil, &wire.Logon{MinVersion: wire.MinVersion, MaxVersion: wire.MaxVersion, Name: []byte("al"), Credentials: auth.Credentials("al", []byte("pw-al"))})
	b = wire.AppendPublish(b, 1, wire.AckPersisted, []byte("orders"), []byte("x"))
	c.send(b)
	if f := c.nextSkipping(5 * time.Second); f.Type != wire.TypeLogonReply {
		t.Fatalf("got %s %s", f.Type, describe(f))
	}
	c.waitAck(wire.AckKindPersisted, 1)
}

// A full verification queue refuses the logon with CodeLimit.
func TestAuthQueueFull(t *testing.T) {
	release := make(chan struct{})
	s := testServer(t, t.TempDir(), func(c *Config) {
		c.AuthWorkers, c.AuthQueue = 1, 1
		c.Authenticate = func(string, []byte) error { <-release; return nil }
	})
	defer s.Close()
	defer close(release)
	for i := 0; i < 2; i++ { // one with the worker, one queued
		c := dialRaw(t, s)
		c.send(wire.AppendLogon(nil, &wire.Logon{MinVersion: wire.MinVersion, MaxVersion: wire.MaxVersion, Name: fmt.Appendf(nil, "c%d", i)}))
		waitFor(t, func() bool { return s.authBusy() == i+1 })
	}
	c := dialRaw(t, s)
	e := errorOf(t, c.logonAs("c3", "", ""))
	if e.Code != wire.CodeLimit || !strings.Contains(string(e.Text), "auth-queue") {
		t.Fatalf("logon with a full queue: %s %q", e.Code, e.Text)
	}
}

// Reloading the users file: a removed user can no longer log on, a new one
// can; a connection logged on before keeps working.
func TestReloadUsers(t *testing.T) {
	s := testServer(t, t.TempDir(), withUsers(t))
	defer s.Close()
	al := dialRaw(t, s)
	al.mustLogonAs("al", "al", "pw-al")
	h, _ := auth.HashWith([]byte("pw-dan"), auth.Params{MemoryKiB: 64, Time: 1, Threads: 1})
	us, err := auth.Parse([]byte(fmt.Sprintf("[[user]]\nname = \"dan\"\npassword = %q\npublish = [\"*\"]\n", h)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadUsers(us); err != nil {
		t.Fatal(err)
	}
	if e := errorOf(t, dialRaw(t, s).logonAs("al-2", "al", "pw-al")); e.Code != wire.CodeAuth {
		t.Fatalf("a removed user logged on: %s %s", e.Code, e.Text)
	}
	dialRaw(t, s).mustLogonAs("dan", "dan", "pw-dan")
	al.publishN("orders", "o", 1, 1, wire.AckPersisted)
	al.waitAck(wire.AckKindPersisted, 1)

	open := testServer(t, t.TempDir())
	defer open.Close()
	if err := open.ReloadUsers(us); err == nil {
		t.Fatal("a server started without users accepted a users file")
	}
}
