package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vigie-vms/vigie/loadtest/fleet"
	"github.com/vigie-vms/vigie/loadtest/report"
	"github.com/vigie-vms/vigie/loadtest/scenario"
	"github.com/vigie-vms/vigie/loadtest/simcam"
)

// SelfCommand is how the fleet-bench subcommand runs this program's "fleet" subcommand in
// a child process: the argv prefix before "fleet". nil means [os.Executable()], right for
// vigie-loadtest; `vigie loadtest` sets it to [path-to-vigie, "loadtest"].
var SelfCommand []string

// selfCommand is SelfCommand, or this executable when it is not set.
func selfCommand() ([]string, error) {
	if SelfCommand != nil {
		return SelfCommand, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return []string{exe}, nil
}

// ErrFailed is returned by "run" when the verdict is FAIL (the report is still written).
var ErrFailed = errors.New("load test failed")

const usage = `usage: vigie-loadtest <command> [flags]

commands:
  run SCENARIO.yaml   run a scenario (loadtest/scenarios/*.yaml), verify, write the report
  scale [SCENARIO]    capacity search: ramp cameras up step by step on one node, stop at the
                      first step that loses a frame; report the highest clean step
                      (default scenario loadtest/scenarios/scale.yaml)
  fleet               serve simulated cameras with an HTTP control endpoint
  fleet-bench         measure one core of fleet: N cameras at a bitrate, frames on time?
  report REPORT.json  print the summary again and rewrite report.html beside the JSON

Run "vigie-loadtest <command> -h" for the flags of a command.`

// Main runs the command line args (without the program name).
func Main(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(os.Stderr, usage)
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "run":
		return runCmd(ctx, args[1:])
	case "scale":
		return scaleCmd(ctx, args[1:])
	case "fleet":
		return fleetCmd(ctx, args[1:])
	case "fleet-bench":
		return benchCmd(ctx, args[1:])
	case "report":
		return reportCmd(args[1:])
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

func runCmd(ctx context.Context, args []string) error { return runScenario(ctx, "run", args, nil, "") }

// scaleCmd runs a ramp scenario; its flags override the ramp and the pinning.
func scaleCmd(ctx context.Context, args []string) error {
	return runScenario(ctx, "scale", args, func(fs *flag.FlagSet) func(*scenario.Scenario) error {
		start := fs.Int("start", 0, "override ramp.start: cameras of the first step")
		step := fs.Int("step", 0, "override ramp.step: cameras added per step")
		every := fs.Duration("every", 0, "override ramp.every: length of a step")
		maxC := fs.Int("max", 0, "override ramp.max: cameras of the last step (raises cameras.count if needed)")
		settle := fs.Duration("settle", 0, "override ramp.settle: start of a step not verified")
		target := fs.Int("target", -1, "override ramp.target: cameras the highest clean step must reach for PASS")
		fleetLate := fs.Float64("max-fleet-late", -1, "override ramp.max_fleet_late: fraction of the fleet's frames that may be late in a step")
		bitrate := fs.Int("bitrate", -1, "override cameras.bitrate (bit/s; 0 = embedded ~1 Mbit/s clips)")
		nodeCPUs := fs.String("node-cpus", "", `override nodes.cpus (e.g. "0"; "none" = not pinned)`)
		fleetCPUs := fs.String("fleet-cpus", "", `override cameras.cpus (e.g. "1"; "none" = not pinned)`)
		return func(sc *scenario.Scenario) error {
			if sc.Ramp == nil {
				if *start == 0 || *step == 0 || *every == 0 {
					return errors.New("scale: the scenario has no ramp section: add one (see loadtest/scenarios/scale.yaml) or give -start, -step and -every")
				}
				sc.Ramp = &scenario.Ramp{}
			}
			r := sc.Ramp
			for _, o := range []struct {
				v   int
				dst *int
			}{{*start, &r.Start}, {*step, &r.Step}, {*maxC, &r.Max}} {
				if o.v > 0 {
					*o.dst = o.v
				}
			}
			if *every > 0 {
				r.Every = scenario.Duration(*every)
			}
			if *settle > 0 {
				r.Settle = scenario.Duration(*settle)
			}
			if *target >= 0 {
				r.Target = *target
			}
			if *bitrate >= 0 {
				sc.Cameras.Bitrate = *bitrate
			}
			if *fleetLate >= 0 {
				r.MaxFleetLate = *fleetLate
			}
			if *maxC > 0 {
				// The fleet serves exactly the ramp's cameras.
				sc.Cameras.Count = r.Max
				sc.Cameras.Tenants = min(sc.Cameras.Tenants, r.Max)
			}
			for _, o := range []struct {
				v   string
				dst *string
			}{{*nodeCPUs, &sc.Nodes.CPUs}, {*fleetCPUs, &sc.Cameras.CPUs}} {
				switch o.v {
				case "":
				case "none":
					*o.dst = ""
				default:
					*o.dst = o.v
				}
			}
			// The duration and the first step's cameras follow the ramp.
			sc.Duration, sc.Cameras.Initial = 0, 0
			sc.EnsureDefaults()
			return nil
		}
	}, "loadtest/scenarios/scale.yaml")
}

// runScenario runs a scenario file: flags, overrides (extra adds its own flags and returns
// what they change), the run, the report. defaultFile is used when no file is given ("" =
// one is required).
func runScenario(ctx context.Context, name string, args []string, extra func(*flag.FlagSet) func(*scenario.Scenario) error, defaultFile string) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	vigie := fs.String("vigie", "", "vigie binary (default: go build ./tools/vigie of the repository around the working directory)")
	out := fs.String("out", "", "work directory for data, logs and reports (default loadtest-out/<name>-<time>)")
	clipDir := fs.String("clip-dir", "", "cache for generated clips (default $TMPDIR/vigie-loadtest-clips)")
	duration := fs.Duration("duration", 0, "override the scenario's duration")
	cameras := fs.Int("cameras", 0, "override the scenario's camera count")
	logLevel := fs.String("log-level", "warn", "runner log level (written to runner.log)")
	ffprobe := fs.Int("ffprobe-check", -1, "override verify.ffprobe_check: cameras whose exports ffprobe counts again")
	seed := fs.Uint64("seed", 0, "override verify.seed (the ffprobe check's pick)")
	var apply func(*scenario.Scenario) error
	if extra != nil {
		apply = extra(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vigie-loadtest %s [flags] SCENARIO.yaml\n", name)
		fs.PrintDefaults()
	}
	if err := parseInterspersed(fs, args); err != nil {
		return err
	}
	file := defaultFile
	if fs.NArg() == 1 {
		file = fs.Arg(0)
	}
	if fs.NArg() > 1 || file == "" {
		fs.Usage()
		return fmt.Errorf("%s: one scenario file is required", name)
	}
	sc, err := scenario.Load(file)
	if err != nil {
		return err
	}
	if *duration > 0 {
		sc.Duration = scenario.Duration(*duration)
	}
	if *cameras > 0 {
		sc.Cameras.Count = *cameras
		if sc.Ramp == nil {
			sc.Cameras.Initial = *cameras
		}
	}
	if *ffprobe >= 0 {
		sc.Verify.FFprobeCheck = *ffprobe
	}
	if *seed != 0 {
		sc.Verify.Seed = *seed
	}
	if apply != nil {
		if err := apply(sc); err != nil {
			return err
		}
	}
	if err := sc.Validate(); err != nil {
		return err
	}
	dir := *out
	if dir == "" {
		dir = filepath.Join("loadtest-out", sc.Name+"-"+time.Now().Format("20060102-150405"))
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	bin := *vigie
	if bin == "" {
		fmt.Println("building vigie…")
		if bin, err = buildVigie(ctx, dir); err != nil {
			return err
		}
	}
	logf, err := os.Create(filepath.Join(dir, "runner.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Printf("scenario %s: %d node(s), %d cameras, %v; work directory %s\n", sc.Name, sc.Nodes.Count, sc.Cameras.Count, sc.Duration.D(), dir)
	self, err := selfCommand()
	if err != nil {
		return err
	}
	res, runErr := scenario.Run(ctx, sc, scenario.Options{Vigie: bin, Dir: dir, Progress: os.Stdout, Logger: newLogger(logf, *logLevel),
		ClipDir: *clipDir, FleetCommand: self})
	if res == nil {
		return runErr
	}
	if runErr != nil {
		res.Failures = append(res.Failures, "run aborted: "+runErr.Error())
	}
	report.Text(os.Stdout, res)
	jp, hp, err := report.WriteFiles(res, dir)
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	fmt.Printf("report: %s\n        %s\n", hp, jp)
	if ok, _ := report.Verdict(res); !ok {
		return fmt.Errorf("%s: %w (see %s)", sc.Name, ErrFailed, hp)
	}
	return nil
}

// parseInterspersed lets flags follow the positional argument.
func parseInterspersed(fs *flag.FlagSet, args []string) error {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	return fs.Parse(append([]string{"--"}, pos...))
}

// buildVigie builds ./tools/vigie of the repository around the working directory.
func buildVigie(ctx context.Context, dir string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	root := ""
	for d := wd; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/vigie-vms/vigie\n")) {
			root = d
			break
		}
		if filepath.Dir(d) == d {
			return "", errors.New("not inside the Vigie repository: pass -vigie BINARY")
		}
	}
	out := filepath.Join(dir, "vigie")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./tools/vigie")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./tools/vigie: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return out, nil
}

// parseCodecs reads "H264=3,H265=1" into cameras.
func fleetCameras(n int, prefix, codecs string) ([]fleet.Camera, error) {
	weights := map[string]int{}
	var order []string
	for _, part := range strings.Split(codecs, ",") {
		k, v, found := strings.Cut(strings.TrimSpace(part), "=")
		w := 1
		if found {
			var err error
			if w, err = strconv.Atoi(v); err != nil || w < 0 {
				return nil, fmt.Errorf("-codecs: %q: weight must be a number ≥ 0", part)
			}
		}
		k = strings.ToUpper(k)
		if k != simcam.CodecH264 && k != simcam.CodecH265 {
			return nil, fmt.Errorf("-codecs: %q, want H264 and/or H265", k)
		}
		weights[k] = w
		order = append(order, k)
	}
	total := 0
	for _, w := range weights {
		total += w
	}
	if total == 0 {
		return nil, errors.New("-codecs: all weights are 0")
	}
	var out []fleet.Camera
	for i, id := range fleet.IDs(prefix, n) {
		acc := 0
		for _, k := range order {
			acc += weights[k]
			if i%total < acc {
				out = append(out, fleet.Camera{ID: id, Codec: k})
				break
			}
		}
	}
	return out, nil
}

func fleetCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	n := fs.Int("cameras", 100, "number of cameras")
	prefix := fs.String("prefix", "cam", "camera id prefix (ids PREFIX-0000 …)")
	addr := fs.String("addr", "127.0.0.1:8555", "RTSP address of the first codec's server (further codecs take free ports)")
	control := fs.String("control", "127.0.0.1:0", "HTTP control endpoint address (loopback only)")
	bitrate := fs.Int("bitrate", 0, "clip bitrate in bit/s (0 = embedded ~1 Mbit/s clips; others need ffmpeg)")
	size := fs.String("size", "", "generated clip size WIDTHxHEIGHT")
	alt := fs.String("alt-size", "", "alternate resolution for the resolution action (e.g. 320x180)")
	codecs := fs.String("codecs", "H264", "codec mix, e.g. H264=3,H265=1")
	clipDir := fs.String("clip-dir", "", "cache for generated clips")
	logLevel := fs.String("log-level", "info", "log level (stderr)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cams, err := fleetCameras(*n, *prefix, *codecs)
	if err != nil {
		return err
	}
	host, portS, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	port, _ := strconv.Atoi(portS)
	if ip := net.ParseIP(strings.Split(*control, ":")[0]); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-control %q: the control endpoint has no authentication and listens on loopback only", *control)
	}
	f, err := fleet.New(ctx, fleet.Config{Host: host, Port: port, Cameras: cams, Bitrate: *bitrate, Size: *size, AltSize: *alt,
		ClipDir: *clipDir, Logger: newLogger(os.Stderr, *logLevel)})
	if err != nil {
		return err
	}
	if err := f.Start(); err != nil {
		return err
	}
	defer f.Close()
	ln, err := net.Listen("tcp", *control)
	if err != nil {
		return fmt.Errorf("control endpoint: %w", err)
	}
	srv := &http.Server{Handler: f.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	defer srv.Close()
	fmt.Printf("ready rtsp=%s control=http://%s\n", strings.Join(f.Addrs(), ","), ln.Addr())
	fmt.Fprintf(os.Stderr, "%d cameras at rtsp://%s/%s-0000 …; control: curl http://%s/v1/stats\n", len(cams), f.Addrs()[0], *prefix, ln.Addr())
	<-ctx.Done()
	return nil
}

func reportCmd(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: vigie-loadtest report DIR/report.json")
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	var res scenario.Result
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	if res.Scenario == nil {
		return fmt.Errorf("%s: not a load-test report (no scenario)", args[0])
	}
	report.Text(os.Stdout, &res)
	hp := filepath.Join(filepath.Dir(args[0]), "report.html")
	f, err := os.Create(hp)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := report.HTML(f, &res); err != nil {
		return err
	}
	fmt.Println("report:", hp)
	return f.Close()
}
