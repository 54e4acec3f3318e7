package client

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// The event queue's close must run what is queued and return even when an
// event was pushed while the previous one was still running, so that the
// wake-up of the push and that of close fold into one (a Close in a test
// cleanup hung there, TestHAStandbyErrorFrame under -race).
func TestEventQueueCloseAfterPushDuringHandler(t *testing.T) {
	release := make(chan struct{})
	running := make(chan struct{})
	got := make(chan State, 4)
	q := newEventQueue(func(e Event) {
		if e.State == StateReconnecting {
			close(running)
			<-release
		}
		got <- e.State
	}, nil)
	q.state(Event{State: StateReconnecting})
	<-running                           // the handler runs: the queue cannot take its wake-up
	q.state(Event{State: StateStopped}) // its wake-up fills the channel
	closed := make(chan struct{})
	go func() { q.close(); close(closed) }() // close's own wake-up is dropped
	deadline := time.Now().Add(5 * time.Second)
	for {
		q.mu.Lock()
		c := q.closed
		q.mu.Unlock()
		if c {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("close did not start")
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
	close(release)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("eventQueue.close did not return: the queued event's wake-up was taken for close's")
	}
	if a, b := <-got, <-got; a != StateReconnecting || b != StateStopped {
		t.Fatalf("events %v %v", a, b)
	}
}

// When Connect's context ends during an attempt, that attempt's failure is
// reported and nothing more is tried: one Reconnecting event, then
// Stopped, and the error matches ErrNoServer and the context's.
func TestHAConnectCancelledMidAttempt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // accepts (the kernel does), never answers the logon
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ev := newEvents()
	cfg := haConfig("cancel-mid", ln.Addr().String())
	cfg.ConnectTimeout = time.Minute
	cfg.OnState = ev.on
	h, err := NewHA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = h.Connect(ctx)
	if !errors.Is(err, ErrNoServer) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect: %v", err)
	}
	ev.wait(t, StateStopped, 5*time.Second)
	ev.mu.Lock()
	defer ev.mu.Unlock()
	var states []State
	for _, e := range ev.evs {
		states = append(states, e.State)
	}
	if len(states) != 2 || states[0] != StateReconnecting || states[1] != StateStopped {
		t.Fatalf("events %v, want [reconnecting stopped]", states)
	}
}
