package replicate

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/rsm"
	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/record"
)

// TestAckLoopDoesNotWaitForLaterBatch: a batch acknowledgment whose records
// are durable goes out at once, even when a later batch is queued behind it
// whose records are not durable yet. (Issue 15: the ack loop's coalescing
// waited for the newest queued batch's sync before acknowledging any, which
// added up to one more fdatasync to a sync pair's ack latency.)
func TestAckLoopDoesNotWaitForLaterBatch(t *testing.T) {
	var gateMu sync.Mutex
	armed := false
	entered := make(chan struct{}, 100)
	release := make(chan struct{})
	efs := journal.ErrorFS{FS: journal.NewMemFS(), Inject: func(op, name string) error {
		gateMu.Lock()
		a := armed
		gateMu.Unlock()
		if op == "sync" && a {
			entered <- struct{}{}
			<-release
		}
		return nil
	}}
	j, err := journal.Open(journal.Options{Dir: "/j", FS: efs, SegmentSize: 64 << 10, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			close(release)
		}
		j.Close()
	}()
	appendOne := func() uint64 {
		h := &record.Header{Origin: 1, Publisher: 1}
		seq, err := j.Append(h, []byte("t"), []byte("p"))
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	first := appendOne()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := j.WaitSynced(ctx, first); err != nil {
		t.Fatal(err)
	}
	gateMu.Lock()
	armed = true
	gateMu.Unlock()
	second := appendOne()
	select {
	case <-entered: // the flusher is inside the sync of the second record
	case <-ctx.Done():
		t.Fatal("the flusher never synced the second record")
	}

	ours, theirs := net.Pipe()
	defer theirs.Close()
	r := &Replicator{j: j, log: slog.New(slog.DiscardHandler), ctx: ctx, cfg: Config{Heartbeat: time.Second}}
	lctx, lcancel := context.WithCancel(ctx)
	l := &link{r: r, c: ours, acks: make(chan rsm.PendingAck, 16), closed: make(chan struct{}), ctx: lctx, cancel: lcancel}
	l.acks <- rsm.PendingAck{WaitFor: first, Through: 10}
	l.acks <- rsm.PendingAck{WaitFor: second, Through: 20}
	r.wg.Add(1)
	go l.ackLoop(&source{m: rsm.NewSource(position{})})
	defer func() {
		l.close(io.EOF)
		r.wg.Wait()
	}()

	read := func(want uint64) {
		t.Helper()
		exp := appendU64Frame(nil, typeBatchAck, want)
		got := make([]byte, len(exp))
		theirs.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(theirs, got); err != nil {
			t.Fatalf("no batch ack through %d (records durable: %d): %v", want, j.SyncedSeq(), err)
		}
		if !bytes.Equal(got, exp) {
			t.Fatalf("frame %x, want the batch ack through %d (%x)", got, want, exp)
		}
	}
	read(10) // its record is durable; the second batch's is not
	gateMu.Lock()
	armed = false
	gateMu.Unlock()
	close(release)
	released = true
	read(20)
}
