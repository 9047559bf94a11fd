package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/vigie-vms/vigie/node"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// command is one subcommand of vigie.
type command struct {
	summary string
	run     func(args []string) error
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"node":     {"run a node (embedded default: one node on 127.0.0.1, data in ./vigie-data)", runNode},
		"demo":     {"run a node with simulated cameras recording, and print the URLs to open", runDemo},
		"ctl":      {"administer a cluster: tenants, cameras, timeline, export, cluster status", runCtl},
		"loadtest": {"simulated camera fleet, fault-injection scenarios, frame-exact verifier and report (loadtest/README.md)", runLoadtest},
		"version":  {"print the version", func([]string) error { fmt.Println("vigie", version); return nil }},
	}
}

// errUsage asks for the usage text to be printed; the message says what was wrong.
var errUsage = errors.New("usage")

func run(args []string) error {
	node.SetVersion(version)
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(os.Stdout)
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		usage(os.Stderr)
		return fmt.Errorf("unknown command %q", args[0])
	}
	err := cmd.run(args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "vigie — distributed recording cluster for video-protection")
	fmt.Fprintln(w, "\nUsage: vigie <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'vigie <command> --help' for its flags.")
}

// newFlagSet builds a flag set whose --help prints a one-line description first.
func newFlagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: vigie %s\n\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// splitFlags moves flags found after positional arguments in front of them, so
// `vigie ctl camera get cam-1 --server X` works like the flag package wants it.
func splitFlags(args []string) (flags, positional []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			flags = append(flags, a)
			if !strings.Contains(a, "=") && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") && !isBoolFlag(a) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		positional = append(positional, a)
	}
	return flags, positional
}

// boolFlags are the flags of vigie that take no value.
var boolFlags = map[string]bool{"json": true, "no-sync": true, "quiet": true, "push": true, "pprof": true}

func isBoolFlag(a string) bool { return boolFlags[strings.TrimLeft(a, "-")] }
