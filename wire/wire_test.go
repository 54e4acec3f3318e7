package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

var le = binary.LittleEndian

func TestRoundTrip(t *testing.T) {
	maxTopic := bytes.Repeat([]byte{'T'}, record.MaxTopic)
	rec := sampleRecord()
	recView, _, err := record.Parse(rec)
	if err != nil {
		t.Fatal(err)
	}
	emptyRec := record.Append(nil, &record.Header{}, nil, nil)
	emptyView, _, _ := record.Parse(emptyRec)
	bm2 := record.Bookmark{Publisher: 1, PubSeq: 2, Seq: 3}
	var resumeBytes []byte // sampleResume, encoded by hand
	for _, e := range sampleResume {
		resumeBytes = le.AppendUint64(le.AppendUint64(resumeBytes, e.ID), e.Seq)
		resumeBytes = le.AppendUint32(le.AppendUint32(resumeBytes, uint32(e.Kind)), 0)
	}
	var positionBytes []byte // samplePosition, encoded by hand
	for _, e := range samplePosition {
		positionBytes = le.AppendUint64(le.AppendUint64(positionBytes, e.Origin), e.OriginSeq)
	}

	cases := []struct {
		name  string
		frame []byte
		typ   wire.Type
		want  any
	}{
		{"logon", wire.AppendLogon(nil, &wire.Logon{MinVersion: 1, MaxVersion: 3, HeartbeatMillis: 2500,
			Name: []byte("pricer"), Credentials: []byte("pw")}), wire.TypeLogon,
			wire.Logon{MinVersion: 1, MaxVersion: 3, HeartbeatMillis: 2500, Name: []byte("pricer"), Credentials: []byte("pw")}},
		{"logon empty", wire.AppendLogon(nil, &wire.Logon{}), wire.TypeLogon, wire.Logon{}},
		{"logon-reply", wire.AppendLogonReply(nil, &wire.LogonReply{Version: 1, HeartbeatMillis: 1000,
			LastPubSeq: 1<<64 - 1, Instance: []byte("tandem-a")}), wire.TypeLogonReply,
			wire.LogonReply{Version: 1, HeartbeatMillis: 1000, LastPubSeq: 1<<64 - 1, AckedPubSeq: 1<<64 - 1, Instance: []byte("tandem-a")}},
		{"logon-reply v2", wire.AppendLogonReply(nil, &wire.LogonReply{Version: 2, HeartbeatMillis: 1000,
			LastPubSeq: 90, AckedPubSeq: 77, MaxFrame: 65536, MaxTopic: 512, Instance: []byte("tandem-a")}), wire.TypeLogonReply,
			wire.LogonReply{Version: 2, HeartbeatMillis: 1000, LastPubSeq: 90, AckedPubSeq: 77, MaxFrame: 65536, MaxTopic: 512, Instance: []byte("tandem-a")}},
		{"logon-reply empty", wire.AppendLogonReply(nil, &wire.LogonReply{}), wire.TypeLogonReply, wire.LogonReply{}},
		{"publish", wire.AppendPublish(nil, 42, wire.AckPersisted, []byte("px.EURUSD"), []byte("1.0842")), wire.TypePublish,
			wire.Publish{PubSeq: 42, Ack: wire.AckPersisted, Topic: []byte("px.EURUSD"), Payload: []byte("1.0842")}},
		{"publish empty topic and payload", wire.AppendPublish(nil, 0, wire.AckNone, nil, nil), wire.TypePublish,
			wire.Publish{}},
		{"publish empty payload", wire.AppendPublish(nil, 1, wire.AckReceived, []byte("t"), nil), wire.TypePublish,
			wire.Publish{PubSeq: 1, Ack: wire.AckReceived, Topic: []byte("t")}},
		{"publish max topic", wire.AppendPublish(nil, 1<<64-1, wire.AckReceived, maxTopic, []byte{0, 1}), wire.TypePublish,
			wire.Publish{PubSeq: 1<<64 - 1, Ack: wire.AckReceived, Topic: maxTopic, Payload: []byte{0, 1}}},
		{"ack", wire.AppendAck(nil, wire.AckKindReceived, wire.CodeOK, 77, ""), wire.TypeAck,
			wire.Ack{Kind: wire.AckKindReceived, Seq: 77}},
		{"ack refusal", wire.AppendAck(nil, wire.AckKindSubscribed, wire.CodeBadPattern, 5, "bad regex"), wire.TypeAck,
			wire.Ack{Kind: wire.AckKindSubscribed, Code: wire.CodeBadPattern, Seq: 5, Text: []byte("bad regex")}},
		{"subscribe now", wire.AppendSubscribe(nil, 1, wire.StartNow, wire.MatchExact, []byte("orders")), wire.TypeSubscribe,
			wire.Subscribe{SubID: 1, Topic: []byte("orders")}},
		{"subscribe empty topic", wire.AppendSubscribe(nil, 2, wire.StartEpoch, wire.MatchPrefix, nil), wire.TypeSubscribe,
			wire.Subscribe{SubID: 2, Start: wire.StartEpoch, Match: wire.MatchPrefix}},
		{"subscribe bookmarks", wire.AppendSubscribe(nil, 1<<32-1, wire.StartBookmark, wire.MatchRegex, []byte("^px\\."), sampleBookmark, bm2),
			wire.TypeSubscribe, wire.Subscribe{SubID: 1<<32 - 1, Start: wire.StartBookmark, Match: wire.MatchRegex,
				Topic: []byte("^px\\."), Bookmarks: bm2.AppendBinary(sampleBookmark.AppendBinary(nil))}},
		{"subscribe max topic", wire.AppendSubscribe(nil, 3, wire.StartNow, wire.MatchExact, maxTopic, bm2), wire.TypeSubscribe,
			wire.Subscribe{SubID: 3, Topic: maxTopic, Bookmarks: bm2.AppendBinary(nil)}},
		{"subscribe resume", sampleResumeSubscribe(), wire.TypeSubscribe,
			wire.Subscribe{SubID: 9, Start: wire.StartResume, Match: wire.MatchPrefix, Topic: []byte("px."), Bookmarks: resumeBytes}},
		{"subscribe resume no entries", wire.AppendSubscribeResume(nil, 1<<32-1, wire.MatchRegex, []byte("."), nil), wire.TypeSubscribe,
			wire.Subscribe{SubID: 1<<32 - 1, Start: wire.StartResume, Match: wire.MatchRegex, Topic: []byte(".")}},
		{"unsubscribe", wire.AppendUnsubscribe(nil, 9), wire.TypeUnsubscribe, uint32(9)},
		{"deliver", wire.AppendDeliver(nil, 7, rec), wire.TypeDeliver, wire.Deliver{SubID: 7, Record: recView}},
		{"deliver empty record", wire.AppendDeliver(nil, 0, emptyRec), wire.TypeDeliver, wire.Deliver{Record: emptyView}},
		{"deliver header+record", append(wire.AppendDeliverHeader(nil, 7, len(rec)), rec...), wire.TypeDeliver,
			wire.Deliver{SubID: 7, Record: recView}},
		{"heartbeat", wire.AppendHeartbeat(nil), wire.TypeHeartbeat, []byte{}},
		{"flush", wire.AppendFlush(nil, 1<<63), wire.TypeFlush, uint64(1 << 63)},
		{"error", wire.AppendError(nil, wire.CodeHeartbeat, "silent"), wire.TypeError,
			wire.Error{Code: wire.CodeHeartbeat, Text: []byte("silent")}},
		{"error empty text", wire.AppendError(nil, wire.CodeShutdown, ""), wire.TypeError, wire.Error{Code: wire.CodeShutdown}},
		{"stat-request", wire.AppendStatRequest(nil), wire.TypeStatRequest, []byte{}},
		{"stat-reply", wire.AppendStatReply(nil, []byte(`{"loops":2}`)), wire.TypeStatReply, []byte(`{"loops":2}`)},
		{"position", wire.AppendPosition(nil, 8, samplePosition), wire.TypePosition,
			wire.Position{SubID: 8, Entries: positionBytes}},
		{"position empty", wire.AppendPosition(nil, 1<<32-1, nil), wire.TypePosition, wire.Position{SubID: 1<<32 - 1}},
		{"position max values", wire.AppendPosition(nil, 0, []wire.PositionEntry{{Origin: 1<<64 - 1, OriginSeq: 1<<64 - 1}}),
			wire.TypePosition, wire.Position{Entries: bytes.Repeat([]byte{0xff}, 16)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Encoders append: what was in dst stays.
			prefix := []byte{0xde, 0xad}
			f, n, err := wire.Split(c.frame, len(c.frame))
			if err != nil || n != len(c.frame) {
				t.Fatalf("Split = n %d, %v; want %d", n, err, len(c.frame))
			}
			if int(le.Uint32(c.frame)) != len(c.frame) || wire.Need(c.frame) != len(c.frame) {
				t.Fatalf("length field %d, frame %d bytes", le.Uint32(c.frame), len(c.frame))
			}
			if f.Type != c.typ || f.Flags != 0 || c.frame[6] != 0 || c.frame[7] != 0 {
				t.Fatalf("header % x: type %v flags %d", c.frame[:8], f.Type, f.Flags)
			}
			if len(f.Body) != n-wire.HeaderSize || cap(f.Body) != len(f.Body) {
				t.Fatalf("body len %d cap %d", len(f.Body), cap(f.Body))
			}
			got, err := decodeAny(f)
			if g, w := canon(got, err), canon(c.want, nil); g != w {
				t.Fatalf("decoded\n%s\nwant\n%s", g, w)
			}
			// Re-encode the decoded value (appending to a non-empty dst) and
			// compare bytes: the encoding is canonical.
			var again []byte
			switch m := got.(type) {
			case wire.Logon:
				again = wire.AppendLogon(prefix, &m)
			case wire.LogonReply:
				again = wire.AppendLogonReply(prefix, &m)
			case wire.Publish:
				again = wire.AppendPublish(prefix, m.PubSeq, m.Ack, m.Topic, m.Payload)
			case wire.Ack:
				again = wire.AppendAck(prefix, m.Kind, m.Code, m.Seq, string(m.Text))
			case wire.Subscribe:
				if m.Start == wire.StartResume {
					es := make([]wire.ResumeEntry, m.BookmarkCount())
					for i := range es {
						es[i] = m.ResumeEntry(i)
					}
					again = wire.AppendSubscribeResume(prefix, m.SubID, m.Match, m.Topic, es)
					break
				}
				bms := make([]record.Bookmark, m.BookmarkCount())
				for i := range bms {
					bms[i] = m.Bookmark(i)
				}
				again = wire.AppendSubscribe(prefix, m.SubID, m.Start, m.Match, m.Topic, bms...)
			case wire.Position:
				es := make([]wire.PositionEntry, m.Count())
				for i := range es {
					es[i] = m.Entry(i)
				}
				again = wire.AppendPosition(prefix, m.SubID, es)
			case uint32:
				again = wire.AppendUnsubscribe(prefix, m)
			case wire.Deliver:
				again = wire.AppendDeliver(prefix, m.SubID, m.Record.Bytes())
			case uint64:
				again = wire.AppendFlush(prefix, m)
			case wire.Error:
				again = wire.AppendError(prefix, m.Code, string(m.Text))
			case []byte:
				switch c.typ {
				case wire.TypeHeartbeat:
					again = wire.AppendHeartbeat(prefix)
				case wire.TypeStatRequest:
					again = wire.AppendStatRequest(prefix)
				case wire.TypeStatReply:
					again = wire.AppendStatReply(prefix, m)
				}
			}
			if !bytes.Equal(again[:2], prefix) || !bytes.Equal(again[2:], c.frame) {
				t.Fatalf("re-encoded\n% x\nwant\n% x", again[2:], c.frame)
			}
		})
	}
}

func TestSubscribeBookmarks(t *testing.T) {
	bms := []record.Bookmark{sampleBookmark, {Publisher: 1, PubSeq: 2, Seq: 3}, {}}
	fr := wire.AppendSubscribe(nil, 1, wire.StartBookmark, wire.MatchExact, []byte("t"), bms...)
	var m wire.Subscribe
	if err := wire.DecodeSubscribe(fr[wire.HeaderSize:], &m); err != nil {
		t.Fatal(err)
	}
	if m.BookmarkCount() != len(bms) || le.Uint16(fr[wire.HeaderSize+8:]) != uint16(len(bms)) {
		t.Fatalf("BookmarkCount = %d", m.BookmarkCount())
	}
	for i, b := range bms {
		if m.Bookmark(i) != b {
			t.Errorf("Bookmark(%d) = %v, want %v", i, m.Bookmark(i), b)
		}
	}
}

func TestSubscribeResumeEntries(t *testing.T) {
	fr := sampleResumeSubscribe()
	var m wire.Subscribe
	if err := wire.DecodeSubscribe(fr[wire.HeaderSize:], &m); err != nil {
		t.Fatal(err)
	}
	if m.Start != wire.StartResume || fr[wire.HeaderSize+4] != 3 || m.SubID != 9 || string(m.Topic) != "px." {
		t.Fatalf("decoded %+v", m)
	}
	if m.BookmarkCount() != len(sampleResume) || le.Uint16(fr[wire.HeaderSize+8:]) != uint16(len(sampleResume)) ||
		len(m.Bookmarks) != wire.ResumeEntrySize*len(sampleResume) {
		t.Fatalf("%d entries in %d bytes", m.BookmarkCount(), len(m.Bookmarks))
	}
	for i, e := range sampleResume {
		if m.ResumeEntry(i) != e {
			t.Errorf("ResumeEntry(%d) = %+v, want %+v", i, m.ResumeEntry(i), e)
		}
		// id u64 | seq u64 | kind u32 | reserved u32
		b := m.Bookmarks[i*24 : (i+1)*24]
		if le.Uint64(b) != e.ID || le.Uint64(b[8:]) != e.Seq || le.Uint32(b[16:]) != uint32(e.Kind) || le.Uint32(b[20:]) != 0 {
			t.Errorf("entry %d encoded as % x", i, b)
		}
	}
	// AppendResumeEntry appends exactly one entry.
	e := wire.ResumeEntry{ID: 0x0102030405060708, Seq: 0x1112131415161718, Kind: wire.ResumePublisher}
	got := wire.AppendResumeEntry([]byte{0xaa}, e)
	want := []byte{0xaa, 8, 7, 6, 5, 4, 3, 2, 1, 0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, 2, 0, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendResumeEntry:\n% x\nwant\n% x", got, want)
	}
	// The resume encoder differs from a bookmark Subscribe only in start and the entries.
	if fr[wire.HeaderSize+4] != byte(wire.StartResume) || fr[wire.HeaderSize+5] != byte(wire.MatchPrefix) ||
		!bytes.Equal(fr[wire.HeaderSize+16:wire.HeaderSize+19], []byte("px.")) {
		t.Fatalf("frame % x", fr)
	}
}

func TestPositionEntries(t *testing.T) {
	fr := wire.AppendPosition([]byte{1, 2}, 8, samplePosition)[2:]
	if int(le.Uint32(fr)) != len(fr) || len(fr) != wire.HeaderSize+8+16*len(samplePosition) ||
		wire.Type(fr[4]) != wire.TypePosition || fr[4] != 13 {
		t.Fatalf("frame % x", fr)
	}
	body := fr[wire.HeaderSize:]
	if le.Uint32(body) != 8 || le.Uint32(body[4:]) != uint32(len(samplePosition)) {
		t.Fatalf("body % x", body)
	}
	var m wire.Position
	if err := wire.DecodePosition(body, &m); err != nil {
		t.Fatal(err)
	}
	if m.SubID != 8 || m.Count() != len(samplePosition) || &m.Entries[0] != &body[8] {
		t.Fatalf("decoded %+v", m)
	}
	for i, e := range samplePosition {
		if m.Entry(i) != e {
			t.Errorf("Entry(%d) = %+v, want %+v", i, m.Entry(i), e)
		}
		if le.Uint64(body[8+16*i:]) != e.Origin || le.Uint64(body[16+16*i:]) != e.OriginSeq {
			t.Errorf("entry %d encoded as % x", i, body[8+16*i:24+16*i])
		}
	}
}

// frameEnds encodes a stream of several frames and returns it with the end
// offset of each frame.
func multiFrameStream() ([]byte, []int) {
	var s []byte
	var ends []int
	add := func(b []byte) { s = b; ends = append(ends, len(s)) }
	add(wire.AppendLogon(s, &wire.Logon{MinVersion: 1, MaxVersion: 1, Name: []byte("c")}))
	add(wire.AppendHeartbeat(s))
	add(wire.AppendPublish(s, 1, wire.AckReceived, []byte("a.b"), []byte("payload")))
	add(wire.AppendPublish(s, 2, wire.AckNone, nil, nil))
	add(wire.AppendDeliver(s, 3, sampleRecord()))
	add(wire.AppendFlush(s, 4))
	return s, ends
}

func TestSplitPartial(t *testing.T) {
	stream, ends := multiFrameStream()
	for p := 0; p <= len(stream); p++ {
		buf := stream[:p:p]
		off := 0
		var got []int
		for {
			f, n, err := wire.Split(buf[off:], wire.DefaultMaxFrame)
			if err != nil {
				t.Fatalf("prefix %d at %d: %v", p, off, err)
			}
			if n == 0 {
				if f.Body != nil || f.Type != 0 {
					t.Fatalf("prefix %d: n == 0 with a frame %+v", p, f)
				}
				break
			}
			off += n
			got = append(got, off)
		}
		var want []int
		for _, e := range ends {
			if e <= p {
				want = append(want, e)
			}
		}
		if !equalInts(got, want) {
			t.Fatalf("prefix %d: frames ending at %v, want %v", p, got, want)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSplitBodyCapped(t *testing.T) {
	stream, ends := multiFrameStream()
	f, n, err := wire.Split(stream, wire.DefaultMaxFrame)
	if err != nil || n != ends[0] {
		t.Fatal(n, err)
	}
	// Appending to a body must not overwrite the next frame.
	_ = append(f.Body, 0xff)
	if g, _, err := wire.Split(stream[n:], wire.DefaultMaxFrame); err != nil || g.Type != wire.TypeHeartbeat {
		t.Fatalf("next frame damaged: %v %v", g.Type, err)
	}
}

func TestSplitLengthLimits(t *testing.T) {
	hdr := func(size uint32) []byte {
		b := make([]byte, 8, 64)
		le.PutUint32(b, size)
		b[4] = byte(wire.TypeHeartbeat)
		return b
	}
	for size := uint32(0); size < wire.HeaderSize; size++ {
		// Rejected as soon as the length field is readable.
		for _, b := range [][]byte{hdr(size)[:4], hdr(size)} {
			_, n, err := wire.Split(b, wire.DefaultMaxFrame)
			if !errors.Is(err, wire.ErrMalformed) || n != 0 {
				t.Errorf("length %d (%d bytes): n %d, %v; want ErrMalformed", size, len(b), n, err)
			}
		}
	}
	const max = 100
	for _, size := range []uint32{max + 1, 1 << 31, 1<<32 - 1} {
		_, n, err := wire.Split(hdr(size)[:4], max)
		if !errors.Is(err, wire.ErrTooLarge) || n != 0 {
			t.Errorf("length %d: n %d, %v; want ErrTooLarge", size, n, err)
		}
	}
	if _, n, err := wire.Split(hdr(wire.DefaultMaxFrame+1), wire.DefaultMaxFrame); !errors.Is(err, wire.ErrTooLarge) || n != 0 {
		t.Errorf("DefaultMaxFrame+1: n %d, %v", n, err)
	}
	// Exactly max is accepted (partial until complete).
	full := append(hdr(max), make([]byte, max-8)...)
	if _, n, err := wire.Split(full[:max-1], max); err != nil || n != 0 {
		t.Errorf("partial max frame: n %d, %v", n, err)
	}
	if f, n, err := wire.Split(full, max); err != nil || n != max || len(f.Body) != max-8 {
		t.Errorf("max frame: n %d, %v", n, err)
	}
	// Header-only frame: empty body.
	if f, n, err := wire.Split(hdr(8), max); err != nil || n != 8 || len(f.Body) != 0 || f.Type != wire.TypeHeartbeat {
		t.Errorf("header-only frame: %+v n %d, %v", f, n, err)
	}
	// Fewer than 4 bytes: nothing to say yet.
	for i := range 4 {
		if _, n, err := wire.Split(hdr(0)[:i], max); err != nil || n != 0 {
			t.Errorf("%d bytes: n %d, %v", i, n, err)
		}
		if wire.Need(hdr(0)[:i]) != 0 {
			t.Errorf("Need(%d bytes) != 0", i)
		}
	}
	if wire.Need(hdr(1234)[:4]) != 1234 {
		t.Error("Need misreads the length")
	}
	// Flags are passed through.
	b := hdr(8)
	b[5] = 0x80
	if f, _, _ := wire.Split(b, max); f.Flags != 0x80 {
		t.Errorf("flags %x", f.Flags)
	}
}

func TestDecodeRejects(t *testing.T) {
	body := func(frame []byte) []byte { return append([]byte(nil), frame[wire.HeaderSize:]...) }
	mut := func(frame []byte, f func(b []byte)) []byte {
		b := body(frame)
		f(b)
		return b
	}
	cut := func(frame []byte, n int) []byte { b := body(frame); return b[:len(b)-n] }
	plus := func(frame []byte) []byte { return append(body(frame), 0) }

	logon := wire.AppendLogon(nil, &wire.Logon{MinVersion: 1, MaxVersion: 1, Name: []byte("name"), Credentials: []byte("cred")})
	reply := wire.AppendLogonReply(nil, &wire.LogonReply{Version: 1, Instance: []byte("inst")})
	pub := wire.AppendPublish(nil, 1, wire.AckPersisted, []byte("topic"), []byte("payload"))
	ack := wire.AppendAck(nil, wire.AckKindReceived, 0, 1, "")
	sub := wire.AppendSubscribe(nil, 1, wire.StartBookmark, wire.MatchExact, []byte("topic"), sampleBookmark)
	unsub := wire.AppendUnsubscribe(nil, 1)
	deliver := wire.AppendDeliver(nil, 1, sampleRecord())
	resume := sampleResumeSubscribe()
	position := wire.AppendPosition(nil, 1, samplePosition)
	flush := wire.AppendFlush(nil, 1)
	errFrame := wire.AppendError(nil, wire.CodeAuth, "")

	cases := []struct {
		name string
		typ  wire.Type
		body []byte
	}{
		{"logon empty", wire.TypeLogon, nil},
		{"logon fixed-1", wire.TypeLogon, body(logon)[:11]},
		{"logon truncated", wire.TypeLogon, cut(logon, 1)},
		{"logon trailing", wire.TypeLogon, plus(logon)},
		{"logon nameLen over", wire.TypeLogon, mut(logon, func(b []byte) { le.PutUint16(b[8:], 0xffff) })},
		{"logon credLen over", wire.TypeLogon, mut(logon, func(b []byte) { le.PutUint16(b[10:], 5) })},
		{"logon-reply empty", wire.TypeLogonReply, nil},
		{"logon-reply fixed-1", wire.TypeLogonReply, body(reply)[:23]},
		{"logon-reply truncated", wire.TypeLogonReply, cut(reply, 1)},
		{"logon-reply trailing", wire.TypeLogonReply, plus(reply)},
		{"logon-reply instanceLen over", wire.TypeLogonReply, mut(reply, func(b []byte) { le.PutUint16(b[16:], 0xffff) })},
		{"publish empty", wire.TypePublish, nil},
		{"publish fixed-1", wire.TypePublish, body(pub)[:11]},
		{"publish topic past end", wire.TypePublish, body(pub)[:12+4]},
		{"publish topicLen over", wire.TypePublish, mut(pub, func(b []byte) { le.PutUint16(b[8:], 13) })},
		{"publish ack level 3", wire.TypePublish, mut(pub, func(b []byte) { b[10] = 3 })},
		{"publish ack level 255", wire.TypePublish, mut(pub, func(b []byte) { b[10] = 255 })},
		{"ack empty", wire.TypeAck, nil},
		{"ack fixed-1", wire.TypeAck, body(ack)[:15]},
		{"subscribe empty", wire.TypeSubscribe, nil},
		{"subscribe fixed-1", wire.TypeSubscribe, body(sub)[:15]},
		{"subscribe truncated bookmark", wire.TypeSubscribe, cut(sub, 1)},
		{"subscribe trailing", wire.TypeSubscribe, plus(sub)},
		{"subscribe bookmarkCount over", wire.TypeSubscribe, mut(sub, func(b []byte) { le.PutUint16(b[8:], 2) })},
		{"subscribe bookmarkCount huge", wire.TypeSubscribe, mut(sub, func(b []byte) { le.PutUint16(b[8:], 0xffff) })},
		{"subscribe topicLen over", wire.TypeSubscribe, mut(sub, func(b []byte) { le.PutUint16(b[6:], 6) })},
		{"subscribe start 5", wire.TypeSubscribe, mut(sub, func(b []byte) { b[4] = 5 })},
		{"subscribe start 255", wire.TypeSubscribe, mut(sub, func(b []byte) { b[4] = 255 })},
		{"subscribe resume start 4", wire.TypeSubscribe, mut(resume, func(b []byte) { b[4] = 4 })},
		{"subscribe resume truncated entry", wire.TypeSubscribe, cut(resume, 1)},
		{"subscribe resume trailing", wire.TypeSubscribe, plus(resume)},
		{"subscribe resume count over", wire.TypeSubscribe, mut(resume, func(b []byte) { le.PutUint16(b[8:], 4) })},
		{"subscribe resume count under", wire.TypeSubscribe, mut(resume, func(b []byte) { le.PutUint16(b[8:], 2) })},
		{"subscribe match 3", wire.TypeSubscribe, mut(sub, func(b []byte) { b[5] = 3 })},
		{"subscribe bookmark start without bookmark", wire.TypeSubscribe,
			body(wire.AppendSubscribe(nil, 1, wire.StartBookmark, wire.MatchExact, []byte("t")))},
		{"unsubscribe empty", wire.TypeUnsubscribe, nil},
		{"unsubscribe short", wire.TypeUnsubscribe, cut(unsub, 1)},
		{"unsubscribe long", wire.TypeUnsubscribe, plus(unsub)},
		{"deliver empty", wire.TypeDeliver, nil},
		{"deliver fixed-1", wire.TypeDeliver, body(deliver)[:7]},
		{"deliver no record", wire.TypeDeliver, body(deliver)[:8]},
		{"deliver record header only", wire.TypeDeliver, body(deliver)[:8+record.HeaderSize]},
		{"deliver truncated record", wire.TypeDeliver, cut(deliver, 1)},
		{"deliver trailing", wire.TypeDeliver, plus(deliver)},
		{"deliver record length 0", wire.TypeDeliver, mut(deliver, func(b []byte) { le.PutUint32(b[8:], 0) })},
		{"deliver record length over", wire.TypeDeliver, mut(deliver, func(b []byte) { le.PutUint32(b[8:], le.Uint32(b[8:])+1) })},
		{"deliver record topicLen over", wire.TypeDeliver, mut(deliver, func(b []byte) { b[8+64]++ })},
		{"deliver record payloadLen over", wire.TypeDeliver, mut(deliver, func(b []byte) { b[8+68]++ })},
		{"deliver record payloadLen huge", wire.TypeDeliver, mut(deliver, func(b []byte) { le.PutUint32(b[8+68:], 0xffffffff) })},
		{"flush empty", wire.TypeFlush, nil},
		{"flush short", wire.TypeFlush, cut(flush, 1)},
		{"flush long", wire.TypeFlush, plus(flush)},
		{"error empty", wire.TypeError, nil},
		{"error fixed-1", wire.TypeError, body(errFrame)[:3]},
		{"position empty", wire.TypePosition, nil},
		{"position fixed-1", wire.TypePosition, body(position)[:7]},
		{"position truncated entry", wire.TypePosition, cut(position, 1)},
		{"position missing entry", wire.TypePosition, cut(position, 16)},
		{"position trailing", wire.TypePosition, plus(position)},
		{"position extra entry", wire.TypePosition, append(body(position), make([]byte, 16)...)},
		{"position count over", wire.TypePosition, mut(position, func(b []byte) { le.PutUint32(b[4:], 3) })},
		{"position count huge", wire.TypePosition, mut(position, func(b []byte) { le.PutUint32(b[4:], 0xffffffff) })},
		{"position count wraps", wire.TypePosition, mut(position, func(b []byte) { le.PutUint32(b[4:], 1<<28+2) })},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeAny(wire.Frame{Type: c.typ, Body: c.body})
			if !errors.Is(err, wire.ErrMalformed) {
				t.Fatalf("%s body % x: err %v, want ErrMalformed", c.typ, c.body, err)
			}
		})
	}
	// A CRC mismatch is not the decoder's business (Deliver is checked structurally).
	bad := mut(deliver, func(b []byte) { b[len(b)-1] ^= 1 })
	var d wire.Deliver
	if err := wire.DecodeDeliver(bad, &d); err != nil {
		t.Fatalf("DecodeDeliver with a bad CRC: %v", err)
	}
	if !errors.Is(d.Record.Verify(), record.ErrChecksum) {
		t.Fatal("Verify did not catch the flipped bit")
	}
}

// A failed decode leaves the destination untouched, so a caller never sees a
// half-filled struct.
func TestDecodeErrorLeavesDst(t *testing.T) {
	m := wire.Publish{PubSeq: 5, Topic: []byte("keep")}
	body := wire.AppendPublish(nil, 1, 9, []byte("t"), nil)[wire.HeaderSize:]
	if err := wire.DecodePublish(body, &m); err == nil || m.PubSeq != 5 || string(m.Topic) != "keep" {
		t.Fatalf("err %v, m %+v", err, m)
	}
}

func TestNames(t *testing.T) {
	for typ, name := range map[wire.Type]string{
		wire.TypeLogon: "logon", wire.TypeDeliver: "deliver", wire.TypeStatReply: "stat-reply",
		wire.TypePosition: "position", 0: "type(0)", 14: "type(14)", 255: "type(255)",
	} {
		if typ.String() != name {
			t.Errorf("Type(%d).String() = %q, want %q", uint8(typ), typ.String(), name)
		}
	}
	for c, name := range map[wire.Code]string{wire.CodeOK: "ok", wire.CodeBadTopic: "bad topic", wire.CodeSequenceReused: "sequence-reused", wire.CodeStandby: "standby", 22: "code(22)", 65535: "code(65535)"} {
		if c.String() != name {
			t.Errorf("Code(%d).String() = %q, want %q", uint16(c), c.String(), name)
		}
	}
	for k, name := range map[wire.AckKind]string{wire.AckKindReceived: "received", wire.AckKindUnsubscribed: "unsubscribed", 0: "ack-kind(0)", 6: "ack-kind(6)"} {
		if k.String() != name {
			t.Errorf("AckKind(%d).String() = %q, want %q", uint8(k), k.String(), name)
		}
	}
}

// TestFormatConstants pins the values that are part of the wire format.
func TestFormatConstants(t *testing.T) {
	types := []wire.Type{wire.TypeLogon, wire.TypeLogonReply, wire.TypePublish, wire.TypeAck, wire.TypeSubscribe,
		wire.TypeUnsubscribe, wire.TypeDeliver, wire.TypeHeartbeat, wire.TypeFlush, wire.TypeError,
		wire.TypeStatRequest, wire.TypeStatReply, wire.TypePosition}
	for i, typ := range types {
		if int(typ) != i+1 {
			t.Errorf("%v = %d, want %d", typ, typ, i+1)
		}
	}
	if wire.HeaderSize != 8 || wire.PublishOverhead != 20 || wire.DeliverOverhead != 16 ||
		wire.DefaultMaxFrame != 4259840 || wire.MinVersion != 1 || wire.MaxVersion != 2 {
		t.Error("format constants changed")
	}
	if wire.AckNone != 0 || wire.AckReceived != 1 || wire.AckPersisted != 2 ||
		wire.AckKindReceived != 1 || wire.AckKindPersisted != 2 || wire.AckKindFlushed != 3 ||
		wire.AckKindSubscribed != 4 || wire.AckKindUnsubscribed != 5 ||
		wire.StartNow != 0 || wire.StartEpoch != 1 || wire.StartBookmark != 2 || wire.StartResume != 3 || wire.StartTime != 4 || wire.TimeEntrySize != 24 ||
		wire.ResumeOrigin != 1 || wire.ResumePublisher != 2 || wire.ResumeEntrySize != 24 ||
		wire.MatchExact != 0 || wire.MatchPrefix != 1 || wire.MatchRegex != 2 {
		t.Error("enum values changed")
	}
	// PublishOverhead is exact.
	if n := len(wire.AppendPublish(nil, 1, 0, []byte("abc"), []byte("de"))); n != wire.PublishOverhead+5 {
		t.Errorf("publish frame %d bytes, overhead says %d", n, wire.PublishOverhead+5)
	}
}

// A time subscription carries its time in one 24-byte entry; any other
// entry count is malformed.
func TestSubscribeTime(t *testing.T) {
	const at = int64(1796376600123456789) // 2026-12-04T09:30:00.123456789Z
	fr := wire.AppendSubscribeTime([]byte{0xaa}, 11, wire.MatchPrefix, []byte("px."), at)[1:]
	if int(le.Uint32(fr)) != len(fr) || len(fr) != wire.HeaderSize+16+3+wire.TimeEntrySize {
		t.Fatalf("frame of %d bytes: % x", len(fr), fr)
	}
	var m wire.Subscribe
	if err := wire.DecodeSubscribe(fr[wire.HeaderSize:], &m); err != nil {
		t.Fatal(err)
	}
	if m.Start != wire.StartTime || fr[wire.HeaderSize+4] != 4 || m.SubID != 11 || m.Match != wire.MatchPrefix ||
		string(m.Topic) != "px." || m.Time() != at || m.BookmarkCount() != 1 {
		t.Fatalf("decoded %+v (time %d)", m, m.Time())
	}
	entry := fr[wire.HeaderSize+19:]
	if int64(le.Uint64(entry)) != at || !bytes.Equal(entry[8:], make([]byte, 16)) {
		t.Fatalf("time entry % x", entry)
	}
	for _, n := range []int{0, 2} {
		bad := wire.AppendSubscribe(nil, 1, wire.StartTime, wire.MatchExact, []byte("t"), make([]record.Bookmark, n)...)
		if err := wire.DecodeSubscribe(bad[wire.HeaderSize:], &m); !errors.Is(err, wire.ErrMalformed) || !strings.Contains(err.Error(), "time") {
			t.Errorf("time subscription with %d entries: %v", n, err)
		}
	}
	over := wire.AppendSubscribe(nil, 1, wire.StartTime+1, wire.MatchExact, []byte("t"))
	if err := wire.DecodeSubscribe(over[wire.HeaderSize:], &m); !errors.Is(err, wire.ErrMalformed) {
		t.Errorf("start %d: %v", wire.StartTime+1, err)
	}
}
