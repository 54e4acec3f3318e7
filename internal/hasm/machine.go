package hasm

import (
	"errors"
	"fmt"
	"time"

	"github.com/tandemhq/tandem/wire"
)

// ErrNoServer: reconnection stopped: the chooser returned no server or the
// delay strategy gave up (the client's ErrNoServer is this value).
var ErrNoServer = errors.New("client: no server available")

// errNoAttempt stands for the last attempt's error before any attempt.
var errNoAttempt = errors.New("none")

// ConnID names one connection attempt (and the connection it becomes).
// The machine numbers them from 1; inputs about an older one are ignored.
type ConnID uint64

// SubID names one subscription of the machine (from 1).
type SubID uint64

// Phase is where the machine is.
type Phase uint8

// Phases.
const (
	PhaseIdle      Phase = iota // before InStart
	PhaseWaiting                // an attempt is due at a timer (ActTimer)
	PhaseDialing                // ActDial issued, its outcome awaited
	PhaseAttaching              // logged on; ActAttach issued, InAttached awaited
	PhaseUp                     // the current connection carries publishes and subscriptions
	PhaseStopped                // for good (Close, or reconnection gave up)
)

func (p Phase) String() string {
	return [...]string{"idle", "waiting", "dialing", "attaching", "up", "stopped"}[p]
}

// State is a connection state reported in an ActEvent (the client's
// State values, in the same order).
type State uint8

// Connection states.
const (
	StateConnected    State = iota + 1 // logged on (first time, or again on the same server)
	StateDisconnected                  // the connection ended (Err says why)
	StateReconnecting                  // an attempt is about to be made (URI)
	StateFailedOver                    // logged on to a different server than before
	StateStopped                       // Close, or reconnection gave up (Err)
)

func (s State) String() string {
	switch s {
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateReconnecting:
		return "reconnecting"
	case StateFailedOver:
		return "failed-over"
	case StateStopped:
		return "stopped"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Event is one connection state change (ActEvent).
type Event struct {
	State    State
	URI      string
	Instance string // Connected, FailedOver
	From     string // FailedOver: the previous server
	Err      error  // Disconnected, Stopped
}

// Cause classifies why an attempt, a connection or a subscription failed.
// The driver maps its errors to it; the machine decides what follows.
type Cause uint8

// Causes.
const (
	CauseOther         Cause = iota // anything else: a network error, a closed connection
	CauseStandby                    // the server is a standby (wire.CodeStandby)
	CauseLogonRefused               // credentials or protocol version refused (retrying that server cannot help)
	CauseGoingAway                  // Error frame CodeStorageFailed or CodeShutdown
	CauseSilent                     // heartbeat timeout: the server went silent
	CauseFatal                      // no attempt can succeed (TLS required of a plaintext client)
	CauseServerRefused              // InSubscribed: the server refused the subscription
	CauseConnGone                   // InSubscribed: the connection ended before the answer
)

// InputKind says what an Input reports.
type InputKind uint8

// Input kinds.
const (
	InStart      InputKind = iota + 1 // Connect: start the connect sequence
	InDialed                          // Conn logged on (Logon)
	InDialFailed                      // Conn's attempt failed (Err, Cause)
	InAttached                        // ActAttach carried out for Conn (Err: the replay failed; Seq: the store's LastSeq)
	InLost                            // the current connection Conn ended (Err, Cause; Seq: its persisted ack, if the driver did not report each with InAcked)
	InAcked                           // Conn's persisted ack advanced to Seq
	InRefused                         // the server refused Seq (Code, Reason); only a permanent code (wire.Code.Permanent) takes it out of the store
	InSubscribed                      // ActSubscribe's outcome for Sub on Conn (Err nil: accepted; Cause; Initial echoed)
	InCancel                          // Connect's context ended before the first logon (Err: its cause; Wrap: the caller's cause, or nil)
	InClose                           // the application closed the client (Err: the driver's ErrClosed)
)

var inputNames = [...]string{"", "start", "dialed", "dial-failed", "attached", "lost", "acked", "refused", "subscribed", "cancel", "close"}

func (k InputKind) String() string {
	if int(k) < len(inputNames) {
		return inputNames[k]
	}
	return fmt.Sprintf("input(%d)", int(k))
}

// Logon is what a logon reply told (InDialed).
type Logon struct {
	LastPubSeq  uint64 // the last publisher sequence the server holds for the name
	AckedPubSeq uint64 // the top of the run its ack point covers (<= LastPubSeq)
	MaxFrame    int    // announced limits; 0: the client's own apply
	MaxTopic    int
	Instance    string
}

// Input is one thing that happened, for Step. Now is its logical time in
// nanoseconds (never decreasing; an older value is taken as the latest).
type Input struct {
	Kind    InputKind
	Now     int64
	Conn    ConnID
	Sub     SubID
	Err     error
	Wrap    error
	Cause   Cause
	Logon   Logon
	Seq     uint64
	Code    wire.Code
	Reason  string
	Initial bool
	// Last (InDialFailed): the driver makes no further attempt (its
	// context ended): the failure is reported, and the machine waits for
	// InCancel or InClose instead of choosing the next attempt.
	Last bool
}

// ActionKind says what an Action asks for.
type ActionKind uint8

// Action kinds.
const (
	ActDial         ActionKind = iota + 1 // connect to URI and log on as Conn (Credentials: ask the authenticator); then InDialed or InDialFailed
	ActTimer                              // call Tick at At (or later); replaces any earlier timer
	ActAttach                             // with a store: Discard through Seq, then call Replayed for every stored message above Seq, in order; then InAttached
	ActNextSeq                            // Conn's next publisher sequence is Seq (after the replay)
	ActUp                                 // Conn (URI) is the current connection: publishes go to it
	ActDown                               // Conn is no longer current (it ended)
	ActClose                              // close Conn
	ActStoreDiscard                       // the publish store drops everything <= Seq
	ActStoreRemove                        // the publish store drops Seq
	ActFailedWrite                        // tell the application Seq was refused for good (Code, Reason)
	ActSubscribe                          // subscribe Sub on Conn as SubName with Start (Resume), SetPosition; then InSubscribed
	ActSubEnded                           // Sub ended with Err (nil: unsubscribed or closed)
	ActEvent                              // report Event
	ActError                              // report Err
	ActStopped                            // the client stopped for good with Err
)

var actionNames = [...]string{"", "dial", "timer", "attach", "next-seq", "up", "down", "close", "store-discard", "store-remove", "failed-write", "subscribe", "sub-ended", "event", "error", "stopped"}

func (k ActionKind) String() string {
	if int(k) < len(actionNames) {
		return actionNames[k]
	}
	return fmt.Sprintf("action(%d)", int(k))
}

// StartKind is how a subscription asked to start.
type StartKind uint8

// Start kinds.
const (
	StartNow        StartKind = iota // at the server's current position
	StartEpoch                       // from the beginning of the journal
	StartMostRecent                  // from the bookmark store's progress (Epoch if none)
	StartOther                       // a bookmark or a time: the driver's own start value
)

// StartMode is what one ActSubscribe carries.
type StartMode uint8

// Start modes.
const (
	ModeOriginal StartMode = iota // the subscription's own start (Now, Epoch or its Other value)
	ModeEpoch                     // from Epoch (MostRecent with no progress recorded)
	ModeResume                    // StartResume with Resume entries (the floors)
	// ModeNow: at the server's current position. Only Broken.ResubscribeAtNow
	// emits it for a re-subscribe (a subscription's own Now start is
	// ModeOriginal).
	ModeNow
)

func (m StartMode) String() string { return [...]string{"original", "epoch", "resume", "now"}[m] }

// Broken holds deliberately broken builds of the machine, for the
// simulator's proof that its checker finds the client loss paths of issue
// "HA client at the edges" with their fixes undone (sim.Break; never set
// elsewhere).
var Broken struct {
	// HighWaterMark: the delivered filter takes every sequence at or below
	// the highest delivered of a publisher as a duplicate (a late message
	// is dropped), as before #11 §1.
	HighWaterMark bool
	// ResubscribeAtNow: a re-subscribe starts at the server's current
	// position instead of resuming (a subscription without a sub id, before
	// #11 §2).
	ResubscribeAtNow bool
	// TrustAckedPubSeq: a logon reply's AckedPubSeq drops the store's
	// messages whatever history the server holds under those sequences
	// (the client before the fix the simulator's soak prompted).
	TrustAckedPubSeq bool
}

// Action is one thing the driver must do. Only the fields its Kind names
// are set.
type Action struct {
	Kind        ActionKind
	Conn        ConnID
	URI         string
	Credentials bool
	At          int64
	Seq         uint64
	Code        wire.Code
	Reason      string
	Sub         SubID
	SubName     string
	Start       StartMode
	Resume      []wire.ResumeEntry
	SetPosition bool // store the server's Position frame as the subscription's fresh progress
	Initial     bool // the subscribe of AddSub (its answer goes to the caller), not a re-subscribe
	Event       Event
	Err         error
}

// Ready is what the machine asks of the driver since the last Advance.
type Ready struct {
	Actions []Action // in order; reused after Advance
}

// Bookmarks is the machine's view of the bookmark store: a subscription's
// resume entries (the floors per origin and publisher), ok false if the
// store knows nothing of it.
type Bookmarks interface {
	MostRecent(sub string) (entries []wire.ResumeEntry, ok bool)
}

// Verdict is the machine's answer about one message.
type Verdict uint8

// Verdicts.
const (
	VerdictHold   Verdict = iota // keep it in the store; no connection to send it on yet
	VerdictSend                  // send it on the current connection (Stored) or the attaching one (Replayed)
	VerdictSkip                  // Replayed: the server holds it durably (<= AckedPubSeq)
	VerdictRefuse                // beyond the server's limits: refused locally (ActStoreRemove, ActFailedWrite queued)
)

func (v Verdict) String() string { return [...]string{"hold", "send", "skip", "refuse"}[v] }

// Config configures a Machine.
type Config struct {
	Name        string    // the client name (generated subscription ids)
	Chooser     Chooser   // required
	Delay       Delay     // required
	Bookmarks   Bookmarks // nil: no progress ever recorded
	Rand        Rand      // generated subscription ids; nil: ids without the random part being random (0)
	StableAfter int64     // ns a connection must stay up (unless it persisted something) before Delay.Reset; default 1s
	// Store: a publish store is in use (publisher sequences, replay,
	// discards and removals are the machine's). Without one only the
	// connect sequence and subscriptions are.
	Store bool
	// NextPubSeq is the first publisher sequence (the store's LastSeq()+1).
	NextPubSeq uint64
	// MaxFrame is the client's own frame limit (used with a server's
	// announced one: the lower applies).
	MaxFrame int
}

type sub struct {
	id      SubID
	name    string
	topic   string
	start   StartKind
	on      ConnID // the connection it is entered on (or being entered on)
	entered bool
}

// Machine is the HA client's decisions. Not safe for concurrent use: a
// driver serialises its inputs.
type Machine struct {
	cfg   Config
	now   int64
	phase Phase

	conn     ConnID // the current attempt or connection
	nextConn ConnID
	uri      string
	creds    bool
	lastURI  string   // the server of the previous connection
	standby  []string // servers that answered standby since the last other outcome
	lastErr  error
	timerAt  int64

	logon       Logon
	upAt        int64
	persisted   uint64 // the current connection's persisted ack
	upPersisted uint64
	nextSeq     uint64
	numbered    bool // a logon fixed nextSeq (Numbered)
	// base: the numbering base, nextSeq-1 at the first logon: sequences
	// above it were numbered by this process. discardTo: what the current
	// attach drops from the store (see dialed).
	base, discardTo uint64
	// firstLast: each server's LastPubSeq the first time this process
	// logged on to it (looked up, never iterated).
	firstLast map[string]uint64

	subs    []*sub
	nextSub SubID
	subGen  uint64

	reconnects, failovers uint64
	stopErr               error

	acts []Action
}

// New returns a machine in PhaseIdle.
func New(cfg Config) *Machine {
	if cfg.StableAfter <= 0 {
		cfg.StableAfter = int64(time.Second)
	}
	if cfg.NextPubSeq == 0 {
		cfg.NextPubSeq = 1
	}
	return &Machine{cfg: cfg, nextSeq: cfg.NextPubSeq}
}

// Phase returns where the machine is.
func (m *Machine) Phase() Phase { return m.phase }

// Current returns the current connection and its server (0, "" unless
// PhaseUp).
func (m *Machine) Current() (ConnID, string) {
	if m.phase != PhaseUp {
		return 0, ""
	}
	return m.conn, m.uri
}

// Err returns why the machine stopped (nil before).
func (m *Machine) Err() error { return m.stopErr }

// Reconnects counts connections lost; Failovers connections made to a
// different server than the previous one.
func (m *Machine) Reconnects() uint64 { return m.reconnects }

// Failovers counts connections made to a different server than the
// previous one.
func (m *Machine) Failovers() uint64 { return m.failovers }

// HasReady reports whether Ready has actions.
func (m *Machine) HasReady() bool { return len(m.acts) > 0 }

// Ready returns the actions to carry out, in order. They stay valid until
// Advance.
func (m *Machine) Ready() Ready { return Ready{Actions: m.acts} }

// Advance acknowledges the last Ready: its actions are done (or being
// done: their outcomes come back as inputs).
func (m *Machine) Advance() {
	clear(m.acts) // drop references (errors, entries)
	m.acts = m.acts[:0]
}

func (m *Machine) emit(a Action) { m.acts = append(m.acts, a) }

func (m *Machine) at(now int64) {
	if now > m.now {
		m.now = now
	}
}

// Tick advances logical time to now; an attempt whose delay has passed is
// dialed.
func (m *Machine) Tick(now int64) {
	m.at(now)
	if m.phase == PhaseWaiting && m.now >= m.timerAt {
		m.dial()
	}
}

// Step feeds one input. Inputs that do not apply (an older connection, a
// stopped machine) are ignored; Step returns an error only for a misuse by
// the driver (an unknown kind, InStart twice).
func (m *Machine) Step(in Input) error {
	m.at(in.Now)
	if m.phase == PhaseStopped && in.Kind != InAcked && in.Kind != InRefused {
		return nil
	}
	switch in.Kind {
	case InStart:
		if m.phase != PhaseIdle {
			return errors.New("hasm: started twice")
		}
		m.connect()
	case InDialed:
		if in.Conn != m.conn || m.phase != PhaseDialing {
			return nil
		}
		m.dialed(in.Logon)
	case InDialFailed:
		if in.Conn != m.conn || m.phase != PhaseDialing {
			return nil
		}
		m.dialFailed(in.Err, in.Cause, in.Last)
	case InAttached:
		if in.Conn != m.conn || m.phase != PhaseAttaching {
			return nil
		}
		m.attached(in.Err, in.Seq)
	case InLost:
		if in.Conn != m.conn || m.phase != PhaseUp {
			return nil
		}
		m.persisted = max(m.persisted, in.Seq)
		m.lost(in.Err, in.Cause)
	case InAcked:
		if m.cfg.Store {
			m.emit(Action{Kind: ActStoreDiscard, Seq: in.Seq})
		}
		if in.Conn == m.conn && in.Seq > m.persisted {
			m.persisted = in.Seq
		}
	case InRefused:
		// Only a refusal that no retry can change takes the message out
		// of the store; another (storage failed, shutting down) leaves it
		// to be re-published on the next connection.
		if in.Code.Permanent() {
			m.refuse(in.Seq, in.Code, in.Reason)
		}
	case InSubscribed:
		m.subscribed(in)
	case InCancel:
		if m.phase == PhaseUp {
			return nil
		}
		err := fmt.Errorf("%w: %w (last error: %w)", ErrNoServer, in.Err, orNone(m.lastErr))
		if in.Wrap != nil {
			err = fmt.Errorf("client: connect: %w (%w)", in.Wrap, err)
		}
		m.stop(err, true)
	case InClose:
		if m.phase == PhaseDialing || m.phase == PhaseAttaching || m.phase == PhaseUp {
			m.emit(Action{Kind: ActClose, Conn: m.conn})
		}
		m.stop(in.Err, false)
	default:
		return fmt.Errorf("hasm: unknown input %v", in.Kind)
	}
	return nil
}

func orNone(err error) error {
	if err == nil {
		return errNoAttempt
	}
	return err
}

// connect is one turn of the connect sequence: choose, delay, dial.
func (m *Machine) connect() {
	uri, creds := m.cfg.Chooser.Current()
	if uri == "" {
		m.stop(fmt.Errorf("%w: %s (last error: %w)", ErrNoServer, m.cfg.Chooser.Error(), orNone(m.lastErr)), true)
		return
	}
	var d int64
	// A server that answered standby sends the next one at once, without
	// the delay strategy, until the round comes back to one of them.
	if len(m.standby) == 0 || contains(m.standby, uri) {
		m.standby = m.standby[:0]
		var err error
		if d, err = m.cfg.Delay.NextDelay(uri, m.now); err != nil {
			m.stop(fmt.Errorf("%w: %w; %s (last error: %w)", ErrNoServer, err, m.cfg.Chooser.Error(), orNone(m.lastErr)), true)
			return
		}
	}
	m.uri, m.creds = uri, creds
	m.emit(Action{Kind: ActEvent, Event: Event{State: StateReconnecting, URI: uri}})
	if d > 0 {
		m.phase, m.timerAt = PhaseWaiting, m.now+d
		m.emit(Action{Kind: ActTimer, At: m.timerAt})
		return
	}
	m.dial()
}

func (m *Machine) dial() {
	m.nextConn++
	m.conn = m.nextConn
	m.phase = PhaseDialing
	m.emit(Action{Kind: ActDial, Conn: m.conn, URI: m.uri, Credentials: m.creds})
}

func (m *Machine) dialFailed(err error, cause Cause, last bool) {
	if cause == CauseFatal { // a configuration error: no retry can succeed
		m.stop(fmt.Errorf("%w: %s: %w", ErrNoServer, m.uri, err), true)
		return
	}
	m.lastErr = err
	if cause == CauseStandby {
		if !contains(m.standby, m.uri) {
			m.standby = append(m.standby, m.uri)
		}
		m.cfg.Chooser.ReportStandby(m.uri, err)
	} else {
		m.standby = m.standby[:0]
		m.cfg.Chooser.ReportFailure(m.uri, err, cause == CauseLogonRefused)
	}
	m.emit(Action{Kind: ActError, Err: fmt.Errorf("client: connect to %s: %w", m.uri, err)})
	if last {
		m.phase, m.timerAt = PhaseWaiting, 1<<63-1 // no timer: InCancel or InClose comes
		return
	}
	m.connect()
}

// dialed: logged on. The delay strategy is not reset here (see lost).
func (m *Machine) dialed(l Logon) {
	m.cfg.Chooser.ReportSuccess(m.uri)
	l.AckedPubSeq = min(l.AckedPubSeq, l.LastPubSeq)
	m.logon = l
	m.persisted = l.AckedPubSeq // the connection's persisted ack starts at the server's ack point
	m.phase = PhaseAttaching
	// Only what the server's ack point covers may leave the store:
	// (AckedPubSeq, LastPubSeq] is stored there but may not be on its sync
	// peers yet, so it is re-published (the server acks a duplicate once
	// durable) rather than trusted.
	//
	// But a logon reply covers sequences, not contents. A client that took
	// its numbering (base) from a server that did not know this name's
	// history (a memory store after a restart, first logged on to an
	// instance the history had not reached) numbers messages that another
	// server holds other messages under: its AckedPubSeq would drop them
	// as persisted, some never sent anywhere. So the range (base, L], L
	// this server's LastPubSeq the first time this process met it, is not
	// trusted: what the store holds above the base is re-published and
	// the server answers for each (a duplicate: acked; another message:
	// sequence-reused, a failed write reported). Found by the simulator.
	m.discardTo = l.AckedPubSeq
	if m.numbered && !Broken.TrustAckedPubSeq {
		first, seen := m.firstLast[m.uri]
		if !seen {
			first = l.LastPubSeq
			m.firstLast[m.uri] = first
		}
		if first > m.base {
			m.discardTo = min(l.AckedPubSeq, m.base)
		}
	}
	m.emit(Action{Kind: ActAttach, Conn: m.conn, URI: m.uri, Seq: m.discardTo})
}

// Replayed decides about one stored message during ActAttach (seq above
// the ack point, in order): VerdictSend to re-publish it on the attaching
// connection, VerdictSkip, or VerdictRefuse when it cannot fit the
// server's limits (ActStoreRemove and ActFailedWrite are queued). topicLen
// is its topic's length, size its whole Publish frame.
func (m *Machine) Replayed(conn ConnID, seq uint64, topicLen, size int) Verdict {
	if conn != m.conn || m.phase != PhaseAttaching {
		return VerdictHold
	}
	if seq <= m.discardTo {
		return VerdictSkip
	}
	if why := m.misfit(topicLen, size); why != "" {
		m.refuse(seq, wire.CodeTooLarge, why)
		return VerdictRefuse
	}
	return VerdictSend
}

func (m *Machine) attached(err error, storeLast uint64) {
	if err != nil {
		m.lastErr = err
		m.emit(Action{Kind: ActClose, Conn: m.conn})
		m.connect()
		return
	}
	if m.cfg.Store {
		m.nextSeq = max(m.nextSeq, storeLast+1, m.logon.LastPubSeq+1)
		if !m.numbered {
			m.base = m.nextSeq - 1
			m.firstLast = map[string]uint64{m.uri: m.logon.LastPubSeq}
		}
		m.numbered = true
		m.emit(Action{Kind: ActNextSeq, Conn: m.conn, Seq: m.nextSeq})
	}
	prev := m.lastURI
	m.lastURI = m.uri
	m.upAt, m.upPersisted = m.now, m.persisted
	m.phase = PhaseUp
	m.emit(Action{Kind: ActUp, Conn: m.conn, URI: m.uri})
	ev := Event{State: StateConnected, URI: m.uri, Instance: m.logon.Instance}
	if prev != "" && prev != m.uri {
		ev.State, ev.From = StateFailedOver, prev
		m.failovers++
	}
	m.emit(Action{Kind: ActEvent, Event: ev})
	for _, s := range m.subs {
		m.enter(s, false)
	}
}

func (m *Machine) lost(err error, cause Cause) {
	uri := m.uri
	m.phase = PhaseWaiting // until connect decides
	m.emit(Action{Kind: ActDown, Conn: m.conn})
	m.emit(Action{Kind: ActEvent, Event: Event{State: StateDisconnected, URI: uri, Err: err}})
	if m.now-m.upAt >= m.cfg.StableAfter || m.persisted > m.upPersisted {
		m.cfg.Delay.Reset() // a connection that worked: a fresh budget
	}
	m.standby = m.standby[:0]
	m.lastErr = nil
	switch cause {
	case CauseStandby: // demoted to passive: the next server now, not counted
		m.standby = append(m.standby, uri)
		m.cfg.Chooser.ReportStandby(uri, err)
	case CauseGoingAway, CauseSilent:
		// Going away or unresponsive, not merely disconnected: fail over
		// rather than wait for it again first.
		m.cfg.Chooser.ReportFailure(uri, err, false)
	}
	m.reconnects++
	m.connect()
}

// stop ends the machine for good.
func (m *Machine) stop(err error, report bool) {
	m.phase = PhaseStopped
	m.stopErr = err
	m.emit(Action{Kind: ActStopped, Err: err})
	m.emit(Action{Kind: ActEvent, Event: Event{State: StateStopped, Err: err}})
	if report && err != nil {
		m.emit(Action{Kind: ActError, Err: err})
	}
	for _, s := range m.subs {
		m.emit(Action{Kind: ActSubEnded, Sub: s.id, Err: err})
	}
	m.subs = m.subs[:0]
}

// misfit says why a publish (topic of topicLen bytes, frame of size bytes)
// exceeds the server's announced limits or the client's own ("" if it
// fits; allocates only when it does not).
func (m *Machine) misfit(topicLen, size int) string {
	if l := m.logon.MaxTopic; l > 0 && topicLen > l {
		return fmt.Sprintf("topic of %d bytes > max-topic %d", topicLen, l)
	}
	maxFrame := m.cfg.MaxFrame
	if l := m.logon.MaxFrame; l > 0 && (maxFrame <= 0 || l < maxFrame) {
		maxFrame = l
	}
	if maxFrame > 0 && size > maxFrame {
		return fmt.Sprintf("%d bytes > max-frame %d", size, maxFrame)
	}
	return ""
}

// refuse: seq leaves the store and the application hears of it once.
func (m *Machine) refuse(seq uint64, code wire.Code, reason string) {
	if m.cfg.Store {
		m.emit(Action{Kind: ActStoreRemove, Seq: seq})
	}
	m.emit(Action{Kind: ActFailedWrite, Seq: seq, Code: code, Reason: reason})
}

// NextPubSeq is the publisher sequence the next stored message takes
// (with a store). The driver stores the message under it, then calls
// Stored. Only valid once Numbered.
func (m *Machine) NextPubSeq() uint64 { return m.nextSeq }

// Numbered reports whether a logon has fixed the publisher sequence (with
// a store): before this process's first logon the store alone cannot know
// it (a memory store after a restart, a store file lost: the server may
// hold this name's messages up to a higher sequence), so a message
// numbered from it could collide with an acknowledged one and leave the
// store at the logon as persisted, never sent. The driver holds publishes
// until then (found by the simulator: sim's publish-before-logon).
func (m *Machine) Numbered() bool { return m.numbered }

// Stored: the message seq (NextPubSeq) is in the publish store. The verdict
// says whether to send it on the current connection now (VerdictSend), to
// leave it for the replay of the next one (VerdictHold), or that it was
// refused locally because it cannot fit the current server's limits
// (VerdictRefuse: ActStoreRemove and ActFailedWrite queued). It does not
// allocate unless it refuses.
func (m *Machine) Stored(seq uint64, topicLen, size int) Verdict {
	if seq >= m.nextSeq {
		m.nextSeq = seq + 1
	}
	if m.phase != PhaseUp {
		return VerdictHold
	}
	if why := m.misfit(topicLen, size); why != "" {
		// Beyond this server's limits: it would refuse it (or end the
		// connection), so it is not sent but reported.
		m.refuse(seq, wire.CodeTooLarge, why)
		return VerdictRefuse
	}
	return VerdictSend
}

// AddSub adds a subscription: name "" generates one
// ("auto-<client name>-<random>-<n>"). topic is for error texts. If a
// connection is up, an ActSubscribe with Initial set is queued (its answer,
// InSubscribed with Initial, goes back to the caller: a refusal ends the
// subscription without an ActError). It returns the id and the name.
func (m *Machine) AddSub(name, topic string, start StartKind) (SubID, string) {
	if name == "" {
		m.subGen++
		var r uint32
		if m.cfg.Rand != nil {
			r = uint32(m.cfg.Rand.Uint64())
		}
		name = fmt.Sprintf("auto-%s-%08x-%d", m.cfg.Name, r, m.subGen)
	}
	m.nextSub++
	s := &sub{id: m.nextSub, name: name, topic: topic, start: start}
	if m.phase == PhaseStopped {
		return s.id, name
	}
	m.subs = append(m.subs, s)
	if m.phase == PhaseUp {
		m.enter(s, true)
	}
	return s.id, name
}

// RemoveSub ends a subscription (Unsubscribe): it is not re-entered.
func (m *Machine) RemoveSub(id SubID) {
	for i, s := range m.subs {
		if s.id == id {
			m.subs = append(m.subs[:i], m.subs[i+1:]...)
			return
		}
	}
}

func (m *Machine) findSub(id SubID) *sub {
	for _, s := range m.subs {
		if s.id == id {
			return s
		}
	}
	return nil
}

// enter queues the (re)subscribe of s on the current connection (once per
// connection). Every subscription is resumable: after its first entry, or
// from the start with MostRecent, it resumes from the bookmark store's
// floors; with nothing recorded it starts at Epoch (MostRecent) or as
// asked, and the server's Position frame becomes its progress.
func (m *Machine) enter(s *sub, initial bool) {
	if s.on == m.conn {
		return
	}
	s.on = m.conn
	a := Action{Kind: ActSubscribe, Conn: m.conn, Sub: s.id, SubName: s.name, Initial: initial}
	if s.entered && Broken.ResubscribeAtNow {
		a.Start = ModeNow
		m.emit(a)
		return
	}
	if s.entered || s.start == StartMostRecent {
		var entries []wire.ResumeEntry
		ok := false
		if m.cfg.Bookmarks != nil {
			entries, ok = m.cfg.Bookmarks.MostRecent(s.name)
		}
		switch {
		case ok:
			a.Start, a.Resume = ModeResume, entries
		case s.start == StartMostRecent:
			a.Start, a.SetPosition = ModeEpoch, true
		default:
			a.SetPosition = true
		}
	} else {
		a.SetPosition = true // Now or Epoch: start afresh
	}
	m.emit(a)
}

func (m *Machine) subscribed(in Input) {
	s := m.findSub(in.Sub)
	if s == nil {
		return
	}
	if in.Err == nil {
		if s.on == in.Conn {
			s.entered = true
		}
		return
	}
	if s.on == in.Conn {
		s.on = 0
	}
	if in.Cause == CauseConnGone {
		return // entered on the next connection
	}
	if in.Initial {
		// The caller gets the error; the subscription is not kept.
		m.RemoveSub(s.id)
		m.emit(Action{Kind: ActSubEnded, Sub: s.id, Err: in.Err})
		return
	}
	if in.Cause == CauseServerRefused {
		// Refused by the server: it ends with the error rather than stay
		// open and dead.
		m.RemoveSub(s.id)
		m.emit(Action{Kind: ActSubEnded, Sub: s.id, Err: in.Err})
	}
	m.emit(Action{Kind: ActError, Err: fmt.Errorf("client: re-subscribe %q: %w", s.topic, in.Err)})
}
