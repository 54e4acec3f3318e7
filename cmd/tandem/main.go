// Command tandem is the Tandem broker and its command-line clients:
//
//	tandem serve   run a broker instance
//	tandem pub     publish each line of standard input as one message
//	tandem sub     print the messages of a subscription, one per line
//	tandem stat    print an instance's statistics
//	tandem repl-reset  take a peer's replication stream afresh (resolves a fork)
//	tandem passwd  hash a password for the users file
//	tandem bench   benchmark Tandem against its peers (see bench/)
//	tandem version print the version, commit, Go version and engines available
//
// Run `tandem help COMMAND` (or `tandem COMMAND -h`, --help, help) for a
// command's flags: help goes to standard output and exits 0.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

const defaultServer = "127.0.0.1:7400"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// commands maps a command name to its runner and a one-line summary.
var commands = []struct {
	name    string
	summary string
	run     func(args []string, stdin io.Reader, stdout, stderr io.Writer) int
}{
	{"serve", "run a broker instance", func(args []string, _ io.Reader, stdout, _ io.Writer) int { return runServe(args, stdout) }},
	{"pub", "publish each line of standard input as one message", runPub},
	{"sub", "print the messages of a subscription, one per line", runSub},
	{"stat", "print an instance's statistics", runStat},
	{"repl-reset", "take a peer's replication stream afresh (resolves a fork)", runReplReset},
	{"passwd", "print the argon2id hash of a password read on standard input", runPasswd},
	{"tune", "write a serve config for this machine's cores and NUMA nodes", runTune},
	{"bench", "benchmark Tandem against NATS JetStream and Redis Streams", runBench},
	{"version", "print the version, commit, Go version and the engines this machine allows", runVersion},
}

// wantsHelp reports whether a command's arguments ask for its usage:
// `help` as the first argument, or -h, -help or --help anywhere before a
// "--" (a flag's value that is literally "-h" is taken as a request for
// help too).
func wantsHelp(args []string) bool {
	if len(args) > 0 && args[0] == "help" {
		return true
	}
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			for _, c := range commands {
				if c.name == args[1] {
					return c.run([]string{"-h"}, stdin, stdout, stdout)
				}
			}
			fmt.Fprintf(stderr, "tandem: unknown command %q\n\n", args[1])
			usage(stderr)
			return 2
		}
		usage(stdout)
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			if wantsHelp(args[1:]) { // usage on standard output, exit 0
				return c.run([]string{"-h"}, stdin, stdout, stdout)
			}
			return c.run(args[1:], stdin, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "tandem: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, "Tandem: a high-availability message broker.\n\nUsage:\n\n\ttandem <command> [flags]\n\nCommands:\n\n")
	for _, c := range commands {
		fmt.Fprintf(w, "\t%-10s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nRun `tandem help <command>` for a command's flags.\n")
}

// newFlagSet returns a FlagSet whose usage prints synopsis and text before
// the flags.
func newFlagSet(name, synopsis, text string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: tandem %s %s\n\n%s\nFlags:\n", name, synopsis, text)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; it returns -1 to go on, else the exit code.
func parseFlags(fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "tandem %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return 2
	}
	return -1
}

// firstServer returns the first address of a comma-separated list.
func firstServer(list string) string {
	if l := serverList(list); len(l) > 0 {
		return l[0]
	}
	return ""
}

// serverList returns the addresses of a comma-separated list.
func serverList(list string) []string {
	var out []string
	for _, a := range strings.Split(list, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}
