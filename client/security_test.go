package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhq/tandem/auth"
	"github.com/tandemhq/tandem/engine"
	"github.com/tandemhq/tandem/internal/testcert"
)

// startSecureEngine: a server with TLS on its client port and a users
// file with "al" (password "pw", publish and read "t*").
func startSecureEngine(t testing.TB) (addr string, clientTLS *tls.Config) {
	t.Helper()
	ca := testcert.NewCA(t, "ca")
	dir := t.TempDir()
	cf, kf := testcert.WritePair(t, dir, "server", ca.Issue(t, "server", true, time.Now().Add(time.Hour)))
	h, _ := auth.HashWith([]byte("pw"), auth.Params{MemoryKiB: 64, Time: 1, Threads: 1})
	us, err := auth.Parse([]byte(fmt.Sprintf("[[user]]\nname = \"al\"\npassword = %q\npublish = [\"t*\"]\nsubscribe = [\"t*\"]\n", h)))
	if err != nil {
		t.Fatal(err)
	}
	cfg := engine.Config{Engine: testEngine, Name: "sec-1", Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}
	cfg.TLS = &engine.TLSConfig{CertFile: cf, KeyFile: kf}
	cfg.Users = us
	s, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return s.Addr().String(), &tls.Config{RootCAs: pool}
}

func TestClientTLSAndUser(t *testing.T) {
	addr, tc := startSecureEngine(t)
	pub := connect(t, addr, WithName("al-pub"), WithTLS(tc), WithUser("al", []byte("pw")))
	sub := connect(t, addr, WithName("al-sub"), WithTLS(tc), WithUser("al", []byte("pw")))
	live, err := sub.Subscribe(ctxT(t), "t", Prefix())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctxT(t), "t.1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := pub.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, live); string(m.Payload) != "x" {
		t.Fatalf("got %q", m.Payload)
	}
	refused := make(chan error, 1)
	pub2 := connect(t, addr, WithName("al-pub2"), WithTLS(tc), WithUser("al", []byte("pw")),
		WithAckHandler(func(_ uint64, err error) {
			if err != nil {
				refused <- err
			}
		}))
	if _, err := pub2.Publish(ctxT(t), "secret", []byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-refused:
		if !errors.Is(err, ErrNotPermitted) || !strings.Contains(err.Error(), `not-permitted: publish to "secret"`) {
			t.Fatalf("refusal %v, want ErrNotPermitted", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no refusal of a publish the user may not make")
	}
	_, err = Connect(ctxT(t), addr, WithName("al-2"), WithTLS(tc), WithUser("al", []byte("wrong")))
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong password: %v, want ErrAuth", err)
	}
	_, err = Connect(ctxT(t), addr, WithName("bob"), WithTLS(tc), WithUser("al", []byte("pw")))
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "client-names") {
		t.Fatalf("spoofed name: %v, want ErrAuth about client-names", err)
	}
}

// A plaintext client on a TLS port fails at once saying TLS is required;
// the HA client does not retry.
func TestPlaintextClientOnTLSPortFailsAtOnce(t *testing.T) {
	addr, _ := startSecureEngine(t)
	_, err := Connect(ctxT(t), addr, WithName("al"), WithUser("al", []byte("pw")))
	if !errors.Is(err, ErrTLSRequired) || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("plaintext on a TLS port: %v, want ErrTLSRequired", err)
	}
	var attempts atomic.Int32
	cfg := haConfig("al", addr)
	cfg.Chooser = nil
	cfg.OnError = func(error) { attempts.Add(1) }
	h, err := NewHA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err = h.Connect(ctx)
	if !errors.Is(err, ErrTLSRequired) || ctx.Err() != nil {
		t.Fatalf("HA connect: %v after %v, want ErrTLSRequired at once", err, time.Since(start))
	}
}

// Client stores hold messages and progress: created 0600.
func TestStoreFileModes(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	ps, err := OpenFilePublishStore(filepath.Join(dir, "pub.store"), SyncNone, StoreLimits{})
	if err != nil {
		t.Fatal(err)
	}
	ps.Close()
	bs, err := OpenFileBookmarkStore(filepath.Join(dir, "bm.store"), SyncNone)
	if err != nil {
		t.Fatal(err)
	}
	bs.Close()
	ents, _ := os.ReadDir(dir)
	if len(ents) == 0 {
		t.Fatal("no store files")
	}
	for _, e := range ents {
		info, _ := e.Info()
		if m := info.Mode().Perm(); m != 0o600 {
			t.Errorf("%s: mode %o, want 600", e.Name(), m)
		}
	}
}
