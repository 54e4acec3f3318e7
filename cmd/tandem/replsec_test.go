package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
