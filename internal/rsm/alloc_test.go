package rsm

import "testing"

// The per-batch paths allocate nothing once warm, however long the stream
// runs without its window emptying (the acknowledged prefix is reused).
func TestNoAllocationsPerBatch(t *testing.T) {
	d := NewDest(DestConfig{Sync: true, DowngradeAfter: Never, Window: 1 << 30}, 0)
	d.LinkUp()
	run, _ := d.Resume(1)
	var q AckQueue
	s := NewSource(Position{})
	seq := uint64(0)
	step := func() {
		// two batches out, one acknowledged: never empty
		seq++
		d.Ship(run, 2*seq, 1, 100)
		d.Ship(run, 2*seq+1, 1, 100)
		d.Ack(run, 2*seq)
		q.Push(s.Received(seq, 0, seq))
		q.Push(s.Received(seq, 0, seq+1))
		q.Ready(seq)
	}
	for i := 0; i < 1000; i++ {
		step()
	}
	if n := testing.AllocsPerRun(1000, step); n != 0 {
		t.Fatalf("%.1f allocations per batch, want 0", n)
	}
	if n, _ := d.InFlight(); n > 1000 {
		t.Fatalf("%d batches in flight", n)
	}
	if cap(d.out) > 4096 || cap(q.q) > 4096 {
		t.Fatalf("queues grew to %d and %d", cap(d.out), cap(q.q))
	}
}
