package wire_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"unsafe"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// fuzzMaxFrame is small enough for the fuzzer to reach ErrTooLarge.
const fuzzMaxFrame = 4096

// FuzzDecode feeds the input to a server-style read loop in three chunks cut
// at fuzzer-chosen points, and byte by byte, and checks that every way of
// chunking yields the same frames (and the same error) as handing over the
// whole input at once; that no frame reaches outside the bytes supplied; that
// the loop terminates; and that decoded frames re-encode to their own bytes.
//
//	go test -run=NONE -fuzz=FuzzDecode -fuzztime=10s ./wire/
func FuzzDecode(f *testing.F) {
	frames := sampleFrames()
	var all []byte
	for typ := wire.TypeLogon; typ <= wire.TypePosition; typ++ {
		fr, ok := frames[typ]
		if !ok {
			f.Fatalf("no sample frame of type %v", typ)
		}
		f.Add(fr, uint16(3), uint16(len(fr)/2))
		all = append(all, fr...)
	}
	resume := sampleResumeSubscribe()
	f.Add(resume, uint16(20), uint16(len(resume)-1))
	all = append(all, resume...)
	f.Add(all, uint16(5), uint16(200))
	f.Add(append(all[:len(all):len(all)], 7, 0, 0, 0), uint16(0), uint16(0)) // length below header
	f.Add(append(all[:len(all):len(all)], 0xff, 0xff, 0xff, 0xff, 1), uint16(1), uint16(9))

	f.Fuzz(func(t *testing.T, data []byte, cut1, cut2 uint16) {
		whole := runStream(t, data, [][]byte{data})

		c1, c2 := int(cut1)%(len(data)+1), int(cut2)%(len(data)+1)
		if c1 > c2 {
			c1, c2 = c2, c1
		}
		cut := runStream(t, data, [][]byte{data[:c1], data[c1:c2], data[c2:]})
		if !slices.Equal(cut, whole) {
			t.Fatalf("cut at %d,%d:\n%s\nwhole:\n%s", c1, c2, lines(cut), lines(whole))
		}

		if len(data) <= 1<<12 {
			bytewise := make([][]byte, len(data))
			for i := range data {
				bytewise[i] = data[i : i+1]
			}
			if got := runStream(t, data, bytewise); !slices.Equal(got, whole) {
				t.Fatalf("byte by byte:\n%s\nwhole:\n%s", lines(got), lines(whole))
			}
		}
	})
}

func lines(ev []string) string {
	var b bytes.Buffer
	for _, e := range ev {
		b.WriteString(e)
		b.WriteByte('\n')
	}
	return b.String()
}

// runStream is a connection's read loop: it appends each chunk to a read
// buffer, takes every complete frame off it, decodes it, and moves the
// remainder to the front. It returns one line per frame (offset, header and
// decoded value), then a line for the error that ended the stream or for the
// bytes left over.
func runStream(t *testing.T, data []byte, chunks [][]byte) []string {
	t.Helper()
	var events []string
	buf := make([]byte, 0, 64)
	consumed := 0 // stream offset of buf[0]
	calls := 0
	for _, chunk := range chunks {
		buf = append(buf, chunk...)
		start := 0
		for {
			calls++
			// Every call either consumes >= HeaderSize bytes, ends the chunk, or
			// ends the stream; more calls than that is a loop that does not end.
			if calls > len(data)/wire.HeaderSize+len(chunks)+1 {
				t.Fatalf("read loop does not terminate: %d Split calls for %d bytes in %d chunks", calls, len(data), len(chunks))
			}
			avail := buf[start:]
			f, n, err := wire.Split(avail, fuzzMaxFrame)
			if err != nil {
				if n != 0 || f.Body != nil {
					t.Fatalf("Split error %v with n %d, body %d bytes", err, n, len(f.Body))
				}
				return append(events, fmt.Sprintf("@%d error: %v", consumed+start, err))
			}
			if n == 0 {
				if f.Body != nil || f.Type != 0 {
					t.Fatalf("Split: n == 0 with a frame")
				}
				if len(avail) >= 4 && int(le.Uint32(avail)) <= len(avail) {
					t.Fatalf("Split: n == 0 but a complete frame of %d bytes is buffered (%d)", le.Uint32(avail), len(avail))
				}
				break
			}
			checkFrame(t, avail, f, n)
			raw := avail[:n]
			v, derr := decodeAny(f)
			events = append(events, fmt.Sprintf("@%d %s flags=%d len=%d %s", consumed+start, f.Type, f.Flags, n, canon(v, derr)))
			if derr == nil {
				checkDecoded(t, raw, f, v)
			}
			start += n
		}
		// Keep the partial frame, at the front of the buffer.
		consumed += start
		buf = buf[:copy(buf, buf[start:])]
	}
	if consumed+len(buf) != len(data) {
		t.Fatalf("consumed %d + buffered %d != input %d", consumed, len(buf), len(data))
	}
	return append(events, fmt.Sprintf("@%d end, %d bytes of a partial frame", consumed, len(buf)))
}

// checkFrame asserts that a frame Split took off avail lies within it.
func checkFrame(t *testing.T, avail []byte, f wire.Frame, n int) {
	t.Helper()
	if n < wire.HeaderSize || n > len(avail) || n > fuzzMaxFrame {
		t.Fatalf("Split: n %d with %d bytes buffered", n, len(avail))
	}
	if int(le.Uint32(avail)) != n || f.Type != wire.Type(avail[4]) || f.Flags != avail[5] {
		t.Fatalf("Split: frame %+v n %d does not match header % x", f.Type, n, avail[:wire.HeaderSize])
	}
	if len(f.Body) != n-wire.HeaderSize || cap(f.Body) != len(f.Body) {
		t.Fatalf("Split: body len %d cap %d, frame %d", len(f.Body), cap(f.Body), n)
	}
	if len(f.Body) > 0 && unsafe.SliceData(f.Body) != &avail[wire.HeaderSize] {
		t.Fatal("Split: body is not a view of the frame's bytes")
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// checkDecoded exercises a decoded value's accessors and, when the frame's
// reserved bytes are zero, re-encodes it and compares with the raw frame.
func checkDecoded(t *testing.T, raw []byte, f wire.Frame, v any) {
	t.Helper()
	body := f.Body
	canonical := allZero(raw[5:8]) // flags and reserved header bytes
	var again []byte
	switch m := v.(type) {
	case wire.Logon:
		again = wire.AppendLogon(nil, &m)
	case wire.LogonReply:
		canonical = canonical && allZero(body[2:4]) && allZero(body[18:24])
		again = wire.AppendLogonReply(nil, &m)
	case wire.Publish:
		if 12+len(m.Topic)+len(m.Payload) != len(body) {
			t.Fatalf("publish: topic %d + payload %d do not fill body %d", len(m.Topic), len(m.Payload), len(body))
		}
		canonical = canonical && body[11] == 0
		again = wire.AppendPublish(nil, m.PubSeq, m.Ack, m.Topic, m.Payload)
	case wire.Ack:
		canonical = canonical && body[1] == 0 && allZero(body[4:8])
		again = wire.AppendAck(nil, m.Kind, m.Code, m.Seq, string(m.Text))
	case wire.Subscribe:
		if len(m.Bookmarks)%record.BookmarkSize != 0 {
			t.Fatalf("subscribe: bookmarks %d bytes", len(m.Bookmarks))
		}
		canonical = canonical && allZero(body[10:16])
		if m.Start == wire.StartResume {
			es := make([]wire.ResumeEntry, m.BookmarkCount())
			for i := range es {
				es[i] = m.ResumeEntry(i)
				canonical = canonical && allZero(m.Bookmarks[i*wire.ResumeEntrySize+20:(i+1)*wire.ResumeEntrySize])
			}
			again = wire.AppendSubscribeResume(nil, m.SubID, m.Match, m.Topic, es)
			break
		}
		bms := make([]record.Bookmark, m.BookmarkCount())
		for i := range bms {
			bms[i] = m.Bookmark(i)
		}
		again = wire.AppendSubscribe(nil, m.SubID, m.Start, m.Match, m.Topic, bms...)
	case uint32: // unsubscribe
		canonical = canonical && allZero(body[4:8])
		again = wire.AppendUnsubscribe(nil, m)
	case wire.Deliver:
		r := m.Record
		_ = r.Verify()
		_ = r.Bookmark()
		if r.Len() != len(body)-8 || record.HeaderSize+len(r.Topic())+len(r.Payload()) != r.Len() {
			t.Fatalf("deliver: record %d bytes, topic %d, payload %d, body %d", r.Len(), len(r.Topic()), len(r.Payload()), len(body))
		}
		canonical = canonical && allZero(body[4:8])
		again = wire.AppendDeliver(nil, m.SubID, r.Bytes())
	case uint64: // flush
		again = wire.AppendFlush(nil, m)
	case wire.Error:
		canonical = canonical && allZero(body[2:4])
		again = wire.AppendError(nil, m.Code, string(m.Text))
	case wire.Position:
		if 8+16*m.Count() != len(body) || len(m.Entries) != 16*m.Count() {
			t.Fatalf("position: %d entries in %d bytes, body %d", m.Count(), len(m.Entries), len(body))
		}
		es := make([]wire.PositionEntry, m.Count())
		for i := range es {
			es[i] = m.Entry(i)
		}
		again = wire.AppendPosition(nil, m.SubID, es)
	case []byte:
		switch f.Type {
		case wire.TypeHeartbeat:
			canonical = canonical && len(body) == 0
			again = wire.AppendHeartbeat(nil)
		case wire.TypeStatRequest:
			canonical = canonical && len(body) == 0
			again = wire.AppendStatRequest(nil)
		case wire.TypeStatReply:
			again = wire.AppendStatReply(nil, m)
		default:
			return // unknown type: nothing to re-encode
		}
	default:
		t.Fatalf("decodeAny returned %T", v)
	}
	if canonical && !bytes.Equal(again, raw) {
		t.Fatalf("%s does not re-encode to its bytes:\n got % x\nwant % x", f.Type, again, raw)
	}
}
