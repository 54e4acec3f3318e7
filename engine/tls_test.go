package engine

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/testcert"
	"github.com/tandemhq/tandem/wire"
)

func newTestCA(t testing.TB, name string) *testcert.CA { return testcert.NewCA(t, name) }

func writePair(t testing.TB, dir, name string, c tls.Certificate) (string, string) {
	return testcert.WritePair(t, dir, name, c)
}

type tlsSetup struct {
	ca, clientCA *testcert.CA
	dir          string
	cfg          *TLSConfig
}

// newTLSSetup: a server certificate from ca; with mtls, client
// certificates from clientCA are required.
func newTLSSetup(t testing.TB, mtls bool) *tlsSetup {
	t.Helper()
	ts := &tlsSetup{ca: newTestCA(t, "server CA"), clientCA: newTestCA(t, "client CA"), dir: t.TempDir()}
	cf, kf := writePair(t, ts.dir, "server", ts.ca.Issue(t, "server", true, time.Now().Add(time.Hour)))
	ts.cfg = &TLSConfig{CertFile: cf, KeyFile: kf}
	if mtls {
		ts.cfg.ClientCAFile = filepath.Join(ts.dir, "clients.pem")
		if err := os.WriteFile(ts.cfg.ClientCAFile, ts.clientCA.PEM, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ts
}

func (ts *tlsSetup) clientConfig(certs ...tls.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(ts.ca.Cert)
	return &tls.Config{RootCAs: pool, Certificates: certs, MinVersion: tls.VersionTLS12}
}

// dialTLS connects over TLS; the handshake error, if any, is returned.
func dialTLS(t testing.TB, s *Server, cfg *tls.Config) (*rawClient, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", s.Addr().String(), cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, buf: make([]byte, 8<<20)}, nil
}

func TestTLSPublishSubscribe(t *testing.T) {
	ts := newTLSSetup(t, false)
	s := testServer(t, t.TempDir(), func(c *Config) { c.TLS = ts.cfg })
	defer s.Close()
	pub, err := dialTLS(t, s, ts.clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	pub.logon("p", 0)
	sub, err := dialTLS(t, s, ts.clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	sub.logon("s", 0)
	sub.subscribe(wire.AppendSubscribe(nil, 1, wire.StartEpoch, wire.MatchExact, []byte("t")))
	pub.publishN("t", "m", 1, 100, wire.AckPersisted)
	pub.waitAck(wire.AckKindPersisted, 100)
	for i := 1; i <= 100; i++ {
		if d := sub.nextDelivery(5 * time.Second); d.pubSeq != uint64(i) {
			t.Fatalf("delivery %d: pubSeq %d", i, d.pubSeq)
		}
	}
	// stat sees the real peer, not the relay's socketpair
	for _, ci := range s.Stats().Clients {
		if ci.Name == "p" && ci.Remote != pub.c.LocalAddr().String() {
			t.Fatalf("remote %q, want the client's address %s", ci.Remote, pub.c.LocalAddr())
		}
	}
}

// A plaintext client on a TLS port is told, in plaintext, that TLS is
// required.
func TestPlaintextClientOnTLSPort(t *testing.T) {
	ts := newTLSSetup(t, false)
	s := testServer(t, t.TempDir(), func(c *Config) { c.TLS = ts.cfg })
	defer s.Close()
	c := dialRaw(t, s)
	c.send(wire.AppendLogon(nil, &wire.Logon{MinVersion: wire.MinVersion, MaxVersion: wire.MaxVersion, Name: []byte("plain")}))
	if text := c.expectError(wire.CodeTLSRequired); !strings.Contains(text, "TLS only") {
		t.Fatalf("error text %q", text)
	}
}

func TestTLSWrongServerCA(t *testing.T) {
	ts := newTLSSetup(t, false)
	s := testServer(t, t.TempDir(), func(c *Config) { c.TLS = ts.cfg })
	defer s.Close()
	other := newTestCA(t, "other")
	pool := x509.NewCertPool()
	pool.AddCert(other.Cert)
	if _, err := dialTLS(t, s, &tls.Config{RootCAs: pool}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("handshake against an untrusted server certificate: %v", err)
	}
}

// With a client CA: no certificate, one from another CA and an expired one
// are refused at the handshake; a valid one logs on as its CN's user with
// no password, and only under that user's client names.
func TestMutualTLS(t *testing.T) {
	ts := newTLSSetup(t, true)
	s := testServer(t, t.TempDir(), withUsers(t), func(c *Config) { c.TLS = ts.cfg })
	defer s.Close()
	handshakeFails := func(what string, certs ...tls.Certificate) {
		t.Helper()
		c, err := dialTLS(t, s, ts.clientConfig(certs...))
		if err == nil {
			// TLS 1.3: the client learns of the refusal on its first read.
			c.send(wire.AppendLogon(nil, &wire.Logon{MinVersion: wire.MinVersion, MaxVersion: wire.MaxVersion, Name: []byte("carol")}))
			_, err = c.next(5 * time.Second)
		}
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("%s: %v, want a certificate error", what, err)
		}
	}
	handshakeFails("no client certificate")
	handshakeFails("a certificate from another CA", newTestCA(t, "rogue").Issue(t, "carol", false, time.Now().Add(time.Hour)))
	handshakeFails("an expired certificate", ts.clientCA.Issue(t, "carol", false, time.Now().Add(-time.Hour)))

	carolCert := ts.clientCA.Issue(t, "carol", false, time.Now().Add(time.Hour))
	c, err := dialTLS(t, s, ts.clientConfig(carolCert))
	if err != nil {
		t.Fatal(err)
	}
	c.mustLogonAs("carol-sub", "", "") // no password: the certificate says who
	c2, err := dialTLS(t, s, ts.clientConfig(carolCert))
	if err != nil {
		t.Fatal(err)
	}
	if e := errorOf(t, c2.logonAs("bob", "", "")); e.Code != wire.CodeAuth {
		t.Fatalf("carol's certificate logging on as bob: %s %s", e.Code, e.Text)
	}
	c3, err := dialTLS(t, s, ts.clientConfig(carolCert))
	if err != nil {
		t.Fatal(err)
	}
	if e := errorOf(t, c3.logonAs("carol", "bob", "pw-bob")); e.Code != wire.CodeAuth {
		t.Fatalf("carol's certificate with bob's password: %s %s", e.Code, e.Text)
	}
}

// Certificates reload without dropping connections.
func TestTLSReload(t *testing.T) {
	ts := newTLSSetup(t, false)
	s := testServer(t, t.TempDir(), func(c *Config) { c.TLS = ts.cfg })
	defer s.Close()
	old, err := dialTLS(t, s, ts.clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	old.logon("old", 0)
	ca2 := newTestCA(t, "server CA 2")
	writePair(t, ts.dir, "server", ca2.Issue(t, "server", true, time.Now().Add(time.Hour)))
	if err := s.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	if _, err := dialTLS(t, s, ts.clientConfig()); err == nil {
		t.Fatal("the old CA still verifies the server after the reload")
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca2.Cert)
	if _, err := dialTLS(t, s, &tls.Config{RootCAs: pool}); err != nil {
		t.Fatalf("the new certificate: %v", err)
	}
	old.publishN("t", "x", 1, 1, wire.AckPersisted) // the old connection is still up
	old.waitAck(wire.AckKindPersisted, 1)
	os.WriteFile(ts.cfg.KeyFile, []byte("garbage"), 0o600)
	if err := s.ReloadTLS(); err == nil {
		t.Fatal("a broken key reloaded")
	}
	if _, err := dialTLS(t, s, &tls.Config{RootCAs: pool}); err != nil {
		t.Fatalf("after a failed reload the previous certificate should serve: %v", err)
	}
}

// Beyond max-connections a TLS client is told why, after the handshake.
func TestTLSMaxConnections(t *testing.T) {
	ts := newTLSSetup(t, false)
	s := testServer(t, t.TempDir(), func(c *Config) { c.TLS = ts.cfg; c.MaxConnections = 1 })
	defer s.Close()
	a, err := dialTLS(t, s, ts.clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	a.logon("a", 0)
	b, err := dialTLS(t, s, ts.clientConfig())
	if err != nil {
		t.Fatal(err)
	}
	if text := b.expectError(wire.CodeLimit); !strings.Contains(text, "max-connections") {
		t.Fatalf("error %q", text)
	}
}
