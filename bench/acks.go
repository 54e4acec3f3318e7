package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// ackCounter is the acknowledgement bookkeeping the peer adapters share:
// messages sent, acknowledged (in order, cumulative) and failed, and a wait
// for every sent message to be acknowledged.
type ackCounter struct {
	sent  atomic.Uint64
	acked atomic.Uint64
	errs  atomic.Uint64
	mu    sync.Mutex
	cond  *sync.Cond
}

func (a *ackCounter) init() { a.cond = sync.NewCond(&a.mu) }

// ackedThrough records that every message up to i is acknowledged.
func (a *ackCounter) ackedThrough(i uint64) {
	a.mu.Lock()
	a.acked.Store(i)
	a.cond.Broadcast()
	a.mu.Unlock()
}

// wait blocks until every sent message is acknowledged or ctx ends; what
// names the failed operations in the error ("nats: 3 publishes failed").
func (a *ackCounter) wait(ctx context.Context, what string) error {
	stop := context.AfterFunc(ctx, func() { a.mu.Lock(); a.cond.Broadcast(); a.mu.Unlock() })
	defer stop()
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.acked.Load() < a.sent.Load() {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.cond.Wait()
	}
	if e := a.errs.Load(); e > 0 {
		return fmt.Errorf("%s: %d failed", what, e)
	}
	return nil
}
