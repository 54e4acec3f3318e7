package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/wire"
)

const pubText = `Publishes each line of standard input as one message on --topic (the
payload is the line without its trailing newline), then waits until every
message is persisted and prints a one-line summary to standard error. Exits 1
if any message was not persisted (refused by the server, connection lost).

Publisher sequences continue after the last one the server holds for --name,
so running pub again under the same name appends. Only the first address of
--servers is used for now; failover across the list comes with the HA client.
`

func runPub(args []string, stdin io.Reader, _, stderr io.Writer) int {
	fs := newFlagSet("pub", "--topic T [flags] < lines", pubText, stderr)
	servers := fs.String("servers", defaultServer, "server `ADDR[,ADDR...]` (host:port)")
	name := fs.String("name", "", "client `NAME`, the publisher identity (default hostname-pid)")
	topic := fs.String("topic", "", "`TOPIC` to publish on (required)")
	window := fs.Int("window", client.DefaultWindow, "max messages published but not yet acknowledged")
	ack := fs.String("ack", "persisted", "acknowledgement asked per message: persisted|received|none")
	heartbeat := fs.Duration("heartbeat", client.DefaultHeartbeat, "heartbeat interval (0: none)")
	maxFrame := fs.Int("max-frame", wire.DefaultMaxFrame, "largest frame, bytes; bounds the line length")
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	addr := firstServer(*servers)
	if *topic == "" || addr == "" {
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var (
		failed   atomic.Uint64
		errMu    sync.Mutex
		firstErr error
	)
	opts := []client.Option{
		client.WithWindow(*window), client.WithAck(level), client.WithHeartbeat(*heartbeat),
		client.WithMaxFrame(*maxFrame),
		client.WithAckHandler(func(_ uint64, err error) {
			if err != nil && failed.Add(1) == 1 {
				errMu.Lock()
				firstErr = err
				errMu.Unlock()
			}
		}),
	}
	if *name != "" {
		opts = append(opts, client.WithName(*name))
	}
	c, err := client.Connect(ctx, addr, opts...)
	if err != nil {
		fmt.Fprintf(stderr, "tandem pub: %v\n", err)
		return 1
	}
	defer c.Close()

	start := time.Now()
	n, err := publishLines(ctx, c, []byte(*topic), stdin, *maxFrame-wire.PublishOverhead-len(*topic))
	if err == nil {
		err = c.Flush(ctx)
	}
	elapsed := time.Since(start)
	rate := float64(n) / max(elapsed.Seconds(), 1e-9)
	if err == nil && failed.Load() == 0 {
		fmt.Fprintf(stderr, "tandem pub: %d messages in %v (%.0f msgs/s), all persisted\n", n, elapsed.Round(time.Millisecond), rate)
		return 0
	}
	if failed.Load() > 0 {
		errMu.Lock()
		if err == nil || !errors.Is(err, client.ErrNotPersisted) {
			err = errors.Join(err, firstErr)
		}
		errMu.Unlock()
	}
	fmt.Fprintf(stderr, "tandem pub: %d messages in %v (%.0f msgs/s), %d known not persisted, acknowledged up to pubseq %d: %v\n",
		n, elapsed.Round(time.Millisecond), rate, failed.Load(), c.AckedSeq(), err)
	return 1
}

// publishLines publishes every line of r. Lines are views into one large
// buffered reader (no allocation per line); a line longer than maxLine is an
// error.
func publishLines(ctx context.Context, c *client.Client, topic []byte, r io.Reader, maxLine int) (int, error) {
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
