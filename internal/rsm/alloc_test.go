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

// With overlapping syncs a destination reports only what the source
// confirmed durable; a new link rewinds to it; the highest received stays
// for LostOwnRecords.
func TestSourceOverlap(t *testing.T) {
	var j1 [16]byte
	j1[0] = 1
	s := NewSource(Position{Journal: j1})
	s.SetOverlap()
	s.Follow(j1)
	s.Received(10, 110, 50)
	s.Acked(Position{Journal: j1, Seq: 10, CRC: 110}) // durable here, not confirmed
	if d := s.Durable(); d.Seq != 0 {
		t.Fatalf("reported %d before the source confirmed it", d.Seq)
	}
	s.Confirm(j1, 8)
	if d := s.Durable(); d.Seq != 0 {
		t.Fatalf("reported %d with the source durable only through 8", d.Seq)
	}
	s.Confirm(j1, 12)
	if d := s.Durable(); d.Seq != 10 || d.CRC != 110 {
		t.Fatalf("reported %+v, want seq 10", d)
	}
	s.Received(20, 120, 60)
	s.Acked(Position{Journal: j1, Seq: 20, CRC: 120})
	s.Rewind() // the source may have crashed: take its stream again from 10
	if s.ReceivedSeq() != 10 || !s.Fresh(11) || s.HighestReceived() != 20 {
		t.Fatalf("after Rewind: received %d, fresh(11) %v, highest %d", s.ReceivedSeq(), s.Fresh(11), s.HighestReceived())
	}
	if !LostOwnRecords(j1, s.HighestReceived(), j1, 15) {
		t.Fatal("a source back at 15 of a stream held to 20 here lost records")
	}
}
