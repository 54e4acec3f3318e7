// Package freeport picks loopback TCP ports that stay free for a process
// about to bind them.
//
// A port from "127.0.0.1:0" comes from the kernel's ephemeral range, the
// same range outgoing connections take their local ports from: a server
// started a moment later on that port (a bench peer, a test's replication
// address its peer dials, a server restarted on the same address) can find
// it taken by some connection's local end (bind: address already in use).
// Port picks below the ephemeral range instead, which the kernel never
// hands out on its own.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
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

// Port returns a 127.0.0.1 port below the ephemeral range that nothing
// listens on now and that this process has not handed out before (picked
// at random, so parallel processes rarely meet). Where the range starts
// too low to leave room, it falls back to a kernel-chosen port.
func Port() (int, error) {
	hi := ephemeralLow() - 1
	lo := 10000
	if hi-lo >= 1000 {
		mu.Lock()
		defer mu.Unlock()
		for range 200 {
			p := lo + rng.IntN(hi-lo+1)
			if used[p] {
				continue
			}
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				continue
			}
			l.Close()
			used[p] = true
			return p, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
