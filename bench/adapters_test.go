package bench

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// Each adapter publishes N messages with persisted acks and delivers them,
// in order and intact, to a live subscriber and to one reading from the
// start. Peers that are not installed are skipped (CI installs them:
// .ci/run, make bench-deps).
func TestAdapters(t *testing.T) {
	for _, sys := range []System{
		&Tandem{}, // in-process server
		&NATS{}, &NATS{SyncAlways: true},
		&Redis{Fsync: "always"}, &Redis{Fsync: "everysec"},
		&NATS{SyncAlways: true, Replicas: 3}, &NATS{Replicas: 3},
		&Redis{Fsync: "always", Replica: true},
	} {
		t.Run(sys.Name(), func(t *testing.T) {
			t.Parallel()
			if info := sys.Info(); info.Skipped != "" {
				t.Skipf("%s not installed, skipping: %s", sys.Name(), info.Skipped)
			}
			testAdapter(t, sys)
		})
	}
}

type collector struct {
	mu   sync.Mutex
	msgs [][]byte
}

func (c *collector) on(p []byte) {
	c.mu.Lock()
	c.msgs = append(c.msgs, bytes.Clone(p))
	c.mu.Unlock()
}

func (c *collector) wait(t *testing.T, n int) [][]byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		got := len(c.msgs)
		c.mu.Unlock()
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("received %d of %d messages", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // nothing extra arrives
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.msgs
}

func testAdapter(t *testing.T, sys System) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sys.Start(ctx, t.TempDir()); err != nil {
		if errors.Is(err, errPeerMissing) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	defer sys.Stop()

	live := &collector{}
	sub, err := sys.Subscribe(ctx, "live", false, live.on)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	const n = 300
	var mu sync.Mutex
	var acks []uint64
	pub, err := sys.NewPublisher(ctx, "pub", 64, func(i uint64) {
		mu.Lock()
		acks = append(acks, i)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	payload := newPayload(100)
	want := make([][]byte, n)
	for i := 0; i < n; i++ {
		putHeader(payload, uint64(i), int64(i)*1000)
		payload[99] = byte(i) // vary the tail too
		want[i] = bytes.Clone(payload)
		if err := pub.Publish(ctx, payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(acks) != n {
		t.Fatalf("%d acks, want %d", len(acks), n)
	}
	for i, a := range acks {
		if a != uint64(i) {
			t.Fatalf("ack %d is for message %d", i, a)
		}
	}
	mu.Unlock()
	if e := pub.Errors(); e != 0 {
		t.Fatalf("%d publish errors", e)
	}
	check := func(name string, got [][]byte) {
		t.Helper()
		if len(got) != n {
			t.Fatalf("%s: %d messages, want %d", name, len(got), n)
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				idx, _, _ := readHeader(got[i])
				t.Fatalf("%s: message %d is message %d (or corrupt)", name, i, idx)
			}
		}
	}
	check("live", live.wait(t, n))

	replay := &collector{}
	rs, err := sys.Subscribe(ctx, "replay", true, replay.on)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	check("from start", replay.wait(t, n))
}
