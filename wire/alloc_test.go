package wire_test

import (
	"testing"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// The publish and delivery paths must not allocate: a server handles
// millions of these per second.

var (
	benchTopic   = []byte("px.EURUSD")
	benchPayload = make([]byte, 128)
)

func TestAllocsSplitDecodePublish(t *testing.T) {
	var stream []byte
	for i := range 16 {
		stream = wire.AppendPublish(stream, uint64(i), wire.AckPersisted, benchTopic, benchPayload)
	}
	var m wire.Publish
	n := testing.AllocsPerRun(100, func() {
		buf := stream
		for len(buf) > 0 {
			f, n, err := wire.Split(buf, wire.DefaultMaxFrame)
			if err != nil || n == 0 || f.Type != wire.TypePublish {
				panic("split")
			}
			if err := wire.DecodePublish(f.Body, &m); err != nil {
				panic(err)
			}
			buf = buf[n:]
		}
	})
	if n != 0 {
		t.Fatalf("Split+DecodePublish: %v allocs per 16 frames", n)
	}
}

func TestAllocsAppendPublish(t *testing.T) {
	buf := make([]byte, 0, wire.PublishOverhead+len(benchTopic)+len(benchPayload))
	if n := testing.AllocsPerRun(100, func() {
		buf = wire.AppendPublish(buf[:0], 1, wire.AckPersisted, benchTopic, benchPayload)
	}); n != 0 {
		t.Fatalf("AppendPublish into a pre-sized buffer: %v allocs", n)
	}
}

func TestAllocsDeliver(t *testing.T) {
	rec := record.Append(nil, &record.Header{Seq: 1, Publisher: 2, PubSeq: 3}, benchTopic, benchPayload)
	frame := wire.AppendDeliver(nil, 7, rec)
	var m wire.Deliver
	if n := testing.AllocsPerRun(100, func() {
		if err := wire.DecodeDeliver(frame[wire.HeaderSize:], &m); err != nil {
			panic(err)
		}
	}); n != 0 {
		t.Fatalf("DecodeDeliver: %v allocs", n)
	}
	hdr := make([]byte, 0, wire.DeliverOverhead)
	if n := testing.AllocsPerRun(100, func() {
		hdr = wire.AppendDeliverHeader(hdr[:0], 7, len(rec))
	}); n != 0 {
		t.Fatalf("AppendDeliverHeader: %v allocs", n)
	}
	buf := make([]byte, 0, record.Size(len(benchTopic), len(benchPayload)))
	h := record.Header{Seq: 1, Publisher: 2, PubSeq: 3}
	if n := testing.AllocsPerRun(100, func() {
		buf = record.Append(buf[:0], &h, benchTopic, benchPayload)
	}); n != 0 {
		t.Fatalf("record.Append into a pre-sized buffer: %v allocs", n)
	}
}

func BenchmarkDecodePublish(b *testing.B) {
	frame := wire.AppendPublish(nil, 1, wire.AckPersisted, benchTopic, benchPayload)
	var m wire.Publish
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		f, _, err := wire.Split(frame, wire.DefaultMaxFrame)
		if err != nil {
			b.Fatal(err)
		}
		if err := wire.DecodePublish(f.Body, &m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendPublish(b *testing.B) {
	buf := make([]byte, 0, wire.PublishOverhead+len(benchTopic)+len(benchPayload))
	b.ReportAllocs()
	b.SetBytes(int64(cap(buf)))
	for b.Loop() {
		buf = wire.AppendPublish(buf[:0], 1, wire.AckPersisted, benchTopic, benchPayload)
	}
}

func BenchmarkDecodeDeliver(b *testing.B) {
	rec := record.Append(nil, &record.Header{Seq: 1, Publisher: 2, PubSeq: 3}, benchTopic, benchPayload)
	frame := wire.AppendDeliver(nil, 7, rec)
	var m wire.Deliver
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		f, _, err := wire.Split(frame, wire.DefaultMaxFrame)
		if err != nil {
			b.Fatal(err)
		}
		if err := wire.DecodeDeliver(f.Body, &m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendDeliverHeader(b *testing.B) {
	buf := make([]byte, 0, wire.DeliverOverhead)
	b.ReportAllocs()
	for b.Loop() {
		buf = wire.AppendDeliverHeader(buf[:0], 7, 200)
	}
}
