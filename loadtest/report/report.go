package report

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vigie-vms/vigie/loadtest/scenario"
	"github.com/vigie-vms/vigie/loadtest/verify"
	"github.com/vigie-vms/vigie/model"
)

// WriteFiles writes report.json and report.html into dir and returns their paths.
func WriteFiles(res *scenario.Result, dir string) (jsonPath, htmlPath string, err error) {
	jsonPath, htmlPath = filepath.Join(dir, "report.json"), filepath.Join(dir, "report.html")
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(jsonPath, b, 0o644); err != nil {
		return "", "", err
	}
	f, err := os.Create(htmlPath)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	if err := HTML(f, res); err != nil {
		return "", "", err
	}
	return jsonPath, htmlPath, f.Close()
}

// Verdict says whether the run passed: no failure of the run itself, no lost, duplicated
// or foreign frame, no hidden gap, no catalog problem, and the ffprobe check agrees (a
// skipped check fails under CI=true). A ramp (capacity search) passes when its highest
// clean step reaches the target: losses past that step are what it looks for. With
// verify.failover_budget, frames lost in node-failure gaps within the budget are accepted.
func Verdict(res *scenario.Result) (ok bool, why []string) {
	s := res.Summary
	why = append(why, res.Failures...)
	if len(res.Cameras) == 0 {
		why = append(why, "no camera was verified")
	}
	if p := res.Probe; p != nil {
		for _, c := range p.Disagreements() {
			why = append(why, fmt.Sprintf("ffprobe check: %s: %s", c.Camera, c.Why))
		}
		if p.Skipped != "" && os.Getenv("CI") == "true" {
			why = append(why, "ffprobe check skipped under CI=true: "+p.Skipped)
		}
	}
	if rr := res.Ramp; rr != nil {
		target := max(rr.Target, 1)
		if rr.HighestClean < target {
			w := fmt.Sprintf("ramp: highest clean step %d cameras, below the target of %d", rr.HighestClean, rr.Target)
			if rr.Target == 0 {
				w = "ramp: the first step was not clean"
			}
			why = append(why, w)
		}
		return len(why) == 0, why
	}
	budget := time.Duration(0)
	if res.Scenario != nil {
		budget = res.Scenario.Verify.FailoverBudget.D()
	}
	accepted := 0 // frames lost in failure gaps, accepted within the failover budget
	if budget > 0 {
		for _, c := range res.Cameras {
			accepted += failureGapLoss(c)
		}
		if s.FailoverMax > budget {
			why = append(why, fmt.Sprintf("a failover interruption lasted %v, over the budget of %v (verify.failover_budget)", s.FailoverMax, budget))
		}
		if s.NotRecovered > 0 {
			why = append(why, fmt.Sprintf("%d cameras never recovered from a fault", s.NotRecovered))
		}
	}
	if lost := s.Lost - accepted; lost > 0 {
		why = append(why, fmt.Sprintf("%d frames lost (%d in timeline gaps, %d dropped, %d hidden gaps)", s.Lost, s.Lost-s.Dropped-hiddenFrames(res), s.Dropped, s.HiddenGaps))
	}
	if s.Duplicated > 0 {
		why = append(why, fmt.Sprintf("%d frames duplicated", s.Duplicated))
	}
	if s.Foreign > 0 {
		why = append(why, fmt.Sprintf("%d frames of another camera", s.Foreign))
	}
	if s.Outside > 0 {
		why = append(why, fmt.Sprintf("%d samples served outside listed spans", s.Outside))
	}
	bad := s.Cameras - s.CamerasOK
	if budget > 0 {
		bad = 0
		for _, c := range res.Cameras {
			if c.Lost > failureGapLoss(c) || c.Duplicated > 0 || c.Foreign > 0 || c.Outside > 0 || len(c.Problems) > 0 {
				bad++
			}
		}
	}
	if bad > 0 && len(res.Cameras) > 0 {
		first := ""
		for _, c := range worstCameras(res.Cameras, 1) {
			if len(c.Problems) > 0 {
				first = " (first: " + c.Camera + ": " + c.Problems[0] + ")"
			}
		}
		why = append(why, fmt.Sprintf("%d of %d cameras have problems%s", bad, s.Cameras, first))
	}
	if res.Fleet.FramesSkipped > 0 {
		why = append(why, fmt.Sprintf("the fleet was overloaded: %d frames skipped (never sent): the run is not valid", res.Fleet.FramesSkipped))
	}
	return len(why) == 0, why
}

// failureGapLoss is how many of a camera's lost frames lie in timeline gaps that name a
// node failure (what verify.failover_budget accepts).
func failureGapLoss(c verify.CameraReport) int {
	n := 0
	for _, r := range c.LossRuns {
		if r.Kind == verify.LossGap && (r.Cause == string(model.GapNodeFailover) || r.Cause == string(model.GapNodeDown)) {
			n += r.Frames
		}
	}
	return n
}

// probeText writes the ffprobe check's lines.
func probeText(w io.Writer, p *verify.ProbeCheck) {
	if p == nil {
		return
	}
	if p.Skipped != "" {
		fmt.Fprintf(w, "ffprobe check (%d cameras): SKIPPED: %s\n", p.Requested, p.Skipped)
		return
	}
	fmt.Fprintf(w, "ffprobe check: %d cameras (seed %d), %s counted by ffprobe in the verifier's own export files:\n", len(p.Cameras), p.Seed, p.Mode)
	for _, c := range p.Cameras {
		v := "agree"
		if !c.Agree {
			v = "DISAGREE: " + c.Why
		}
		fmt.Fprintf(w, "  %s: ffprobe %d = parsed %d; minus %d outside the window = %d; window frames %d, verifier recorded %d: %s\n",
			c.Camera, c.FFprobe, c.Parsed, c.Outside, c.FFprobe-c.Outside, c.WindowFrames, c.Recorded, v)
	}
}

// rampText writes the capacity search's steps.
func rampText(w io.Writer, rr *scenario.RampResult) {
	if rr == nil {
		return
	}
	fmt.Fprintln(w, "ramp:")
	fmt.Fprintf(w, "  %4s %7s %9s %6s %7s %7s %9s %7s %10s %11s %10s %9s %8s %9s %8s  %s\n", "step", "cameras", "recording", "lost", "dropped", "reconn", "max lag", "health!",
		"fleet late", "fleet skip", "fleet drop", "fleet CPU", "node CPU", "frames", "lost", "verdict")
	for _, s := range rr.Steps {
		v := "clean"
		if !s.Clean {
			v = "NOT CLEAN: " + strings.Join(s.Why, "; ")
		}
		dropped := "?" // not exported by that vigie, or not read
		if s.FramesDropped >= 0 {
			dropped = fmt.Sprint(s.FramesDropped)
		}
		fmt.Fprintf(w, "  %4d %7d %9d %6d %7s %7d %9v %7d %10d %11d %10d %8.0f%% %7.0f%% %9d %8d  %s\n", s.Index, s.Cameras, s.Recording, s.PacketsLost, dropped, s.Reconnects,
			s.MaxLag.Round(time.Millisecond), s.HealthErrors, s.FleetLate, s.FleetSkipped, s.FleetDropped, s.FleetCPU*100, s.NodeCPU*100, s.Expected, s.Lost, v)
	}
	if rr.Stopped != "" {
		fmt.Fprintf(w, "  stopped at %s\n", rr.Stopped)
	}
	fmt.Fprintf(w, "HIGHEST CLEAN STEP: %d cameras", rr.HighestClean)
	if rr.Target > 0 {
		fmt.Fprintf(w, " (target %d)", rr.Target)
	}
	fmt.Fprintln(w)
}

func hiddenFrames(res *scenario.Result) int {
	n := 0
	for _, c := range res.Cameras {
		for _, r := range c.LossRuns {
			if r.Kind == verify.LossHiddenGap {
				n += r.Frames
			}
		}
	}
	return n
}

func pct(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

// Text writes the terminal summary.
func Text(w io.Writer, res *scenario.Result) {
	s := res.Summary
	sc := res.Scenario
	fmt.Fprintf(w, "\n=== %s: %d node(s), %d cameras, %v ===\n", sc.Name, sc.Nodes.Count, sc.Cameras.Count, sc.Duration.D())
	if !res.Window.Start.IsZero() {
		fmt.Fprintf(w, "verified window: %s – %s (%v)\n", res.Window.Start.Format("15:04:05"), res.Window.End.Format("15:04:05"), res.Window.End.Sub(res.Window.Start).Round(time.Second))
	}
	fmt.Fprintf(w, "fleet: %d frames sent, %d skipped, %d late (> 1 frame), lateness p99 ≤ %v, max %v\n",
		res.Fleet.FramesSent, res.Fleet.FramesSkipped, res.Fleet.LateFrames, res.Fleet.Lateness.Quantile(0.99), res.Fleet.Lateness.Max.Round(time.Microsecond))
	fmt.Fprintf(w, "frames: expected %d, recorded %d (%.3f%%), lost %d, duplicated %d, foreign %d, not sent (stalled) %d\n",
		s.Expected, s.Recorded, pct(s.Recorded, s.Expected), s.Lost, s.Duplicated, s.Foreign, s.NotSent)
	fmt.Fprintf(w, "gaps: %d in timelines %v; %d dropped frames; %d hidden gaps; %d samples outside spans\n", s.Gaps, s.GapCauses, s.Dropped, s.HiddenGaps, s.Outside)
	fmt.Fprintf(w, "catalog: %d segments checked, %d problems, %d segments not starting with a keyframe; cameras OK: %d/%d\n", s.Segments, s.SegmentProblems, s.SegmentsNoKeyframe, s.CamerasOK, s.Cameras)
	if s.Failovers > 0 || s.NotRecovered > 0 {
		fmt.Fprintf(w, "failover: %d interruptions, p50 %v, p95 %v, max %v, %d never recovered\n", s.Failovers, s.FailoverP50.Round(time.Millisecond), s.FailoverP95.Round(time.Millisecond), s.FailoverMax.Round(time.Millisecond), s.NotRecovered)
	}
	fmt.Fprintf(w, "recorded time − send time: p50 %v, max %v\n", s.LatencyP50.Round(time.Millisecond), s.LatencyMax.Round(time.Millisecond))
	for _, n := range res.Nodes {
		cpu, rss, ing := nodeStats(n)
		fmt.Fprintf(w, "%s: mean CPU %.0f%% of a core, max RSS %d MiB, mean ingest %.1f Mbit/s, started %d time(s), exit %s\n", n.ID, cpu*100, rss>>20, ing/1e6, n.Starts, orDash(n.Exit))
	}
	if len(res.Events) > 0 {
		fmt.Fprintln(w, "events:")
		for _, e := range res.Events {
			fmt.Fprintf(w, "  %8v  %s: %s\n", e.Elapsed, e.What, e.Result)
		}
	}
	if res.VerifyTime > 0 {
		fmt.Fprintf(w, "verification: %v for %d cameras (%d at once)\n", res.VerifyTime.Round(time.Millisecond), len(res.Cameras), sc.Verify.Parallel)
	}
	probeText(w, res.Probe)
	rampText(w, res.Ramp)
	worst := worstCameras(res.Cameras, 5)
	for _, c := range worst {
		if c.OK() {
			break
		}
		fmt.Fprintf(w, "camera %s: lost %d, dup %d", c.Camera, c.Lost, c.Duplicated)
		for i, r := range c.LossRuns {
			if i == 3 {
				fmt.Fprintf(w, " …")
				break
			}
			fmt.Fprintf(w, "; %s %d frames from %d (%v)", r.Kind, r.Frames, r.FirstFrame, r.Duration)
		}
		if len(c.Problems) > 0 {
			fmt.Fprintf(w, "; %s", c.Problems[0])
		}
		fmt.Fprintln(w)
	}
	ok, why := Verdict(res)
	if ok {
		fmt.Fprintln(w, "VERDICT: PASS")
	} else {
		fmt.Fprintln(w, "VERDICT: FAIL")
		for _, y := range why {
			fmt.Fprintln(w, "  -", y)
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// nodeStats returns the mean CPU (cores) and ingest rate over the samples where the node
// was up, and the max RSS.
func nodeStats(n scenario.NodeResult) (cpu float64, rss int64, ingest float64) {
	k := 0
	for _, s := range n.Samples {
		rss = max(rss, s.RSS)
		if s.State == scenario.StateUp && s.CPU > 0 {
			cpu += s.CPU
			ingest += s.IngestBps
			k++
		}
	}
	if k > 0 {
		cpu /= float64(k)
		ingest /= float64(k)
	}
	return
}

// worstCameras returns up to n cameras, most lost frames first.
func worstCameras(cs []verify.CameraReport, n int) []verify.CameraReport {
	s := append([]verify.CameraReport(nil), cs...)
	sort.SliceStable(s, func(i, j int) bool {
		bi, bj := badness(s[i]), badness(s[j])
		if bi != bj {
			return bi > bj
		}
		return s[i].Camera < s[j].Camera
	})
	if len(s) > n {
		s = s[:n]
	}
	return s
}

func badness(c verify.CameraReport) int {
	return c.Lost + c.Duplicated + 1000*c.HiddenGaps + 100*len(c.Problems) + c.Foreign
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
