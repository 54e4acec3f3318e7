package replicate

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf issues a certificate for 127.0.0.1 (server and client use), valid
// until notAfter.
func (ca *testCA) leaf(t *testing.T, name string, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// mutualTLS is the configuration `tandem serve` builds from --repl-tls-*.
func mutualTLS(cert tls.Certificate, ca *testCA) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.pool, ClientCAs: ca.pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
}

// TestReplTLS: links run over mutual TLS: with certificates of the
// shared CA the stream flows; a dialer whose certificate another CA
// issued, or has expired, is refused by the listener's TLS handshake, and
// a dialer refuses a listener with an expired certificate.
func TestReplTLS(t *testing.T) {
	ca, other := newTestCA(t, "tandem-test-ca"), newTestCA(t, "other-ca")
	later := time.Now().Add(time.Hour)
	ja, jb := openTestJournal(t, 1<<20), openTestJournal(t, 1<<20)
	appendDet(t, ja, "A", 1, 50)
	b := startReplicator(t, Config{Self: "B", Listen: "127.0.0.1:0", TLS: mutualTLS(ca.leaf(t, "B", later), ca),
		Destinations: []Destination{{Name: "A", ReceiveOnly: true}}}, jb)
	a := startReplicator(t, Config{Self: "A", TLS: mutualTLS(ca.leaf(t, "A", later), ca),
		Destinations: []Destination{{Name: "B", Addr: b.Addr().String(), Mode: Async}}}, ja)
	waitUntil(t, 10*time.Second, "B to get A's records over TLS", func() bool { return jb.SyncedSeq() >= 50 })
	if _, _, _, ok := b.LinkInfo("A"); !ok {
		t.Fatal("no link A-B")
	}
	a.Close()

	for name, cfg := range map[string]*tls.Config{
		"another CA's certificate": mutualTLS(other.leaf(t, "A", later), ca),
		"expired certificate":      mutualTLS(ca.leaf(t, "A", time.Now().Add(-time.Minute)), ca),
		"no certificate":           {RootCAs: ca.pool},
	} {
		jc := openTestJournal(t, 1<<20)
		c := startReplicator(t, Config{Self: "A", TLS: cfg}, jc)
		conn, err := c.dial(b.Addr().String())
		if err == nil {
			// TLS 1.3: the server's verdict on the client certificate
			// arrives with the first read.
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			h := c.hello("B")
			conn.Write(appendHello(nil, &h))
			_, err = newFrameReader(conn, 4096).next()
			conn.Close()
		}
		if err == nil {
			t.Errorf("%s: the listener answered a hello", name)
		} else {
			t.Logf("%s: refused: %v", name, err)
		}
		c.Close()
	}

	// A listener with an expired certificate: the dialer refuses it.
	jd := openTestJournal(t, 1<<20)
	d := startReplicator(t, Config{Self: "D", Listen: "127.0.0.1:0", TLS: mutualTLS(ca.leaf(t, "D", time.Now().Add(-time.Minute)), ca),
		Destinations: []Destination{{Name: "A", ReceiveOnly: true}}}, jd)
	e := startReplicator(t, Config{Self: "A", TLS: mutualTLS(ca.leaf(t, "A", later), ca)}, openTestJournal(t, 1<<20))
	if conn, err := e.dial(d.Addr().String()); err == nil {
		conn.Close()
		t.Fatal("dialed a listener with an expired certificate")
	} else {
		t.Logf("expired listener certificate: %v", err)
	}
}
