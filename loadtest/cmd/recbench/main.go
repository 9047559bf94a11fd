package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vigie-vms/vigie/loadtest/recbench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if len(os.Args) > 1 && (os.Args[1] == "fleet" || os.Args[1] == "bare") {
		err = runChild(ctx, os.Args[1], os.Args[2:])
	} else {
		err = runBench(ctx, os.Args[1:])
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "recbench:", err)
		os.Exit(1)
	}
}

// runChild is a hidden subcommand: the fleet or the bare receiver, driven by the parent
// over stdin/stdout.
func runChild(ctx context.Context, which string, args []string) error {
	fs := flag.NewFlagSet(which, flag.ContinueOnError)
	cameras := fs.Int("cameras", 1, "number of cameras")
	clip := fs.String("clip", "", "fleet: Annex-B H.264 clip")
	fps := fs.Int("fps", 25, "fleet: frame rate")
	fleet := fs.String("fleet", "", "bare: fleet RTSP address host:port")
	connect := fs.Duration("connect-timeout", time.Minute, "bare: time to connect every camera")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if which == "fleet" {
		return recbench.RunFleet(ctx, recbench.FleetConfig{Addr: "127.0.0.1:0", ClipPath: *clip, FPS: *fps, Cameras: *cameras, Logger: log}, os.Stdin, os.Stdout)
	}
	return recbench.RunBare(ctx, recbench.BareConfig{FleetAddr: *fleet, Cameras: *cameras, ConnectTimeout: *connect, Logger: log}, os.Stdin, os.Stdout)
}

func runBench(ctx context.Context, args []string) error {
	cfg := recbench.DefaultConfig()
	fs := flag.NewFlagSet("recbench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: recbench [flags]\n\n"+
			"Measures the CPU a vigie node spends per camera-second of recording against a bare\n"+
			"gortsplib receiver of the same streams, and the time to first byte of playback.\n\n")
		fs.PrintDefaults()
	}
	cameras := fs.String("cameras", joinInts(cfg.Cameras), "comma-separated fleet sizes, one run each")
	fs.DurationVar(&cfg.Window, "window", cfg.Window, "CPU measurement window per process")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "time every camera runs before the window opens")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", cfg.ConnectTimeout, "time for every camera to connect / record")
	fs.StringVar(&cfg.ClipPath, "bitrate-clip", "", "Annex-B H.264 clip to loop (default: generate one with ffmpeg)")
	fs.StringVar(&cfg.ClipPath, "clip", "", "same as -bitrate-clip")
	fs.IntVar(&cfg.Bitrate, "bitrate", cfg.Bitrate, "bit/s of the generated clip")
	fs.StringVar(&cfg.ClipSize, "clip-size", cfg.ClipSize, "WxH of the generated clip")
	fs.IntVar(&cfg.FPS, "fps", cfg.FPS, "frame rate of the clip and the cameras")
	fs.StringVar(&cfg.Vigie, "vigie", "", "vigie binary to measure (default: go build ./tools/vigie)")
	fs.IntVar(&cfg.MeasuredCPU, "measured-cpu", cfg.MeasuredCPU, "core of the measured process")
	fs.IntVar(&cfg.FleetCPU, "fleet-cpu", cfg.FleetCPU, "core of the simulated cameras")
	fs.BoolVar(&cfg.NoPin, "no-pin", false, "do not pin processes to cores")
	fs.BoolVar(&cfg.NoSync, "no-sync", false, "run the node with --no-sync (no fsync)")
	fs.BoolVar(&cfg.SkipBare, "skip-bare", false, "measure only the vigie node")
	fs.BoolVar(&cfg.SkipRecord, "skip-record", false, "measure only the bare receiver")
	fs.IntVar(&cfg.PlaybackRequests, "playback-requests", cfg.PlaybackRequests, "stream.mp4 requests timed per fleet size (0: none)")
	fs.DurationVar(&cfg.PlaybackDuration, "playback-duration", cfg.PlaybackDuration, "duration asked for per playback request")
	fs.BoolVar(&cfg.Perf, "perf", false, "profile the node with perf(1) after each window (report kept in the work dir)")
	fs.StringVar(&cfg.WorkDir, "work-dir", "", "work directory (default: a temporary one, removed)")
	fs.BoolVar(&cfg.KeepWorkDir, "keep", false, "keep the work directory with the node data (-perf alone keeps it without the data)")
	bareEnv := fs.String("bare-env", "", "space-separated KEY=VALUE added to the bare receiver's environment (e.g. GOGC=400)")
	appendTo := fs.String("append", "", "append the Markdown report to this file (e.g. BENCHMARKS.md)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.BareEnv = strings.Fields(*bareEnv)
	var err error
	if cfg.Cameras, err = parseInts(*cameras); err != nil {
		return fmt.Errorf("-cameras: %w", err)
	}
	if cfg.Self, err = os.Executable(); err != nil {
		return err
	}
	cfg.Command = commandLine(args)
	cfg.Progress = os.Stderr
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	rep, err := recbench.Run(ctx, cfg)
	if rep != nil && len(rep.Results) > 0 {
		fmt.Println()
		if werr := rep.WriteTable(os.Stdout); werr != nil {
			return werr
		}
		fmt.Println()
		fmt.Println(rep.Markdown())
		if *appendTo != "" && err == nil {
			if aerr := rep.AppendMarkdown(*appendTo); aerr != nil {
				return aerr
			}
			fmt.Fprintf(os.Stderr, "recbench: report appended to %s\n", *appendTo)
		}
	}
	return err
}

// commandLine is how the report quotes the command: the `go run` form the Makefile uses.
func commandLine(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \t'\"$") {
			a = strconv.Quote(a)
		}
		q[i] = a
	}
	return strings.TrimSpace("go run ./loadtest/cmd/recbench " + strings.Join(q, " "))
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
