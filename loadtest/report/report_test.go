package report

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/loadtest/scenario"
	"github.com/vigie-vms/vigie/loadtest/verify"
)

func sampleResult() *scenario.Result {
	t0 := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	sc, _ := scenario.Parse([]byte("name: demo\ncameras: {count: 2}\nduration: 1m\n"))
	cams := []verify.CameraReport{
		{Camera: "cam-0000", Expected: 1000, Recorded: 975, Lost: 25, LossRuns: []verify.LossRun{{FirstFrame: 300, Frames: 25, Start: t0.Add(20 * time.Second), Duration: time.Second, Kind: verify.LossHiddenGap}},
			HiddenGaps: 1, Problems: []string{"hidden gap: 25 frames <script>"}, Failovers: []verify.Failover{{Interruption: time.Second, Recovered: true}}},
		{Camera: "cam-0001", Expected: 1000, Recorded: 1000},
	}
	return &scenario.Result{Scenario: sc, Started: t0, Registered: t0, Ended: t0.Add(time.Minute),
		Window: verify.Interval{Start: t0.Add(10 * time.Second), End: t0.Add(57 * time.Second)},
		Nodes: []scenario.NodeResult{{ID: "node-1", Samples: []scenario.NodeSample{
			{Elapsed: time.Second, State: scenario.StateUp, CPU: 0.2, RSS: 50 << 20, Recording: 2, IngestBps: 2e6},
			{Elapsed: 2 * time.Second, State: scenario.StateUp, CPU: 0.3, RSS: 60 << 20, Recording: 2, IngestBps: 2e6}}}},
		Events:  []scenario.Event{{At: t0.Add(20 * time.Second), Elapsed: 20 * time.Second, What: "kill node 0 (node-1)", Result: "ok"}},
		Cameras: cams, Summary: verify.Summarize(cams)}
}

func TestReports(t *testing.T) {
	res := sampleResult()
	ok, why := Verdict(res)
	if ok || !strings.Contains(strings.Join(why, "\n"), "25 frames lost") {
		t.Errorf("verdict %v %q, want FAIL naming the 25 lost frames", ok, why)
	}
	var txt bytes.Buffer
	Text(&txt, res)
	for _, want := range []string{"expected 2000, recorded 1975", "hidden-gap 25 frames from 300", "VERDICT: FAIL", "node-1: mean CPU 25%"} {
		if !strings.Contains(txt.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, txt.String())
		}
	}
	dir := t.TempDir()
	jp, hp, err := WriteFiles(res, dir)
	if err != nil {
		t.Fatal(err)
	}
	html, _ := os.ReadFile(hp)
	for _, want := range []string{"<svg", "cam-0000", "#d62728", "&lt;script&gt;", "kill node 0"} {
		if !bytes.Contains(html, []byte(want)) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	for _, bad := range []string{"<script", "http://", "https://"} {
		if bytes.Contains(html, []byte(bad)) {
			t.Errorf("HTML contains %q: it must be self-contained and escape names", bad)
		}
	}
	if filepath.Base(jp) != "report.json" {
		t.Errorf("json path %s", jp)
	}
	// A partial result (run aborted before verification) still renders.
	var b bytes.Buffer
	if err := HTML(&b, &scenario.Result{Scenario: res.Scenario, Failures: []string{"node 0 did not start"}}); err != nil {
		t.Fatal(err)
	}
	Text(&b, &scenario.Result{Scenario: res.Scenario})
}

func TestProbeCheckInReports(t *testing.T) {
	res := sampleResult()
	res.Cameras = res.Cameras[1:] // the clean camera only
	res.Summary = verify.Summarize(res.Cameras)
	res.Probe = &verify.ProbeCheck{Requested: 2, Seed: 42, Mode: verify.ProbeFrames, Cameras: []verify.ProbeResult{
		{Camera: "cam-0001", FFprobe: 1100, Parsed: 1100, Outside: 100, WindowFrames: 1000, Recorded: 1000, Agree: true},
		{Camera: "cam-0002", FFprobe: 1099, Parsed: 1100, Outside: 100, WindowFrames: 1000, Recorded: 1000, Why: "ffprobe counts 1099 frames in the files, the verifier's parser 1100 samples"},
	}}
	ok, why := Verdict(res)
	if ok || !strings.Contains(strings.Join(why, "\n"), "ffprobe check: cam-0002: ffprobe counts 1099") {
		t.Errorf("verdict %v %q, want FAIL naming cam-0002's disagreement", ok, why)
	}
	var txt, html bytes.Buffer
	Text(&txt, res)
	if err := HTML(&html, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"seed 42", "cam-0001: ffprobe 1100 = parsed 1100; minus 100 outside the window = 1000; window frames 1000, verifier recorded 1000: agree", "cam-0002", "DISAGREE"} {
		if !strings.Contains(txt.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, txt.String())
		}
	}
	for _, want := range []string{"Independent check: ffprobe", "<td class=\"l\">cam-0002</td><td>1099</td><td>1100</td>", "disagree"} {
		if !strings.Contains(html.String(), want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	// All agree: PASS. Skipped: PASS with a note, FAIL under CI=true.
	res.Probe.Cameras = res.Probe.Cameras[:1]
	if ok, why := Verdict(res); !ok {
		t.Errorf("verdict FAIL %q with every camera agreeing", why)
	}
	res.Probe = &verify.ProbeCheck{Requested: 5, Skipped: "ffprobe not found in PATH"}
	t.Setenv("CI", "")
	if ok, _ := Verdict(res); !ok {
		t.Error("a skipped check fails outside CI")
	}
	txt.Reset()
	Text(&txt, res)
	if !strings.Contains(txt.String(), "SKIPPED: ffprobe not found") {
		t.Errorf("text does not say the check was skipped:\n%s", txt.String())
	}
	t.Setenv("CI", "true")
	if ok, why := Verdict(res); ok || !strings.Contains(strings.Join(why, "\n"), "skipped under CI=true") {
		t.Errorf("verdict %v %q, want FAIL under CI=true", ok, why)
	}
}

func TestRampInReports(t *testing.T) {
	res := sampleResult() // cam-0000 lost 25 frames: in the step past the limit
	res.Ramp = &scenario.RampResult{Target: 40, HighestClean: 40, Stopped: "step 3 (60 cameras): 12 RTP packets lost", Steps: []scenario.RampStep{
		{Index: 1, Cameras: 20, Recording: 20, CountersOK: true, Verified: true, Expected: 10000, Recorded: 10000, Clean: true},
		{Index: 2, Cameras: 40, Recording: 40, CountersOK: true, Verified: true, Expected: 20000, Recorded: 20000, Clean: true},
		{Index: 3, Cameras: 60, Recording: 60, PacketsLost: 12, Verified: true, Expected: 30000, Recorded: 29975, Lost: 25, Why: []string{"12 RTP packets lost"}},
	}}
	if ok, why := Verdict(res); !ok {
		t.Errorf("verdict FAIL %q: the target of 40 is reached", why)
	}
	var txt, html bytes.Buffer
	Text(&txt, res)
	_ = HTML(&html, res)
	for _, want := range []string{"HIGHEST CLEAN STEP: 40 cameras (target 40)", "NOT CLEAN: 12 RTP packets lost", "stopped at step 3"} {
		if !strings.Contains(txt.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, txt.String())
		}
	}
	if !strings.Contains(html.String(), "Highest clean step: <b>40 cameras</b>") {
		t.Error("HTML lacks the highest clean step")
	}
	res.Ramp.Target = 600
	if ok, why := Verdict(res); ok || !strings.Contains(strings.Join(why, "\n"), "below the target of 600") {
		t.Errorf("verdict %v %q, want FAIL below the target", ok, why)
	}
}

// TestVerdictFailoverBudget: with verify.failover_budget, frames lost in node-failure gaps
// within the budget pass; a longer interruption, a camera that never recovered, or any
// loss the timeline does not explain still fails.
func TestVerdictFailoverBudget(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	build := func(interruption time.Duration, recovered bool, extra []verify.LossRun) *scenario.Result {
		sc, err := scenario.Parse([]byte("name: fo\ncameras: {count: 2}\nduration: 1m\nverify: {failover_budget: 8s}\n"))
		if err != nil {
			t.Fatal(err)
		}
		runs := append([]verify.LossRun{{FirstFrame: 500, Frames: 150, Start: t0.Add(20 * time.Second), Duration: 6 * time.Second, Kind: verify.LossGap, Cause: "node_failover"}}, extra...)
		lost := 0
		for _, r := range runs {
			lost += r.Frames
		}
		cams := []verify.CameraReport{
			{Camera: "cam-0000", Expected: 1000, Recorded: 1000 - lost, Lost: lost, LossRuns: runs, Gaps: []verify.GapReport{{Cause: "node_failover"}},
				Failovers: []verify.Failover{{Interruption: interruption, Recovered: recovered}}},
			{Camera: "cam-0001", Expected: 1000, Recorded: 1000},
		}
		return &scenario.Result{Scenario: sc, Cameras: cams, Summary: verify.Summarize(cams)}
	}
	if ok, why := Verdict(build(6*time.Second, true, nil)); !ok {
		t.Errorf("a 6 s failover gap within an 8 s budget: FAIL %q, want PASS", why)
	}
	if ok, why := Verdict(build(9*time.Second, true, nil)); ok || !strings.Contains(strings.Join(why, "\n"), "over the budget of 8s") {
		t.Errorf("a 9 s interruption: %v %q, want FAIL naming the budget", ok, why)
	}
	if ok, _ := Verdict(build(6*time.Second, false, nil)); ok {
		t.Error("a camera that never recovered: PASS, want FAIL")
	}
	hidden := []verify.LossRun{{FirstFrame: 900, Frames: 25, Kind: verify.LossHiddenGap}}
	if ok, why := Verdict(build(6*time.Second, true, hidden)); ok || !strings.Contains(strings.Join(why, "\n"), "175 frames lost") {
		t.Errorf("a hidden gap besides the failover: %v %q, want FAIL", ok, why)
	}
}
