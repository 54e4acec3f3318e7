package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/wire"
)

const pubText = `Publishes each line of standard input as one message on --topic (the
payload is the line without its trailing newline), then waits until every
message is persisted and prints a one-line summary to standard error. Exits 1
if any message was not persisted (refused by the server, or no server could
be reached within --retry-for).

The publisher is the HA client: it connects to the first address of
--servers that answers, and when the connection is lost (a server killed, a
network partition noticed by heartbeats) it fails over to the next one,
re-publishing whatever was not yet persisted. Messages wait in a publish
store until persisted: in memory by default; with --store FILE in a file
that survives this process being killed (--store-sync says how durable:
batch = fdatasync each batch before it is sent, none = write only, message =
fdatasync every message). Run pub again with the same --name and --store
after a crash and it first re-publishes what the servers do not hold; the
servers drop anything sent twice.

Publisher sequences continue after the last one the server (or the store)
holds for --name, so running pub again under the same name appends.

A line that can never be stored (longer than --max-frame or the server's
limit, or refused by the server as too large, a bad topic, not permitted,
or a reused sequence) is not retried: pub publishes the other lines, prints
one line per refused one ("line 2: too-large: 100000 bytes > max-frame
65536") and exits 1. Each distinct error the client reports (a failed
connection attempt, say) is printed the first time, and with its count at
exit if it happened again.

A store file whose last record was cut off by a crash (a torn tail) is
opened without it, and pub says so. A store file with a damaged record
followed by good ones is corrupt: pub exits 1 naming the file and offset,
and changes nothing. --repair-store drops the damaged records first,
reports on standard error exactly what it dropped (offsets, sizes, and the
publisher sequences around each gap), keeps the original as FILE.corrupt,
then runs as usual.
`

func runPub(args []string, stdin io.Reader, _, stderr io.Writer) int {
	fs := newFlagSet("pub", "--topic T [flags] < lines", pubText, stderr)
	servers := fs.String("servers", defaultServer, "servers `ADDR[,ADDR...]` (host:port), equivalent instances to fail over between")
	name := fs.String("name", "", "client `NAME`, the publisher identity (default hostname-pid; required with --store)")
	topic := fs.String("topic", "", "`TOPIC` to publish on (required)")
	window := fs.Int("window", client.DefaultWindow, "max messages published but not yet acknowledged per connection")
	ack := fs.String("ack", "persisted", "acknowledgement asked per message: persisted|received|none (no store without persisted)")
	heartbeat := fs.Duration("heartbeat", client.DefaultHeartbeat, "heartbeat interval; silence for two intervals is a lost connection (0: none)")
	maxFrame := fs.Int("max-frame", wire.DefaultMaxFrame, "largest frame, bytes; bounds the line length")
	storeFile := fs.String("store", "", "file-backed publish store `FILE` (default: in memory)")
	storeSync := fs.String("store-sync", "batch", "file store durability: batch|none|message")
	repair := fs.Bool("repair-store", false, "repair --store first: drop damaged records, report what was dropped, keep the original as FILE.corrupt")
	storeMax := fs.Int("store-max", 1<<20, "most unpersisted messages kept; publishing waits when the store is full")
	retryFor := fs.Duration("retry-for", time.Minute, "after a lost connection, give up when no server could be reached for this long")
	connectFor := fs.Duration("connect-for", 5*time.Second, "give up the first connection after this long")
	sec := addClientSecurityFlags(fs)
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	secOpts, err := sec.options()
	if err != nil {
		fmt.Fprintf(stderr, "tandem pub: %v\n", err)
		return 2
	}
	addrs := serverList(*servers)
	if *topic == "" || len(addrs) == 0 {
		fmt.Fprintln(stderr, "tandem pub: --topic and --servers are required")
		fs.Usage()
		return 2
	}
	var level wire.AckWanted
	switch *ack {
	case "persisted":
		level = wire.AckPersisted
	case "received":
		level = wire.AckReceived
	case "none":
		level = wire.AckNone
	default:
		fmt.Fprintf(stderr, "tandem pub: --ack %q: want persisted, received or none\n", *ack)
		return 2
	}
	durability, err := client.ParseDurability(*storeSync)
	if err != nil {
		fmt.Fprintf(stderr, "tandem pub: --store-sync: %v\n", err)
		return 2
	}
	if *storeFile != "" && (*name == "" || level != wire.AckPersisted) {
		fmt.Fprintln(stderr, "tandem pub: --store needs --name (the same on every run) and --ack persisted")
		return 2
	}
	if *repair && *storeFile == "" {
		fmt.Fprintln(stderr, "tandem pub: --repair-store needs --store")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	errs := newErrorCounter("tandem pub", stderr)
	defer errs.summary()
	ref := &refusals{}
	cfg := client.HAConfig{
		Name:      sec.defaultName("pub", *name, ""),
		Servers:   addrs,
		Heartbeat: *heartbeat,
		Delay:     &client.ExponentialDelayStrategy{Initial: 10 * time.Millisecond, Multiplier: 2, Max: time.Second, MaxTotal: *retryFor, Jitter: 0.2},
		Options: append([]client.Option{client.WithWindow(*window), client.WithAck(level), client.WithMaxFrame(*maxFrame),
			client.WithFailedWriteHandler(ref.failed)}, secOpts...),
		OnError: errs.report,
		OnState: func(e client.Event) {
			switch e.State {
			case client.StateDisconnected:
				fmt.Fprintf(stderr, "tandem pub: lost %s: %v\n", e.URI, e.Err)
			case client.StateFailedOver:
				fmt.Fprintf(stderr, "tandem pub: failed over from %s to %s (%s)\n", e.From, e.URI, e.Instance)
			}
		},
	}
	if *heartbeat == 0 {
		cfg.Heartbeat = -1
	}
	limits := client.StoreLimits{MaxMessages: *storeMax}
	switch {
	case *storeFile != "":
		if *repair {
			rep, err := client.RepairFilePublishStore(*storeFile)
			if err != nil {
				fmt.Fprintf(stderr, "tandem pub: --repair-store: %v\n", err)
				return 1
			}
			fmt.Fprintf(stderr, "tandem pub: %v\n", rep)
		}
		st, err := client.OpenFilePublishStore(*storeFile, durability, limits)
		if err != nil {
			fmt.Fprintf(stderr, "tandem pub: %v\n", err)
			if errors.Is(err, client.ErrStoreCorrupt) {
				fmt.Fprintln(stderr, "tandem pub: --repair-store drops the damaged records (and reports them)")
			}
			return 1
		}
		defer st.Close()
		if err := st.Recovery().Err(); err != nil {
			fmt.Fprintf(stderr, "tandem pub: %v\n", err)
		}
		if n := st.UnpersistedCount(); n > 0 {
			fmt.Fprintf(stderr, "tandem pub: %d unpersisted messages in %s (up to pubseq %d): re-publishing what the server lacks\n", n, *storeFile, st.LastSeq())
		}
		cfg.PublishStore = st
	case level == wire.AckPersisted:
		cfg.PublishStore = client.NewMemoryPublishStore(limits)
	}
	c, err := connectHA(ctx, cfg, *connectFor)
	if err != nil {
		fmt.Fprintf(stderr, "tandem pub: %v\n", err)
		return 1
	}
	defer c.Close()

	start := time.Now()
	n, err := publishLines(ctx, c, []byte(*topic), stdin, *maxFrame, ref)
	if err == nil && level != wire.AckNone {
		err = c.Flush(ctx)
	}
	elapsed := time.Since(start)
	// Refusals by the server arrive through the client's event goroutine;
	// Close runs what is queued, so the list is complete after it.
	c.Close()
	nref := ref.print(stderr)
	rate := float64(n) / max(elapsed.Seconds(), 1e-9)
	if err == nil && nref > 0 {
		fmt.Fprintf(stderr, "tandem pub: %d lines in %v (%.0f msgs/s): %d persisted, %d refused\n", n+ref.local(), elapsed.Round(time.Millisecond), rate, n-ref.remote(), nref)
		return 1
	}
	if err == nil {
		fmt.Fprintf(stderr, "tandem pub: %d messages in %v (%.0f msgs/s), all persisted\n", n, elapsed.Round(time.Millisecond), rate)
		return 0
	}
	fmt.Fprintf(stderr, "tandem pub: %d messages in %v (%.0f msgs/s), %d not known to be persisted: %v\n",
		n, elapsed.Round(time.Millisecond), rate, c.UnpersistedCount(), err)
	return 1
}

// publishLines publishes every line of r and returns how many the client
// accepted. Lines are views into one large buffered reader (no allocation
// per line). A line that cannot be a message (too large for maxFrame, or
// refused by Publish as too large or a bad topic) is recorded in ref and
// skipped.
func publishLines(ctx context.Context, c *client.HAClient, topic []byte, r io.Reader, maxFrame int, ref *refusals) (int, error) {
	maxLine := maxFrame - wire.PublishOverhead - len(topic)
	br := bufio.NewReaderSize(r, max(maxLine+1, 64<<10))
	n, lineNo := 0, 0
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Longer than any message: skip to its end, counting.
			size := len(line)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				size += len(line)
			}
			if len(line) > 0 && line[len(line)-1] == '\n' {
				size--
			}
			lineNo++
			ref.skip(lineNo, wire.CodeTooLarge, fmt.Sprintf("%d bytes > max-frame %d", wire.PublishOverhead+len(topic)+size, maxFrame))
			line = nil
		}
		if len(line) > 0 {
			lineNo++
			if line[len(line)-1] == '\n' {
				line = line[:len(line)-1]
			}
			seq, perr := c.PublishBytes(ctx, topic, line)
			switch {
			case perr == nil:
				ref.published(seq, lineNo)
				n++
			case errors.Is(perr, client.ErrTooLarge):
				ref.skip(lineNo, wire.CodeTooLarge, strings.TrimPrefix(perr.Error(), client.ErrTooLarge.Error()+": "))
			case errors.Is(perr, client.ErrBadTopic):
				ref.skip(lineNo, wire.CodeBadTopic, "topic "+strconv.Quote(string(topic)))
			default:
				return n, perr
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("reading standard input: %w", err)
		}
	}
}

// refusals maps the messages refused for good back to input lines. Lines
// Publish accepts usually get consecutive publisher sequences, so the map
// is a short list of runs (first sequence, its line), a new run starting
// only where a line was skipped or the sequence jumped: no allocation per
// line.
type refusals struct {
	mu       sync.Mutex
	runs     []seqRun
	nextSeq  uint64
	nextLine int
	skipped  []refusal // lines never published
	server   []refusal // by sequence, from the failed-write handler
}

type seqRun struct {
	seq  uint64
	line int
}

type refusal struct {
	line   int
	seq    uint64
	code   wire.Code
	reason string
}

// published records that line went out with sequence seq.
func (r *refusals) published(seq uint64, line int) {
	r.mu.Lock()
	if len(r.runs) == 0 || seq != r.nextSeq || line != r.nextLine {
		r.runs = append(r.runs, seqRun{seq: seq, line: line})
	}
	r.nextSeq, r.nextLine = seq+1, line+1
	r.mu.Unlock()
}

func (r *refusals) skip(line int, code wire.Code, reason string) {
	r.mu.Lock()
	r.skipped = append(r.skipped, refusal{line: line, code: code, reason: reason})
	r.mu.Unlock()
}

// failed is the HA client's failed-write handler.
func (r *refusals) failed(seq uint64, code wire.Code, reason string) {
	r.mu.Lock()
	r.server = append(r.server, refusal{seq: seq, code: code, reason: reason})
	r.mu.Unlock()
}

func (r *refusals) local() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.skipped)
}

func (r *refusals) remote() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.server)
}

// lineOf returns the input line of sequence seq (0: unknown); the latest
// run that covers it wins.
func (r *refusals) lineOf(seq uint64) int {
	for i := len(r.runs) - 1; i >= 0; i-- {
		if run := r.runs[i]; run.seq <= seq {
			return run.line + int(seq-run.seq)
		}
	}
	return 0
}

// print writes one line per refused input line, in line order, and returns
// how many.
func (r *refusals) print(w io.Writer) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	all := append([]refusal(nil), r.skipped...)
	for _, f := range r.server {
		f.line = r.lineOf(f.seq)
		all = append(all, f)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].line < all[j].line })
	for _, f := range all {
		if f.line == 0 {
			fmt.Fprintf(w, "pubseq %d: %s: %s\n", f.seq, f.code, f.reason)
			continue
		}
		fmt.Fprintf(w, "line %d: %s: %s\n", f.line, f.code, f.reason)
	}
	return len(all)
}

// errorCounter prints each distinct error the HA client reports the first
// time it comes, and at the end how often those that came again came in
// all, so a retry loop is one line, not thousands.
type errorCounter struct {
	prefix string
	w      io.Writer
	mu     sync.Mutex
	counts map[string]int
	order  []string
}

func newErrorCounter(prefix string, w io.Writer) *errorCounter {
	return &errorCounter{prefix: prefix, w: w, counts: map[string]int{}}
}

// report is the HAConfig.OnError handler. The error that stops the client
// (ErrNoServer) is left to the caller, which gets it from Connect, Publish
// or Flush.
func (e *errorCounter) report(err error) {
	if errors.Is(err, client.ErrNoServer) {
		return
	}
	msg := err.Error()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.counts[msg]++
	if e.counts[msg] == 1 {
		e.order = append(e.order, msg)
		fmt.Fprintf(e.w, "%s: %s\n", e.prefix, msg)
	}
}

// summary prints the count of every error reported more than once.
func (e *errorCounter) summary() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, msg := range e.order {
		if n := e.counts[msg]; n > 1 {
			fmt.Fprintf(e.w, "%s: %d times in all: %s\n", e.prefix, n, msg)
		}
	}
}

// connectHA creates an HA client and makes its first connection within
// connectFor (the same sequence as every reconnect).
func connectHA(ctx context.Context, cfg client.HAConfig, connectFor time.Duration) (*client.HAClient, error) {
	c, err := client.NewHA(cfg)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, connectFor)
	defer cancel()
	if err := c.Connect(cctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
