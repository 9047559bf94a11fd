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
