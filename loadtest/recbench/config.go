package recbench

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// Limits that keep a run bounded whatever the flags say.
const (
	MaxCameras = 2000
	MaxWindow  = 10 * time.Minute
	MaxWarmup  = 5 * time.Minute
)

// Config configures Run. Start from DefaultConfig.
type Config struct {
	// Cameras lists the fleet sizes to measure, one run each (e.g. 50 and 200).
	Cameras []int
	// Window is how long CPU time is measured in each phase, after Warmup.
	Window time.Duration
	// Warmup is how long each measured process runs, every camera connected, before the
	// window opens (GOP alignment, heap growth, first segment files).
	Warmup time.Duration
	// ConnectTimeout bounds the wait for every camera to be connected (bare) or recording
	// (vigie) before the warm-up starts.
	ConnectTimeout time.Duration

	// ClipPath is an Annex-B H.264 file every simulated camera loops. "" generates one
	// with ffmpeg (ClipSize, Bitrate, FPS) into the work directory.
	ClipPath string
	// Bitrate of the generated clip in bit/s.
	Bitrate int
	// ClipSize of the generated clip, WxH.
	ClipSize string
	// FPS of the generated clip and the rate the cameras send at.
	FPS int

	// Vigie is the vigie binary to measure. "" builds ./tools/vigie from the module that
	// holds the working directory into the work directory.
	Vigie string
	// Self is the executable that implements the hidden "fleet" and "bare" subcommands
	// (the recbench binary itself: os.Executable()).
	Self string
	// MeasuredCPU is the core the measured process (bare client, vigie node) is pinned
	// to; FleetCPU the core of the simulated cameras. Pinning uses taskset(1).
	MeasuredCPU, FleetCPU int
	// NoPin runs everything unpinned (machines with one core).
	NoPin bool
	// NoSync passes --no-sync to the node (no fsync of footage and catalog). The default
	// measures the node as shipped, with fsync.
	NoSync bool
	// BareEnv adds environment variables (KEY=VALUE) to the bare receiver only, e.g.
	// GOGC=400 to see how much of the baseline is garbage collection of its small heap.
	BareEnv []string
	// SkipBare and SkipRecord leave one side out (debugging; the ratio then is not
	// computed).
	SkipBare, SkipRecord bool

	// PlaybackRequests is how many stream.mp4 requests measure time to first byte after
	// each recording window (0 skips playback).
	PlaybackRequests int
	// PlaybackDuration is the duration asked for in each playback request.
	PlaybackDuration time.Duration

	// Perf records a CPU profile of the vigie node with perf(1) during the window and
	// keeps the report in the work directory (the node exposes no pprof endpoint).
	Perf bool

	// WorkDir holds the clip, the binary, node data and logs. "" makes a temporary
	// directory, removed at the end unless KeepWorkDir or Perf (whose reports it holds).
	// Node data directories (about 15 MB per camera-minute) are removed after each run
	// unless KeepWorkDir.
	WorkDir     string
	KeepWorkDir bool

	// Command is the command line quoted in the report.
	Command string
	// Progress receives one line per step (os.Stderr in the command); nil discards.
	Progress io.Writer
	// Logger receives diagnostics; nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns the benchmark the issue asks for: 50 and 200 cameras of 2 Mbit/s
// H.264 at 25 fps, 5 s warm-up, 20 s window, recorder on core 0 and cameras on core 1.
func DefaultConfig() Config {
	return Config{
		Cameras:          []int{50, 200},
		Window:           20 * time.Second,
		Warmup:           5 * time.Second,
		ConnectTimeout:   60 * time.Second,
		Bitrate:          2_000_000,
		ClipSize:         "1280x720",
		FPS:              25,
		MeasuredCPU:      0,
		FleetCPU:         1,
		PlaybackRequests: 30,
		PlaybackDuration: 10 * time.Second,
	}
}

// Validate reports every problem at once, each naming its option. Errors wrap
// model.ErrInvalid.
func (c Config) Validate() error {
	var errs []error
	if len(c.Cameras) == 0 {
		errs = append(errs, model.Invalid("cameras", "at least one fleet size is required (e.g. 50,200)"))
	}
	for i, n := range c.Cameras {
		if n < 1 || n > MaxCameras {
			errs = append(errs, model.Invalid(fmt.Sprintf("cameras[%d]", i), "%d, want 1 to %d", n, MaxCameras))
		}
	}
	if c.Window < time.Second || c.Window > MaxWindow {
		errs = append(errs, model.Invalid("window", "%v, want 1s to %v", c.Window, MaxWindow))
	}
	if c.Warmup < 0 || c.Warmup > MaxWarmup {
		errs = append(errs, model.Invalid("warmup", "%v, want 0 to %v", c.Warmup, MaxWarmup))
	}
	if c.ConnectTimeout < time.Second || c.ConnectTimeout > 10*time.Minute {
		errs = append(errs, model.Invalid("connect-timeout", "%v, want 1s to 10m", c.ConnectTimeout))
	}
	if c.ClipPath == "" {
		if c.Bitrate < 64_000 || c.Bitrate > 100_000_000 {
			errs = append(errs, model.Invalid("bitrate", "%d bit/s, want 64000 to 100000000", c.Bitrate))
		}
		var w, h int
		if _, err := fmt.Sscanf(c.ClipSize, "%dx%d", &w, &h); err != nil || w < 16 || h < 16 || w > 7680 || h > 4320 {
			errs = append(errs, model.Invalid("clip-size", "%q, want WxH such as 1280x720", c.ClipSize))
		}
	}
	if c.FPS < 1 || c.FPS > 120 {
		errs = append(errs, model.Invalid("fps", "%d, want 1 to 120", c.FPS))
	}
	if c.Self == "" {
		errs = append(errs, model.Invalid("self", "is required: the executable with the fleet and bare subcommands"))
	}
	if !c.NoPin {
		ncpu := runtime.NumCPU()
		for _, p := range []struct {
			name string
			cpu  int
		}{{"measured-cpu", c.MeasuredCPU}, {"fleet-cpu", c.FleetCPU}} {
			if p.cpu < 0 || p.cpu >= ncpu {
				errs = append(errs, model.Invalid(p.name, "%d, want 0 to %d (this machine has %d CPUs; -no-pin runs unpinned)", p.cpu, ncpu-1, ncpu))
			}
		}
		if c.MeasuredCPU == c.FleetCPU {
			errs = append(errs, model.Invalid("fleet-cpu", "%d is also measured-cpu: the fleet must not share the measured core", c.FleetCPU))
		}
	}
	for i, kv := range c.BareEnv {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			errs = append(errs, model.Invalid(fmt.Sprintf("bare-env[%d]", i), "%q, want KEY=VALUE", kv))
		}
	}
	if c.SkipBare && c.SkipRecord {
		errs = append(errs, model.Invalid("skip", "skipping both bare and record leaves nothing to measure"))
	}
	if c.PlaybackRequests < 0 || c.PlaybackRequests > 1000 {
		errs = append(errs, model.Invalid("playback-requests", "%d, want 0 to 1000", c.PlaybackRequests))
	}
	if c.PlaybackRequests > 0 && (c.PlaybackDuration < time.Second || c.PlaybackDuration > time.Minute) {
		errs = append(errs, model.Invalid("playback-duration", "%v, want 1s to 1m", c.PlaybackDuration))
	}
	return errors.Join(errs...)
}

// CameraIDs returns the camera ids of a fleet of n: cam-0001 … cam-n.
func CameraIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("cam-%04d", i+1)
	}
	return ids
}
