package wire_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// The generated sections of docs/wire.md (hex examples and the enum tables)
// are rebuilt from the code by this test; run with -update after a format
// change:
//
//	go test ./wire/ -run TestWireDoc -update
var update = flag.Bool("update", false, "rewrite the generated sections of docs/wire.md")

const docPath = "../docs/wire.md"

// docField is one field of an example frame, in order; the fields of an
// example must tile its bytes exactly.
type docField struct {
	name string
	size int
	kind byte // 'u' unsigned decimal, 'i' signed decimal, 'x' hex id, 's' text, 'r' reserved (must be zero), 'b' bytes
	note string
}

type docExample struct {
	title  string
	text   string
	frame  []byte
	fields []docField
}

func hdrFields(t wire.Type) []docField {
	return []docField{
		{"length", 4, 'u', "whole frame, header included"},
		{"type", 1, 'u', t.String()},
		{"flags", 1, 'r', ""},
		{"reserved", 2, 'r', ""},
	}
}

func recordFields() []docField {
	return []docField{
		{"record length", 4, 'u', "72 + topicLen + payloadLen"},
		{"record crc", 4, 'x', "CRC-32C of record bytes [8, length)"},
		{"record seq", 8, 'u', "journal sequence on the delivering instance"},
		{"record time", 8, 'i', "Unix nanoseconds"},
		{"record origin", 8, 'x', `ID("tandem-a")`},
		{"record publisher", 8, 'x', `ID("pricer")`},
		{"record pubseq", 8, 'u', ""},
		{"record via", 8, 'x', "0: published to this instance, not replicated"},
		{"record originSeq", 8, 'u', "seq in the origin's journal; == seq, as this instance is the origin"},
		{"record topicLen", 2, 'u', ""},
		{"record flags", 2, 'u', "bit 0 FlagBatchStart is journal-internal; ignore"},
		{"record payloadLen", 4, 'u', ""},
		{"record topic", 9, 's', ""},
		{"record payload", 6, 's', ""},
	}
}

func docExamples() []docExample {
	f := sampleFrames()
	cat := func(parts ...[]docField) []docField {
		var out []docField
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	bookmark := []docField{
		{"bookmark publisher", 8, 'x', `ID("pricer")`},
		{"bookmark pubseq", 8, 'u', ""},
		{"bookmark seq", 8, 'u', ""},
	}
	return []docExample{
		{"Logon", "Client `pricer` with password `s3cret` offers versions 1..1 and asks for 5 s heartbeats.", f[wire.TypeLogon], cat(hdrFields(wire.TypeLogon), []docField{
			{"minVersion", 2, 'u', ""}, {"maxVersion", 2, 'u', ""}, {"heartbeatMillis", 4, 'u', ""},
			{"nameLen", 2, 'u', ""}, {"credLen", 2, 'u', ""}, {"name", 6, 's', ""}, {"credentials", 6, 's', ""},
		})},
		{"LogonReply", "Instance `tandem-a` accepts version 1 with 5 s heartbeats; the highest pubseq it holds from `pricer` is 41.", f[wire.TypeLogonReply], cat(hdrFields(wire.TypeLogonReply), []docField{
			{"version", 2, 'u', ""}, {"reserved", 2, 'r', ""}, {"heartbeatMillis", 4, 'u', ""}, {"lastPubSeq", 8, 'u', ""},
			{"instanceLen", 2, 'u', ""}, {"reserved", 2, 'r', ""}, {"reserved", 4, 'r', ""}, {"instance", 8, 's', ""},
		})},
		{"Publish", "Pubseq 42 on topic `px.EURUSD`, payload `1.0842`, asking for a persisted ack.", f[wire.TypePublish], cat(hdrFields(wire.TypePublish), []docField{
			{"pubSeq", 8, 'u', ""}, {"topicLen", 2, 'u', ""}, {"ack", 1, 'u', "persisted"}, {"flags", 1, 'r', ""},
			{"topic", 9, 's', ""}, {"payload", 6, 's', "the rest of the frame"},
		})},
		{"Ack", "Every publish of this connection up to pubseq 42 is persisted.", f[wire.TypeAck], cat(hdrFields(wire.TypeAck), []docField{
			{"kind", 1, 'u', "persisted"}, {"reserved", 1, 'r', ""}, {"code", 2, 'u', "ok"}, {"reserved", 4, 'r', ""},
			{"seq", 8, 'u', "cumulative: pubseq"}, {"text", 0, 's', "the rest of the frame; empty"},
		})},
		{"Subscribe", "Subscription 7 to topics starting with `px.`, resuming after the message of the bookmark.", f[wire.TypeSubscribe], cat(hdrFields(wire.TypeSubscribe), []docField{
			{"subID", 4, 'u', ""}, {"start", 1, 'u', "bookmark"}, {"match", 1, 'u', "prefix"},
			{"topicLen", 2, 'u', ""}, {"bookmarkCount", 2, 'u', ""}, {"reserved", 2, 'r', ""}, {"reserved", 4, 'r', ""},
			{"topic", 3, 's', ""},
		}, bookmark)},
		{"Subscribe (resume)", "Subscription 9 to topics starting with `px.`, resumed on another instance of the sync pair after a failover: " +
			"the subscriber has seen `tandem-a`'s stream up to originSeq 1007, `tandem-b`'s up to 310, and `pricer`'s messages up to pubseq 42.",
			sampleResumeSubscribe(), cat(hdrFields(wire.TypeSubscribe), []docField{
				{"subID", 4, 'u', ""}, {"start", 1, 'u', "resume"}, {"match", 1, 'u', "prefix"},
				{"topicLen", 2, 'u', ""}, {"bookmarkCount", 2, 'u', "number of resume entries"}, {"reserved", 2, 'r', ""}, {"reserved", 4, 'r', ""},
				{"topic", 3, 's', ""},
				{"entry id", 8, 'x', `ID("tandem-a")`}, {"entry seq", 8, 'u', "originSeq"}, {"entry kind", 4, 'u', "origin"}, {"entry reserved", 4, 'r', ""},
				{"entry id", 8, 'x', `ID("tandem-b")`}, {"entry seq", 8, 'u', "originSeq"}, {"entry kind", 4, 'u', "origin"}, {"entry reserved", 4, 'r', ""},
				{"entry id", 8, 'x', `ID("pricer")`}, {"entry seq", 8, 'u', "pubseq"}, {"entry kind", 4, 'u', "publisher"}, {"entry reserved", 4, 'r', ""},
			})},
		{"Subscribe (time)", "Subscription 10 to topic `px.EURUSD` from the first message stored at or after 2026-12-04T09:30:00Z (Unix 1796376600 s).",
			wire.AppendSubscribeTime(nil, 10, wire.MatchExact, []byte("px.EURUSD"), 1796376600*1e9), cat(hdrFields(wire.TypeSubscribe), []docField{
				{"subID", 4, 'u', ""}, {"start", 1, 'u', "time"}, {"match", 1, 'u', "exact"},
				{"topicLen", 2, 'u', ""}, {"bookmarkCount", 2, 'u', "1: the time entry"}, {"reserved", 2, 'r', ""}, {"reserved", 4, 'r', ""},
				{"topic", 9, 's', ""},
				{"time", 8, 'u', "Unix nanoseconds"}, {"time reserved", 8, 'r', ""}, {"time reserved", 8, 'r', ""},
			})},
		{"Unsubscribe", "End subscription 7.", f[wire.TypeUnsubscribe], cat(hdrFields(wire.TypeUnsubscribe), []docField{
			{"subID", 4, 'u', ""}, {"reserved", 4, 'r', ""},
		})},
		{"Deliver", "The message published above, stored as seq 1007, delivered on subscription 7.", f[wire.TypeDeliver], cat(hdrFields(wire.TypeDeliver), []docField{
			{"subID", 4, 'u', ""}, {"reserved", 4, 'r', ""},
		}, recordFields())},
		{"Heartbeat", "", f[wire.TypeHeartbeat], hdrFields(wire.TypeHeartbeat)},
		{"Flush", "Flush with token 9.", f[wire.TypeFlush], cat(hdrFields(wire.TypeFlush), []docField{{"token", 8, 'u', ""}})},
		{"Error", "Sent (then the connection is closed) to a client whose first frame is not a Logon.", f[wire.TypeError], cat(hdrFields(wire.TypeError), []docField{
			{"code", 2, 'u', "not logged on"}, {"reserved", 2, 'r', ""}, {"text", 11, 's', "the rest of the frame"},
		})},
		{"StatRequest", "", f[wire.TypeStatRequest], hdrFields(wire.TypeStatRequest)},
		{"StatReply", "A (shortened) statistics document.", f[wire.TypeStatReply], cat(hdrFields(wire.TypeStatReply), []docField{
			{"document", 23, 's', "JSON, the rest of the frame"},
		})},
		{"Position", "Sent by `tandem-a` right after the Subscribed ack of subscription 8 (start = now): the subscription starts after originSeq 1007 of `tandem-a`'s own stream and 310 of `tandem-b`'s.",
			f[wire.TypePosition], cat(hdrFields(wire.TypePosition), []docField{
				{"subID", 4, 'u', ""}, {"count", 4, 'u', ""},
				{"origin", 8, 'x', `ID("tandem-a")`}, {"originSeq", 8, 'u', ""},
				{"origin", 8, 'x', `ID("tandem-b")`}, {"originSeq", 8, 'u', ""},
			})},
	}
}

func renderValue(t *testing.T, f docField, b []byte) string {
	switch f.kind {
	case 's':
		return fmt.Sprintf("`%q`", b)
	case 'b':
		return ""
	}
	var v uint64
	switch f.size {
	case 1:
		v = uint64(b[0])
	case 2:
		v = uint64(binary.LittleEndian.Uint16(b))
	case 4:
		v = uint64(binary.LittleEndian.Uint32(b))
	case 8:
		v = binary.LittleEndian.Uint64(b)
	default:
		t.Fatalf("field %s: numeric field of %d bytes", f.name, f.size)
	}
	switch f.kind {
	case 'r':
		if v != 0 {
			t.Fatalf("reserved field %s is %d", f.name, v)
		}
		return "0"
	case 'x':
		return fmt.Sprintf("0x%0*x", 2*f.size, v)
	case 'i':
		return fmt.Sprint(int64(v))
	}
	return fmt.Sprint(v)
}

func renderExamples(t *testing.T) string {
	var b strings.Builder
	fmt.Fprintf(&b, "The examples use client name `pricer` (publisher id `ID(\"pricer\")` = 0x%016x) and instance names `tandem-a` (`ID(\"tandem-a\")` = 0x%016x) and `tandem-b` (`ID(\"tandem-b\")` = 0x%016x), the two instances of a sync pair. The bookmark of the delivered message is `%s`.\n",
		record.ID("pricer"), record.ID("tandem-a"), record.ID("tandem-b"), sampleBookmark)
	for _, ex := range docExamples() {
		typ := wire.Type(ex.frame[4])
		fmt.Fprintf(&b, "\n### %s (type %d, %s)\n\n", ex.title, typ, typ)
		if ex.text != "" {
			b.WriteString(ex.text + "\n\n")
		}
		b.WriteString("```text\n" + hex.Dump(ex.frame) + "```\n\n")
		b.WriteString("| offset | bytes | field | value |\n|---:|---|---|---|\n")
		off := 0
		for _, f := range ex.fields {
			if off+f.size > len(ex.frame) {
				t.Fatalf("%s: field %s at %d+%d past the frame (%d bytes)", ex.title, f.name, off, f.size, len(ex.frame))
			}
			raw := ex.frame[off : off+f.size]
			hx := hex.EncodeToString(raw)
			var sp []string
			for i := 0; i < len(hx); i += 2 {
				sp = append(sp, hx[i:i+2])
			}
			bytesCol := "`" + strings.Join(sp, " ") + "`"
			if f.size == 0 {
				bytesCol = "(none)"
			}
			val := renderValue(t, f, raw)
			if f.note != "" {
				if val != "" {
					val += " "
				}
				val += "(" + f.note + ")"
			}
			fmt.Fprintf(&b, "| %d | %s | %s | %s |\n", off, bytesCol, f.name, val)
			off += f.size
		}
		if off != len(ex.frame) {
			t.Fatalf("%s: fields cover %d of %d bytes", ex.title, off, len(ex.frame))
		}
	}
	return b.String()
}

// Descriptions for the generated enum tables; a value the code defines but
// this list does not fails the test.
var (
	typeDocs = map[wire.Type]string{
		wire.TypeLogon:       "C→S | opens a session; must be the first frame",
		wire.TypeLogonReply:  "S→C | accepts the logon",
		wire.TypePublish:     "C→S | one message",
		wire.TypeAck:         "S→C | acknowledges (or refuses) a publish, flush, subscribe or unsubscribe",
		wire.TypeSubscribe:   "C→S | starts a subscription",
		wire.TypeUnsubscribe: "C→S | ends a subscription",
		wire.TypeDeliver:     "S→C | one stored message on a subscription",
		wire.TypeHeartbeat:   "both | keeps an idle connection alive; empty body",
		wire.TypeFlush:       "C→S | asks to be told once everything published before it is persisted",
		wire.TypeError:       "S→C | fatal error; the server closes the connection after it",
		wire.TypeStatRequest: "C→S | asks for the statistics document; empty body",
		wire.TypeStatReply:   "S→C | the statistics document (JSON)",
		wire.TypePosition:    "S→C | a new subscription's starting progress per origin, right after its Subscribed ack",
	}
	codeDocs = map[wire.Code]string{
		wire.CodeOK:              "`CodeOK` | success (an Ack with code 0 is an acknowledgement, not a refusal)",
		wire.CodeMalformed:       "`CodeMalformed` | a frame could not be decoded",
		wire.CodeTooLarge:        "`CodeTooLarge` | a frame or field exceeds a limit",
		wire.CodeUnknownFrame:    "`CodeUnknownFrame` | a frame type the server does not take",
		wire.CodeNotLoggedOn:     "`CodeNotLoggedOn` | a frame other than Logon before logon",
		wire.CodeVersion:         "`CodeVersion` | no common protocol version",
		wire.CodeAuth:            "`CodeAuth` | credentials refused",
		wire.CodeNameInUse:       "`CodeNameInUse` | another connection is logged on with this client name",
		wire.CodeBadPattern:      "`CodeBadPattern` | a subscription topic pattern that does not compile",
		wire.CodeBadBookmark:     "`CodeBadBookmark` | a bookmark this instance cannot resolve",
		wire.CodeStorageFailed:   "`CodeStorageFailed` | the journal failed; the message is not persisted; the instance stops (clients fail over)",
		wire.CodeShutdown:        "`CodeShutdown` | the server is shutting down",
		wire.CodeHeartbeat:       "`CodeHeartbeat` | the connection was silent for two heartbeat intervals",
		wire.CodeSubIDInUse:      "`CodeSubIDInUse` | Subscribe with an id already active on this connection",
		wire.CodeUnknownSub:      "`CodeUnknownSub` | Unsubscribe of an id that is not active",
		wire.CodeAlreadyLoggedOn: "`CodeAlreadyLoggedOn` | a second Logon on one connection",
		wire.CodeBadTopic:        "`CodeBadTopic` | an empty topic, or one with bytes the server refuses",
		wire.CodeSequenceReused:  "`CodeSequenceReused` | (publisher, pubSeq) is already stored with a different topic or payload; permanent",
		wire.CodeNotPermitted:    "`CodeNotPermitted` | the user may not publish to, subscribe to or read this; permanent",
		wire.CodeStandby:         "`CodeStandby` | a shared-store passive instance: try the next server now",
		wire.CodeLimit:           "`CodeLimit` | a configured cap is reached (connections per instance or user, subscriptions per connection, logons awaiting password verification)",
		wire.CodeTLSRequired:     "`CodeTLSRequired` | plaintext sent to a port that serves TLS only; sent in plaintext so a plaintext client can say so; do not retry without TLS",
	}
	ackKindDocs = map[wire.AckKind]string{
		wire.AckKindReceived:     "pubseq; cumulative | the server parsed and accepted every publish of this connection up to seq",
		wire.AckKindPersisted:    "pubseq; cumulative | every publish of this connection up to seq is on disk (v2: on syncPeers sync destinations' disks too)",
		wire.AckKindFlushed:      "flush token | everything published before the Flush with this token is persisted",
		wire.AckKindSubscribed:   "subID | the subscription is active (code 0) or refused",
		wire.AckKindUnsubscribed: "subID | the subscription is ended (code 0) or the unsubscribe is refused",
	}
)

func renderTypes(t *testing.T) string {
	var b strings.Builder
	b.WriteString("| type | name | direction | purpose |\n|---:|---|---|---|\n")
	for v := 0; v < 256; v++ {
		typ := wire.Type(v)
		if typ.String() == fmt.Sprintf("type(%d)", v) {
			continue
		}
		d, ok := typeDocs[typ]
		if !ok {
			t.Fatalf("frame type %d (%s) is not documented: add it to typeDocs and docs/wire.md", v, typ)
		}
		fmt.Fprintf(&b, "| %d | %s | %s |\n", v, typ, d)
	}
	return b.String()
}

func renderCodes(t *testing.T) string {
	var b strings.Builder
	b.WriteString("| code | name | constant | meaning |\n|---:|---|---|---|\n")
	for v := 0; v < 1<<16; v++ {
		c := wire.Code(v)
		if c.String() == fmt.Sprintf("code(%d)", v) {
			continue
		}
		d, ok := codeDocs[c]
		if !ok {
			t.Fatalf("code %d (%s) is not documented: add it to codeDocs", v, c)
		}
		fmt.Fprintf(&b, "| %d | %s | %s |\n", v, c, d)
	}
	return b.String()
}

func renderAckKinds(t *testing.T) string {
	var b strings.Builder
	b.WriteString("| kind | name | seq is | meaning |\n|---:|---|---|---|\n")
	for v := 0; v < 256; v++ {
		k := wire.AckKind(v)
		if k.String() == fmt.Sprintf("ack-kind(%d)", v) {
			continue
		}
		d, ok := ackKindDocs[k]
		if !ok {
			t.Fatalf("ack kind %d (%s) is not documented: add it to ackKindDocs", v, k)
		}
		fmt.Fprintf(&b, "| %d | %s | %s |\n", v, k, d)
	}
	return b.String()
}

// renderStats lists the JSON keys of the StatReply document.
func renderStats(t *testing.T) string {
	var b strings.Builder
	b.WriteString("| key | JSON type |\n|---|---|\n")
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			tag, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == "-" || !f.IsExported() {
				continue
			}
			if tag == "" {
				tag = f.Name
			}
			key := prefix + tag
			jt := jsonType(f.Type)
			if strings.Contains(opts, "omitempty") {
				jt += " (omitted when empty)"
			}
			fmt.Fprintf(&b, "| `%s` | %s |\n", key, jt)
			switch {
			case f.Type.Kind() == reflect.Struct:
				walk(key+".", f.Type)
			case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
				walk(key+"[].", f.Type.Elem())
			}
		}
	}
	walk("", reflect.TypeFor[wire.Stats]())
	return b.String()
}

func jsonType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Struct:
		return "object"
	case reflect.Slice:
		return "array of " + jsonType(t.Elem())
	}
	return t.String()
}

// TestWireDocExamples checks that the generated sections of docs/wire.md
// match the code: hex dumps of every example frame, with a field-by-field
// breakdown, and the tables of frame types, codes, ack kinds and stat keys.
func TestWireDocExamples(t *testing.T) {
	sections := []struct {
		name   string
		render func(*testing.T) string
	}{
		{"types", renderTypes},
		{"codes", renderCodes},
		{"ack-kinds", renderAckKinds},
		{"stats", renderStats},
		{"examples", renderExamples},
	}
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	out := doc
	for _, s := range sections {
		begin := []byte(fmt.Sprintf("<!-- generated:%s (go test ./wire/ -run TestWireDoc -update) -->\n", s.name))
		end := []byte(fmt.Sprintf("<!-- end:%s -->", s.name))
		i := bytes.Index(out, begin)
		j := bytes.Index(out, end)
		if i < 0 || j < i {
			t.Fatalf("%s: no section %q ... %q", docPath, begin, end)
		}
		want := s.render(t)
		got := string(out[i+len(begin) : j])
		if got == want {
			continue
		}
		if !*update {
			t.Errorf("%s: section %s is out of date with the code; run go test ./wire/ -run TestWireDoc -update\n%s",
				docPath, s.name, firstDiff(got, want))
			continue
		}
		out = append(out[:i+len(begin):i+len(begin)], append([]byte(want), out[j:]...)...)
	}
	// Figures quoted in the prose.
	for _, fact := range []string{
		fmt.Sprintf("`ID(\"abc\")` is `0x%016x`", record.ID("abc")),
		fmt.Sprintf("`123456789` is `0x%08X`", record.Checksum([]byte("123456789"))),
		fmt.Sprintf("`DefaultMaxFrame` = %s bytes", commas(wire.DefaultMaxFrame)),
		fmt.Sprintf("`PublishOverhead` = %d bytes", wire.PublishOverhead),
		fmt.Sprintf("`DeliverOverhead` = %d bytes", wire.DeliverOverhead),
		"| 48 | 8 | via |",
		"| 56 | 8 | originSeq |",
		"| 64 | 2 | topicLen |",
		"| 66 | 2 | flags |",
		"| 68 | 4 | payloadLen |",
		"| 72 | topicLen | topic |",
		"| 72 + topicLen | payloadLen | payload |",
		"always `72 + topicLen + payloadLen`",
		"| 3 | StartResume |",
		"| 4 | StartTime |",
		"| 1 | ResumeOrigin |",
		"| 2 | ResumePublisher |",
	} {
		if !bytes.Contains(out, []byte(fact)) {
			t.Errorf("%s does not say %s", docPath, fact)
		}
	}
	if record.HeaderSize != 72 {
		t.Error("record.HeaderSize changed: update section 5 of docs/wire.md")
	}
	if *update && !bytes.Equal(out, doc) {
		if err := os.WriteFile(docPath, out, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote %s", docPath)
	}
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("first difference at line %d of the section:\n doc: %s\ncode: %s", i+1, gl, wl)
		}
	}
	return ""
}

func commas(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
