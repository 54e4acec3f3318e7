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
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

var (
	mu   sync.Mutex
	used = map[int]bool{}
	rng  = rand.New(rand.NewPCG(uint64(os.Getpid()), 0x7465737464))
)

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}

// FreeAddr returns a 127.0.0.1 address with a port below the ephemeral
// range that nothing listens on now and that this process has not
// handed out before (ports are picked at random, so parallel test
// processes rarely meet). Where the range starts too low to leave room,
// it falls back to a kernel-chosen port.
func FreeAddr(t testing.TB) string {
	t.Helper()
	hi := ephemeralLow() - 1
	lo := 10000
	if hi-lo < 1000 {
		return kernelPort(t)
	}
	mu.Lock()
	defer mu.Unlock()
	for range 200 {
		p := lo + rng.IntN(hi-lo+1)
		if used[p] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		used[p] = true
		return addr
	}
	return kernelPort(t)
}

func kernelPort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
