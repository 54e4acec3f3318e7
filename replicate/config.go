// Package replicate copies stored messages between Tandem instances, peer
// to peer, in any topology: no quorum, no controller, no leader. Each
// instance ships the records of its own journal to its destinations as they
// are stored (no re-encoding), and stores what its peers ship to it.
//
// Decisions and I/O are kept apart: which records a destination gets
// (filter.go), when a sync destination is downgraded or upgraded (mode.go),
// where a destination's stream resumes or whether its position is a fork
// (identity.go, which also holds the positions files) and the link
// protocol's frames (proto.go) are pure code with their own tests; links,
// destinations' senders and the replicator (link.go, destination.go,
// replicator.go, ringio.go) do the socket work. A stream is the records of
// one journal, named by its id (Config.JournalID): a wiped data directory
// is a new stream, a restored old copy is detected as a fork.
// docs/replication.md explains the topologies, identity and forks, and
// what sync means for a publisher's ack. Links are authenticated before
// any data moves: only listed peers (Config.Destinations) with valid names
// (ValidPeerName), each side proving the shared secret with a role-
// labelled HMAC over the whole handshake (proto.go), optionally inside
// mutual TLS (Config.TLS); docs/security.md, "Replication links", has the
// threat model.
package replicate

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// minMaxFrame is the smallest Config.MaxFrame: room for a batch of one
// record with a short topic and a 64 KiB payload.
const minMaxFrame = 128 << 10

// Mode is how a destination's acknowledgments count for publishers.
type Mode uint8

// Destination modes.
const (
	// Async destinations never hold a publisher's persisted ack.
	Async Mode = iota
	// Sync destinations hold every persisted ack until they have the message
	// on disk, unless downgraded.
	Sync
)

func (m Mode) String() string {
	if m == Sync {
		return "sync"
	}
	return "async"
}

// Destination is one instance this instance replicates to.
type Destination struct {
	Name string
	// Addr is the peer's replication address; empty means accept-only: the
	// peer connects to us (a peer in a DMZ) and we never dial. An instance
	// with two addresses (a shared-store pair, only one of which runs)
	// is written H1:P|H2:P: the dialer tries them in turn (Addrs).
	Addr string
	Mode Mode
	// Topics, when set, selects the topics the destination gets.
	Topics *regexp.Regexp
	// Passthrough forwards messages this instance received by replication
	// too, not only those first published to it.
	Passthrough bool
	// ReceiveOnly: the peer is accepted and ships its stream here, and
	// this instance ships nothing to it (a one-way topology). It has no
	// address: it dials this instance.
	ReceiveOnly bool
}

// Addrs returns the addresses in Addr (none for an accept-only peer).
func (d Destination) Addrs() []string {
	if d.Addr == "" {
		return nil
	}
	return strings.Split(d.Addr, "|")
}

// maxPeerName is the longest peer name, in bytes.
const maxPeerName = 64

// ErrPeerName wraps an invalid instance or peer name.
var ErrPeerName = errors.New("replicate: bad peer name")

// ValidPeerName checks an instance or peer name: it matches
// [A-Za-z0-9][A-Za-z0-9._-]{0,63}, so it is never "." or "..", never
// holds a path separator and can name a positions file. A name from the
// network is checked before it names anything.
func ValidPeerName(name string) error {
	if name == "" || len(name) > maxPeerName {
		return fmt.Errorf("%w: %q: want 1 to %d characters of [A-Za-z0-9._-], starting with a letter or digit", ErrPeerName, name, maxPeerName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return fmt.Errorf("%w: %q: want 1 to %d characters of [A-Za-z0-9._-], starting with a letter or digit", ErrPeerName, name, maxPeerName)
		}
	}
	return nil
}

// ErrConfig wraps every configuration error.
var ErrConfig = errors.New("replicate: bad configuration")

// ParseDestination parses NAME=HOST:PORT[|HOST:PORT...][,sync|async][,topics=REGEX][,passthrough],
// NAME alone (accept-only) or NAME,receive-only (accepted, ships here,
// gets nothing). The default mode is sync. NAME must pass ValidPeerName.
func ParseDestination(s string) (Destination, error) {
	bad := func(format string, args ...any) (Destination, error) {
		return Destination{}, fmt.Errorf("%w: peer %q: %s", ErrConfig, s, fmt.Sprintf(format, args...))
	}
	d := Destination{Mode: Sync}
	parts := strings.Split(s, ",")
	head := parts[0]
	if name, addr, ok := strings.Cut(head, "="); ok {
		d.Name, d.Addr = name, addr
		var seen []string
		for _, a := range strings.Split(addr, "|") {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return bad("address %q: %v", a, err)
			}
			if slices.Contains(seen, a) {
				return bad("address %q listed twice", a)
			}
			seen = append(seen, a)
		}
	} else {
		d.Name = head
	}
	if err := ValidPeerName(d.Name); err != nil {
		return Destination{}, fmt.Errorf("%w: peer %q: %w", ErrConfig, s, err)
	}
	// topics=REGEX may itself contain commas: everything after "topics=" up
	// to a following ",sync", ",async" or ",passthrough" option belongs to it.
	for i := 1; i < len(parts); i++ {
		p := parts[i]
		switch {
		case p == "sync":
			d.Mode = Sync
		case p == "async":
			d.Mode = Async
		case p == "passthrough":
			d.Passthrough = true
		case p == "receive-only":
			d.ReceiveOnly = true
		case strings.HasPrefix(p, "topics="):
			expr := strings.TrimPrefix(p, "topics=")
			for i+1 < len(parts) && !isOption(parts[i+1]) {
				i++
				expr += "," + parts[i]
			}
			re, err := regexp.Compile(expr)
			if err != nil {
				return bad("topics regex: %v", err)
			}
			d.Topics = re
		default:
			return bad("unknown option %q (want sync, async, topics=REGEX, passthrough or receive-only)", p)
		}
	}
	if d.ReceiveOnly && d.Addr != "" {
		return bad("a receive-only peer has no address (it dials this instance)")
	}
	return d, nil
}

func isOption(p string) bool {
	return p == "sync" || p == "async" || p == "passthrough" || p == "receive-only" || strings.HasPrefix(p, "topics=")
}

// String renders d in the form ParseDestination reads.
func (d Destination) String() string {
	s := d.Name
	if d.Addr != "" {
		s += "=" + d.Addr
	}
	s += "," + d.Mode.String()
	if d.Topics != nil {
		s += ",topics=" + d.Topics.String()
	}
	if d.Passthrough {
		s += ",passthrough"
	}
	if d.ReceiveOnly {
		s += ",receive-only"
	}
	return s
}

// Config configures a Replicator.
type Config struct {
	// Self is this instance's name; peers must know it by this name.
	Self string
	// Listen is where peers connect (empty: never accept).
	Listen string
	// Secret authenticates links: both ends prove they know it (role-
	// labelled HMACs over the handshake transcript, proto.go; it is never
	// sent). Empty means an empty key: only the peer list and names are
	// checked (the command line refuses that on a non-loopback listener
	// without TLS).
	Secret []byte
	// TLS, when set, runs every link over TLS: the listener hands it to
	// tls.Server (set ClientAuth: tls.RequireAndVerifyClientCert and
	// ClientCAs for mutual TLS), dialers to tls.Client (RootCAs,
	// Certificates; ServerName is set to the host dialed when empty). The
	// secret handshake runs inside it.
	TLS *tls.Config
	// Destinations are the instances we replicate to, and the only peers
	// accepted (with the ReceiveOnly ones, which get nothing): a Hello
	// from any other name is refused and logged with its address.
	Destinations []Destination
	// MaxHandshakes caps the accepted connections whose handshake has not
	// completed (not yet proven); one more is closed at once and logged
	// (rate-limited). Default DefaultMaxHandshakes. Each handshake has a
	// deadline (handshakeTimeout: 1 to 5 s).
	MaxHandshakes int
	// JournalID is the id of this instance's journal (journal.Journal.ID):
	// the identity of the stream this instance ships. Its records' origin
	// is record.OriginEpochID(Self, JournalID, Epoch). The engine fills it.
	JournalID record.JournalID
	// Epoch is this run's origin epoch (the engine draws one at every
	// start; 0: none, the origin is record.OriginID(Self, JournalID)).
	Epoch uint32
	// DowngradeAfter: a sync destination whose oldest unacknowledged
	// message is older than this, or that has been disconnected (or its
	// link refused, a fork) for longer than this, stops holding acks; a
	// restarted instance holds acks for each sync destination until it has
	// been reached or this age has passed. Never: strict, acks wait for
	// the destination however long it is away. Default 1s.
	DowngradeAfter time.Duration
	// UpgradeBelow: a downgraded destination that is connected and whose
	// lag is below this holds acks again. Default 100ms; must be below
	// DowngradeAfter.
	UpgradeBelow time.Duration
	// Heartbeat is how often an idle link sends a heartbeat; a link silent
	// for three intervals is closed. Default 250ms.
	Heartbeat time.Duration
	// BatchBytes bounds one batch of records. Default 1 MiB.
	BatchBytes int
	// MaxFrame is the largest link frame this instance reads, sent to
	// peers in the Hello: a source never ships a destination a batch
	// larger than the destination's MaxFrame, and skips (for that
	// destination) a record that alone does not fit. Default
	// DefaultMaxFrame; the engine raises it so that every record it can
	// store itself fits (FrameFor).
	MaxFrame int
	// HoldAlarmBytes: when the journal a destination has not acknowledged
	// (what retention must keep for it) exceeds this, it is logged (at
	// most once a minute) and flagged in stat (HoldAlarm). Default
	// DefaultHoldAlarmBytes; negative disables the alarm.
	HoldAlarmBytes int64
	// WindowBytes bounds the bytes sent to a destination and not yet
	// acknowledged. Default 64 MiB.
	WindowBytes int
	// PinSenders pins each destination's sender goroutine (locked to its
	// OS thread) to core SenderCPU (see tandem tune).
	PinSenders bool
	SenderCPU  int
	// StateDir holds the positions files (where each peer's stream is
	// durable up to). Default: none (positions are learned at connect).
	StateDir string
	// IO selects how an established link moves its bytes; the handshake
	// always runs on the net.Conn.
	//
	//   - IONet ("net", or empty): the net.Conn, through Go's netpoller;
	//     a batch is copied out of the journal into one buffer.
	//   - IORing ("ring"): the socket's fd through io_uring (package
	//     uring): a reader goroutine with its own ring doing recv, and the
	//     writers (batches, acks, heartbeats) through a second ring. A
	//     batch is gathered straight from the journal mapping (no copy in
	//     user space), with IORING_OP_SENDMSG_ZC when it is at least
	//     ZeroCopyMin bytes and the kernel has it, else IORING_OP_SENDMSG.
	//     When io_uring cannot be used here (uring.Available) the links
	//     use IONet and the reason is logged.
	//
	// The engine sets it from its backend (io_uring: IORing, epoll: IONet)
	// when left empty.
	IO string
	// ZeroCopyMin is the smallest batch (bytes) sent with SENDMSG_ZC in
	// IORing mode; smaller ones are gathered with a copying SENDMSG.
	// 0 means DefaultZeroCopyMin; negative never uses zero copy. A link
	// stops using zero copy once the kernel reports it copied the data
	// anyway (loopback, a device without scatter-gather): see
	// zcCopiedLimit in ringio.go.
	ZeroCopyMin int
}

// Never as Config.DowngradeAfter makes sync destinations strict: they are
// never downgraded, publishers' acks wait for them however long they are
// away.
const Never = time.Duration(math.MaxInt64)

// DefaultMaxFrame is Config.MaxFrame's default: a 1 MiB batch plus the
// largest frame a client may send by default.
const DefaultMaxFrame = 2*(1<<20) + wire.DefaultMaxFrame

// DefaultMaxHandshakes is Config.MaxHandshakes's default: far more than
// the peers an instance lists, few enough that a flood of unauthenticated
// connections costs little.
const DefaultMaxHandshakes = 32

// DefaultHoldAlarmBytes is Config.HoldAlarmBytes's default: 1 GiB.
const DefaultHoldAlarmBytes = 1 << 30

// FrameFor returns the link frame limit (Config.MaxFrame) an instance
// needs to take every record of at most maxRecord bytes in a batch of its
// own: at least DefaultMaxFrame.
func FrameFor(maxRecord int) int {
	return max(DefaultMaxFrame, maxRecord+batchHeaderSize)
}

// Link I/O modes (Config.IO).
const (
	IONet  = "net"
	IORing = "ring"
)

// DefaultZeroCopyMin is Config.ZeroCopyMin's default. Below it the page
// pinning and the second completion of a zero-copy send cost more than the
// copy they save: BenchmarkRingBatchSend (ringio_test.go) has SENDMSG_ZC
// 30% slower than a copying SENDMSG at 4 and 16 KiB batches. Above it the
// saving grows with the batch on a NIC that really sends from the pages;
// on loopback the kernel copies anyway (and links then stop using zero
// copy), so re-measure the crossover on the target hardware.
const DefaultZeroCopyMin = 64 << 10

func (c *Config) setDefaults() {
	if c.DowngradeAfter == 0 {
		c.DowngradeAfter = time.Second
	}
	if c.UpgradeBelow == 0 {
		c.UpgradeBelow = 100 * time.Millisecond
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 250 * time.Millisecond
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = 1 << 20
	}
	if c.WindowBytes == 0 {
		c.WindowBytes = 64 << 20
	}
	if c.IO == "" {
		c.IO = IONet
	}
	if c.ZeroCopyMin == 0 {
		c.ZeroCopyMin = DefaultZeroCopyMin
	}
	if c.MaxFrame == 0 {
		c.MaxFrame = DefaultMaxFrame
	}
	if c.HoldAlarmBytes == 0 {
		c.HoldAlarmBytes = DefaultHoldAlarmBytes
	}
	if c.MaxHandshakes == 0 {
		c.MaxHandshakes = DefaultMaxHandshakes
	}
}

// Validate checks the configuration: names, no destination twice, none
// that is this instance itself, upgrade below downgrade.
func (c *Config) Validate() error {
	if err := ValidPeerName(c.Self); err != nil {
		return fmt.Errorf("%w: instance name: %w", ErrConfig, err)
	}
	seen := map[string]bool{}
	for _, d := range c.Destinations {
		if err := ValidPeerName(d.Name); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
		if d.ReceiveOnly && d.Addr != "" {
			return fmt.Errorf("%w: receive-only peer %q has an address", ErrConfig, d.Name)
		}
		if d.Name == c.Self {
			return fmt.Errorf("%w: peer %q is this instance itself", ErrConfig, d.Name)
		}
		if seen[d.Name] {
			return fmt.Errorf("%w: peer %q listed twice", ErrConfig, d.Name)
		}
		seen[d.Name] = true
		if d.Mode != Sync && d.Mode != Async {
			return fmt.Errorf("%w: peer %q: unknown mode %d", ErrConfig, d.Name, d.Mode)
		}
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return fmt.Errorf("%w: repl-listen %q: %v", ErrConfig, c.Listen, err)
		}
	}
	switch c.IO {
	case "", IONet, IORing:
	default:
		return fmt.Errorf("%w: link I/O %q (want %q or %q)", ErrConfig, c.IO, IONet, IORing)
	}
	if c.DowngradeAfter < 0 || c.UpgradeBelow < 0 {
		return fmt.Errorf("%w: negative downgrade-after %v or upgrade-below %v", ErrConfig, c.DowngradeAfter, c.UpgradeBelow)
	}
	if c.MaxHandshakes < 0 {
		return fmt.Errorf("%w: negative max-handshakes %d", ErrConfig, c.MaxHandshakes)
	}
	if c.MaxFrame != 0 && (c.MaxFrame < minMaxFrame || c.MaxFrame > math.MaxUint32) {
		return fmt.Errorf("%w: link max-frame %d is not in [%d, %d]", ErrConfig, c.MaxFrame, minMaxFrame, uint32(math.MaxUint32))
	}
	if c.UpgradeBelow != 0 && c.DowngradeAfter != 0 && c.UpgradeBelow >= c.DowngradeAfter {
		return fmt.Errorf("%w: upgrade-below %v must be below downgrade-after %v", ErrConfig, c.UpgradeBelow, c.DowngradeAfter)
	}
	return nil
}
