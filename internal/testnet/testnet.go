// Package testnet gives tests loopback addresses that stay free across a
// server's restarts.
//
// A port from "127.0.0.1:0" comes from the kernel's ephemeral range, the
// same range outgoing connections take their local ports from: a test
// that restarts a server on the same fixed port (a replication address
// its peer dials) could find it taken by some connection's local end
// (bind: address already in use). FreeAddr picks ports below the
// ephemeral range instead, which the kernel never hands out on its own.
package testnet

import (
	"fmt"
	"testing"

	"github.com/tandemhq/tandem/internal/freeport"
)

// FreeAddr returns a 127.0.0.1 address with a port below the ephemeral
// range that nothing listens on now and that this process has not
// handed out before (internal/freeport).
func FreeAddr(t testing.TB) string {
	t.Helper()
	p, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}
