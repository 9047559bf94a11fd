package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigie-vms/vigie/loadtest/fleet"
	"github.com/vigie-vms/vigie/loadtest/recbench"
	"github.com/vigie-vms/vigie/loadtest/simcam"
	"github.com/vigie-vms/vigie/loadtest/verify"
)

// Options are the runner's own settings (the scenario file says what to test).
type Options struct {
	// Vigie is the `vigie` binary. Required (the CLI builds it when not given).
	Vigie string
	// Dir receives the nodes' data directories and logs, and the reports.
	Dir string
	// Progress receives one line per second; nil discards.
	Progress io.Writer
	// Logger receives the runner's logs; nil discards.
	Logger *slog.Logger
	// ClipDir caches generated clips ("" = $TMPDIR/vigie-loadtest-clips).
	ClipDir string
	// FleetCommand is the argv, before "fleet", that runs this program's fleet subcommand
	// (e.g. [vigie, "loadtest"]). When set and cameras.cpus pins the fleet, the fleet runs
	// in that child process pinned to those CPUs, apart from the runner (its health
	// polling, registrations and garbage collector). nil: the fleet runs in the runner.
	FleetCommand []string
}

// Event is one thing the runner did during the run (a fault, a phase).
type Event struct {
	At      time.Time     `json:"at"`
	Elapsed time.Duration `json:"elapsed"` // since the cameras were registered
	What    string        `json:"what"`
	Result  string        `json:"result"` // "ok", "skipped: why" or "failed: why"
}

// NodeSample is one node's state at one second of the run.
type NodeSample struct {
	Elapsed    time.Duration `json:"elapsed"`
	State      string        `json:"state"`
	CPU        float64       `json:"cpu"` // cores used over the last second (1.0 = one core)
	RSS        int64         `json:"rss"`
	Cameras    int           `json:"cameras"`
	Recording  int           `json:"recording"`
	IngestBps  float64       `json:"ingest_bps"`
	HealthErr  string        `json:"health_error,omitempty"`
	FirstError string        `json:"first_camera_error,omitempty"`
	// PacketsLost and Reconnects add up the node's cameras' counters (cumulative); MaxLag
	// is the age of the oldest last frame among its recording cameras.
	PacketsLost uint64        `json:"packets_lost,omitempty"`
	Reconnects  uint64        `json:"reconnects,omitempty"`
	MaxLag      time.Duration `json:"max_lag,omitempty"`
}

// NodeResult is one node over the run.
type NodeResult struct {
	Index   int          `json:"index"`
	ID      string       `json:"id"`
	HTTP    string       `json:"http"`
	DataDir string       `json:"data_dir"`
	Log     string       `json:"log"`
	Starts  int          `json:"starts"`
	Exit    string       `json:"exit,omitempty"`
	Samples []NodeSample `json:"samples"`
}

// Result is everything a run produced, for the report.
type Result struct {
	Scenario   *Scenario             `json:"scenario"`
	Vigie      string                `json:"vigie"`
	Dir        string                `json:"dir"`
	Started    time.Time             `json:"started"`
	Registered time.Time             `json:"registered"`
	Ended      time.Time             `json:"ended"`
	Window     verify.Interval       `json:"window"`
	Nodes      []NodeResult          `json:"nodes"`
	Events     []Event               `json:"events"`
	Fleet      fleet.Stats           `json:"fleet"`
	Cameras    []verify.CameraReport `json:"cameras"`
	Summary    verify.Summary        `json:"summary"`
	// Failures are what went wrong with the run itself (a node that did not start, a
	// registration refused, a fault that failed), each a sentence.
	Failures []string  `json:"failures"`
	Load     [2]string `json:"load"` // /proc/loadavg at start and end
	// Probe is the independent ffprobe check (verify.ffprobe_check cameras), nil if none.
	Probe *verify.ProbeCheck `json:"ffprobe_check,omitempty"`
	// Ramp is the capacity search's steps (scenario ramp), nil if none.
	Ramp *RampResult `json:"ramp,omitempty"`
	// VerifyTime is how long verification took.
	VerifyTime time.Duration `json:"verify_time"`
}

// runner holds the state of one run.
type runner struct {
	sc    *Scenario
	opt   Options
	log   *slog.Logger
	nodes []*nodeProc
	fl    fleetAPI
	cams  []fleet.Camera
	res   *Result
	t0    time.Time

	tenantOf   map[string]string
	regMu      sync.Mutex // serialises registrations
	registered int        // cameras registered so far: cams[:registered] (regAt guarded by mu)
	regAt      map[string]time.Time

	mu       sync.Mutex // guards res.Events, res.Failures, faults, regAt, stepNote
	stepNote string     // the ramp's step, for the progress line
}

func (r *runner) event(what, result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := Event{At: time.Now(), What: what, Result: result}
	if !r.t0.IsZero() {
		e.Elapsed = e.At.Sub(r.t0).Round(time.Millisecond)
	}
	r.res.Events = append(r.res.Events, e)
	r.log.Info("event", slog.String("what", what), slog.String("result", result))
	if strings.HasPrefix(result, "failed") || strings.HasPrefix(result, "skipped") {
		r.res.Failures = append(r.res.Failures, fmt.Sprintf("%s at %v: %s", what, e.Elapsed, result))
	}
	if r.opt.Progress != nil {
		fmt.Fprintf(r.opt.Progress, "  >> %s: %s\n", what, result)
	}
}

func (r *runner) fail(format string, args ...any) {
	r.mu.Lock()
	r.res.Failures = append(r.res.Failures, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// cameraList spreads Count cameras over codecs by weight and returns them with tenants.
func cameraList(c Cameras) (cams []fleet.Camera, tenantOf map[string]string) {
	var codecs []string
	total := 0
	for k, w := range c.Codecs {
		if w > 0 {
			codecs = append(codecs, k)
			total += w
		}
	}
	sort.Strings(codecs)
	tenantOf = map[string]string{}
	ids := fleet.IDs(c.Prefix, c.Count)
	for i, id := range ids {
		// weighted round robin: position i mod total picks the codec by cumulated weight
		codec, acc := simcam.CodecH264, 0
		for _, k := range codecs {
			acc += c.Codecs[k]
			if i%total < acc {
				codec = k
				break
			}
		}
		cams = append(cams, fleet.Camera{ID: id, Codec: codec})
		tenantOf[id] = fmt.Sprintf("t%02d", i%c.Tenants+1)
	}
	return cams, tenantOf
}

// Run runs the scenario: fleet, nodes, registration, the timed phase with its faults,
// verification, and stops everything. ctx cancellation (Ctrl-C) ends the timed phase
// early; everything started is still stopped, within Nodes.StopGrace per node. The
// result is returned even with an error (what was measured so far).
func Run(ctx context.Context, sc *Scenario, opt Options) (*Result, error) {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Vigie == "" {
		return nil, errors.New("scenario: Options.Vigie (the vigie binary) is required")
	}
	if err := os.MkdirAll(opt.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	r := &runner{sc: sc, opt: opt, log: opt.Logger.With(slog.String("component", "runner")),
		res: &Result{Scenario: sc, Vigie: opt.Vigie, Dir: opt.Dir, Started: time.Now(), Load: [2]string{recbench.LoadAvg(), ""}}}
	defer func() { r.res.Load[1] = recbench.LoadAvg() }()
	err := r.run(ctx)
	return r.res, err
}

func (r *runner) run(ctx context.Context) (err error) {
	sc := r.sc
	// 1. Fleet, in-process (pinned to cameras.cpus until verification).
	r.cams, r.tenantOf = cameraList(sc.Cameras)
	r.regAt = map[string]time.Time{}
	r.progressf("preparing %d cameras (%v, bitrate %s)…", len(r.cams), sc.Cameras.Codecs, bitrateStr(sc.Cameras.Bitrate))
	var fleetCPUs []int
	if sc.Cameras.CPUs != "" {
		fleetCPUs, _ = ParseCPUList(sc.Cameras.CPUs) // validated
	}
	if len(fleetCPUs) > 0 && len(r.opt.FleetCommand) > 0 {
		logPath := filepath.Join(r.opt.Dir, "fleet.log")
		fp, err := startFleetProc(ctx, r.opt.FleetCommand, sc.Cameras, r.cams, fleetCPUs, r.opt.ClipDir, logPath, r.log)
		if err != nil {
			return err
		}
		r.fl = fp
		r.event("fleet in its own process pinned to CPUs "+sc.Cameras.CPUs, fmt.Sprintf("ok (pid %d, GOMAXPROCS %d, log %s)", fp.Pid(), len(fleetCPUs), logPath))
	} else {
		fl, err := fleet.New(ctx, fleet.Config{Host: "127.0.0.1", Cameras: r.cams, Bitrate: sc.Cameras.Bitrate,
			Size: sc.Cameras.Size, AltSize: sc.Cameras.AltSize, ClipDir: r.opt.ClipDir, Logger: r.opt.Logger})
		if err != nil {
			return err
		}
		if err := fl.Start(); err != nil {
			return err
		}
		r.fl = fl
	}
	fleetUp := true
	stopFleet := func() {
		if fleetUp {
			r.res.Fleet = r.fl.Stats()
			r.fl.Close()
			fleetUp = false
		}
	}
	defer stopFleet()
	// The runner itself (and an in-process fleet) stays off the nodes' CPUs.
	unpin := func() {}
	if len(fleetCPUs) > 0 {
		what := "pin the fleet to CPUs " + sc.Cameras.CPUs
		if _, child := r.fl.(*fleetProc); child {
			what = "pin the runner to CPUs " + sc.Cameras.CPUs
		}
		u, err := pinSelf(fleetCPUs)
		if err != nil {
			r.event(what, "failed: "+err.Error())
		} else {
			unpin = u
			r.event(what, fmt.Sprintf("ok (the runner's threads, GOMAXPROCS %d)", len(fleetCPUs)))
		}
	}
	defer func() { unpin() }()

	// 2. Nodes: addresses for every node the scenario will ever run, then start the
	// initial ones.
	total := sc.Nodes.Count + sc.addedNodes()
	for i := range total {
		host := sc.Nodes.Hosts[i%len(sc.Nodes.Hosts)]
		ports, err := freePorts(host, 5)
		if err != nil {
			return err
		}
		n := &nodeProc{index: i, id: fmt.Sprintf("node-%d", i+1), host: host, state: StateNotStarted,
			addrs:   map[string]string{"http_addr": ports[0], "grpc_addr": ports[1], "rtsp_addr": ports[2], "raft_addr": ports[3], "gossip_addr": ports[4]},
			dataDir: filepath.Join(r.opt.Dir, fmt.Sprintf("node-%d", i+1), "data"),
			logPath: filepath.Join(r.opt.Dir, fmt.Sprintf("node-%d.log", i+1)),
			http:    &http.Client{Timeout: 10 * time.Second}}
		r.nodes = append(r.nodes, n)
	}
	defer r.stopNodes()
	for _, f := range sc.Faults {
		if f.Action == FaultFullDisk {
			r.prepareFullDisk(r.nodes[f.Node])
		}
	}
	for _, n := range r.nodes[:sc.Nodes.Count] {
		r.progressf("starting %s on %s (log %s)…", n.id, n.addrs["http_addr"], n.logPath)
		if err := n.start(ctx, r.opt.Vigie, sc, r.nodes); err != nil {
			if n.index == 0 {
				return err
			}
			r.fail("%v", err)
		}
	}

	// 3. Registration through node 0.
	if err := r.registerUpTo(ctx, sc.Cameras.Initial); err != nil {
		return err
	}
	r.t0 = time.Now()
	r.res.Registered = r.t0
	r.checkCluster(ctx)
	r.waitRecording(ctx)

	// 4. The timed phase (or the ramp's steps).
	if sc.Ramp != nil {
		r.rampPhase(ctx)
		r.res.Ended = time.Now()
		r.res.Window = verify.Interval{Start: r.t0.Add(sc.Ramp.Settle.D()), End: r.res.Ended.Add(-sc.Verify.Tail.D())}
	} else {
		end := r.t0.Add(sc.Duration.D())
		r.timedPhase(ctx, end)
		r.res.Ended = time.Now()
		r.res.Window = verify.Interval{Start: r.t0.Add(sc.Verify.StartupGrace.D()), End: r.res.Ended.Add(-sc.Verify.Tail.D())}
	}
	states := map[string]fleet.CameraState{}
	for _, c := range r.cams {
		states[c.ID], _ = r.fl.Camera(c.ID)
	}
	stopFleet()
	unpin()
	unpin = func() {}

	// 5. Verify through the API of a node that is up.
	if ctx.Err() != nil {
		r.fail("interrupted at %v: verification skipped", time.Since(r.t0).Round(time.Second))
		return ctx.Err()
	}
	r.verify(states)
	return nil
}

func bitrateStr(b int) string {
	if b == 0 {
		return "embedded ~1 Mbit/s"
	}
	return fmt.Sprintf("%.1f Mbit/s", float64(b)/1e6)
}

func (r *runner) progressf(format string, args ...any) {
	if r.opt.Progress != nil {
		fmt.Fprintf(r.opt.Progress, format+"\n", args...)
	}
}

// registerUpTo registers cameras through node 0 until n are registered (the tenants
// first, on the first call).
func (r *runner) registerUpTo(ctx context.Context, n int) error {
	r.regMu.Lock()
	defer r.regMu.Unlock()
	n = min(n, len(r.cams))
	if n <= r.registered {
		return nil
	}
	if r.registered == 0 {
		if err := r.createTenants(ctx); err != nil {
			return err
		}
	}
	batch := r.cams[r.registered:n]
	if err := r.importCameras(ctx, batch); err != nil {
		return err
	}
	now := time.Now()
	r.mu.Lock()
	for _, c := range batch {
		r.regAt[c.ID] = now
	}
	r.mu.Unlock()
	r.registered = n
	return nil
}

func (r *runner) registeredCount() int {
	r.regMu.Lock()
	defer r.regMu.Unlock()
	return r.registered
}

func (r *runner) createTenants(ctx context.Context) error {
	n := r.nodes[0]
	for t := range r.sc.Cameras.Tenants {
		id := fmt.Sprintf("t%02d", t+1)
		// A create retried by the cluster (leader change during formation) answers 409.
		if err := n.call(ctx, http.MethodPost, "/v1/tenants", map[string]any{"id": id, "name": "Load test " + id}, nil); err != nil && !errors.Is(err, errConflict) {
			return fmt.Errorf("create tenant %s: %w", id, err)
		}
	}
	return nil
}

func (r *runner) importCameras(ctx context.Context, batch []fleet.Camera) error {
	n := r.nodes[0]
	type cam struct {
		ID     string `json:"id"`
		Tenant string `json:"tenant"`
		URL    string `json:"url"`
	}
	var cams []cam
	for _, c := range batch {
		cams = append(cams, cam{ID: c.ID, Tenant: r.tenantOf[c.ID], URL: r.fl.URL(c.ID)})
	}
	if err := n.call(ctx, http.MethodPost, "/v1/cameras:import", map[string]any{"cameras": cams}, nil); err != nil {
		return fmt.Errorf("import %d cameras through node 0: %w", len(cams), err)
	}
	r.progressf("registered %d cameras (%s … %s) through %s", len(cams), batch[0].ID, batch[len(batch)-1].ID, n.id)
	return nil
}

// checkCluster compares the nodes node 0's cluster status lists with the nodes started.
func (r *runner) checkCluster(ctx context.Context) {
	up := 0
	for _, n := range r.nodes {
		if n.State() == StateUp {
			up++
		}
	}
	var st struct {
		Nodes []struct {
			ID string `json:"id"`
		} `json:"nodes"`
	}
	if err := r.nodes[0].call(ctx, http.MethodGet, "/v1/cluster/status", nil, &st); err != nil {
		r.event("cluster status", "failed: "+err.Error())
		return
	}
	if len(st.Nodes) < up {
		r.event("cluster status", fmt.Sprintf("failed: %s's /v1/cluster/status lists %d node(s) of the %d started: the nodes did not form one cluster "+
			"(this vigie has no multi-node support yet, or nodes.args lacks its seed flag), so only the nodes listed record cameras and a fault on another node tests nothing",
			r.nodes[0].id, len(st.Nodes), up))
		return
	}
	r.event("cluster status", fmt.Sprintf("ok (%d nodes)", len(st.Nodes)))
}

// waitRecording waits (bounded) until every camera records somewhere, for the report.
func (r *runner) waitRecording(ctx context.Context) {
	deadline := time.Now().Add(r.sc.Cameras.RegisterTimeout.D())
	for time.Now().Before(deadline) && ctx.Err() == nil {
		rec := 0
		for _, n := range r.nodes {
			if n.State() == StateUp {
				h, err := n.health(ctx)
				if err == nil {
					rec += h.Recording
				}
			}
		}
		if rec >= r.registeredCount() {
			r.event("all cameras recording", "ok")
			return
		}
		if time.Since(r.t0) > r.sc.Verify.StartupGrace.D() {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	r.event("all cameras recording", fmt.Sprintf("failed: not within the startup grace of %v (see the progress lines)", r.sc.Verify.StartupGrace.D()))
}

// timedPhase runs until end (or ctx), firing faults on time and printing one progress line
// per second.
func (r *runner) timedPhase(ctx context.Context, end time.Time) {
	faults := append([]Fault(nil), r.sc.Faults...)
	sort.SliceStable(faults, func(i, j int) bool { return faults[i].At < faults[j].At })
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	next := 0
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		now := time.Now()
		for next < len(faults) && !r.t0.Add(faults[next].At.D()).After(now) {
			f := faults[next]
			next++
			wg.Add(1)
			go func() { defer wg.Done(); r.apply(ctx, f) }()
		}
		r.sample(ctx, now)
		r.printProgress(now, end, faults, next)
		if !now.Before(end) {
			return
		}
		wait := time.Until(end)
		if next < len(faults) {
			wait = min(wait, time.Until(r.t0.Add(faults[next].At.D())))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-time.After(max(wait, 0)):
		}
	}
}

// sample reads /proc and the health of every node.
func (r *runner) sample(ctx context.Context, now time.Time) {
	elapsed := now.Sub(r.t0).Round(time.Second)
	var wg sync.WaitGroup
	out := make([]NodeSample, len(r.nodes))
	for i, n := range r.nodes {
		wg.Go(func() {
			s := NodeSample{Elapsed: elapsed, State: n.State()}
			if pid := n.pid(); pid > 0 {
				if ps, err := recbench.ReadProc(pid); err == nil {
					n.mu.Lock()
					if !n.lastAt.IsZero() {
						s.CPU = float64(ps.CPU-n.lastCPU) / float64(ps.At.Sub(n.lastAt))
					}
					n.lastCPU, n.lastAt = ps.CPU, ps.At
					n.mu.Unlock()
					s.RSS = ps.RSS
				}
			}
			if s.State == StateUp {
				hctx, cancel := context.WithTimeout(ctx, 900*time.Millisecond)
				h, err := n.health(hctx)
				cancel()
				if err != nil {
					s.HealthErr = err.Error()
				}
				s.Cameras, s.Recording, s.IngestBps, s.FirstError = h.Cameras, h.Recording, h.BitrateBps, h.FirstError
				s.PacketsLost, s.Reconnects, s.MaxLag = h.PacketsLost, h.Reconnects, h.MaxLag
			}
			out[i] = s
		})
	}
	wg.Wait()
	r.mu.Lock()
	for i := range r.nodes {
		for len(r.res.Nodes) <= i {
			r.res.Nodes = append(r.res.Nodes, NodeResult{})
		}
		r.res.Nodes[i].Samples = append(r.res.Nodes[i].Samples, out[i])
	}
	r.mu.Unlock()
}

func (r *runner) printProgress(now, end time.Time, faults []Fault, next int) {
	if r.opt.Progress == nil {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[%6s/%s]", now.Sub(r.t0).Round(time.Second), r.sc.Duration.D())
	r.mu.Lock()
	for i, n := range r.nodes {
		if i >= len(r.res.Nodes) || len(r.res.Nodes[i].Samples) == 0 {
			continue
		}
		s := r.res.Nodes[i].Samples[len(r.res.Nodes[i].Samples)-1]
		if s.State == StateNotStarted {
			continue
		}
		if s.State == StateUp {
			fmt.Fprintf(&b, " %s: %d/%d rec %.0f Mbit/s cpu %.0f%% %d MiB", n.id, s.Recording, s.Cameras, s.IngestBps/1e6, s.CPU*100, s.RSS>>20)
		} else {
			fmt.Fprintf(&b, " %s: %s", n.id, s.State)
		}
		if s.HealthErr != "" {
			b.WriteString(" (health: unreachable)")
		}
	}
	r.mu.Unlock()
	st := r.fl.Stats()
	fmt.Fprintf(&b, " | fleet %d readers", st.Readers)
	if st.FramesSkipped > 0 || st.LateFrames > 0 {
		fmt.Fprintf(&b, " LATE %d skipped %d", st.LateFrames, st.FramesSkipped)
	}
	r.mu.Lock()
	note := r.stepNote
	r.mu.Unlock()
	switch {
	case note != "":
		fmt.Fprintf(&b, " | %s", note)
	case next < len(faults):
		fmt.Fprintf(&b, " | next: %s at %v", faults[next], faults[next].At.D())
	default:
		b.WriteString(" | no more faults")
	}
	fmt.Fprintln(r.opt.Progress, b.String())
}

// cameraSubset returns the first n camera ids (all for 0).
func (r *runner) cameraSubset(n int) []string {
	if n <= 0 || n > len(r.cams) {
		n = len(r.cams)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = r.cams[i].ID
	}
	return out
}

// apply carries out one fault and records it as an event.
func (r *runner) apply(ctx context.Context, f Fault) {
	what := f.String()
	var n *nodeProc
	if f.Node < len(r.nodes) {
		n = r.nodes[f.Node]
	}
	result := "ok"
	var err error
	if n != nil && (f.Action == FaultKill || f.Action == FaultStop || f.Action == FaultDrain || f.Action == FaultFullDisk) && n.State() == StateUp {
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		h, herr := n.health(hctx)
		cancel()
		if herr == nil && h.Recording == 0 {
			result = "ok, but the node recorded no camera: nothing to fail over"
			r.fail("%s: the node recorded no camera at that time, so this fault tested nothing", what)
		}
	}
	switch f.Action {
	case FaultKill:
		err = n.signal(syscall.SIGKILL, StateKilled)
	case FaultStop:
		err = n.signal(syscall.SIGSTOP, StateStopped)
	case FaultCont:
		if err = n.signal(syscall.SIGCONT, ""); err == nil {
			n.mu.Lock()
			if n.state == StateStopped {
				n.state = StateUp
			}
			n.mu.Unlock()
		}
	case FaultRestart, FaultAddNode:
		if f.Action == FaultAddNode {
			n = nil
			for _, m := range r.nodes {
				if m.State() == StateNotStarted {
					n = m
					break
				}
			}
			if n == nil {
				err = errors.New("no node left to add")
				break
			}
			what += " " + n.id
		}
		if st := n.State(); st == StateUp || st == StateStarting || st == StateStopped {
			err = fmt.Errorf("node %d is %s: kill it first", n.index, st)
			break
		}
		err = n.start(ctx, r.opt.Vigie, r.sc, r.nodes)
	case FaultDrain, FaultHTTP:
		path := strings.ReplaceAll(f.Path, "{node_id}", n.id)
		var body any
		if f.Body != "" {
			body = f.Body
		}
		if err = n.call(ctx, f.Method, path, body, nil); err != nil && strings.Contains(err.Error(), "404") {
			err = fmt.Errorf("%w (this vigie has no such endpoint yet?)", err)
		}
	case FaultFullDisk:
		if !n.tmpfs {
			result = "skipped: full disk needs root and a tmpfs mounted on the node's data dir before it started (not possible here: see the events before the run)"
			break
		}
		err = fillDisk(n.dataDir)
	case FaultFlipBytes:
		var path string
		var size int64
		path, size, err = segmentFile(n.dataDir)
		if err == nil {
			err = flipBytes(path, size, f.Bytes)
			what += fmt.Sprintf(" (%d bytes of %s)", f.Bytes, path)
		}
	case FaultAddCameras:
		err = r.registerUpTo(ctx, f.Cameras)
	case FaultStall, FaultDrop, FaultGarbage, FaultResolution:
		q := url.Values{}
		action := map[string]string{FaultStall: fleet.ActionStall, FaultDrop: fleet.ActionDrop, FaultGarbage: fleet.ActionGarbage, FaultResolution: fleet.ActionResolution}[f.Action]
		switch f.Action {
		case FaultStall:
			q.Set("on", orDefault(f.Value, "true"))
		case FaultGarbage:
			q.Set("packets", orDefault(f.Value, "10"))
		case FaultResolution:
			q.Set("alt", orDefault(f.Value, "true"))
		}
		for _, id := range r.cameraSubset(f.Cameras) {
			if _, err = r.fl.Apply(id, action, q); err != nil {
				break
			}
		}
	}
	if err != nil {
		result = "failed: " + err.Error()
	}
	r.event(what, result)
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

func flipBytes(path string, size int64, n int) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 1)
	for range n {
		off := size/4 + rand.Int64N(max(size/2, 1)) // the middle: past the init section
		if _, err := f.ReadAt(b, off); err != nil {
			return err
		}
		b[0] ^= 0xff
		if _, err := f.WriteAt(b, off); err != nil {
			return err
		}
	}
	return f.Sync()
}

// prepareFullDisk mounts a 1 GiB tmpfs on the node's data dir before it starts, so that
// the full-disk fault can fill it without touching the machine's disk. Root only.
func (r *runner) prepareFullDisk(n *nodeProc) {
	if os.Geteuid() != 0 {
		r.event("full-disk setup for "+n.id, "skipped: needs root (mount a tmpfs on the data dir)")
		return
	}
	if err := os.MkdirAll(n.dataDir, 0o755); err != nil {
		r.event("full-disk setup for "+n.id, "skipped: "+err.Error())
		return
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1g", "vigie-loadtest", n.dataDir).CombinedOutput()
	if err != nil {
		r.event("full-disk setup for "+n.id, fmt.Sprintf("skipped: mount tmpfs: %v: %s (a container without CAP_SYS_ADMIN cannot)", err, strings.TrimSpace(string(out))))
		return
	}
	n.tmpfs = true
	r.event("full-disk setup for "+n.id, "ok (1 GiB tmpfs on "+n.dataDir+")")
}

// fillDisk writes a filler file until the file system is full.
func fillDisk(dir string) error {
	f, err := os.Create(filepath.Join(dir, "loadtest-filler"))
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for range 1 << 14 { // at most 16 GiB
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return nil
			}
			return err
		}
	}
	return errors.New("wrote 16 GiB without filling the file system")
}

// stopNodes stops every node (bounded: StopGrace each, in parallel) and unmounts tmpfs.
func (r *runner) stopNodes() {
	var wg sync.WaitGroup
	for _, n := range r.nodes {
		wg.Go(func() { n.stop(r.sc.Nodes.StopGrace.D()) })
	}
	wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, n := range r.nodes {
		for len(r.res.Nodes) <= i {
			r.res.Nodes = append(r.res.Nodes, NodeResult{})
		}
		nr := &r.res.Nodes[i]
		nr.Index, nr.ID, nr.HTTP, nr.DataDir, nr.Log, nr.Starts, nr.Exit = n.index, n.id, n.base(), n.dataDir, n.logPath, n.starts, n.exit
		if n.tmpfs {
			_ = exec.Command("umount", n.dataDir).Run()
		}
	}
}

// verify reads every registered camera back through the API and analyses it as soon as
// it is read (bounded memory), then runs the ffprobe check on the exports it kept.
func (r *runner) verify(states map[string]fleet.CameraState) {
	var api *nodeProc
	for _, n := range r.nodes {
		if n.State() == StateUp {
			api = n
			break
		}
	}
	if api == nil {
		r.fail("verification: no node is up to answer the API")
		return
	}
	ids := r.cameraSubset(r.registeredCount())
	vs := r.sc.Verify
	r.progressf("verifying %d cameras through %s (window %s – %s, %d at once)…", len(ids), api.id,
		r.res.Window.Start.Format("15:04:05"), r.res.Window.End.Format("15:04:05"), vs.Parallel)
	t := time.Now()
	src := &verify.API{Base: api.base(), HTTP: &http.Client{Timeout: 5 * time.Minute}}
	var faults []verify.Fault
	for _, e := range r.res.Events {
		for _, k := range []string{FaultKill, FaultStop, FaultDrain, FaultFullDisk} {
			if strings.HasPrefix(e.What, k+" node ") && e.Result == "ok" { // not "ok, but the node recorded no camera"
				node, _ := strconv.Atoi(strings.Fields(strings.TrimPrefix(e.What, k+" node "))[0])
				faults = append(faults, verify.Fault{At: e.At, Kind: k, Node: node})
			}
		}
	}
	// The ffprobe check's cameras keep their window exports.
	var picked map[string]bool
	seed := vs.Seed
	keepDir := filepath.Join(r.opt.Dir, "ffprobe")
	if vs.FFprobeCheck > 0 {
		if seed == 0 {
			seed = uint64(time.Now().UnixNano())
		}
		picked = map[string]bool{}
		for _, id := range verify.PickCameras(ids, vs.FFprobeCheck, seed) {
			picked[id] = true
		}
		if err := os.MkdirAll(keepDir, 0o755); err != nil {
			r.fail("ffprobe check: %v", err)
		}
	}
	// Each camera's window starts StartupGrace after its registration (a ramp's camera:
	// Settle after its step's start), never before the run's window.
	windowOf := func(id string) verify.Interval {
		r.mu.Lock()
		reg := r.regAt[id]
		r.mu.Unlock()
		grace := vs.StartupGrace.D()
		if r.sc.Ramp != nil {
			grace = r.sc.Ramp.Settle.D()
		}
		w := r.res.Window
		if s := reg.Add(grace); s.After(w.Start) {
			w.Start = s
		}
		return w
	}
	reports := make([]verify.CameraReport, len(ids))
	var targets []verify.ProbeTarget
	var mu sync.Mutex
	opt := verify.Options{HiddenGapMin: vs.HiddenGapMin.D()}
	copt := verify.CollectOptions{CheckSegments: *vs.CheckSegments, ExportSegments: vs.ExportSegments,
		Keep: func(c string) bool { return picked[c] }, KeepDir: keepDir}
	// Each camera is read over its own window: CollectEach takes one window, so run it
	// per distinct window (one for a plain run, one per ramp step's new cameras).
	groups := map[verify.Interval][]int{}
	var order []verify.Interval
	for i, id := range ids {
		w := windowOf(id)
		if _, ok := groups[w]; !ok {
			order = append(order, w)
		}
		groups[w] = append(groups[w], i)
	}
	for _, w := range order {
		idx := groups[w]
		gids := make([]string, len(idx))
		for k, i := range idx {
			gids[k] = ids[i]
		}
		if !w.Start.Before(w.End) {
			for _, i := range idx {
				reports[i] = verify.CameraReport{Camera: ids[i], Window: w, Problems: []string{"registered too late: nothing of its window to verify"}}
			}
			continue
		}
		verify.CollectEach(context.Background(), src, gids, w, copt, vs.Parallel, func(k int, in verify.Input) {
			i := idx[k]
			in.Sent = r.sentOf(states[ids[i]])
			in.Faults = faults
			rep := verify.Analyze(in, opt)
			r.rampAnalyze(in, opt)
			mu.Lock()
			defer mu.Unlock()
			reports[i] = rep
			if picked[ids[i]] {
				targets = append(targets, verify.ProbeTarget{Camera: ids[i], Window: in.Window, Sent: in.Sent, Files: in.Files, Recorded: rep.Recorded})
			}
		})
	}
	r.res.Cameras = reports
	r.res.Summary = verify.Summarize(r.res.Cameras)
	r.res.VerifyTime = time.Since(t)
	r.progressf("verified in %v", r.res.VerifyTime.Round(time.Millisecond))
	r.rampFinish()
	if vs.FFprobeCheck > 0 {
		sort.Slice(targets, func(i, j int) bool { return targets[i].Camera < targets[j].Camera })
		var names []string
		for _, t := range targets {
			names = append(names, t.Camera)
		}
		r.progressf("ffprobe check: %d cameras picked with seed %d: %s", len(targets), seed, strings.Join(names, ", "))
		pc := verify.RunProbeCheck(context.Background(), vs.FFprobeCount, seed, vs.FFprobeCheck, targets)
		r.res.Probe = &pc
		if pc.Skipped != "" {
			r.progressf("ffprobe check skipped: %s", pc.Skipped)
		}
		for _, c := range pc.Cameras {
			verdict := "agree"
			if !c.Agree {
				verdict = "DISAGREE: " + c.Why
			}
			r.progressf("  %s: ffprobe %d %s, verifier parsed %d (%d outside the window), window frames %d, verifier recorded %d: %s",
				c.Camera, c.FFprobe, pc.Mode, c.Parsed, c.Outside, c.WindowFrames, c.Recorded, verdict)
		}
	}
}

// sentOf turns the fleet's state of a camera into what the verifier expects.
func (r *runner) sentOf(st fleet.CameraState) verify.Sent {
	var stalls []verify.Interval
	for _, s := range st.Stalls {
		end := s.End
		if end.IsZero() {
			end = r.res.Ended.Add(time.Hour)
		}
		stalls = append(stalls, verify.Interval{Start: s.Start, End: end})
	}
	return verify.Sent{Frame0: st.Frame0, FPS: st.FPS, FramesSent: st.FramesSent, Stalls: stalls}
}
