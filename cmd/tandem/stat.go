package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/engine"
	"github.com/tandemhq/tandem/wire"
)

const statText = `Prints an instance's statistics: instance name, connections, messages
stored, journal first/last/synced sequence and size, and per-topic counts;
or, with --json, the statistics document as the server sends it.
`

func runStat(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("stat", "[--servers ADDR] [--json]", statText, stderr)
	server := fs.String("servers", defaultServer, "server `ADDR` (host:port; of a comma-separated list, the first)")
	fs.Var(aliasFlag{fs.Lookup("servers")}, "server", "alias of --servers")
	asJSON := fs.Bool("json", false, "print the raw JSON document")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	name := fs.String("name", "", "client `NAME` (default tandem-stat-HOST-PID, or USER-stat-PID with --user)")
	sec := addClientSecurityFlags(fs)
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	secOpts, err := sec.options()
	if err != nil {
		fmt.Fprintf(stderr, "tandem stat: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	host, _ := os.Hostname()
	c, err := client.Connect(ctx, firstServer(*server), append(secOpts, client.WithName(sec.defaultName("stat", *name, fmt.Sprintf("%s%s-%d", engine.StatClientPrefix, host, os.Getpid()))))...)
	if err != nil {
		fmt.Fprintf(stderr, "tandem stat: %v\n", err)
		return 1
	}
	defer c.Close()
	doc, err := c.StatsJSON(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "tandem stat: %v\n", err)
		return 1
	}
	if *asJSON {
		var out bytes.Buffer
		if json.Indent(&out, doc, "", "  ") != nil {
			out.Reset()
			out.Write(doc)
		}
		out.WriteByte('\n')
		stdout.Write(out.Bytes())
		return 0
	}
	var st wire.Stats
	if err := json.Unmarshal(doc, &st); err != nil {
		fmt.Fprintf(stderr, "tandem stat: bad document from the server: %v\n", err)
		return 1
	}
	printStats(stdout, &st)
	return 0
}

func printStats(w io.Writer, st *wire.Stats) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "instance\t%s\n", st.Instance)
	if st.Version != "" || st.Engine != "" {
		fmt.Fprintf(tw, "version\t%s (engine %s, %d loops)\n", st.Version, st.Engine, st.Loops)
	}
	fmt.Fprintf(tw, "uptime\t%v\n", (time.Duration(st.UptimeSeconds * float64(time.Second))).Round(time.Second))
	fmt.Fprintf(tw, "connections\t%d\n", st.Connections)
	fmt.Fprintf(tw, "subscriptions\t%d\n", st.Subscriptions)
	fmt.Fprintf(tw, "messages stored\t%d\n", st.Stored)
	fmt.Fprintf(tw, "messages delivered\t%d\n", st.Delivered)
	if st.SlowConsumers > 0 {
		fmt.Fprintf(tw, "slow consumers\t%d\n", st.SlowConsumers)
	}
	fmt.Fprintf(tw, "duplicates dropped\t%d\n", st.Duplicates)
	fmt.Fprintf(tw, "conflicts\t%d\n", st.Conflicts)
	fmt.Fprintf(tw, "publishes refused\t%d\n", st.Refused)
	j := st.Journal
	fmt.Fprintf(tw, "journal\tfirst %d, last %d, synced %d\n", j.FirstSeq, j.LastSeq, j.SyncedSeq)
	fmt.Fprintf(tw, "journal used\t%s in %d segments (%s preallocated), %d syncs\n", bytesText(j.UsedBytes), j.Segments, bytesText(j.Bytes), j.Syncs)
	fmt.Fprintf(tw, "segment preallocation failures\t%d\n", j.PreallocFailures)
	if j.RetentionHeldBytes > 0 {
		fmt.Fprintf(tw, "retention held\t%s (not yet persisted by a replication destination)\n", bytesText(j.RetentionHeldBytes))
	}
	if st.Storage != "" {
		fmt.Fprintf(tw, "storage\t%s\n", st.Storage)
	}
	if j.SyncVia != "" {
		fmt.Fprintf(tw, "group commit\tvia %s\n", j.SyncVia)
	}
	if z := st.ZeroCopy; z != nil {
		fmt.Fprintf(tw, "zero-copy deliveries\trecords >= %s: %d sends, %s; %d segments held; %d connections back to copying (kernel copied)\n",
			bytesText(int64(z.MinBytes)), z.Sends, bytesText(int64(z.Bytes)), z.Held, z.CopiedConns)
	}
	tw.Flush()

	topics := append([]wire.TopicStats(nil), st.Topics...)
	sort.Slice(topics, func(a, b int) bool { return topics[a].Topic < topics[b].Topic })
	fmt.Fprintf(w, "\ntopics (%d)\n", len(topics))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "MESSAGES\t  TOPIC\t\n")
	for _, t := range topics {
		fmt.Fprintf(tw, "%d\t  %s\t\n", t.Messages, t.Topic)
	}
	tw.Flush()
	if len(st.Clients) > 0 {
		fmt.Fprintf(w, "\nclients (%d)\n", len(st.Clients))
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "NAME\tREMOTE\tLOOP\tSUBS\tLAST PUBSEQ\n")
		for _, c := range st.Clients {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", c.Name, c.Remote, c.Loop, c.Subscriptions, c.LastPubSeq)
		}
		tw.Flush()
	}
	if len(st.Replication) > 0 || st.ReplicationListen != "" {
		fmt.Fprintf(w, "\nreplication (listening on %s, %d destinations)\n", orNone(st.ReplicationListen), len(st.Replication))
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "PEER\tADDRESS\tMODE\tSTATE\tCONNECTED\tSENT\tACKED\tLAG MSGS\tLAG\tOPTIONS\n")
		for _, d := range st.Replication {
			opts := ""
			if d.Passthrough {
				opts = "passthrough "
			}
			if d.Topics != "" {
				opts += "topics=" + d.Topics + " "
			}
			if d.SkippedTooLarge > 0 {
				opts += fmt.Sprintf("skipped-too-large=%d ", d.SkippedTooLarge)
			}
			if d.HoldAlarm {
				opts += "HOLD-ALARM(" + bytesText(d.HoldBytes) + ") "
			}
			opts = strings.TrimSpace(opts)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%d\t%d\t%d\t%v\t%s\n", d.Name, orNone(d.Addr), d.Mode, d.State, d.Connected,
				d.SentThrough, d.AckedThrough, d.LagMessages, time.Duration(d.LagSeconds*float64(time.Second)).Round(time.Millisecond), opts)
		}
		tw.Flush()
		for _, d := range st.Replication {
			if d.State == "fork" {
				fmt.Fprintf(w, "%s: link refused (fork): %s; see `tandem help repl-reset`\n", d.Name, d.Reason)
			}
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// aliasFlag is a second name for a flag: setting it sets the flag.
type aliasFlag struct{ f *flag.Flag }

func (a aliasFlag) String() string {
	if a.f == nil {
		return ""
	}
	return a.f.Value.String()
}
func (a aliasFlag) Set(s string) error { return a.f.Value.Set(s) }
