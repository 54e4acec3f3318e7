package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg := client.HAConfig{
		Name:      sec.defaultName("pub", *name, ""),
		Servers:   addrs,
		Heartbeat: *heartbeat,
		Delay:     &client.ExponentialDelayStrategy{Initial: 10 * time.Millisecond, Multiplier: 2, Max: time.Second, MaxTotal: *retryFor, Jitter: 0.2},
		Options:   append([]client.Option{client.WithWindow(*window), client.WithAck(level), client.WithMaxFrame(*maxFrame)}, secOpts...),
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
		st, err := client.OpenFilePublishStore(*storeFile, durability, limits)
		if err != nil {
			fmt.Fprintf(stderr, "tandem pub: %v\n", err)
			return 1
		}
		defer st.Close()
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
	n, err := publishLines(ctx, c, []byte(*topic), stdin, *maxFrame-wire.PublishOverhead-len(*topic))
	if err == nil && level != wire.AckNone {
		err = c.Flush(ctx)
	}
	elapsed := time.Since(start)
	rate := float64(n) / max(elapsed.Seconds(), 1e-9)
	if err == nil {
		fmt.Fprintf(stderr, "tandem pub: %d messages in %v (%.0f msgs/s), all persisted\n", n, elapsed.Round(time.Millisecond), rate)
		return 0
	}
	fmt.Fprintf(stderr, "tandem pub: %d messages in %v (%.0f msgs/s), %d not known to be persisted: %v\n",
		n, elapsed.Round(time.Millisecond), rate, c.UnpersistedCount(), err)
	return 1
}

// publishLines publishes every line of r. Lines are views into one large
// buffered reader (no allocation per line); a line longer than maxLine is an
// error.
func publishLines(ctx context.Context, c *client.HAClient, topic []byte, r io.Reader, maxLine int) (int, error) {
	br := bufio.NewReaderSize(r, max(maxLine+1, 64<<10))
	n := 0
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxLine+1 {
			return n, fmt.Errorf("line %d is longer than the largest message (%d bytes; see --max-frame)", n+1, maxLine)
		}
		if len(line) > 0 {
			if line[len(line)-1] == '\n' {
				line = line[:len(line)-1]
			} else if len(line) > maxLine {
				return n, fmt.Errorf("line %d is longer than the largest message (%d bytes; see --max-frame)", n+1, maxLine)
			}
			if _, perr := c.PublishBytes(ctx, topic, line); perr != nil {
				return n, perr
			}
			n++
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("reading standard input: %w", err)
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
