package wire

import (
	"fmt"

	"github.com/tandemhq/tandem/record"
)

// AckWanted is what a publisher asks to be told about a message.
type AckWanted uint8

// Ack levels a publisher may request. Values are part of the wire format.
const (
	AckNone      AckWanted = 0 // fire and forget
	AckReceived  AckWanted = 1 // the server parsed and accepted it
	AckPersisted AckWanted = 2 // it is on disk (and on every sync peer, once replication exists)
)

// AckKind says what an Ack frame acknowledges. Values are part of the wire format.
type AckKind uint8

// Ack kinds. For Received and Persisted, Seq is a publisher sequence and the
// ack is cumulative: it covers every message of this connection up to Seq.
// For Flushed, Seq is the flush token. For Subscribed and Unsubscribed, Seq
// is the subscription id. A non-zero Code turns the ack into a refusal of
// the thing it names (a publish, a subscription), with Text saying why.
const (
	AckKindReceived     AckKind = 1
	AckKindPersisted    AckKind = 2
	AckKindFlushed      AckKind = 3
	AckKindSubscribed   AckKind = 4
	AckKindUnsubscribed AckKind = 5
)

func (k AckKind) String() string {
	switch k {
	case AckKindReceived:
		return "received"
	case AckKindPersisted:
		return "persisted"
	case AckKindFlushed:
		return "flushed"
	case AckKindSubscribed:
		return "subscribed"
	case AckKindUnsubscribed:
		return "unsubscribed"
	}
	return fmt.Sprintf("ack-kind(%d)", uint8(k))
}

// Code is an error code carried by Ack and Error frames. Values are part of
// the wire format.
type Code uint16

// Error codes.
const (
	CodeOK              Code = 0
	CodeMalformed       Code = 1  // a frame could not be decoded
	CodeTooLarge        Code = 2  // a frame or field exceeds a limit
	CodeUnknownFrame    Code = 3  // a frame type the server does not take
	CodeNotLoggedOn     Code = 4  // a frame other than logon before logon
	CodeVersion         Code = 5  // no common protocol version
	CodeAuth            Code = 6  // credentials refused
	CodeNameInUse       Code = 7  // another connection is logged on with this client name
	CodeBadPattern      Code = 8  // a subscription topic pattern that does not compile
	CodeBadBookmark     Code = 9  // a bookmark this instance cannot resolve
	CodeStorageFailed   Code = 10 // the journal failed; the message is not persisted and the instance stops
	CodeShutdown        Code = 11 // the server is shutting down
	CodeHeartbeat       Code = 12 // the connection was silent for two heartbeat intervals
	CodeSubIDInUse      Code = 13 // subscribe with an id already active on this connection
	CodeUnknownSub      Code = 14 // unsubscribe of an id that is not active
	CodeAlreadyLoggedOn Code = 15 // a second logon on one connection
	CodeBadTopic        Code = 16 // an empty topic, or one with bytes the server refuses
	CodeSequenceReused  Code = 17 // (publisher, pubSeq) is stored with a different topic or payload
	CodeNotPermitted    Code = 18 // the user may not do this (publish to, subscribe to, stat)
	CodeStandby         Code = 19 // a shared-store passive: try the next server now
	CodeLimit           Code = 20 // a configured cap is reached (connections, subscriptions, logons awaiting verification)
	CodeTLSRequired     Code = 21 // plaintext on a port that serves TLS only (sent in plaintext)

	// CodeStorage is the old name of CodeStorageFailed.
	CodeStorage = CodeStorageFailed
)

// Permanent reports whether a publish refused with c can never be accepted
// as sent: retrying or failing over would be refused again, so a client
// reports it for that message and continues with the rest.
func (c Code) Permanent() bool {
	switch c {
	case CodeTooLarge, CodeBadTopic, CodeSequenceReused, CodeNotPermitted:
		return true
	}
	return false
}

var codeNames = [...]string{
	CodeOK: "ok", CodeMalformed: "malformed", CodeTooLarge: "too-large",
	CodeUnknownFrame: "unknown frame", CodeNotLoggedOn: "not logged on",
	CodeVersion: "version", CodeAuth: "auth", CodeNameInUse: "name in use",
	CodeBadPattern: "bad pattern", CodeBadBookmark: "bad bookmark",
	CodeStorageFailed: "storage-failed", CodeShutdown: "shutdown", CodeHeartbeat: "heartbeat timeout",
	CodeSubIDInUse: "subscription id in use", CodeUnknownSub: "unknown subscription",
	CodeAlreadyLoggedOn: "already logged on", CodeBadTopic: "bad topic",
	CodeSequenceReused: "sequence-reused", CodeNotPermitted: "not-permitted", CodeStandby: "standby",
	CodeLimit: "limit", CodeTLSRequired: "tls-required",
}

func (c Code) String() string {
	if int(c) < len(codeNames) && codeNames[c] != "" {
		return codeNames[c]
	}
	return fmt.Sprintf("code(%d)", uint16(c))
}

// StartKind says where a subscription starts. Values are part of the wire format.
type StartKind uint8

// Subscription starting points.
const (
	StartNow      StartKind = 0 // only messages stored after the subscription
	StartEpoch    StartKind = 1 // the whole journal, then live
	StartBookmark StartKind = 2 // right after the message named by the (first) bookmark
	// StartResume resumes from progress: the entries (ResumeEntry, 24 bytes
	// each, in the bookmark area) say, per origin instance, how far into its
	// stream the subscriber has seen, and per publisher the highest
	// publisher sequence it has seen. Valid on any instance that holds the
	// same streams (failover along sync replication links).
	StartResume StartKind = 3
	// StartTime starts at the first record, in this journal's order, whose
	// stored time (record time field) is at or after the time carried in
	// the bookmark area: exactly one 24-byte time entry,
	//
	//	0 time i64 (Unix nanoseconds) | 8 reserved 16 bytes (zero)
	//
	// and delivers it and everything after it in journal order (a later
	// record with an earlier time included), then live. No record at or
	// after the time yet: only what is stored from now on.
	StartTime StartKind = 4
)

// TimeEntrySize is the size of a StartTime subscription's time entry (the
// bookmark size, so the Subscribe layout is unchanged).
const TimeEntrySize = record.BookmarkSize

// Time returns the time of a StartTime subscription, in Unix nanoseconds.
func (m *Subscribe) Time() int64 { return int64(le.Uint64(m.Bookmarks)) }

// AppendSubscribeTime appends a StartTime Subscribe frame: the
// subscription starts at the first record stored at or after unixNano.
func AppendSubscribeTime(dst []byte, subID uint32, match MatchKind, topic []byte, unixNano int64) []byte {
	checkField(len(topic), 1)
	dst, s := appendHeader(dst, TypeSubscribe)
	dst = le.AppendUint32(dst, subID)
	dst = append(dst, byte(StartTime), byte(match))
	dst = le.AppendUint16(dst, uint16(len(topic)))
	dst = le.AppendUint16(dst, 1)
	dst = append(dst, 0, 0, 0, 0, 0, 0)
	dst = append(dst, topic...)
	dst = le.AppendUint64(dst, uint64(unixNano))
	dst = append(dst, make([]byte, TimeEntrySize-8)...)
	return finish(dst, s)
}

// ResumeKind says what a ResumeEntry counts. Values are part of the wire format.
type ResumeKind uint32

// Resume entry kinds.
const (
	ResumeOrigin    ResumeKind = 1 // ID is an origin instance id, Seq an origin seq
	ResumePublisher ResumeKind = 2 // ID is a publisher id, Seq a publisher sequence
)

// ResumeEntry is one element of a StartResume subscription, encoded in 24
// bytes: id u64 | seq u64 | kind u32 | reserved u32.
type ResumeEntry struct {
	ID   uint64
	Seq  uint64
	Kind ResumeKind
}

// ResumeEntrySize is the encoded size of a ResumeEntry (the bookmark size).
const ResumeEntrySize = record.BookmarkSize

// AppendResumeEntry appends the encoding of e.
func AppendResumeEntry(dst []byte, e ResumeEntry) []byte {
	dst = le.AppendUint64(dst, e.ID)
	dst = le.AppendUint64(dst, e.Seq)
	dst = le.AppendUint32(dst, uint32(e.Kind))
	return append(dst, 0, 0, 0, 0)
}

// ResumeEntry returns the i-th entry of a StartResume subscription.
func (m *Subscribe) ResumeEntry(i int) ResumeEntry {
	b := m.Bookmarks[i*ResumeEntrySize:]
	return ResumeEntry{ID: le.Uint64(b), Seq: le.Uint64(b[8:]), Kind: ResumeKind(le.Uint32(b[16:]))}
}

// AppendSubscribeResume appends a StartResume Subscribe frame.
func AppendSubscribeResume(dst []byte, subID uint32, match MatchKind, topic []byte, entries []ResumeEntry) []byte {
	checkField(len(topic), len(entries))
	dst, s := appendHeader(dst, TypeSubscribe)
	dst = le.AppendUint32(dst, subID)
	dst = append(dst, byte(StartResume), byte(match))
	dst = le.AppendUint16(dst, uint16(len(topic)))
	dst = le.AppendUint16(dst, uint16(len(entries)))
	dst = append(dst, 0, 0, 0, 0, 0, 0)
	dst = append(dst, topic...)
	for _, e := range entries {
		dst = AppendResumeEntry(dst, e)
	}
	return finish(dst, s)
}

// Position tells a subscriber, right after its Subscribed ack, how far
// into each origin's stream the subscription's starting point lies: for
// StartNow, what the instance held when the subscription began; for
// StartEpoch, nothing (an empty list). A client keeps it as the initial
// per-origin progress of a resumable subscription.
//
//	body: 0 subID u32 | 4 count u32 | count x (origin u64 | originSeq u64)
type Position struct {
	SubID   uint32
	Entries []byte // count x 16 bytes, a view
}

// PositionEntry is one (origin, originSeq) of a Position frame.
type PositionEntry struct {
	Origin    uint64
	OriginSeq uint64
}

// Count returns the number of entries.
func (m *Position) Count() int { return len(m.Entries) / 16 }

// Entry returns the i-th entry.
func (m *Position) Entry(i int) PositionEntry {
	b := m.Entries[i*16:]
	return PositionEntry{Origin: le.Uint64(b), OriginSeq: le.Uint64(b[8:])}
}

// AppendPosition appends a Position frame.
func AppendPosition(dst []byte, subID uint32, entries []PositionEntry) []byte {
	dst, s := appendHeader(dst, TypePosition)
	dst = le.AppendUint32(dst, subID)
	dst = le.AppendUint32(dst, uint32(len(entries)))
	for _, e := range entries {
		dst = le.AppendUint64(dst, e.Origin)
		dst = le.AppendUint64(dst, e.OriginSeq)
	}
	return finish(dst, s)
}

// DecodePosition fills m from a Position body.
func DecodePosition(body []byte, m *Position) error {
	if len(body) < 8 {
		return short(TypePosition, body, 8)
	}
	n := le.Uint32(body[4:])
	if uint64(len(body)-8) != uint64(n)*16 {
		return fmt.Errorf("%w: position with %d entries in %d bytes", ErrMalformed, n, len(body)-8)
	}
	m.SubID = le.Uint32(body)
	m.Entries = body[8:]
	return nil
}

// MatchKind says how a subscription's topic is matched. Values are part of the wire format.
type MatchKind uint8

// Topic matching.
const (
	MatchExact  MatchKind = 0 // topic equals the subscription topic
	MatchPrefix MatchKind = 1 // topic starts with the subscription topic
	MatchRegex  MatchKind = 2 // Go RE2 regular expression, unanchored unless it says ^...$
)

// Logon opens a session. Name is the client name, which is also the
// publisher identity (record.ID(Name)).
type Logon struct {
	MinVersion      uint16
	MaxVersion      uint16
	HeartbeatMillis uint32 // 0: no heartbeats
	Name            []byte
	Credentials     []byte
}

const logonFixed = 12

// AppendLogon appends a Logon frame. Name and Credentials must each be at
// most 65535 bytes (MaxField); longer ones panic instead of encoding a
// frame whose lengths lie.
func AppendLogon(dst []byte, m *Logon) []byte {
	checkField(len(m.Name), len(m.Credentials))
	dst, s := appendHeader(dst, TypeLogon)
	dst = le.AppendUint16(dst, m.MinVersion)
	dst = le.AppendUint16(dst, m.MaxVersion)
	dst = le.AppendUint32(dst, m.HeartbeatMillis)
	dst = le.AppendUint16(dst, uint16(len(m.Name)))
	dst = le.AppendUint16(dst, uint16(len(m.Credentials)))
	dst = append(dst, m.Name...)
	dst = append(dst, m.Credentials...)
	return finish(dst, s)
}

// DecodeLogon fills m from a Logon body.
func DecodeLogon(body []byte, m *Logon) error {
	if len(body) < logonFixed {
		return short(TypeLogon, body, logonFixed)
	}
	nl, cl := int(le.Uint16(body[8:])), int(le.Uint16(body[10:]))
	if logonFixed+nl+cl != len(body) {
		return fmt.Errorf("%w: logon name %d + credentials %d != body %d", ErrMalformed, nl, cl, len(body)-logonFixed)
	}
	m.MinVersion = le.Uint16(body)
	m.MaxVersion = le.Uint16(body[2:])
	m.HeartbeatMillis = le.Uint32(body[4:])
	m.Name = body[logonFixed : logonFixed+nl : logonFixed+nl]
	m.Credentials = body[logonFixed+nl:]
	return nil
}

// LogonReply accepts a logon.
//
// LastPubSeq is the highest publisher sequence this instance has stored for
// the client name (0 if none): a client without a publish store continues
// numbering after it. AckedPubSeq (version 2) is the top of the contiguous
// run 1..AckedPubSeq of that publisher's sequences covered by the ack point
// (durable here and on every sync destination in sync): what an HA client
// may discard from its publish store. Everything in (AckedPubSeq,
// LastPubSeq] is stored but not yet acknowledged and must stay in the store
// (re-publishing it is answered as a duplicate once it is durable).
//
// MaxFrame and MaxTopic (version 2) are the server's limits: a Publish
// frame longer than MaxFrame bytes, or with a topic longer than MaxTopic,
// is refused with CodeTooLarge. A version 1 reply carries none of the three
// (AckedPubSeq then equals LastPubSeq, limits 0 = unknown).
type LogonReply struct {
	Version         uint16
	HeartbeatMillis uint32
	LastPubSeq      uint64
	AckedPubSeq     uint64
	MaxFrame        uint32
	MaxTopic        uint16
	Instance        []byte
}

const (
	logonReplyFixed   = 24
	logonReplyFixedV2 = 32
)

// AppendLogonReply appends a LogonReply frame in the layout of m.Version.
func AppendLogonReply(dst []byte, m *LogonReply) []byte {
	checkField(len(m.Instance))
	dst, s := appendHeader(dst, TypeLogonReply)
	dst = le.AppendUint16(dst, m.Version)
	if m.Version >= Version2 {
		dst = le.AppendUint16(dst, m.MaxTopic)
	} else {
		dst = le.AppendUint16(dst, 0)
	}
	dst = le.AppendUint32(dst, m.HeartbeatMillis)
	dst = le.AppendUint64(dst, m.LastPubSeq)
	dst = le.AppendUint16(dst, uint16(len(m.Instance)))
	dst = append(dst, 0, 0)
	if m.Version >= Version2 {
		dst = le.AppendUint32(dst, m.MaxFrame)
		dst = le.AppendUint64(dst, m.AckedPubSeq)
	} else {
		dst = append(dst, 0, 0, 0, 0)
	}
	dst = append(dst, m.Instance...)
	return finish(dst, s)
}

// DecodeLogonReply fills m from a LogonReply body.
func DecodeLogonReply(body []byte, m *LogonReply) error {
	if len(body) < logonReplyFixed {
		return short(TypeLogonReply, body, logonReplyFixed)
	}
	m.Version = le.Uint16(body)
	fixed := logonReplyFixed
	if m.Version >= Version2 {
		fixed = logonReplyFixedV2
		if len(body) < fixed {
			return short(TypeLogonReply, body, fixed)
		}
	}
	il := int(le.Uint16(body[16:]))
	if fixed+il != len(body) {
		return fmt.Errorf("%w: logon reply instance %d != body %d", ErrMalformed, il, len(body)-fixed)
	}
	m.HeartbeatMillis = le.Uint32(body[4:])
	m.LastPubSeq = le.Uint64(body[8:])
	if m.Version >= Version2 {
		m.MaxTopic = le.Uint16(body[2:])
		m.MaxFrame = le.Uint32(body[20:])
		m.AckedPubSeq = le.Uint64(body[24:])
	} else {
		m.MaxTopic, m.MaxFrame, m.AckedPubSeq = 0, 0, m.LastPubSeq
	}
	m.Instance = body[fixed:]
	return nil
}

// Publish carries one message.
type Publish struct {
	PubSeq  uint64
	Ack     AckWanted
	Topic   []byte
	Payload []byte
}

const publishFixed = 12

// PublishOverhead is the frame bytes a Publish adds to topic and payload.
const PublishOverhead = HeaderSize + publishFixed

// AppendPublish appends a Publish frame. topic must be at most MaxField
// bytes (callers validate; a longer one panics).
func AppendPublish(dst []byte, pubSeq uint64, ack AckWanted, topic, payload []byte) []byte {
	checkField(len(topic))
	dst, s := appendHeader(dst, TypePublish)
	dst = le.AppendUint64(dst, pubSeq)
	dst = le.AppendUint16(dst, uint16(len(topic)))
	dst = append(dst, byte(ack), 0)
	dst = append(dst, topic...)
	dst = append(dst, payload...)
	return finish(dst, s)
}

// DecodePublish fills m from a Publish body.
func DecodePublish(body []byte, m *Publish) error {
	if len(body) < publishFixed {
		return short(TypePublish, body, publishFixed)
	}
	tl := int(le.Uint16(body[8:]))
	if publishFixed+tl > len(body) {
		return fmt.Errorf("%w: publish topic %d bytes exceeds body %d", ErrMalformed, tl, len(body)-publishFixed)
	}
	ack := AckWanted(body[10])
	if ack > AckPersisted {
		return fmt.Errorf("%w: publish ack level %d", ErrMalformed, ack)
	}
	m.PubSeq = le.Uint64(body)
	m.Ack = ack
	m.Topic = body[publishFixed : publishFixed+tl : publishFixed+tl]
	m.Payload = body[publishFixed+tl:]
	return nil
}

// Ack acknowledges (or, with a non-zero Code, refuses) something the client sent.
//
// SyncPeers (version 2, persisted acks only) is how many sync replication
// destinations held, durably, every message the ack covers when it was
// sent: 0 means "on this instance's disk only". It is cumulative like the
// ack itself.
type Ack struct {
	Kind      AckKind
	SyncPeers uint8
	Code      Code
	Seq       uint64
	Text      []byte
}

const ackFixed = 16

// AppendAck appends an Ack frame.
func AppendAck(dst []byte, kind AckKind, code Code, seq uint64, text string) []byte {
	return AppendAckPeers(dst, kind, 0, code, seq, text)
}

// AppendAckPeers appends an Ack frame carrying a sync-peer count.
func AppendAckPeers(dst []byte, kind AckKind, syncPeers uint8, code Code, seq uint64, text string) []byte {
	dst, s := appendHeader(dst, TypeAck)
	dst = append(dst, byte(kind), syncPeers)
	dst = le.AppendUint16(dst, uint16(code))
	dst = append(dst, 0, 0, 0, 0)
	dst = le.AppendUint64(dst, seq)
	dst = append(dst, text...)
	return finish(dst, s)
}

// DecodeAck fills m from an Ack body.
func DecodeAck(body []byte, m *Ack) error {
	if len(body) < ackFixed {
		return short(TypeAck, body, ackFixed)
	}
	m.Kind = AckKind(body[0])
	m.SyncPeers = body[1]
	m.Code = Code(le.Uint16(body[2:]))
	m.Seq = le.Uint64(body[8:])
	m.Text = body[ackFixed:]
	return nil
}

// Subscribe starts a subscription. With StartBookmark the subscription
// resumes right after the message named by the first bookmark. Bookmarks
// holds BookmarkCount encoded bookmarks (24 bytes each), a view.
type Subscribe struct {
	SubID     uint32
	Start     StartKind
	Match     MatchKind
	Topic     []byte
	Bookmarks []byte
}

const subscribeFixed = 16

// BookmarkCount returns the number of bookmarks in m.
func (m *Subscribe) BookmarkCount() int { return len(m.Bookmarks) / record.BookmarkSize }

// Bookmark returns the i-th bookmark of m.
func (m *Subscribe) Bookmark(i int) record.Bookmark {
	b, _ := record.DecodeBookmark(m.Bookmarks[i*record.BookmarkSize:])
	return b
}

// AppendSubscribe appends a Subscribe frame. topic and the bookmark count
// must each be at most MaxField (a larger one panics).
func AppendSubscribe(dst []byte, subID uint32, start StartKind, match MatchKind, topic []byte, bookmarks ...record.Bookmark) []byte {
	checkField(len(topic), len(bookmarks))
	dst, s := appendHeader(dst, TypeSubscribe)
	dst = le.AppendUint32(dst, subID)
	dst = append(dst, byte(start), byte(match))
	dst = le.AppendUint16(dst, uint16(len(topic)))
	dst = le.AppendUint16(dst, uint16(len(bookmarks)))
	dst = append(dst, 0, 0, 0, 0, 0, 0)
	dst = append(dst, topic...)
	for _, b := range bookmarks {
		dst = b.AppendBinary(dst)
	}
	return finish(dst, s)
}

// DecodeSubscribe fills m from a Subscribe body.
func DecodeSubscribe(body []byte, m *Subscribe) error {
	if len(body) < subscribeFixed {
		return short(TypeSubscribe, body, subscribeFixed)
	}
	tl := int(le.Uint16(body[6:]))
	nb := int(le.Uint16(body[8:]))
	if subscribeFixed+tl+nb*record.BookmarkSize != len(body) {
		return fmt.Errorf("%w: subscribe topic %d + %d bookmarks != body %d", ErrMalformed, tl, nb, len(body)-subscribeFixed)
	}
	start, match := StartKind(body[4]), MatchKind(body[5])
	if start > StartTime {
		return fmt.Errorf("%w: subscribe start %d", ErrMalformed, start)
	}
	if start == StartTime && nb != 1 {
		return fmt.Errorf("%w: time subscription with %d entries (want exactly one time entry)", ErrMalformed, nb)
	}
	if match > MatchRegex {
		return fmt.Errorf("%w: subscribe match %d", ErrMalformed, match)
	}
	if start == StartBookmark && nb == 0 {
		return fmt.Errorf("%w: bookmark subscription without a bookmark", ErrMalformed)
	}
	m.SubID = le.Uint32(body)
	m.Start, m.Match = start, match
	m.Topic = body[subscribeFixed : subscribeFixed+tl : subscribeFixed+tl]
	m.Bookmarks = body[subscribeFixed+tl:]
	return nil
}

// AppendUnsubscribe appends an Unsubscribe frame.
func AppendUnsubscribe(dst []byte, subID uint32) []byte {
	dst, s := appendHeader(dst, TypeUnsubscribe)
	dst = le.AppendUint32(dst, subID)
	dst = append(dst, 0, 0, 0, 0)
	return finish(dst, s)
}

// DecodeUnsubscribe returns the subscription id of an Unsubscribe body.
func DecodeUnsubscribe(body []byte) (uint32, error) {
	if len(body) != 8 {
		return 0, short(TypeUnsubscribe, body, 8)
	}
	return le.Uint32(body), nil
}

// DeliverOverhead is the frame bytes a Deliver adds to the record it carries.
const DeliverOverhead = HeaderSize + 8

// AppendDeliverHeader appends the header and fixed body of a Deliver frame
// for a record of recLen bytes; the caller appends (or sends) the record
// itself right after it, straight from the journal.
func AppendDeliverHeader(dst []byte, subID uint32, recLen int) []byte {
	dst = le.AppendUint32(dst, uint32(DeliverOverhead+recLen))
	dst = append(dst, byte(TypeDeliver), 0, 0, 0)
	dst = le.AppendUint32(dst, subID)
	return append(dst, 0, 0, 0, 0)
}

// AppendDeliver appends a whole Deliver frame.
func AppendDeliver(dst []byte, subID uint32, rec []byte) []byte {
	dst = AppendDeliverHeader(dst, subID, len(rec))
	return append(dst, rec...)
}

// Deliver is a message delivered on a subscription.
type Deliver struct {
	SubID  uint32
	Record record.View
}

// DecodeDeliver fills m from a Deliver body. The record must fill the rest
// of the body exactly and is checked structurally (not its CRC).
func DecodeDeliver(body []byte, m *Deliver) error {
	if len(body) < 8 {
		return short(TypeDeliver, body, 8)
	}
	v, n, err := record.Parse(body[8:])
	if err != nil {
		return fmt.Errorf("%w: deliver: %v", ErrMalformed, err)
	}
	if 8+n != len(body) {
		return fmt.Errorf("%w: deliver record %d bytes != body %d", ErrMalformed, n, len(body)-8)
	}
	m.SubID = le.Uint32(body)
	m.Record = v
	return nil
}

// AppendHeartbeat appends a Heartbeat frame.
func AppendHeartbeat(dst []byte) []byte {
	dst, s := appendHeader(dst, TypeHeartbeat)
	return finish(dst, s)
}

// AppendFlush appends a Flush frame.
func AppendFlush(dst []byte, token uint64) []byte {
	dst, s := appendHeader(dst, TypeFlush)
	dst = le.AppendUint64(dst, token)
	return finish(dst, s)
}

// DecodeFlush returns the token of a Flush body.
func DecodeFlush(body []byte) (uint64, error) {
	if len(body) != 8 {
		return 0, short(TypeFlush, body, 8)
	}
	return le.Uint64(body), nil
}

// Error reports a fatal error; the sender closes the connection after it.
type Error struct {
	Code Code
	Text []byte
}

// AppendError appends an Error frame.
func AppendError(dst []byte, code Code, text string) []byte {
	dst, s := appendHeader(dst, TypeError)
	dst = le.AppendUint16(dst, uint16(code))
	dst = append(dst, 0, 0)
	dst = append(dst, text...)
	return finish(dst, s)
}

// DecodeError fills m from an Error body.
func DecodeError(body []byte, m *Error) error {
	if len(body) < 4 {
		return short(TypeError, body, 4)
	}
	m.Code = Code(le.Uint16(body))
	m.Text = body[4:]
	return nil
}

// AppendStatRequest appends a StatRequest frame.
func AppendStatRequest(dst []byte) []byte {
	dst, s := appendHeader(dst, TypeStatRequest)
	return finish(dst, s)
}

// AppendStatReply appends a StatReply frame carrying a JSON document.
func AppendStatReply(dst []byte, doc []byte) []byte {
	dst, s := appendHeader(dst, TypeStatReply)
	dst = append(dst, doc...)
	return finish(dst, s)
}

// MaxField is the largest length a 16-bit length field (topic, name,
// credentials, bookmark count) can carry.
const MaxField = 1<<16 - 1

func checkField(lens ...int) {
	for _, n := range lens {
		if n > MaxField {
			panic(fmt.Sprintf("wire: field of %d bytes exceeds %d", n, MaxField))
		}
	}
}
