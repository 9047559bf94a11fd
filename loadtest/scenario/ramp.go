package scenario

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/vigie-vms/vigie/loadtest/fleet"
	"github.com/vigie-vms/vigie/loadtest/recbench"
	"github.com/vigie-vms/vigie/loadtest/verify"
)

// RampStep is one step of a capacity search.
type RampStep struct {
	Index   int       `json:"index"` // from 1
	Cameras int       `json:"cameras"`
	Start   time.Time `json:"start"` // cameras registered
	End     time.Time `json:"end"`
	// Window is the step's verified window: [Start + settle, End) (minus the tail for the
	// last step).
	Window verify.Interval `json:"window"`
	// Counters over the window (after settle).
	Recording    int           `json:"recording"` // cameras recording at the end (all nodes)
	PacketsLost  uint64        `json:"packets_lost"`
	Reconnects   uint64        `json:"reconnects"`
	MaxLag       time.Duration `json:"max_lag"` // oldest last frame of a recording camera
	FleetFrames  uint64        `json:"fleet_frames"`
	FleetLate    uint64        `json:"fleet_late"`
	FleetSkipped uint64        `json:"fleet_skipped"`
	// FleetDropped counts RTP packets the fleet dropped for a reader that did not read in
	// time (its send queue was full): frames the node never got.
	FleetDropped uint64 `json:"fleet_dropped"`
	// FramesDropped is the nodes' vigie_ingest_frames_dropped_total over the window (-1:
	// not exported by this vigie).
	FramesDropped int64 `json:"frames_dropped"`
	// HealthErrors counts the samples of the window whose camera health could not be
	// read: the counters above then say nothing of that second.
	HealthErrors int `json:"health_errors"`
	Samples      int `json:"samples"`
	// LastHealthFailed: the health read at the step's end failed, so the step's counters
	// end at an earlier read.
	LastHealthFailed bool `json:"last_health_failed,omitempty"`
	// MetricsFailed: /metrics did not answer at the step's end (frames dropped unknown).
	MetricsFailed bool `json:"metrics_failed,omitempty"`
	// FleetCPU is the mean cores used by the fleet's process over the window (0: the fleet
	// runs inside the runner, not measured apart).
	FleetCPU   float64 `json:"fleet_cpu,omitempty"`
	NodeCPU    float64 `json:"node_cpu"`    // mean cores used by the nodes
	IngestBps  float64 `json:"ingest_bps"`  // mean, from camera health
	CountersOK bool    `json:"counters_ok"` // the on-line check passed
	// Frames through the API after the run, over the window, the step's cameras.
	Verified   bool `json:"verified"`
	Expected   int  `json:"expected"`
	Recorded   int  `json:"recorded"`
	Lost       int  `json:"lost"`
	Duplicated int  `json:"duplicated"`
	// Clean: counters OK and no frame lost or duplicated.
	Clean bool     `json:"clean"`
	Why   []string `json:"why,omitempty"`
}

// RampResult is a capacity search's outcome.
type RampResult struct {
	Steps []RampStep `json:"steps"`
	// HighestClean is the camera count of the last clean step before the first unclean
	// one (0: the first step was not clean).
	HighestClean int    `json:"highest_clean"`
	Target       int    `json:"target,omitempty"`
	Stopped      string `json:"stopped,omitempty"` // why the ramp ended before its last step
}

func (r *runner) setNote(s string) {
	r.mu.Lock()
	r.stepNote = s
	r.mu.Unlock()
}

// nodeTotals adds up the latest sample of every node.
func (r *runner) nodeTotals() (rec int, lost, reconn uint64, lag time.Duration, cpu, ingest float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.res.Nodes {
		if len(n.Samples) == 0 {
			continue
		}
		s := n.Samples[len(n.Samples)-1]
		cpu += s.CPU
		// The counters come from the node's latest health read that answered: a failed
		// read must not count as zeros (that once hid a lossy step).
		for i := len(n.Samples) - 1; i >= 0; i-- {
			if h := n.Samples[i]; h.HealthErr == "" {
				rec += h.Recording
				lost += h.PacketsLost
				reconn += h.Reconnects
				lag = max(lag, h.MaxLag)
				ingest += h.IngestBps
				break
			}
		}
	}
	return
}

// maxHealthErrors is the share of a step's health reads that may fail before the step's
// counters are taken as blind (a node busy for a moment answers a read late; one whose
// API hangs for seconds is not recording well either).
const maxHealthErrors = 0.1

// fleetCPU reads the fleet process's CPU time (ok false: the fleet runs in the runner).
func (r *runner) fleetCPU() (recbench.ProcSample, bool) {
	fp, child := r.fl.(*fleetProc)
	if !child {
		return recbench.ProcSample{}, false
	}
	ps, err := recbench.ReadProc(fp.Pid())
	return ps, err == nil
}

// healthErrors counts the nodes whose latest sample is up with a failed health read.
func (r *runner) healthErrors() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := 0
	for _, n := range r.res.Nodes {
		if len(n.Samples) == 0 {
			continue
		}
		if s := n.Samples[len(n.Samples)-1]; s.State == StateUp && s.HealthErr != "" {
			k++
		}
	}
	return k
}

// framesDropped sums the nodes' vigie_ingest_frames_dropped_total; ok is false when a node
// that is up could not be read or does not export it.
func (r *runner) framesDropped(ctx context.Context) (total uint64, ok bool) {
	ok = true
	for _, n := range r.nodes {
		if n.State() != StateUp {
			continue
		}
		mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		v, has, err := n.framesDropped(mctx)
		cancel()
		if err != nil || !has {
			ok = false
			continue
		}
		total += v
	}
	return total, ok
}

// rampPhase runs the steps: register the step's cameras, sample every second, judge the
// step's counters at its end, stop at the first step that fails them.
func (r *runner) rampPhase(ctx context.Context) {
	rp := r.sc.Ramp
	steps := rp.Steps()
	rr := &RampResult{Target: rp.Target}
	r.mu.Lock()
	r.res.Ramp = rr
	r.mu.Unlock()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	defer r.setNote("")
	for i, n := range steps {
		if ctx.Err() != nil {
			rr.Stopped = "interrupted"
			return
		}
		start := r.t0
		if i > 0 {
			if err := r.registerUpTo(ctx, n); err != nil {
				r.event(fmt.Sprintf("ramp step %d: register up to %d cameras", i+1, n), "failed: "+err.Error())
				rr.Stopped = "registration failed: " + err.Error()
				return
			}
			start = time.Now()
		}
		r.event(fmt.Sprintf("ramp step %d/%d: %d cameras", i+1, len(steps), n), "ok")
		st := RampStep{Index: i + 1, Cameras: n, Start: start}
		st.Window.Start = start.Add(rp.Settle.D())
		end := start.Add(rp.Every.D())
		r.setNote(fmt.Sprintf("ramp step %d/%d: %d cameras, settle until %v, step ends at %v", i+1, len(steps), n,
			st.Window.Start.Sub(r.t0).Round(time.Second), end.Sub(r.t0).Round(time.Second)))
		var f0 fleet.Stats
		var lost0, rec0 uint64
		var drop0 uint64
		dropOK0 := false
		var fcpu0 recbench.ProcSample
		fcpuOK0 := false
		based := false
		var cpuSum, ingSum float64
		k := 0
		for {
			now := time.Now()
			r.sample(ctx, now)
			_, lost, reconn, lag, cpu, ing := r.nodeTotals()
			if !based && !now.Before(st.Window.Start) {
				f0, lost0, rec0, based = r.fl.Stats(), lost, reconn, true
				drop0, dropOK0 = r.framesDropped(ctx)
				fcpu0, fcpuOK0 = r.fleetCPU()
			} else if based {
				st.Samples++
				st.HealthErrors += r.healthErrors()
				st.MaxLag = max(st.MaxLag, lag)
				cpuSum += cpu
				ingSum += ing
				k++
			}
			r.printProgress(now, r.t0.Add(r.sc.Duration.D()), nil, 0)
			if !now.Before(end) || ctx.Err() != nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-tick.C:
			case <-time.After(max(time.Until(end), 0)):
			}
		}
		st.End = time.Now()
		st.Window.End = st.End
		st.LastHealthFailed = r.healthErrors() > 0
		rec, lost, reconn, _, _, _ := r.nodeTotals()
		f1 := r.fl.Stats()
		st.Recording = rec
		st.FramesDropped = -1
		if based {
			st.PacketsLost, st.Reconnects = lost-min(lost, lost0), reconn-min(reconn, rec0)
			st.FleetFrames, st.FleetLate, st.FleetSkipped = f1.FramesSent-f0.FramesSent, f1.LateFrames-f0.LateFrames, f1.FramesSkipped-f0.FramesSkipped
			st.FleetDropped = f1.PacketsDropped - min(f1.PacketsDropped, f0.PacketsDropped)
			if fcpu1, ok := r.fleetCPU(); ok && fcpuOK0 && fcpu1.At.After(fcpu0.At) {
				st.FleetCPU = float64(fcpu1.CPU-fcpu0.CPU) / float64(fcpu1.At.Sub(fcpu0.At))
			}
			if drop1, ok := r.framesDropped(ctx); ok && dropOK0 {
				st.FramesDropped = int64(drop1 - min(drop1, drop0))
			} else if dropOK0 {
				st.MetricsFailed = true // read at the window's start, not at its end
			}
		}
		if k > 0 {
			st.NodeCPU, st.IngestBps = cpuSum/float64(k), ingSum/float64(k)
		}
		st.Why = judgeCounters(st, rp, based)
		st.CountersOK = len(st.Why) == 0
		rr.Steps = append(rr.Steps, st)
		result := "ok"
		if !st.CountersOK {
			result = "failed: " + strings.Join(st.Why, "; ")
		}
		r.progressf("  ramp step %d: %d cameras: %d recording, %d packets lost, %d frames dropped, %d reconnects, max lag %v, %d/%d health reads failed, fleet late %d skipped %d dropped %d packets, fleet CPU %.0f%%, node CPU %.0f%%: %s",
			st.Index, n, st.Recording, st.PacketsLost, st.FramesDropped, st.Reconnects, st.MaxLag.Round(time.Millisecond), st.HealthErrors, st.Samples,
			st.FleetLate, st.FleetSkipped, st.FleetDropped, st.FleetCPU*100, st.NodeCPU*100, result)
		if !st.CountersOK {
			// Not an Event with "failed": finding the limit is what a ramp is for.
			rr.Stopped = fmt.Sprintf("step %d (%d cameras): %s", st.Index, n, strings.Join(st.Why, "; "))
			return
		}
	}
}

func judgeCounters(st RampStep, rp *Ramp, based bool) []string {
	var why []string
	if !based {
		return []string{"the step ended before its settle time"}
	}
	if st.Recording < st.Cameras {
		why = append(why, fmt.Sprintf("%d of %d cameras recording", st.Recording, st.Cameras))
	}
	if st.PacketsLost > 0 {
		why = append(why, fmt.Sprintf("%d RTP packets lost", st.PacketsLost))
	}
	if st.FramesDropped > 0 {
		why = append(why, fmt.Sprintf("the node dropped %d frames (vigie_ingest_frames_dropped_total)", st.FramesDropped))
	}
	if st.FleetDropped > 0 {
		why = append(why, fmt.Sprintf("the fleet dropped %d RTP packets for a reader whose send queue was full: the node did not read in time", st.FleetDropped))
	}
	if st.HealthErrors > 0 && (st.LastHealthFailed || float64(st.HealthErrors) > maxHealthErrors*float64(st.Samples)) {
		why = append(why, fmt.Sprintf("%d of %d camera-health reads failed (the node's API did not answer within 900 ms; more than %.0f%%, or the last one): the counters are blind",
			st.HealthErrors, st.Samples, maxHealthErrors*100))
	}
	if st.MetricsFailed {
		why = append(why, "the node's /metrics did not answer at the end of the step: frames dropped unknown")
	}
	if st.Reconnects > 0 {
		why = append(why, fmt.Sprintf("%d reconnects", st.Reconnects))
	}
	if st.MaxLag > rp.MaxLag.D() {
		why = append(why, fmt.Sprintf("late: a camera's last frame was %v old (max_lag %v)", st.MaxLag.Round(time.Millisecond), rp.MaxLag.D()))
	}
	if st.FleetSkipped > 0 {
		why = append(why, fmt.Sprintf("the fleet skipped %d frames (short of CPU: the step is not valid)", st.FleetSkipped))
	}
	if st.FleetFrames > 0 && float64(st.FleetLate) > rp.MaxFleetLate*float64(st.FleetFrames) {
		why = append(why, fmt.Sprintf("the fleet sent %d of %d frames late (> %.1f%%: short of CPU, the step is not valid)", st.FleetLate, st.FleetFrames, rp.MaxFleetLate*100))
	}
	return why
}

// rampAnalyze adds one camera's frames to every step it took part in (each step's window,
// from the samples already read: no second download). Safe for concurrent use.
func (r *runner) rampAnalyze(in verify.Input, opt verify.Options) {
	rr := r.res.Ramp
	if rr == nil {
		return
	}
	pos := -1
	for i, c := range r.cams {
		if c.ID == in.Camera {
			pos = i
			break
		}
	}
	// A frame is found by its tag, wherever the node timed it: a node that fell behind
	// times frames by their (late) receive time, so a step's frames are looked for up to
	// 15 s past its window (the samples are already downloaded; the last step's end is
	// bounded by the export's own lead, verify.CollectOptions: 4 s).
	lead := 15 * time.Second
	type add struct{ exp, rec, lost, dup int }
	r.mu.Lock()
	steps := append([]RampStep(nil), rr.Steps...)
	r.mu.Unlock()
	adds := make([]add, len(steps))
	for j, st := range steps {
		if pos >= st.Cameras {
			continue
		}
		w := st.Window
		if j == len(steps)-1 {
			w.End = w.End.Add(-r.sc.Verify.Tail.D())
		}
		if in.Window.Start.After(w.Start) {
			w.Start = in.Window.Start
		}
		if !w.Start.Before(w.End) {
			continue
		}
		sub := verify.Input{Camera: in.Camera, Window: w, Sent: in.Sent, Timeline: in.Timeline,
			Samples: samplesIn(in.Samples, w.Start.Add(-lead), w.End.Add(lead))}
		rep := verify.Analyze(sub, opt)
		adds[j] = add{rep.Expected, rep.Recorded, rep.Lost, rep.Duplicated}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for j, a := range adds {
		s := &rr.Steps[j]
		s.Verified = true
		s.Expected += a.exp
		s.Recorded += a.rec
		s.Lost += a.lost
		s.Duplicated += a.dup
	}
}

// samplesIn returns the samples in [from, to) (samples are sorted by time).
func samplesIn(ss []verify.Sample, from, to time.Time) []verify.Sample {
	i := sort.Search(len(ss), func(i int) bool { return !ss[i].At.Before(from) })
	j := sort.Search(len(ss), func(i int) bool { return !ss[i].At.Before(to) })
	return ss[i:max(i, j)]
}

// rampFinish judges each step on its frames and finds the highest clean step.
func (r *runner) rampFinish() {
	rr := r.res.Ramp
	if rr == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rr.HighestClean = 0
	broken := false
	for i := range rr.Steps {
		s := &rr.Steps[i]
		s.Clean = s.CountersOK && s.Verified && s.Expected > 0 && s.Lost == 0 && s.Duplicated == 0
		if s.Lost > 0 {
			s.Why = append(s.Why, fmt.Sprintf("%d of %d frames lost (verified through the API)", s.Lost, s.Expected))
		}
		if s.Duplicated > 0 {
			s.Why = append(s.Why, fmt.Sprintf("%d frames duplicated", s.Duplicated))
		}
		if s.Verified && s.Expected == 0 {
			s.Why = append(s.Why, "no frame expected in the step's window")
		}
		if !s.Clean {
			broken = true
		}
		if !broken {
			rr.HighestClean = s.Cameras
		}
	}
}
