package wire_test

import (
	"fmt"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// decodeAny decodes a frame's body with the decoder matching its type and
// returns the decoded value (a wire struct, or the scalar a decoder returns).
// Frames without a decoder (heartbeat, stat request, stat reply) yield their
// body, which is all they carry.
func decodeAny(f wire.Frame) (any, error) {
	switch f.Type {
	case wire.TypeLogon:
		var m wire.Logon
		err := wire.DecodeLogon(f.Body, &m)
		return m, err
	case wire.TypeLogonReply:
		var m wire.LogonReply
		err := wire.DecodeLogonReply(f.Body, &m)
		return m, err
	case wire.TypePublish:
		var m wire.Publish
		err := wire.DecodePublish(f.Body, &m)
		return m, err
	case wire.TypeAck:
		var m wire.Ack
		err := wire.DecodeAck(f.Body, &m)
		return m, err
	case wire.TypeSubscribe:
		var m wire.Subscribe
		err := wire.DecodeSubscribe(f.Body, &m)
		return m, err
	case wire.TypeUnsubscribe:
		return wire.DecodeUnsubscribe(f.Body)
	case wire.TypeDeliver:
		var m wire.Deliver
		err := wire.DecodeDeliver(f.Body, &m)
		return m, err
	case wire.TypeFlush:
		return wire.DecodeFlush(f.Body)
	case wire.TypeError:
		var m wire.Error
		err := wire.DecodeError(f.Body, &m)
		return m, err
	case wire.TypePosition:
		var m wire.Position
		err := wire.DecodePosition(f.Body, &m)
		return m, err
	default:
		return f.Body, nil
	}
}

// canon renders a decoded value for comparison; nil and empty byte slices
// render alike, as they mean the same on the wire.
func canon(v any, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	if d, ok := v.(wire.Deliver); ok {
		r := d.Record
		return fmt.Sprintf("deliver sub=%d rec={seq=%d time=%d origin=%x pub=%x pubseq=%d via=%x originSeq=%d flags=%x topic=%q payload=%q crc=%08x}",
			d.SubID, r.Seq(), r.Time(), r.Origin(), r.Publisher(), r.PubSeq(), r.Via(), r.OriginSeq(), r.Flags(), r.Topic(), r.Payload(), r.CRC())
	}
	if p, ok := v.(wire.Position); ok {
		s := fmt.Sprintf("position sub=%d count=%d", p.SubID, p.Count())
		for i := range p.Count() {
			e := p.Entry(i)
			s += fmt.Sprintf(" %x:%d", e.Origin, e.OriginSeq)
		}
		return s
	}
	return fmt.Sprintf("%T %+v", v, v)
}

// sampleRecord is the stored record the examples deliver.
func sampleRecord() []byte {
	h := record.Header{
		Seq:       1007,
		Time:      1_700_000_000_000_000_000,
		Origin:    record.ID("tandem-a"),
		Publisher: record.ID("pricer"),
		PubSeq:    42,
	}
	return record.Append(nil, &h, []byte("px.EURUSD"), []byte("1.0842"))
}

var sampleBookmark = record.Bookmark{Publisher: record.ID("pricer"), PubSeq: 42, Seq: 1007}

// samplePosition is the per-origin progress the examples' Position frame
// reports: tandem-a's own stream up to 1007, tandem-b's up to 310.
var samplePosition = []wire.PositionEntry{
	{Origin: record.ID("tandem-a"), OriginSeq: 1007},
	{Origin: record.ID("tandem-b"), OriginSeq: 310},
}

// sampleResume is the progress a resumed subscription sends: the position
// above, and pubseq 42 from pricer.
var sampleResume = []wire.ResumeEntry{
	{ID: record.ID("tandem-a"), Seq: 1007, Kind: wire.ResumeOrigin},
	{ID: record.ID("tandem-b"), Seq: 310, Kind: wire.ResumeOrigin},
	{ID: record.ID("pricer"), Seq: 42, Kind: wire.ResumePublisher},
}

// sampleResumeSubscribe is a StartResume Subscribe frame (subscription 9 to
// the prefix px.) carrying sampleResume.
func sampleResumeSubscribe() []byte {
	return wire.AppendSubscribeResume(nil, 9, wire.MatchPrefix, []byte("px."), sampleResume)
}

// sampleFrames returns one valid frame of every type, encoded with the
// package's encoders. The fuzz corpus and the round-trip tests start from them.
func sampleFrames() map[wire.Type][]byte {
	return map[wire.Type][]byte{
		wire.TypeLogon: wire.AppendLogon(nil, &wire.Logon{MinVersion: 1, MaxVersion: 1, HeartbeatMillis: 5000,
			Name: []byte("pricer"), Credentials: []byte("s3cret")}),
		wire.TypeLogonReply: wire.AppendLogonReply(nil, &wire.LogonReply{Version: 1, HeartbeatMillis: 5000,
			LastPubSeq: 41, Instance: []byte("tandem-a")}),
		wire.TypePublish:     wire.AppendPublish(nil, 42, wire.AckPersisted, []byte("px.EURUSD"), []byte("1.0842")),
		wire.TypeAck:         wire.AppendAck(nil, wire.AckKindPersisted, wire.CodeOK, 42, ""),
		wire.TypeSubscribe:   wire.AppendSubscribe(nil, 7, wire.StartBookmark, wire.MatchPrefix, []byte("px."), sampleBookmark),
		wire.TypeUnsubscribe: wire.AppendUnsubscribe(nil, 7),
		wire.TypeDeliver:     wire.AppendDeliver(nil, 7, sampleRecord()),
		wire.TypeHeartbeat:   wire.AppendHeartbeat(nil),
		wire.TypeFlush:       wire.AppendFlush(nil, 9),
		wire.TypeError:       wire.AppendError(nil, wire.CodeNotLoggedOn, "logon first"),
		wire.TypeStatRequest: wire.AppendStatRequest(nil),
		wire.TypeStatReply:   wire.AppendStatReply(nil, []byte(`{"instance":"tandem-a"}`)),
		wire.TypePosition:    wire.AppendPosition(nil, 8, samplePosition),
	}
}
