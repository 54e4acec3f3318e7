package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeReplSecurityChecks: start-up refuses a secret file readable by
// group or others (naming the chmod), an unauthenticated non-loopback
// replication listener, half a TLS configuration; loopback without a
// secret and a 0400 secret file are accepted.
func TestServeReplSecurityChecks(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := writeConfig(t, "data = \""+filepath.Join(dir, "data")+"\"\n")
	_, err := loadAsServe(t, empty, "--repl-listen", "0.0.0.0:0", "--repl-secret-file", secret)
	if err == nil || !strings.Contains(err.Error(), "chmod 0400 "+secret) {
		t.Fatalf("secret file 0644: %v", err)
	}
	if err := os.Chmod(secret, 0o400); err != nil {
		t.Fatal(err)
	}
	ec, err := loadAsServe(t, empty, "--repl-listen", "0.0.0.0:0", "--repl-secret-file", secret)
	if err != nil || string(ec.Replication.Secret) != "c2VjcmV0LXNlY3JldC1zZWNyZXQ=" {
		t.Fatalf("secret file 0400: %+v, %v", ec.Replication, err)
	}
	for _, addr := range []string{"0.0.0.0:7500", ":7500", "10.1.2.3:7500", "[::]:7500"} {
		if _, err := loadAsServe(t, empty, "--repl-listen", addr); err == nil || !strings.Contains(err.Error(), "neither a secret nor TLS") {
			t.Errorf("repl-listen %s without a secret: %v", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:7500", "[::1]:7500", "localhost:7500"} {
		if _, err := loadAsServe(t, empty, "--repl-listen", addr); err != nil {
			t.Errorf("repl-listen %s without a secret: %v", addr, err)
		}
	}
	if _, err := loadAsServe(t, empty, "--repl-listen", "0.0.0.0:0", "--repl-tls-cert", secret); err == nil || !strings.Contains(err.Error(), "go together") {
		t.Fatalf("half TLS: %v", err)
	}
	if _, err := loadAsServe(t, empty, "--repl-listen", "127.0.0.1:0", "--peer", "../x=127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "bad peer name") {
		t.Fatalf("traversal peer name: %v", err)
	}
	if _, err := loadAsServe(t, empty, "--repl-listen", "127.0.0.1:0", "--peer", "B=127.0.0.1:1|127.0.0.1:2,async"); err != nil {
		t.Fatalf("two addresses: %v", err)
	}
}

// TestServeReplTLSFiles: repl-tls-cert, -key and -ca load PEM files into
// mutual TLS; a CA file without a certificate is refused.
func TestServeReplTLSFiles(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "A"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, bad := filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key"), filepath.Join(dir, "bad.crt")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o400)
	os.WriteFile(bad, []byte("not a certificate\n"), 0o644)
	empty := writeConfig(t, "data = \""+filepath.Join(dir, "data")+"\"\n")
	ec, err := loadAsServe(t, empty, "--repl-listen", "0.0.0.0:0", "--repl-tls-cert", certFile, "--repl-tls-key", keyFile, "--repl-tls-ca", certFile)
	if err != nil {
		t.Fatal(err)
	}
	if tc := ec.Replication.TLS; tc == nil || tc.ClientAuth != tls.RequireAndVerifyClientCert || len(tc.Certificates) != 1 || tc.RootCAs == nil || tc.ClientCAs == nil {
		t.Fatalf("TLS config %+v", ec.Replication.TLS)
	}
	if _, err := loadAsServe(t, empty, "--repl-listen", "0.0.0.0:0", "--repl-tls-cert", certFile, "--repl-tls-key", keyFile, "--repl-tls-ca", bad); err == nil ||
		!strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("bad CA file: %v", err)
	}
}
