package engine

import (
	"context"
	"testing"
	"time"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// storeAt stores replicated records with the given times (as a peer's
// would arrive: their origin's clock, not in order).
func storeAt(t *testing.T, s *Server, times []int64) {
	t.Helper()
	var recs []record.View
	for i, tm := range times {
		b := record.Append(nil, &record.Header{Seq: uint64(i + 1), Time: tm, Origin: record.ID("peer"), Publisher: record.ID("far"),
			PubSeq: uint64(i + 1), OriginSeq: uint64(i + 1)}, []byte("t"), []byte{byte(i)})
		v, _, err := record.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, v)
	}
	seq, err := s.StoreReplicated(recs, 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Journal().WaitSynced(ctx, seq); err != nil {
		t.Fatal(err)
	}
}

// A time subscription starts at the first record in journal order at or
// after the time and delivers everything after it, an older later-stored
// record included, then live messages; past every record, only live ones.
func TestSubscribeFromTime(t *testing.T) {
	s := testServer(t, t.TempDir())
	defer s.Close()
	storeAt(t, s, []int64{100, 300, 200, 400})

	c := dialRaw(t, s)
	c.logon("from-time", 0)
	if a := c.subscribe(wire.AppendSubscribeTime(nil, 1, wire.MatchExact, []byte("t"), 250)); a.Code != 0 {
		t.Fatalf("refused: %s %s", a.Code, a.Text)
	}
	for _, want := range []uint64{2, 3, 4} {
		if d := c.nextDelivery(5 * time.Second); d.seq != want {
			t.Fatalf("delivered seq %d, want %d", d.seq, want)
		}
	}
	if a := c.subscribe(wire.AppendSubscribeTime(nil, 2, wire.MatchExact, []byte("t"), 401)); a.Code != 0 {
		t.Fatalf("refused: %s %s", a.Code, a.Text)
	}
	p := dialRaw(t, s)
	p.logon("live", 0)
	p.publishN("t", "m", 1, 1, wire.AckPersisted)
	p.waitAck(wire.AckKindPersisted, 1)
	got := map[uint32]uint64{}
	for len(got) < 2 {
		d := c.nextDelivery(5 * time.Second)
		if _, dup := got[d.sub]; dup {
			t.Fatalf("subscription %d got seq %d too", d.sub, d.seq)
		}
		got[d.sub] = d.seq
	}
	if got[1] != 5 || got[2] != 5 {
		t.Fatalf("live message: %v, want seq 5 on both subscriptions", got)
	}
}
