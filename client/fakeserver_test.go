package client

import (
	"encoding/json"
	"errors"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// fakeServer implements the server side of the protocol as the engine does,
// in memory, with knobs for the failures tests need: held persisted acks,
// refused publishes, silence, Error frames, late deliveries.
type fakeServer struct {
	t    testing.TB
	ln   net.Listener
	name string
	wg   sync.WaitGroup

	mu         sync.Mutex
	records    [][]byte          // the "journal"; records[i] has seq i+1
	lastPub    map[string]uint64 // by client name
	conns      map[*fakeConn]bool
	hold       bool // persisted acks and flushes wait for release
	refuse     map[uint64]wire.Code
	late       int // deliveries to send between Unsubscribe and its ack
	logonError wire.Code

	// Version 2 logon reply and limits (0: not announced; DefaultMaxFrame
	// enforced). A Publish frame longer than maxFrame ends the connection
	// with a CodeTooLarge Error, as a server whose journal cannot take it.
	maxFrame int
	maxTopic int
	// acked, per client name, is the AckedPubSeq the logon reply announces
	// (default: LastPubSeq): messages stored but not yet covered by the ack
	// point. A re-published duplicate at or below LastPubSeq is acked.
	acked map[string]uint64
	// syncPeers is sent in every persisted ack.
	syncPeers uint8
	// dropAfterLogon closes each connection right after its logon reply.
	dropAfterLogon bool
	// refuseSub, when non-zero, refuses every Subscribe with this code.
	refuseSub wire.Code
	// pubSeqs records every Publish's pubSeq, in arrival order.
	pubSeqs []uint64
	// logons counts logon replies sent.
	logons atomic.Int64

	silent     atomic.Bool // write nothing at all (a partitioned server)
	heartbeats atomic.Int64
	publishes  atomic.Int64
	reads      atomic.Int64 // socket reads that returned data
}

type fakeConn struct {
	s    *fakeServer
	nc   net.Conn
	name string
	hb   time.Duration

	wmu sync.Mutex // serialises writes

	// guarded by fakeServer.mu
	subs       map[uint32]*fakeSub
	received   uint64
	persisted  uint64
	highest    uint64
	wantRecv   bool
	heldFlush  []uint64
	unsentPers bool
}

type fakeSub struct {
	id    uint32
	match func(topic []byte) bool
}

func newFakeServer(t testing.TB) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, ln: ln, name: "fake-1", lastPub: map[string]uint64{}, acked: map[string]uint64{}, conns: map[*fakeConn]bool{}, refuse: map[uint64]wire.Code{}}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

func (s *fakeServer) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		fc := &fakeConn{s: s, nc: nc, subs: map[uint32]*fakeSub{}}
		s.wg.Add(1)
		go fc.serve()
	}
}

func (s *fakeServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for fc := range s.conns {
		fc.nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// kill sends an Error frame on every connection and closes them.
func (s *fakeServer) kill(code wire.Code, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for fc := range s.conns {
		fc.send(wire.AppendError(nil, code, text))
		fc.nc.Close()
	}
}

func (s *fakeServer) setHold(h bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold = h
	if !h {
		for fc := range s.conns {
			fc.ackLocked()
		}
	}
}

func (s *fakeServer) stored() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.records)
}

func (fc *fakeConn) send(b []byte) {
	if fc.s.silent.Load() {
		return
	}
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	fc.nc.Write(b)
}

func (fc *fakeConn) fail(code wire.Code, text string) {
	fc.send(wire.AppendError(nil, code, text))
}

func (fc *fakeConn) serve() {
	s := fc.s
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, fc) // release the name before the client sees the close
		s.mu.Unlock()
		fc.nc.Close()
	}()
	buf := make([]byte, 1<<20)
	start, end := 0, 0
	logged := false
	stopHB := make(chan struct{})
	defer close(stopHB)
	for {
		for {
			f, n, err := wire.Split(buf[start:end], s.frameLimit())
			if err != nil {
				if errors.Is(err, wire.ErrTooLarge) {
					fc.fail(wire.CodeTooLarge, err.Error())
				} else {
					fc.fail(wire.CodeMalformed, err.Error())
				}
				return
			}
			if n == 0 {
				break
			}
			start += n
			if !logged {
				if f.Type != wire.TypeLogon {
					fc.fail(wire.CodeNotLoggedOn, "logon first")
					return
				}
				if !fc.logon(f.Body) {
					return
				}
				s.mu.Lock()
				drop := s.dropAfterLogon
				s.mu.Unlock()
				if drop {
					return
				}
				logged = true
				if fc.hb > 0 {
					go fc.heartbeats(stopHB)
				}
				continue
			}
			if !fc.handle(f) {
				return
			}
		}
		s.mu.Lock()
		fc.ackLocked()
		s.mu.Unlock()
		if start == end {
			start, end = 0, 0
		} else if start > 0 {
			copy(buf, buf[start:end])
			end -= start
			start = 0
		}
		if need := wire.Need(buf[:end]); need > len(buf) {
			nb := make([]byte, need)
			copy(nb, buf[:end])
			buf = nb
		}
		if fc.hb > 0 {
			fc.nc.SetReadDeadline(time.Now().Add(2 * fc.hb))
		}
		n, err := fc.nc.Read(buf[end:])
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				fc.fail(wire.CodeHeartbeat, "silent for two intervals")
			}
			return
		}
		s.reads.Add(1)
		end += n
	}
}

func (fc *fakeConn) heartbeats(stop chan struct{}) {
	t := time.NewTicker(fc.hb)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			fc.send(wire.AppendHeartbeat(nil))
		}
	}
}

func (fc *fakeConn) logon(body []byte) bool {
	s := fc.s
	var l wire.Logon
	if err := wire.DecodeLogon(body, &l); err != nil {
		fc.fail(wire.CodeMalformed, err.Error())
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logonError != 0 {
		fc.fail(s.logonError, "refused by test")
		return false
	}
	if l.MaxVersion < wire.Version1 || l.MinVersion > wire.Version2 {
		fc.fail(wire.CodeVersion, "speaks versions 1 and 2 only")
		return false
	}
	fc.name = string(l.Name)
	for o := range s.conns {
		if o.name == fc.name {
			fc.fail(wire.CodeNameInUse, "client name "+fc.name+" is connected")
			return false
		}
	}
	s.conns[fc] = true
	fc.hb = time.Duration(l.HeartbeatMillis) * time.Millisecond
	last := s.lastPub[fc.name]
	acked := last
	if a, ok := s.acked[fc.name]; ok && a < last {
		acked = a
	}
	fc.received, fc.persisted, fc.highest = acked, acked, acked
	r := &wire.LogonReply{Version: min(l.MaxVersion, wire.Version2), HeartbeatMillis: l.HeartbeatMillis, LastPubSeq: last, AckedPubSeq: acked,
		MaxFrame: uint32(s.maxFrame), MaxTopic: uint16(s.maxTopic), Instance: []byte(s.name)}
	fc.send(wire.AppendLogonReply(nil, r))
	s.logons.Add(1)
	return true
}

// ackLocked sends the cumulative acks for what this connection has sent.
func (fc *fakeConn) ackLocked() {
	if fc.wantRecv && fc.highest > fc.received {
		fc.received = fc.highest
		fc.send(wire.AppendAck(nil, wire.AckKindReceived, 0, fc.received, ""))
	}
	if fc.s.hold {
		return
	}
	if fc.highest > fc.persisted || fc.unsentPers {
		fc.persisted = fc.highest
		fc.unsentPers = false
		fc.send(wire.AppendAckPeers(nil, wire.AckKindPersisted, fc.s.syncPeers, 0, fc.persisted, ""))
	}
	for _, tok := range fc.heldFlush {
		fc.send(wire.AppendAck(nil, wire.AckKindFlushed, 0, tok, ""))
	}
	fc.heldFlush = fc.heldFlush[:0]
}

func (fc *fakeConn) handle(f wire.Frame) bool {
	s := fc.s
	s.mu.Lock()
	defer s.mu.Unlock()
	switch f.Type {
	case wire.TypePublish:
		var p wire.Publish
		if err := wire.DecodePublish(f.Body, &p); err != nil {
			fc.fail(wire.CodeMalformed, err.Error())
			return false
		}
		s.publishes.Add(1)
		s.pubSeqs = append(s.pubSeqs, p.PubSeq)
		if p.Ack == wire.AckReceived {
			fc.wantRecv = true
		}
		if code := s.refuse[p.PubSeq]; code != 0 {
			fc.send(wire.AppendAck(nil, wire.AckKindPersisted, code, p.PubSeq, "refused by test"))
			fc.highest = p.PubSeq
			return true
		}
		if p.PubSeq > s.lastPub[fc.name] {
			h := record.Header{Seq: uint64(len(s.records) + 1), Time: time.Now().UnixNano(), Origin: record.ID(s.name), Publisher: record.ID(fc.name), PubSeq: p.PubSeq}
			rec := record.Append(nil, &h, p.Topic, p.Payload)
			s.records = append(s.records, rec)
			s.lastPub[fc.name] = p.PubSeq
			for o := range s.conns {
				for _, sub := range o.subs {
					if sub.match(p.Topic) {
						o.send(wire.AppendDeliver(nil, sub.id, rec))
					}
				}
			}
		}
		fc.highest = p.PubSeq
	case wire.TypeFlush:
		tok, err := wire.DecodeFlush(f.Body)
		if err != nil {
			fc.fail(wire.CodeMalformed, err.Error())
			return false
		}
		fc.heldFlush = append(fc.heldFlush, tok)
		fc.unsentPers = fc.unsentPers || fc.highest > fc.persisted
		fc.ackLocked()
	case wire.TypeSubscribe:
		var m wire.Subscribe
		if err := wire.DecodeSubscribe(f.Body, &m); err != nil {
			fc.fail(wire.CodeMalformed, err.Error())
			return false
		}
		fc.subscribeLocked(&m)
	case wire.TypeUnsubscribe:
		id, err := wire.DecodeUnsubscribe(f.Body)
		if err != nil {
			fc.fail(wire.CodeMalformed, err.Error())
			return false
		}
		if fc.subs[id] == nil {
			fc.send(wire.AppendAck(nil, wire.AckKindUnsubscribed, wire.CodeUnknownSub, uint64(id), "no such subscription"))
			return true
		}
		for i := 0; i < s.late && len(s.records) > 0; i++ {
			fc.send(wire.AppendDeliver(nil, id, s.records[len(s.records)-1]))
		}
		delete(fc.subs, id)
		fc.send(wire.AppendAck(nil, wire.AckKindUnsubscribed, 0, uint64(id), ""))
	case wire.TypeHeartbeat:
		s.heartbeats.Add(1)
	case wire.TypeStatRequest:
		st := wire.Stats{Instance: s.name, Connections: len(s.conns), Stored: uint64(len(s.records))}
		st.Journal.LastSeq = uint64(len(s.records))
		counts := map[string]uint64{}
		for _, r := range s.records {
			v, _, _ := record.Parse(r)
			counts[string(v.Topic())]++
		}
		for t, n := range counts {
			st.Topics = append(st.Topics, wire.TopicStats{Topic: t, Messages: n})
		}
		doc, _ := json.Marshal(&st)
		fc.send(wire.AppendStatReply(nil, doc))
	default:
		fc.fail(wire.CodeUnknownFrame, f.Type.String())
		return false
	}
	return true
}

func (fc *fakeConn) subscribeLocked(m *wire.Subscribe) {
	s := fc.s
	refuse := func(code wire.Code, text string) {
		fc.send(wire.AppendAck(nil, wire.AckKindSubscribed, code, uint64(m.SubID), text))
	}
	if fc.subs[m.SubID] != nil {
		refuse(wire.CodeSubIDInUse, "in use")
		return
	}
	if s.refuseSub != 0 {
		refuse(s.refuseSub, "refused by test")
		return
	}
	topic := string(m.Topic)
	sub := &fakeSub{id: m.SubID}
	switch m.Match {
	case wire.MatchExact:
		sub.match = func(t []byte) bool { return string(t) == topic }
	case wire.MatchPrefix:
		sub.match = func(t []byte) bool { return strings.HasPrefix(string(t), topic) }
	case wire.MatchRegex:
		re, err := regexp.Compile(topic)
		if err != nil {
			refuse(wire.CodeBadPattern, err.Error())
			return
		}
		sub.match = re.Match
	}
	from := len(s.records) // StartNow
	switch m.Start {
	case wire.StartEpoch:
		from = 0
	case wire.StartBookmark:
		b := m.Bookmark(0)
		from = -1
		for i, r := range s.records {
			v, _, _ := record.Parse(r)
			if v.Publisher() == b.Publisher && v.PubSeq() == b.PubSeq {
				from = i + 1
			}
		}
		if from < 0 {
			refuse(wire.CodeBadBookmark, "unknown bookmark "+b.String())
			return
		}
	}
	fc.send(wire.AppendAck(nil, wire.AckKindSubscribed, 0, uint64(m.SubID), ""))
	for _, r := range s.records[from:] {
		v, _, _ := record.Parse(r)
		if sub.match(v.Topic()) {
			fc.send(wire.AppendDeliver(nil, sub.id, r))
		}
	}
	fc.subs[m.SubID] = sub
}

// frameLimit is the largest frame the server reads.
func (s *fakeServer) frameLimit() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.maxFrame > 0 {
		return s.maxFrame
	}
	return wire.DefaultMaxFrame
}

// inject stores a message from publisher name while nobody is connected
// (as if another client had published it), delivering it to no one.
func (s *fakeServer) inject(name, topic string, pubSeq uint64, payload []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := record.Header{Seq: uint64(len(s.records) + 1), Time: time.Now().UnixNano(), Origin: record.ID(s.name), Publisher: record.ID(name), PubSeq: pubSeq}
	s.records = append(s.records, record.Append(nil, &h, []byte(topic), payload))
	s.lastPub[name] = pubSeq
}

// dropConns closes every connection without an Error frame.
func (s *fakeServer) dropConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for fc := range s.conns {
		fc.nc.Close()
	}
}

// seqsSent returns a copy of every pubSeq received so far.
func (s *fakeServer) seqsSent() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.pubSeqs...)
}

// set changes knobs under the server's lock.
func (s *fakeServer) set(f func(s *fakeServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}
