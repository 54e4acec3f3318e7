package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/tandemhq/tandem/bench"
)

const benchText = `Runs the bench suite: Tandem and its peers (NATS JetStream, Redis Streams)
on this machine in the same run, each started on a loopback port with a
temporary directory. Writes the results as JSON (one file per run) and,
with --report, a markdown report with SVG plots. Progress goes to stderr.
A peer that is not installed is skipped, and the report says so
(make bench-deps installs them). The replicated peers nats-r3-always,
nats-r3-default (3 nats-servers, an R3 stream) and redis-replica (a
primary and a replica, WAIT 1 0 after each pipeline) are reported beside
Tandem's sync and async pair. At the end the verdict of each of issue
15's latency targets is printed on stdout
("target NAME: VALUE vs GOAL: met|missed").

  tandem bench --quick                       # ~1 minute smoke run
  tandem bench --out run.json --report BENCHMARKS.md --plots docs/bench
  tandem bench --compare OLD.json NEW.json   # change of every figure
  tandem bench --render run.json --report BENCHMARKS.md --plots docs/bench
  tandem bench --estimate --prev bench/results/run-X.json  # dry run: steps and time

Besides the peer comparison, three Tandem-only scenarios: pair (one
instance vs a sync pair vs an async pair of tandem serve processes
replicating to each other), engine (durable publish at 128 B and 4 KiB,
fan-out 1 -> 1 and 1 -> 8, and a sync pair's publish, each with
--engine uring and --engine epoll back to back, --engine-runs times
alternating, medians reported with the server processes' CPU and context
switches per million messages:
  tandem bench --systems tandem --scenarios engine --report engine.md)
and failover (an HA publisher and
subscriber on a sync pair; the subscriber's instance is killed with
SIGKILL, then restarted, --failover-runs times: the time to the first
message through the other instance, checked for loss and repeats; for
nats-r3-*, the stream leader is killed: the time to the next
acknowledged publish and to the next delivery).
Opt-in (not in the default list): tls (one instance serving plaintext vs
one serving TLS with --tls-cert/--tls-key and a throwaway CA made at run
time; durable publish, persisted-ack and end-to-end latency over each,
with TLS / plaintext ratios in the report):
  tandem bench --quick --systems tandem --scenarios tls --report tls.md
`

func runBench(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("bench", "[flags]", benchText, stderr)
	quick := fs.Bool("quick", false, "reduced matrix (about a minute)")
	out := fs.String("out", "", "JSON result `file` (default bench-RESULT-TIME.json in the current directory)")
	report := fs.String("report", "", "write the markdown report to this `file`")
	plots := fs.String("plots", "", "`directory` for the SVG plots (default: beside the report, in bench/)")
	systems := fs.String("systems", "", "comma-separated systems (default all: "+strings.Join(bench.AllSystems, ",")+")")
	scenarios := fs.String("scenarios", "", "comma-separated scenarios (default all: "+strings.Join(bench.DefaultSettings(false).Scenarios, ",")+"; opt-in: tls)")
	duration := fs.Duration("duration", 0, "measured interval of each step (default 5s, 1s with --quick)")
	window := fs.Int("window", 0, "unacknowledged messages per publisher (default 8192)")
	replay := fs.Int("replay-messages", 0, "messages preloaded for the replay scenario (default 2000000, 100000 with --quick)")
	failoverRuns := fs.Int("failover-runs", 0, "kills of the failover scenario (default 50, 5 with --quick)")
	engineRuns := fs.Int("engine-runs", 0, "runs per backend of each engine scenario step; the report shows the medians (default 3, 1 with --quick)")
	dataDir := fs.String("data", "", "parent `directory` of the servers' temporary data directories (default $TMPDIR)")
	compare := fs.Bool("compare", false, "compare two result files: tandem bench --compare OLD.json NEW.json")
	threshold := fs.Float64("threshold", 0.10, "with --compare: relative change flagged as a regression")
	render := fs.String("render", "", "render the report from an existing result `file` instead of running")
	inproc := fs.Bool("in-process", false, "run Tandem's server inside the bench process instead of as `tandem serve`")
	estimate := fs.Bool("estimate", false, "print the steps of the matrix and an estimate of its duration, and run nothing")
	prev := fs.String("prev", "", "with --estimate: an earlier run's result `file` (same machine) whose step durations calibrate the estimate")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *compare {
		if fs.NArg() != 2 {
			fmt.Fprintln(stderr, "usage: tandem bench --compare OLD.json NEW.json")
			return 2
		}
		old, err := bench.ReadJSON(fs.Arg(0))
		if err != nil {
			fmt.Fprintln(stderr, "tandem bench:", err)
			return 1
		}
		nw, err := bench.ReadJSON(fs.Arg(1))
		if err != nil {
			fmt.Fprintln(stderr, "tandem bench:", err)
			return 1
		}
		bench.Compare(stdout, old, nw, *threshold)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tandem bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *render != "" {
		rr, err := bench.ReadJSON(*render)
		if err != nil {
			fmt.Fprintln(stderr, "tandem bench:", err)
			return 1
		}
		if *report == "" {
			fmt.Fprintln(stderr, "tandem bench: --render needs --report")
			return 2
		}
		if err := writeBenchReport(rr, *report, *plots, *render); err != nil {
			fmt.Fprintln(stderr, "tandem bench:", err)
			return 1
		}
		bench.WriteVerdicts(stdout, rr)
		return 0
	}

	set := bench.DefaultSettings(*quick)
	if *systems != "" {
		set.Systems = splitList(*systems)
	}
	if *scenarios != "" {
		set.Scenarios = splitList(*scenarios)
	}
	if *duration > 0 {
		set.Duration = *duration
	}
	if *window > 0 {
		set.Window = *window
	}
	if *replay > 0 {
		set.ReplayMessages = *replay
	}
	if *failoverRuns > 0 {
		set.FailoverRuns = *failoverRuns
	}
	if *engineRuns > 0 {
		set.EngineRuns = *engineRuns
	}
	if *dataDir != "" {
		set.DataDir = *dataDir
	}
	if *estimate {
		var pr *bench.RunResult
		if *prev != "" {
			var err error
			if pr, err = bench.ReadJSON(*prev); err != nil {
				fmt.Fprintln(stderr, "tandem bench:", err)
				return 1
			}
		}
		bench.Estimate(stdout, set, pr, bench.SystemSkipped)
		return 0
	}
	opts := bench.Options{Settings: set, Progress: stderr, Command: append([]string{"tandem", "bench"}, args...)}
	if !*inproc {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintln(stderr, "tandem bench:", err)
			return 1
		}
		opts.TandemCmd = []string{exe, "serve"}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rr, err := bench.Run(ctx, opts)
	if err != nil {
		fmt.Fprintln(stderr, "tandem bench:", err)
		return 1
	}
	path := *out
	if path == "" {
		path = fmt.Sprintf("bench-%s-%s.json", rr.Tandem.Short(), rr.Started.Format("20060102-150405"))
	}
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			fmt.Fprintln(stderr, "tandem bench:", err)
			return 1
		}
	}
	if err := rr.WriteJSON(path); err != nil {
		fmt.Fprintln(stderr, "tandem bench:", err)
		return 1
	}
	fmt.Fprintf(stderr, "results: %s\n", path)
	if *report != "" {
		if err := writeBenchReport(rr, *report, *plots, path); err != nil {
			fmt.Fprintln(stderr, "tandem bench:", err)
			return 1
		}
		fmt.Fprintf(stderr, "report: %s\n", *report)
	}
	for _, r := range rr.Results {
		if r.Error != "" {
			fmt.Fprintf(stderr, "error: %s %s: %s\n", r.System, r.Key, r.Error)
		}
	}
	bench.WriteVerdicts(stdout, rr)
	return 0
}

func writeBenchReport(rr *bench.RunResult, report, plots, result string) error {
	base := filepath.Dir(report)
	if plots == "" {
		plots = filepath.Join(base, "bench")
	}
	plotLink, err := filepath.Rel(base, plots)
	if err != nil {
		plotLink = plots
	}
	resLink, err := filepath.Rel(base, result)
	if err != nil {
		resLink = result
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return err
	}
	f, err := os.Create(report)
	if err != nil {
		return err
	}
	if err := bench.WriteReport(f, rr, bench.ReportOptions{PlotDir: plots, PlotLink: plotLink, ResultLink: filepath.ToSlash(resLink)}); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
