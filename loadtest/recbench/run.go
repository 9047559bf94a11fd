package recbench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vigie-vms/vigie/loadtest/simcam"
)

// Measure is one measured process over one window.
type Measure struct {
	Process string // "bare gortsplib" or "vigie node"
	Cameras int
	Window  time.Duration // measured wall time
	CPU     time.Duration // utime+stime over the window
	// MsPerCamSec is CPU milliseconds per camera-second: CPU / (Cameras × Window).
	MsPerCamSec float64
	// FramesPerSec is the frames received per second over all cameras: exact for the
	// bare receiver (depacketizer output); for the node, the sum of the cameras' health
	// fps at the end of the window (a one-second average). ExpectedFPS = Cameras × clip FPS.
	FramesPerSec, ExpectedFPS float64
	PacketsPerSec             float64
	Lost                      uint64 // RTP packets lost during the window
	RSS                       int64  // bytes, at the end of the window
	// DiskBitsPerCamSec is what the node wrote to its data directory during the window,
	// in bit/s per camera (0 for the bare receiver).
	DiskBitsPerCamSec float64
	// FleetMsPerCamSec is the fleet's CPU over the same window, for context.
	FleetMsPerCamSec float64
	// Problems make the window suspect: sessions that ended, cameras not recording,
	// frames the fleet skipped or dropped.
	Problems []string
	Load     string // /proc/loadavg at the end of the window
}

// Result is one fleet size.
type Result struct {
	Cameras      int
	Bare, Record *Measure
	// Ratio is Record.MsPerCamSec / Bare.MsPerCamSec (0 when one side is missing).
	Ratio    float64
	Playback *PlaybackResult
	// PerfReport is the path of the perf report of the node (Config.Perf).
	PerfReport string
}

// Report is a whole run.
type Report struct {
	Command string
	Date    time.Time
	Machine Machine
	Clip    ClipInfo
	Config  Config
	Results []Result
}

// TargetRatio is the target: recording costs at most 1.5× the bare receive.
const TargetRatio = 1.5

type runner struct {
	cfg   Config
	log   *slog.Logger
	prog  io.Writer
	work  string
	clip  string
	vigie string
}

func (r *runner) say(format string, args ...any) {
	fmt.Fprintf(r.prog, "recbench: "+format+"\n", args...)
}

// Run measures every fleet size of cfg and returns the report. It builds or finds what it
// needs first (the clip, the vigie binary), so a missing tool fails before any measure.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("recbench: %w", err)
	}
	r := &runner{cfg: cfg, log: cfg.Logger, prog: cfg.Progress}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.prog == nil {
		r.prog = io.Discard
	}
	rep := &Report{Command: cfg.Command, Date: time.Now().UTC(), Machine: ReadMachine(), Config: cfg}
	var err error
	if cfg.WorkDir == "" {
		if r.work, err = os.MkdirTemp("", "recbench-"); err != nil {
			return nil, err
		}
		if !cfg.KeepWorkDir && !cfg.Perf {
			defer os.RemoveAll(r.work)
		}
	} else {
		r.work = cfg.WorkDir
		if err := os.MkdirAll(r.work, 0o755); err != nil {
			return nil, err
		}
	}
	r.say("work directory %s", r.work)

	r.clip = cfg.ClipPath
	if r.clip == "" {
		r.clip = filepath.Join(r.work, fmt.Sprintf("testsrc2-%s-%dfps-%dk.h264", cfg.ClipSize, cfg.FPS, cfg.Bitrate/1000))
		r.say("generating the clip with ffmpeg: %s", r.clip)
		if err := MakeClip(ctx, r.clip, cfg.ClipSize, cfg.FPS, cfg.Bitrate); err != nil {
			return nil, err
		}
	}
	c, err := simcam.LoadClip(r.clip)
	if err != nil {
		return nil, err
	}
	c.FPS = cfg.FPS
	rep.Clip = DescribeClip(c)
	r.say("clip: %s", rep.Clip)

	if !cfg.SkipRecord {
		r.vigie = cfg.Vigie
		if r.vigie == "" {
			wd, _ := os.Getwd()
			root, err := ModuleRoot(wd)
			if err != nil {
				return nil, err
			}
			r.vigie = filepath.Join(r.work, "vigie")
			r.say("building %s from %s", r.vigie, root)
			if err := BuildVigie(ctx, root, r.vigie); err != nil {
				return nil, err
			}
		}
		if cfg.Perf {
			if _, err := exec.LookPath("perf"); err != nil {
				return nil, fmt.Errorf("-perf: perf: %w", ErrToolMissing)
			}
		}
	}
	for _, n := range cfg.Cameras {
		res, err := r.runFleetSize(ctx, n)
		if err != nil {
			return rep, fmt.Errorf("%d cameras: %w", n, err)
		}
		rep.Results = append(rep.Results, res)
	}
	rep.Machine.LoadAfter = LoadAvg()
	return rep, nil
}

func (r *runner) cpu(c int) int {
	if r.cfg.NoPin {
		return -1
	}
	return c
}

func (r *runner) runFleetSize(ctx context.Context, n int) (Result, error) {
	res := Result{Cameras: n}
	r.say("%d cameras: starting the fleet on CPU %d", n, r.cfg.FleetCPU)
	fleet, err := startChild("fleet", r.cpu(r.cfg.FleetCPU), filepath.Join(r.work, fmt.Sprintf("fleet-%d.log", n)), true, nil,
		r.cfg.Self, "fleet", "-cameras", itoa(n), "-clip", r.clip, "-fps", itoa(r.cfg.FPS))
	if err != nil {
		return res, err
	}
	defer fleet.stop(15 * time.Second)
	addr, err := fleet.ready(ctx, 30*time.Second)
	if err != nil {
		return res, err
	}
	if !r.cfg.SkipBare {
		if res.Bare, err = r.measureBare(ctx, fleet, addr, n); err != nil {
			return res, fmt.Errorf("bare: %w", err)
		}
		r.say("%d cameras: bare %.3f ms per camera-second", n, res.Bare.MsPerCamSec)
	}
	if !r.cfg.SkipRecord {
		if res.Record, res.Playback, res.PerfReport, err = r.measureRecord(ctx, fleet, addr, n); err != nil {
			return res, fmt.Errorf("record: %w", err)
		}
		r.say("%d cameras: vigie node %.3f ms per camera-second", n, res.Record.MsPerCamSec)
	}
	if res.Bare != nil && res.Record != nil && res.Bare.MsPerCamSec > 0 {
		res.Ratio = res.Record.MsPerCamSec / res.Bare.MsPerCamSec
	}
	if err := fleet.stop(15 * time.Second); err != nil {
		r.log.Warn("fleet stop", slog.Any("error", err))
	}
	return res, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// edge is the state sampled at each end of a window.
type edge struct {
	proc, fleet ProcSample
	fs          FleetStats
}

func (r *runner) sampleEdge(ctx context.Context, pid int, fleet *child) (edge, error) {
	var e edge
	var err error
	if e.proc, err = ReadProc(pid); err != nil {
		return e, err
	}
	if e.fleet, err = ReadProc(fleet.pid()); err != nil {
		return e, err
	}
	return e, fleet.stats(ctx, &e.fs)
}

// finish fills the fields common to both processes from the window's edges.
func (r *runner) finish(m *Measure, a, b edge) {
	m.Window = b.proc.At.Sub(a.proc.At)
	m.CPU = b.proc.CPU - a.proc.CPU
	camSec := float64(m.Cameras) * m.Window.Seconds()
	m.MsPerCamSec = float64(m.CPU.Microseconds()) / 1000 / camSec
	m.FleetMsPerCamSec = float64((b.fleet.CPU - a.fleet.CPU).Microseconds()) / 1000 / camSec
	m.ExpectedFPS = float64(m.Cameras * r.cfg.FPS)
	m.RSS = b.proc.RSS
	m.Load = LoadAvg()
	if d := b.fs.FramesSkipped - a.fs.FramesSkipped; d > 0 {
		m.Problems = append(m.Problems, fmt.Sprintf("the fleet skipped %d frames (its core is overloaded): invalid window", d))
	}
	if d := b.fs.PacketsDropped - a.fs.PacketsDropped; d > 0 {
		m.Problems = append(m.Problems, fmt.Sprintf("the fleet dropped %d packets for a slow reader (the measured process fell behind)", d))
	}
	if b.fs.Readers < m.Cameras {
		m.Problems = append(m.Problems, fmt.Sprintf("only %d of %d cameras had a reader at the end of the window", b.fs.Readers, m.Cameras))
	}
}

func (r *runner) measureBare(ctx context.Context, fleet *child, addr string, n int) (*Measure, error) {
	r.say("%d cameras: bare receiver on CPU %d", n, r.cfg.MeasuredCPU)
	b, err := startChild("bare receiver", r.cpu(r.cfg.MeasuredCPU), filepath.Join(r.work, fmt.Sprintf("bare-%d.log", n)), true, r.cfg.BareEnv,
		r.cfg.Self, "bare", "-fleet", addr, "-cameras", itoa(n), "-connect-timeout", r.cfg.ConnectTimeout.String())
	if err != nil {
		return nil, err
	}
	defer b.stop(15 * time.Second)
	if _, err := b.ready(ctx, r.cfg.ConnectTimeout+10*time.Second); err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, r.cfg.Warmup); err != nil {
		return nil, err
	}
	var s0, s1 BareStats
	if err := b.stats(ctx, &s0); err != nil {
		return nil, err
	}
	e0, err := r.sampleEdge(ctx, b.pid(), fleet)
	if err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, r.cfg.Window); err != nil {
		return nil, err
	}
	e1, err := r.sampleEdge(ctx, b.pid(), fleet)
	if err != nil {
		return nil, err
	}
	if err := b.stats(ctx, &s1); err != nil {
		return nil, err
	}
	m := &Measure{Process: "bare gortsplib", Cameras: n}
	if len(r.cfg.BareEnv) > 0 {
		m.Process += " (" + strings.Join(r.cfg.BareEnv, " ") + ")"
	}
	r.finish(m, e0, e1)
	sec := m.Window.Seconds()
	m.FramesPerSec = float64(s1.Frames-s0.Frames) / sec
	m.PacketsPerSec = float64(s1.Packets-s0.Packets) / sec
	m.Lost = s1.Lost - s0.Lost
	if s1.Ended > 0 {
		m.Problems = append(m.Problems, fmt.Sprintf("%d sessions ended", s1.Ended))
	}
	if d := s1.DecodeErrors - s0.DecodeErrors; d > 0 {
		m.Problems = append(m.Problems, fmt.Sprintf("%d depacketization errors", d))
	}
	if err := b.stop(15 * time.Second); err != nil {
		r.log.Warn("bare stop", slog.Any("error", err))
	}
	return m, nil
}

func (r *runner) measureRecord(ctx context.Context, fleet *child, addr string, n int) (*Measure, *PlaybackResult, string, error) {
	r.say("%d cameras: vigie node on CPU %d", n, r.cfg.MeasuredCPU)
	dataDir := filepath.Join(r.work, fmt.Sprintf("data-%d", n))
	if !r.cfg.KeepWorkDir {
		defer os.RemoveAll(dataDir)
	}
	logPath := filepath.Join(r.work, fmt.Sprintf("vigie-%d.log", n))
	v, err := startVigie(ctx, r.vigie, dataDir, logPath, r.cpu(r.cfg.MeasuredCPU), r.cfg.NoSync, 60*time.Second)
	if err != nil {
		return nil, nil, "", err
	}
	defer v.stop(60 * time.Second)
	ids := CameraIDs(n)
	if err := v.register(ctx, addr, ids); err != nil {
		return nil, nil, "", err
	}
	registered := time.Now()
	if _, err := v.waitRecording(ctx, n, r.cfg.ConnectTimeout); err != nil {
		return nil, nil, "", fmt.Errorf("%w (see %s)", err, logPath)
	}
	r.say("%d cameras: all recording after %v", n, time.Since(registered).Round(100*time.Millisecond))
	if err := sleepCtx(ctx, r.cfg.Warmup); err != nil {
		return nil, nil, "", err
	}
	h0, err := v.health(ctx)
	if err != nil {
		return nil, nil, "", err
	}
	d0 := diskBytes(dataDir)
	e0, err := r.sampleEdge(ctx, v.pid(), fleet)
	if err != nil {
		return nil, nil, "", err
	}
	if err := sleepCtx(ctx, r.cfg.Window); err != nil {
		return nil, nil, "", err
	}
	e1, err := r.sampleEdge(ctx, v.pid(), fleet)
	if err != nil {
		return nil, nil, "", err
	}
	d1 := diskBytes(dataDir)
	h1, err := v.health(ctx)
	if err != nil {
		return nil, nil, "", err
	}
	m := &Measure{Process: "vigie node", Cameras: n}
	r.finish(m, e0, e1)
	sec := m.Window.Seconds()
	m.FramesPerSec = h1.FPS
	m.PacketsPerSec = float64(h1.Packets-h0.Packets) / sec
	m.Lost = h1.Lost - h0.Lost
	m.DiskBitsPerCamSec = float64(d1-d0) * 8 / sec / float64(n)
	if h1.Recording < n {
		m.Problems = append(m.Problems, fmt.Sprintf("%d of %d cameras recording at the end of the window (%s)", h1.Recording, n, h1.FirstError))
	}
	if d := h1.Reconnects - h0.Reconnects; d > 0 {
		m.Problems = append(m.Problems, fmt.Sprintf("%d reconnections during the window", d))
	}

	var perfReport string
	if r.cfg.Perf {
		perfReport, err = r.profile(ctx, v.pid(), n)
		if err != nil {
			m.Problems = append(m.Problems, "perf profile failed: "+err.Error())
		}
	}

	var pb *PlaybackResult
	if r.cfg.PlaybackRequests > 0 {
		// Ranges lie inside what was recorded: from a few seconds after the cameras were
		// registered to a second before now, minus the duration asked for.
		from := registered.Add(3 * time.Second)
		to := time.Now().Add(-r.cfg.PlaybackDuration - time.Second)
		cams, starts := playbackPlan(ids, r.cfg.PlaybackRequests, from, to)
		var samples []PlaybackSample
		for i := range cams {
			samples = append(samples, v.playback(ctx, cams[i], starts[i], r.cfg.PlaybackDuration))
		}
		res := summarisePlayback(samples, r.cfg.PlaybackDuration)
		pb = &res
		r.say("%d cameras: playback first byte median %v, p95 %v (%d requests, %d failed)", n, res.FirstByteP50, res.FirstByteP95, res.Requests, res.Failed)
	}
	if err := v.stop(60 * time.Second); err != nil {
		r.log.Warn("vigie stop", slog.Any("error", err))
	}
	return m, pb, perfReport, nil
}

// profile records the node with perf for min(window, 10s) on the fleet's core (not the
// measured window: perf's sampling interrupts would be charged to the node) and writes
// the flat report next to the data.
func (r *runner) profile(ctx context.Context, pid, n int) (string, error) {
	d := min(r.cfg.Window, 10*time.Second)
	data := filepath.Join(r.work, fmt.Sprintf("perf-%d.data", n))
	out := filepath.Join(r.work, fmt.Sprintf("perf-%d.txt", n))
	r.say("%d cameras: perf record of the node for %v", n, d)
	pctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	argv, err := pinned(r.cpu(r.cfg.FleetCPU), []string{"perf", "record", "-F", "499", "-g", "-p", itoa(pid), "-o", data, "--", "sleep", fmt.Sprint(d.Seconds())})
	if err != nil {
		return "", err
	}
	if b, err := exec.CommandContext(pctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("perf record: %w: %s", err, strings.TrimSpace(string(b)))
	}
	rep, err := exec.CommandContext(pctx, "perf", "report", "-i", data, "--stdio", "--no-children",
		"--sort", "symbol", "--percent-limit", "0.7", "-g", "none").Output()
	if err != nil {
		return "", fmt.Errorf("perf report: %w", err)
	}
	if err := os.WriteFile(out, rep, 0o644); err != nil {
		return "", err
	}
	_ = os.Remove(data)
	return out, nil
}
