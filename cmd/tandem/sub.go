package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/record"
)

const subText = `Subscribes to --topic and prints each message's payload as one line on
standard output, in delivery order, until --count messages have arrived,
--idle passes with no message, or it is interrupted. Output is buffered and
flushed at least every 20ms, and at exit.

Topic matching: exact by default; --prefix matches every topic starting with
--topic; --regex treats --topic as a Go RE2 expression. A topic ending in '*'
with neither --prefix nor --regex is a prefix match of what precedes the '*'
("orders.*" matches "orders.new").

--from is epoch (the whole journal, then live), now (only new messages), a
bookmark as printed by --format json ("PUBLISHER:PUBSEQ:SEQ"), to resume
right after that message, an RFC 3339 time ("2026-12-04T09:30:00Z", a
fraction and an offset allowed), to start at the first message the server
stored at or after it (in its journal's order; everything after it follows),
or recent (with --sub-id: right after the last message this subscription
processed; epoch the first time). --format json
prints one object per line:
{"bookmark":"...","topic":"...","timestamp":"RFC3339Nano","payload":"..."}.

sub is the HA client: when the connection is lost it fails over to the next
address of --servers and re-enters the subscription. With --sub-id ID and
--bookmark-store FILE the subscription is resumable: each message is marked
processed (discarded) once printed, the progress is written to FILE after
the output it covers has been written, and after a failover, or when sub is
run again with the same --sub-id and FILE (even after kill -9), it resumes
right after the last message processed, on either instance of a sync pair.
Without --sub-id the client generates an id (printed on standard error)
and keeps its progress in memory: after a failover it resumes right after
the last message printed, as with --sub-id, but only for the life of this
process; to resume in a later run, pass an id with --sub-id and
--bookmark-store. Each distinct error the client reports is printed the
first time, and with its count at exit if it happened again. A subscription
the server refuses when it is re-entered after a failover ends sub with the
error (exit 1). Progress is the set of messages processed (late ones below
a processed message are still delivered, once), see docs/client.md.

A bookmark store file with a damaged record followed by good ones is
corrupt: sub exits 1 naming the file and offset, and changes nothing.
--repair-store drops the damaged records first (their progress is lost:
messages may be printed again, not lost), reports exactly what it dropped
on standard error, keeps the original as FILE.corrupt, then runs as usual.
A record cut off by a crash (a torn tail) is dropped and reported.
`

func runSub(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("sub", "--topic T [flags]", subText, stderr)
	servers := fs.String("servers", defaultServer, "server `ADDR[,ADDR...]` (host:port)")
	name := fs.String("name", "", "client `NAME` (default hostname-pid)")
	topic := fs.String("topic", "", "`TOPIC` or pattern to subscribe to (required)")
	prefix := fs.Bool("prefix", false, "match topics starting with --topic")
	regex := fs.Bool("regex", false, "match topics against --topic as a regular expression")
	from := fs.String("from", "", "where to start: `epoch|now|recent|BOOKMARK|RFC3339-TIME` (default now; recent with --sub-id)")
	subID := fs.String("sub-id", "", "resumable subscription `ID` (with --bookmark-store)")
	bmFile := fs.String("bookmark-store", "", "`FILE` keeping the progress of --sub-id (default: in memory)")
	repair := fs.Bool("repair-store", false, "repair --bookmark-store first: drop damaged records, report what was dropped, keep the original as FILE.corrupt")
	retryFor := fs.Duration("retry-for", time.Minute, "after a lost connection, give up when no server could be reached for this long")
	connectFor := fs.Duration("connect-for", 5*time.Second, "give up the first connection after this long")
	count := fs.Int("count", 0, "stop after `N` messages (0: no limit)")
	idle := fs.Duration("idle", 0, "stop after `DURATION` with no message (0: never)")
	format := fs.String("format", "text", "output format: text|json")
	heartbeat := fs.Duration("heartbeat", client.DefaultHeartbeat, "heartbeat interval (0: none)")
	sec := addClientSecurityFlags(fs)
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	addrs := serverList(*servers)
	if *topic == "" || len(addrs) == 0 {
		fmt.Fprintln(stderr, "tandem sub: --topic and --servers are required")
		fs.Usage()
		return 2
	}
	secOpts, err := sec.options()
	if err != nil {
		fmt.Fprintf(stderr, "tandem sub: %v\n", err)
		return 2
	}
	if *prefix && *regex {
		fmt.Fprintln(stderr, "tandem sub: --prefix and --regex exclude each other")
		return 2
	}
	if *format != "text" && *format != "json" {
		fmt.Fprintf(stderr, "tandem sub: --format %q: want text or json\n", *format)
		return 2
	}
	if *bmFile != "" && *subID == "" {
		fmt.Fprintln(stderr, "tandem sub: --bookmark-store needs --sub-id")
		return 2
	}
	if *repair && *bmFile == "" {
		fmt.Fprintln(stderr, "tandem sub: --repair-store needs --bookmark-store")
		return 2
	}
	var subOpts []client.SubOption
	t := *topic
	switch {
	case *prefix:
		subOpts = append(subOpts, client.Prefix())
	case *regex:
		subOpts = append(subOpts, client.Regex())
	case strings.HasSuffix(t, "*") && len(t) > 1:
		t = strings.TrimSuffix(t, "*")
		subOpts = append(subOpts, client.Prefix())
	}
	if *from == "" {
		*from = "now"
		if *subID != "" {
			*from = "recent"
		}
	}
	switch *from {
	case "epoch":
		subOpts = append(subOpts, client.From(client.Epoch))
	case "now":
		subOpts = append(subOpts, client.From(client.Now))
	case "recent":
		if *subID == "" {
			fmt.Fprintln(stderr, "tandem sub: --from recent needs --sub-id")
			return 2
		}
		subOpts = append(subOpts, client.From(client.MostRecent))
	default:
		if at, ok, err := parseFromTime(*from); ok {
			subOpts = append(subOpts, client.From(client.Time(at)))
			break
		} else if err != nil {
			fmt.Fprintf(stderr, "tandem sub: --from %q: %v\n", *from, err)
			return 2
		}
		b, err := record.ParseBookmark(*from)
		if err != nil {
			fmt.Fprintf(stderr, "tandem sub: --from %q: not epoch, now, recent, an RFC 3339 time (2026-12-04T09:30:00Z) or a bookmark: %v\n", *from, err)
			return 2
		}
		subOpts = append(subOpts, client.From(client.Bookmark(b)))
	}
	if *subID != "" {
		subOpts = append(subOpts, client.WithSubID(*subID))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var bms client.BookmarkStore
	if *bmFile != "" {
		if *repair {
			rep, err := client.RepairFileBookmarkStore(*bmFile)
			if err != nil {
				fmt.Fprintf(stderr, "tandem sub: --repair-store: %v\n", err)
				return 1
			}
			fmt.Fprintf(stderr, "tandem sub: %v\n", rep)
		}
		fb, err := client.OpenFileBookmarkStore(*bmFile, client.SyncBatch)
		if err != nil {
			fmt.Fprintf(stderr, "tandem sub: %v\n", err)
			if errors.Is(err, client.ErrStoreCorrupt) {
				fmt.Fprintln(stderr, "tandem sub: --repair-store drops the damaged records (and reports them)")
			}
			return 1
		}
		defer fb.Close()
		if err := fb.Recovery().Err(); err != nil {
			fmt.Fprintf(stderr, "tandem sub: %v\n", err)
		}
		bms = fb
	}
	errs := newErrorCounter("tandem sub", stderr)
	defer errs.summary()
	cfg := client.HAConfig{
		OnError:       errs.report,
		Name:          sec.defaultName("sub", *name, ""),
		Options:       secOpts,
		Servers:       addrs,
		Heartbeat:     *heartbeat,
		BookmarkStore: bms,
		Delay:         &client.ExponentialDelayStrategy{Initial: 10 * time.Millisecond, Multiplier: 2, Max: time.Second, MaxTotal: *retryFor, Jitter: 0.2},
		OnState: func(e client.Event) {
			switch e.State {
			case client.StateDisconnected:
				fmt.Fprintf(stderr, "tandem sub: lost %s: %v\n", e.URI, e.Err)
			case client.StateFailedOver:
				fmt.Fprintf(stderr, "tandem sub: failed over from %s to %s (%s)\n", e.From, e.URI, e.Instance)
			}
		},
	}
	if *heartbeat == 0 {
		cfg.Heartbeat = -1
	}
	c, err := connectHA(ctx, cfg, *connectFor)
	if err != nil {
		fmt.Fprintf(stderr, "tandem sub: %v\n", err)
		return 1
	}
	defer c.Close()

	// Every HA subscription is resumable (an id is generated without
	// --sub-id): discarding what was printed makes a failover resume right
	// after it.
	p := &printer{w: bufio.NewWriterSize(stdout, 256<<10), json: *format == "json", limit: *count, full: make(chan struct{}), bms: c.BookmarkStore()}
	sub, err := c.Subscribe(ctx, t, append(subOpts, client.WithHandler(p.print))...)
	if err != nil {
		fmt.Fprintf(stderr, "tandem sub: %v\n", err)
		return 1
	}
	if *subID == "" {
		fmt.Fprintf(stderr, "tandem sub: subscription id %s (generated: resumes across failovers while this process runs; to resume in a later run, use --sub-id ID --bookmark-store FILE)\n", sub.Name)
	}

	// Flush the output when a tick passes without a message; stop on
	// --count, --idle, a signal or the end of the connection.
	tick := 20 * time.Millisecond
	if *idle > 0 {
		tick = min(tick, max(*idle/4, time.Millisecond))
	}
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	seen, lastChange := 0, time.Now()
	rc := 0
loop:
	for {
		select {
		case <-p.full:
			break loop
		case <-ctx.Done():
			break loop
		case <-sub.Done():
			if err := sub.Err(); err != nil {
				fmt.Fprintf(stderr, "tandem sub: %v\n", err)
				rc = 1
			}
			break loop
		case now := <-ticker.C:
			p.mu.Lock()
			n, werr := p.n, p.err
			if p.w.Buffered() > 0 {
				werr = p.flushLocked()
			}
			p.mu.Unlock()
			if werr != nil {
				fmt.Fprintf(stderr, "tandem sub: writing output: %v\n", werr)
				rc = 1
				break loop
			}
			if n != seen {
				seen, lastChange = n, now
			} else if *idle > 0 && now.Sub(lastChange) >= *idle {
				break loop
			}
		}
	}
	uctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	sub.Unsubscribe(uctx)
	p.mu.Lock()
	p.closed = true
	err = p.err
	if err == nil {
		err = p.flushLocked()
	}
	p.mu.Unlock()
	if err != nil && rc == 0 {
		fmt.Fprintf(stderr, "tandem sub: writing output: %v\n", err)
		rc = 1
	}
	return rc
}

// printer writes messages to a buffered output; print runs on the client's
// reader goroutine, so a blocked output blocks the subscription (the server
// then serves it from its journal).
type printer struct {
	mu       sync.Mutex
	w        *bufio.Writer
	json     bool
	limit    int
	n        int
	closed   bool
	err      error
	scratch  []byte
	full     chan struct{}
	fullOnce sync.Once
	// bms: each printed message is discarded, and the store
	// is flushed right after the output it covers, never before.
	bms client.BookmarkStore
}

// flushLocked writes the buffered output, then the bookmark progress.
func (p *printer) flushLocked() error {
	if err := p.w.Flush(); err != nil {
		return err
	}
	if p.bms != nil {
		return p.bms.Flush()
	}
	return nil
}

func (p *printer) print(m *client.Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.err != nil || (p.limit > 0 && p.n >= p.limit) {
		return
	}
	if p.json {
		p.scratch = appendJSONMessage(p.scratch[:0], m)
	} else {
		p.scratch = append(append(p.scratch[:0], m.Payload...), '\n')
	}
	if p.bms != nil && p.w.Available() < len(p.scratch) && p.w.Buffered() > 0 {
		// Make room ourselves, so that the store follows the output.
		if p.err = p.flushLocked(); p.err != nil {
			return
		}
	}
	_, p.err = p.w.Write(p.scratch)
	if p.bms != nil && p.err == nil {
		p.bms.Discard(m)
	}
	p.n++
	if p.limit > 0 && p.n >= p.limit {
		p.fullOnce.Do(func() { close(p.full) })
	}
}

// appendJSONMessage appends one JSON line describing m.
func appendJSONMessage(b []byte, m *client.Message) []byte {
	b = append(b, `{"bookmark":"`...)
	b = appendBookmark(b, m.Bookmark)
	b = append(b, `","topic":`...)
	b = appendJSONString(b, m.Topic)
	b = append(b, `,"timestamp":"`...)
	b = m.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","payload":`...)
	b = appendJSONString(b, m.Payload)
	return append(b, "}\n"...)
}

// appendBookmark appends the text form of record.Bookmark.String without
// allocating.
func appendBookmark(b []byte, bm record.Bookmark) []byte {
	var hex [16]byte
	h := strconv.AppendUint(hex[:0], bm.Publisher, 16)
	for range 16 - len(h) {
		b = append(b, '0')
	}
	b = append(b, h...)
	b = append(b, ':')
	b = strconv.AppendUint(b, bm.PubSeq, 10)
	b = append(b, ':')
	return strconv.AppendUint(b, bm.Seq, 10)
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(b, s []byte) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// parseFromTime reads an RFC 3339 time for --from. ok is false when s does
// not look like a time at all (a bookmark, say); err says why one that
// does (it starts with a date, YYYY-MM-DD) is not valid.
func parseFromTime(s string) (time.Time, bool, error) {
	looksLikeDate := len(s) >= 10 && s[4] == '-' && s[7] == '-'
	for _, c := range s[:min(4, len(s))] {
		if c < '0' || c > '9' {
			looksLikeDate = false
		}
	}
	if !looksLikeDate {
		return time.Time{}, false, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("not an RFC 3339 time (like 2026-12-04T09:30:00Z or 2026-12-04T10:30:00.5+01:00): %w", err)
	}
	return t, true, nil
}
