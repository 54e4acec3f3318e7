package client

import (
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
