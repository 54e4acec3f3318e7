package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhq/tandem/auth"
	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/engine"
	"github.com/tandemhq/tandem/internal/testcert"
)

func TestPasswd(t *testing.T) {
	r := tandem(t, "s3cret\n", "passwd")
	if r.code != 0 {
		t.Fatalf("passwd: %+v", r)
	}
	out := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	h, err := auth.ParseHash(out[len(out)-1])
	if err != nil {
		t.Fatalf("last line %q: %v", out[len(out)-1], err)
	}
	if h.MemoryKiB != auth.DefaultMemoryKiB || h.Time != auth.DefaultTime || h.Threads != auth.DefaultThreads {
		t.Fatalf("parameters %+v", h.Params)
	}
	if err := h.Verify([]byte("s3cret")); err != nil {
		t.Fatalf("the hash does not verify the password without its newline: %v", err)
	}
	if err := h.Verify([]byte("s3cret\n")); err == nil {
		t.Fatal("the newline was hashed")
	}
}

// The CLI tools over TLS with users: the serve settings as flags map onto
// the engine, the tools log on with --user and a password file or
// TANDEM_PASSWORD, and permissions hold.
func TestSecureCLI(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "ca")
	cf, kf := testcert.WritePair(t, dir, "server", ca.Issue(t, "server", true, time.Now().Add(time.Hour)))
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o600)
	cheap := auth.Params{MemoryKiB: 64, Time: 1, Threads: 1}
	hal, _ := auth.HashWith([]byte("pw-al"), cheap)
	hroot, _ := auth.HashWith([]byte("pw-root"), cheap)
	users := filepath.Join(dir, "users.toml")
	os.WriteFile(users, []byte(`[[user]]
name = "al"
password = "`+hal+`"
publish = ["orders*"]
subscribe = ["orders*"]

[[user]]
name = "root"
password = "`+hroot+`"
admin = true
`), 0o600)
	pwFile := filepath.Join(dir, "al.pw")
	os.WriteFile(pwFile, []byte("pw-al\n"), 0o600)

	var cfg serveConfig
	fs, _ := serveFlags(&cfg)
	if err := fs.Parse([]string{"--listen", "127.0.0.1:0", "--data", t.TempDir(), "--engine", testEngine,
		"--tls-cert", cf, "--tls-key", kf, "--users", users, "--tls-min-version", "1.2"}); err != nil {
		t.Fatal(err)
	}
	ec, err := cfg.engineConfig()
	if err == nil {
		err = cfg.serveSecurity.apply(&ec)
	}
	if err != nil {
		t.Fatal(err)
	}
	ec.Logger = slog.New(slog.DiscardHandler)
	s, err := engine.New(ec)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr := s.Addr().String()
	tlsFlags := []string{"--tls-ca", caFile}

	r := tandem(t, "o1\n", append([]string{"pub", "--servers", addr, "--topic", "orders.1", "--user", "al", "--password-file", pwFile}, tlsFlags...)...)
	if r.code != 0 {
		t.Fatalf("pub over TLS as al: %+v", r)
	}
	r = tandem(t, "o1\n", "pub", "--servers", addr, "--topic", "orders.1", "--user", "al", "--password-file", pwFile, "--connect-for", "20s")
	if r.code == 0 || !strings.Contains(r.stderr, "TLS") {
		t.Fatalf("plaintext pub on the TLS port: %+v", r)
	}
	t.Setenv("TANDEM_PASSWORD", "pw-al\n")
	r = tandem(t, "", append([]string{"sub", "--servers", addr, "--topic", "orders.1", "--from", "epoch", "--count", "1", "--user", "al"}, tlsFlags...)...)
	if r.code != 0 || r.stdout != "o1\n" {
		t.Fatalf("sub as al with TANDEM_PASSWORD: %+v", r)
	}
	r = tandem(t, "", append([]string{"stat", "--server", addr, "--user", "al"}, tlsFlags...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "not-permitted") {
		t.Fatalf("stat as a non-admin: %+v", r)
	}
	t.Setenv("TANDEM_PASSWORD", "pw-root")
	r = tandem(t, "", append([]string{"stat", "--server", addr, "--user", "root"}, tlsFlags...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "connections") {
		t.Fatalf("stat as root: %+v", r)
	}
}

// tandem serve reloads its certificates and users file on SIGHUP: the
// process keeps running, an established TLS connection stays up, new
// handshakes get the new certificate and new logons the new users.
func TestServeReloadsOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	ca1, ca2 := testcert.NewCA(t, "ca1"), testcert.NewCA(t, "ca2")
	cf, kf := testcert.WritePair(t, dir, "server", ca1.Issue(t, "server", true, time.Now().Add(time.Hour)))
	cheap := auth.Params{MemoryKiB: 64, Time: 1, Threads: 1}
	users := filepath.Join(dir, "users.toml")
	writeUser := func(name, pw string) {
		h, _ := auth.HashWith([]byte(pw), cheap)
		if err := os.WriteFile(users, []byte("[[user]]\nname = \""+name+"\"\npassword = \""+h+"\"\npublish = [\"*\"]\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeUser("old", "pw-old")
	addr := freePort(t)
	p := startServe(t, addr, "serve", "--listen", addr, "--data", t.TempDir(), "--engine", testEngine, "--tls-cert", cf, "--tls-key", kf, "--users", users)
	trust := func(ca *testcert.CA) *tls.Config {
		pool := x509.NewCertPool()
		pool.AddCert(ca.Cert)
		return &tls.Config{RootCAs: pool}
	}
	old, err := client.Connect(ctxTest(t), addr, client.WithName("old"), client.WithTLS(trust(ca1)), client.WithUser("old", []byte("pw-old")))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	testcert.WritePair(t, dir, "server", ca2.Issue(t, "server", true, time.Now().Add(time.Hour)))
	writeUser("new", "pw-new")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := client.Connect(ctxTest(t), addr, client.WithName("new"), client.WithTLS(trust(ca2)), client.WithUser("new", []byte("pw-new")))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new certificate is not served after SIGHUP: %v\n%s", err, p.log())
		}
		runtime.Gosched()
	}
	if _, err := client.Connect(ctxTest(t), addr, client.WithName("old-2"), client.WithTLS(trust(ca2)), client.WithUser("old", []byte("pw-old"))); !errors.Is(err, client.ErrAuth) {
		t.Fatalf("a user removed by the reload: %v, want ErrAuth", err)
	}
	if _, err := old.Publish(ctxTest(t), "t", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := old.Flush(ctxTest(t)); err != nil {
		t.Fatalf("the connection made before the reload: %v", err)
	}
}

func ctxTest(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
