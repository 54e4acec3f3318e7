package record_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"strings"
	"testing"

	"github.com/tandemhq/tandem/record"
)

func sampleHeader() record.Header {
	return record.Header{
		Seq:       1007,
		Time:      1_700_000_000_123_456_789,
		Origin:    record.ID("instance-a"),
		Publisher: record.ID("pricing-feed"),
		PubSeq:    42,
		Via:       record.ID("instance-b"),
	}
}

func TestAppendParseRoundTrip(t *testing.T) {
	long := bytes.Repeat([]byte{'t'}, record.MaxTopic)
	cases := []struct {
		name           string
		topic, payload []byte
	}{
		{"empty", nil, nil},
		{"topic only", []byte("orders.eu"), nil},
		{"payload only", nil, []byte("hello")},
		{"both", []byte("orders.eu"), []byte(`{"px":101.5}`)},
		{"max topic", long, []byte("p")},
		{"binary", []byte{0, 0xff, ':'}, []byte{0, 1, 2, 3, 0xfe}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := sampleHeader()
			prefix := []byte("junk")
			buf := record.Append(append([]byte(nil), prefix...), &h, c.topic, c.payload)
			if !bytes.Equal(buf[:len(prefix)], prefix) {
				t.Fatalf("Append clobbered the bytes before it")
			}
			enc := buf[len(prefix):]
			if len(enc) != record.Size(len(c.topic), len(c.payload)) {
				t.Fatalf("encoded %d bytes, Size says %d", len(enc), record.Size(len(c.topic), len(c.payload)))
			}
			if got := record.Length(enc); got != len(enc) {
				t.Fatalf("Length = %d, want %d", got, len(enc))
			}
			// Trailing bytes (the next record) must not be taken in.
			v, n, err := record.Parse(append(enc[:len(enc):len(enc)], 1, 2, 3))
			if err != nil {
				t.Fatal(err)
			}
			if n != len(enc) || v.Len() != n || !bytes.Equal(v.Bytes(), enc) {
				t.Fatalf("Parse n=%d Len=%d, want %d", n, v.Len(), len(enc))
			}
			if err := v.Verify(); err != nil {
				t.Fatal(err)
			}
			if v.Seq() != h.Seq || v.Time() != h.Time || v.Origin() != h.Origin ||
				v.Publisher() != h.Publisher || v.PubSeq() != h.PubSeq || v.Via() != h.Via ||
				v.OriginSeq() != h.Seq || v.Flags() != 0 {
				t.Fatalf("header fields differ: got seq=%d time=%d origin=%x pub=%x pubseq=%d via=%x originSeq=%d flags=%x",
					v.Seq(), v.Time(), v.Origin(), v.Publisher(), v.PubSeq(), v.Via(), v.OriginSeq(), v.Flags())
			}
			if !bytes.Equal(v.Topic(), c.topic) || !bytes.Equal(v.Payload(), c.payload) {
				t.Fatalf("topic/payload differ")
			}
			if v.CRC() != record.Checksum(enc[8:]) {
				t.Fatalf("CRC %08x, want %08x", v.CRC(), record.Checksum(enc[8:]))
			}
			want := record.Bookmark{Publisher: h.Publisher, PubSeq: h.PubSeq, Seq: h.Seq}
			if v.Bookmark() != want {
				t.Fatalf("Bookmark = %v, want %v", v.Bookmark(), want)
			}
		})
	}
}

func TestLayout(t *testing.T) {
	// The layout is a disk and wire format: pin every offset.
	h := record.Header{Seq: 0x0102030405060708, Time: 0x1112131415161718, Origin: 0x2122232425262728,
		Publisher: 0x3132333435363738, PubSeq: 0x4142434445464748, Via: 0x5152535455565758,
		OriginSeq: 0x7172737475767778}
	b := record.Append(nil, &h, []byte("ab"), []byte("xyz"))
	le := binary.LittleEndian
	if len(b) != 77 || le.Uint32(b[0:]) != 77 || le.Uint64(b[8:]) != h.Seq || le.Uint64(b[16:]) != uint64(h.Time) ||
		le.Uint64(b[24:]) != h.Origin || le.Uint64(b[32:]) != h.Publisher || le.Uint64(b[40:]) != h.PubSeq ||
		le.Uint64(b[48:]) != h.Via || le.Uint64(b[56:]) != h.OriginSeq || le.Uint16(b[64:]) != 2 ||
		le.Uint16(b[66:]) != 0 || le.Uint32(b[68:]) != 3 ||
		string(b[72:]) != "abxyz" || le.Uint32(b[4:]) != record.Checksum(b[8:]) {
		t.Fatalf("unexpected layout:\n% x", b)
	}
	// The flags field is at 66: RestampReplica's flags land there and its via
	// at 48; originSeq at 56 is left alone.
	record.RestampReplica(b, h.Seq, 0x6162636465666768, 0xa5c3)
	if le.Uint64(b[48:]) != 0x6162636465666768 || le.Uint16(b[66:]) != 0xa5c3 || le.Uint16(b[64:]) != 2 ||
		le.Uint64(b[56:]) != h.OriginSeq || le.Uint32(b[68:]) != 3 || le.Uint32(b[4:]) != record.Checksum(b[8:]) {
		t.Fatalf("unexpected layout after RestampReplica:\n% x", b)
	}
	// originSeq 0 in the Header means "at the origin": Append writes seq there.
	h.OriginSeq = 0
	b = record.Append(nil, &h, []byte("ab"), []byte("xyz"))
	if le.Uint64(b[56:]) != h.Seq || le.Uint32(b[4:]) != record.Checksum(b[8:]) {
		t.Fatalf("originSeq 0 not written as seq:\n% x", b)
	}
	if record.HeaderSize != 72 || record.BookmarkSize != 24 || record.MaxTopic != 65535 {
		t.Fatal("format constants changed")
	}
}

func TestAppendGrows(t *testing.T) {
	h := sampleHeader()
	var buf []byte
	for i := range 100 {
		buf = record.Append(buf, &h, []byte("t"), bytes.Repeat([]byte{byte(i)}, i))
	}
	for i := 0; len(buf) > 0; i++ {
		v, n, err := record.Parse(buf)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if len(v.Payload()) != i || v.Verify() != nil {
			t.Fatalf("record %d: payload %d", i, len(v.Payload()))
		}
		buf = buf[n:]
	}
}

func TestChecksumDetectsEveryFlippedBit(t *testing.T) {
	h := sampleHeader()
	rec := record.Append(nil, &h, []byte("orders"), []byte("payload bytes"))
	for i := 8 * 8; i < len(rec)*8; i++ { // bits covered by the CRC: [8, length)
		b := append([]byte(nil), rec...)
		b[i/8] ^= 1 << (i % 8)
		v, _, err := record.Parse(b)
		if err != nil {
			continue // a flip in a length field is caught structurally
		}
		if !errors.Is(v.Verify(), record.ErrChecksum) {
			t.Fatalf("bit %d flipped, Verify = %v", i, v.Verify())
		}
	}
	// A flipped bit in the CRC itself is detected too.
	b := append([]byte(nil), rec...)
	b[5] ^= 0x10
	v, _, err := record.Parse(b)
	if err != nil || !errors.Is(v.Verify(), record.ErrChecksum) {
		t.Fatalf("flipped CRC bit: parse %v verify %v", err, v.Verify())
	}
}

func TestRestamp(t *testing.T) {
	h := sampleHeader()
	rec := record.Append(nil, &h, []byte("orders"), []byte("payload"))
	orig := append([]byte(nil), rec...)
	record.Restamp(rec, 99)
	v, _, err := record.Parse(rec)
	if err != nil {
		t.Fatal(err)
	}
	if v.Seq() != 99 || v.Verify() != nil {
		t.Fatalf("after Restamp: seq %d verify %v", v.Seq(), v.Verify())
	}
	if v.OriginSeq() != 1007 {
		t.Fatalf("Restamp changed originSeq to %d", v.OriginSeq())
	}
	// Only seq and CRC change; the result equals a fresh encoding with seq 99
	// that keeps the original seq as its originSeq.
	h.Seq, h.OriginSeq = 99, 1007
	if want := record.Append(nil, &h, []byte("orders"), []byte("payload")); !bytes.Equal(rec, want) {
		t.Fatalf("Restamp differs from a fresh Append:\n% x\n% x", rec, want)
	}
	record.Restamp(rec, 1007)
	if !bytes.Equal(rec, orig) {
		t.Fatal("Restamp back to the original seq does not restore the original bytes")
	}
}

func TestParseRejects(t *testing.T) {
	h := sampleHeader()
	good := record.Append(nil, &h, []byte("topic"), []byte("payload"))
	le := binary.LittleEndian
	mut := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, record.ErrShort},
		{"below header", good[:record.HeaderSize-1], record.ErrShort},
		{"truncated body", good[:len(good)-1], record.ErrShort},
		{"length zero", mut(func(b []byte) { le.PutUint32(b, 0) }), record.ErrLength},
		{"length below header", mut(func(b []byte) { le.PutUint32(b, record.HeaderSize-1) }), record.ErrLength},
		{"length one more", mut(func(b []byte) { le.PutUint32(b, uint32(len(good)+1)) }), record.ErrLength},
		{"length one less", mut(func(b []byte) { le.PutUint32(b, uint32(len(good)-1)) }), record.ErrLength},
		{"topicLen too big", mut(func(b []byte) { le.PutUint16(b[64:], 6) }), record.ErrLength},
		{"payloadLen too big", mut(func(b []byte) { le.PutUint32(b[68:], 8) }), record.ErrLength},
		{"payloadLen huge", mut(func(b []byte) { le.PutUint32(b[68:], 0xffffffff) }), record.ErrLength},
		{"length huge", mut(func(b []byte) { le.PutUint32(b, 0xffffffff) }), record.ErrLength},
		{"consistent but past the end", mut(func(b []byte) {
			le.PutUint32(b, uint32(len(good)+10))
			le.PutUint32(b[68:], 17)
		}), record.ErrShort},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, n, err := record.Parse(c.b)
			if !errors.Is(err, c.want) || n != 0 {
				t.Fatalf("Parse = n %d, %v; want %v", n, err, c.want)
			}
		})
	}
}

func TestLength(t *testing.T) {
	if record.Length(nil) != 0 || record.Length([]byte{1, 2, 3}) != 0 || record.Length(make([]byte, record.HeaderSize)) != 0 {
		t.Fatal("Length of short or zeroed input not 0")
	}
	if record.Length([]byte{0x40, 0, 0, 0}) != 64 {
		t.Fatal("Length misreads the field")
	}
}

func TestID(t *testing.T) {
	for _, name := range []string{"", "a", "abc", "pricing-feed", strings.Repeat("x", 300)} {
		h := fnv.New64a()
		h.Write([]byte(name))
		want := h.Sum64()
		if want == 0 {
			want = 1
		}
		if got := record.ID(name); got != want {
			t.Errorf("ID(%q) = %016x, want FNV-1a %016x", name, got, want)
		}
	}
	if record.ID("abc") != record.ID("abc") || record.ID("abc") == record.ID("abd") {
		t.Fatal("ID not stable or not distinguishing")
	}
}

func TestBookmarkBinary(t *testing.T) {
	b := record.Bookmark{Publisher: 0xa1b2c3d4e5f60718, PubSeq: 42, Seq: 1007}
	enc := b.AppendBinary([]byte{9})
	if len(enc) != 1+record.BookmarkSize || enc[0] != 9 {
		t.Fatalf("AppendBinary: % x", enc)
	}
	want := []byte{0x18, 0x07, 0xf6, 0xe5, 0xd4, 0xc3, 0xb2, 0xa1, 42, 0, 0, 0, 0, 0, 0, 0, 0xef, 0x03, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(enc[1:], want) {
		t.Fatalf("encoding\n% x\nwant\n% x", enc[1:], want)
	}
	got, err := record.DecodeBookmark(enc[1:])
	if err != nil || got != b {
		t.Fatalf("DecodeBookmark = %v, %v", got, err)
	}
	if _, err := record.DecodeBookmark(enc[1:record.BookmarkSize]); !errors.Is(err, record.ErrBadBookmark) {
		t.Fatalf("short bookmark: %v", err)
	}
	if !(record.Bookmark{}).IsZero() || b.IsZero() {
		t.Fatal("IsZero wrong")
	}
}

func TestBookmarkText(t *testing.T) {
	for _, b := range []record.Bookmark{
		{},
		{Publisher: 0xa1b2c3d4e5f60718, PubSeq: 42, Seq: 1007},
		{Publisher: 1, PubSeq: 1<<64 - 1, Seq: 1<<64 - 1},
		{Publisher: 1<<64 - 1},
	} {
		s := b.String()
		if len(strings.Split(s, ":")[0]) != 16 {
			t.Errorf("%q: publisher not 16 hex digits", s)
		}
		got, err := record.ParseBookmark(s)
		if err != nil || got != b {
			t.Errorf("ParseBookmark(%q) = %v, %v; want %v", s, got, err, b)
		}
	}
	if s := (record.Bookmark{Publisher: 0xa1b2c3d4e5f60718, PubSeq: 42, Seq: 1007}).String(); s != "a1b2c3d4e5f60718:42:1007" {
		t.Fatalf("String = %q", s)
	}
	for _, s := range []string{
		"", ":", "::", "a:1", "a:1:2:3", "g:1:2", "a:-1:2", "a:1:x", "a:1:", ":1:2",
		"10000000000000000:1:2", "a:18446744073709551616:2", "a:1:2 ", " a:1:2", "0xa:1:2", "a:0x1:2",
	} {
		if _, err := record.ParseBookmark(s); !errors.Is(err, record.ErrBadBookmark) {
			t.Errorf("ParseBookmark(%q) = %v, want ErrBadBookmark", s, err)
		}
	}
}

func TestAppendAllocs(t *testing.T) {
	h := sampleHeader()
	topic, payload := []byte("orders.eu"), make([]byte, 128)
	buf := make([]byte, 0, record.Size(len(topic), len(payload)))
	if n := testing.AllocsPerRun(100, func() {
		buf = record.Append(buf[:0], &h, topic, payload)
	}); n != 0 {
		t.Fatalf("record.Append into a pre-sized buffer: %v allocs", n)
	}
	rec := buf
	if n := testing.AllocsPerRun(100, func() {
		v, _, err := record.Parse(rec)
		if err != nil || v.Verify() != nil {
			t.Fatal("parse")
		}
	}); n != 0 {
		t.Fatalf("record.Parse+Verify: %v allocs", n)
	}
}

func BenchmarkAppend(b *testing.B) {
	h := sampleHeader()
	topic, payload := []byte("orders.eu"), make([]byte, 128)
	buf := make([]byte, 0, record.Size(len(topic), len(payload)))
	b.ReportAllocs()
	b.SetBytes(int64(cap(buf)))
	for b.Loop() {
		buf = record.Append(buf[:0], &h, topic, payload)
	}
}

func BenchmarkParseVerify(b *testing.B) {
	h := sampleHeader()
	rec := record.Append(nil, &h, []byte("orders.eu"), make([]byte, 128))
	b.ReportAllocs()
	b.SetBytes(int64(len(rec)))
	for b.Loop() {
		v, _, err := record.Parse(rec)
		if err != nil || v.Verify() != nil {
			b.Fatal("parse")
		}
	}
}

// Lengths are unsigned on the wire: a payloadLen that would be negative as a
// 32-bit int must not let topicLen point past the record.
func TestParseRejectsWrappingLengths(t *testing.T) {
	b := make([]byte, record.HeaderSize+16)
	binary.LittleEndian.PutUint32(b, record.HeaderSize)
	binary.LittleEndian.PutUint16(b[64:], 10)
	binary.LittleEndian.PutUint32(b[68:], 0xfffffff6) // -10 as int32
	v, _, err := record.Parse(b)
	if !errors.Is(err, record.ErrLength) {
		t.Fatalf("Parse accepted topicLen 10 + payloadLen 2^32-10 in a %d-byte record: %v", v.Len(), err)
	}
}

func TestRestampFlags(t *testing.T) {
	h := sampleHeader()
	rec := record.Append(nil, &h, []byte("orders"), []byte("payload"))
	if record.FlagsOf(rec) != 0 {
		t.Fatal("Append wrote non-zero flags")
	}
	record.RestampFlags(rec, 5, record.FlagBatchStart)
	v, _, err := record.Parse(rec)
	if err != nil {
		t.Fatal(err)
	}
	if v.Seq() != 5 || v.Flags() != record.FlagBatchStart || record.FlagsOf(rec) != record.FlagBatchStart || v.Verify() != nil {
		t.Fatalf("after RestampFlags: seq %d flags %x verify %v", v.Seq(), v.Flags(), v.Verify())
	}
	if string(v.Topic()) != "orders" || string(v.Payload()) != "payload" || v.PubSeq() != h.PubSeq || v.Via() != h.Via ||
		v.OriginSeq() != h.Seq {
		t.Fatal("RestampFlags changed other fields")
	}
	// Restamp keeps the flags.
	record.Restamp(rec, 6)
	if v.Flags() != record.FlagBatchStart || v.Seq() != 6 || v.Verify() != nil {
		t.Fatalf("Restamp: flags %x seq %d verify %v", v.Flags(), v.Seq(), v.Verify())
	}
	record.RestampFlags(rec, 6, 0)
	h.Seq, h.OriginSeq = 6, h.Seq // originSeq stays the seq the record was appended with
	if want := record.Append(nil, &h, []byte("orders"), []byte("payload")); !bytes.Equal(rec, want) {
		t.Fatal("clearing the flags does not give back Append's encoding")
	}
}

func TestRestampReplica(t *testing.T) {
	h := sampleHeader()
	h.Via = 0 // published locally
	topic, payload := []byte("orders"), []byte("payload")
	rec := record.Append(nil, &h, topic, payload)
	orig := append([]byte(nil), rec...)
	if v, _, err := record.Parse(rec); err != nil || v.Via() != 0 || v.Flags() != 0 {
		t.Fatalf("Append of a local message: via %x flags %x err %v", v.Via(), v.Flags(), err)
	}

	via := record.ID("instance-c")
	record.RestampReplica(rec, 77, via, record.FlagBatchStart)
	v, n, err := record.Parse(rec)
	if err != nil || n != len(orig) {
		t.Fatalf("Parse after RestampReplica: n %d err %v", n, err)
	}
	if err := v.Verify(); err != nil {
		t.Fatalf("CRC not valid after RestampReplica: %v", err)
	}
	if v.CRC() != record.Checksum(rec[8:]) || v.CRC() == record.Checksum(orig[8:]) {
		t.Fatalf("CRC %08x not recomputed", v.CRC())
	}
	if v.Seq() != 77 || v.Via() != via || v.Flags() != record.FlagBatchStart || record.FlagsOf(rec) != record.FlagBatchStart {
		t.Fatalf("after RestampReplica: seq %d via %x flags %x", v.Seq(), v.Via(), v.Flags())
	}
	if v.Len() != len(orig) || v.Time() != h.Time || v.Origin() != h.Origin || v.Publisher() != h.Publisher ||
		v.PubSeq() != h.PubSeq || v.OriginSeq() != h.Seq || !bytes.Equal(v.Topic(), topic) || !bytes.Equal(v.Payload(), payload) {
		t.Fatal("RestampReplica changed other fields")
	}
	if want := (record.Bookmark{Publisher: h.Publisher, PubSeq: h.PubSeq, Seq: 77}); v.Bookmark() != want {
		t.Fatalf("Bookmark = %v, want %v", v.Bookmark(), want)
	}
	// Byte for byte: only crc [4,8), seq [8,16), via [48,56) and flags [66,68) may
	// differ; originSeq [56,64) in particular is kept.
	mayChange := func(i int) bool { return (i >= 4 && i < 16) || (i >= 48 && i < 56) || (i >= 66 && i < 68) }
	for i := range rec {
		if !mayChange(i) && rec[i] != orig[i] {
			t.Fatalf("RestampReplica changed byte %d: %02x -> %02x", i, orig[i], rec[i])
		}
	}

	// The result equals a fresh encoding with that seq and via and the
	// original seq as originSeq, then flags set.
	h2 := h
	h2.Seq, h2.Via, h2.OriginSeq = 77, via, h.Seq
	want := record.Append(nil, &h2, topic, payload)
	record.RestampFlags(want, 77, record.FlagBatchStart)
	if !bytes.Equal(rec, want) {
		t.Fatalf("RestampReplica differs from a fresh encoding:\n% x\n% x", rec, want)
	}

	// Restamp and RestampFlags keep via.
	record.Restamp(rec, 78)
	if v.OriginSeq() != h.Seq || v.Via() != via || v.Seq() != 78 || v.Flags() != record.FlagBatchStart || v.Verify() != nil {
		t.Fatalf("Restamp: via %x seq %d flags %x verify %v", v.Via(), v.Seq(), v.Flags(), v.Verify())
	}
	record.RestampFlags(rec, 79, 0)
	if v.OriginSeq() != h.Seq || v.Via() != via || v.Seq() != 79 || v.Flags() != 0 || v.Verify() != nil {
		t.Fatalf("RestampFlags: via %x seq %d flags %x verify %v", v.Via(), v.Seq(), v.Flags(), v.Verify())
	}

	// Restamping back to the original seq, via and flags restores the original bytes.
	record.RestampReplica(rec, h.Seq, 0, 0)
	if !bytes.Equal(rec, orig) {
		t.Fatalf("RestampReplica back to the original does not restore the original bytes:\n% x\n% x", rec, orig)
	}
}

// The CRC covers via: a copy whose via is altered without restamping fails Verify.
func TestChecksumCoversVia(t *testing.T) {
	h := sampleHeader()
	rec := record.Append(nil, &h, []byte("orders"), []byte("payload"))
	binary.LittleEndian.PutUint64(rec[48:], h.Via+1)
	v, _, err := record.Parse(rec)
	if err != nil {
		t.Fatal(err)
	}
	if v.Via() != h.Via+1 || !errors.Is(v.Verify(), record.ErrChecksum) {
		t.Fatalf("via %x changed without restamp: Verify = %v", v.Via(), v.Verify())
	}
}

// A replica keeps the origin's originSeq: Append with a non-zero OriginSeq
// writes it as given, whatever the local seq, and the CRC covers it.
func TestOriginSeq(t *testing.T) {
	h := sampleHeader()
	h.OriginSeq = 5
	rec := record.Append(nil, &h, []byte("orders"), []byte("payload"))
	v, _, err := record.Parse(rec)
	if err != nil || v.Verify() != nil {
		t.Fatalf("parse %v verify %v", err, v.Verify())
	}
	if v.OriginSeq() != 5 || v.Seq() != h.Seq || binary.LittleEndian.Uint64(rec[56:]) != 5 {
		t.Fatalf("originSeq %d seq %d, want 5 and %d", v.OriginSeq(), v.Seq(), h.Seq)
	}
	// No restamp touches it.
	record.Restamp(rec, 1)
	record.RestampFlags(rec, 2, record.FlagBatchStart)
	record.RestampReplica(rec, 3, record.ID("instance-c"), 0)
	if v.OriginSeq() != 5 || v.Seq() != 3 || v.Verify() != nil {
		t.Fatalf("after restamps: originSeq %d seq %d verify %v", v.OriginSeq(), v.Seq(), v.Verify())
	}
	// The CRC covers it.
	binary.LittleEndian.PutUint64(rec[56:], 6)
	if v.OriginSeq() != 6 || !errors.Is(v.Verify(), record.ErrChecksum) {
		t.Fatalf("originSeq changed without restamp: Verify = %v", v.Verify())
	}
	// At the origin (OriginSeq 0) originSeq == seq.
	h.OriginSeq = 0
	v, _, err = record.Parse(record.Append(nil, &h, nil, nil))
	if err != nil || v.OriginSeq() != h.Seq {
		t.Fatalf("origin record: originSeq %d, want seq %d (err %v)", v.OriginSeq(), h.Seq, err)
	}
}

func TestOriginID(t *testing.T) {
	var zero record.JournalID
	if record.OriginID("A", zero) != record.ID("A") {
		t.Error("zero journal id must give the name's id")
	}
	a, b := record.JournalID{1}, record.JournalID{2}
	if record.OriginID("A", a) == record.OriginID("A", b) || record.OriginID("A", a) == record.ID("A") || record.OriginID("A", a) != record.OriginID("A", a) {
		t.Error("origin ids must differ per journal and be stable")
	}
}

func TestOriginEpochID(t *testing.T) {
	j := record.JournalID{7}
	if record.OriginEpochID("A", j, 0) != record.OriginID("A", j) {
		t.Error("epoch 0 must give the journal's origin id")
	}
	a, b := record.OriginEpochID("A", j, 1), record.OriginEpochID("A", j, 2)
	if a == b || a == record.OriginID("A", j) || a != record.OriginEpochID("A", j, 1) || a == record.OriginEpochID("B", j, 1) {
		t.Error("origin ids must differ per epoch and name and be stable")
	}
}
