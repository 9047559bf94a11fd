package scenario

import (
	"strings"
	"testing"
	"time"
)

func TestParseDroppedSumsReasons(t *testing.T) {
	text := `# HELP vigie_ingest_frames_dropped_total Video frames …
# TYPE vigie_ingest_frames_dropped_total counter
vigie_ingest_frames_dropped_total{reason="depacketize"} 2
vigie_ingest_frames_dropped_total{reason="rtp_loss"} 1250
vigie_ingest_frames_dropped_total{reason="wait_keyframe"} 0
vigie_ingest_frames_dropped_totalx 99
vigie_camera_rtp_packets_lost_total{camera="cam-0001"} 7
`
	got, ok, err := parseDropped(strings.NewReader(text))
	if err != nil || !ok || got != 1252 {
		t.Fatalf("parseDropped = %d, %v, %v; want 1252, true, nil", got, ok, err)
	}
	if _, ok, _ := parseDropped(strings.NewReader("go_goroutines 12\n")); ok {
		t.Fatal("a vigie without the metric must read as not exported")
	}
}

// A step whose loss only the fleet or the node's drop counter saw, or whose health reads
// failed (the counters then read as zeros), is not clean.
func TestJudgeCountersNeverSilent(t *testing.T) {
	rp := &Ramp{MaxLag: Duration(2 * time.Second), MaxFleetLate: 0.01}
	clean := RampStep{Cameras: 10, Recording: 10, FleetFrames: 1000, Samples: 30}
	if why := judgeCounters(clean, rp, true); len(why) != 0 {
		t.Fatalf("clean step judged %q", why)
	}
	for name, tc := range map[string]struct {
		mod  func(*RampStep)
		want string
	}{
		"fleet dropped": {func(s *RampStep) { s.FleetDropped = 40 }, "the fleet dropped 40 RTP packets"},
		"node dropped":  {func(s *RampStep) { s.FramesDropped = 25 }, "the node dropped 25 frames"},
		"health blind":  {func(s *RampStep) { s.HealthErrors = 4 }, "4 of 30 camera-health reads failed"},
		"last blind":    {func(s *RampStep) { s.HealthErrors, s.LastHealthFailed = 1, true }, "1 of 30 camera-health reads failed"},
		"metrics blind": {func(s *RampStep) { s.MetricsFailed = true }, "/metrics did not answer"},
	} {
		st := clean
		tc.mod(&st)
		why := strings.Join(judgeCounters(st, rp, true), "; ")
		if !strings.Contains(why, tc.want) {
			t.Errorf("%s: why = %q, want it to say %q", name, why, tc.want)
		}
	}
	st := clean
	st.HealthErrors = 3 // a busy moment: 10 % of the reads late, the counters still read after
	if why := judgeCounters(st, rp, true); len(why) != 0 {
		t.Errorf("3 late health reads of 30 judged %q", why)
	}
	st = clean
	st.FramesDropped = -1 // an older vigie: not a failure by itself
	if why := judgeCounters(st, rp, true); len(why) != 0 {
		t.Errorf("unknown drop count judged %q", why)
	}
}

func TestCodecArgMatchesCameraList(t *testing.T) {
	c := Cameras{Count: 8, Tenants: 1, Prefix: "cam", Codecs: map[string]int{"H265": 1, "H264": 3}}
	if got := codecArg(c); got != "H264=3,H265=1" {
		t.Fatalf("codecArg = %q", got)
	}
	cams, _ := cameraList(c)
	// the fleet subcommand assigns codecs by weighted round robin in the -codecs order
	want := []string{"H264", "H264", "H264", "H265", "H264", "H264", "H264", "H265"}
	for i, cam := range cams {
		if cam.Codec != want[i] {
			t.Errorf("camera %d: %s, want %s", i, cam.Codec, want[i])
		}
	}
}

// A failed health read (zeros) must not reset the counters a step's deltas come from.
func TestNodeTotalsSkipFailedHealthReads(t *testing.T) {
	r := &runner{res: &Result{Nodes: []NodeResult{{Samples: []NodeSample{
		{State: StateUp, Recording: 550, PacketsLost: 120, Reconnects: 2},
		{State: StateUp, CPU: 0.6, HealthErr: "context deadline exceeded"},
	}}}}}
	rec, lost, reconn, _, cpu, _ := r.nodeTotals()
	if rec != 550 || lost != 120 || reconn != 2 || cpu != 0.6 {
		t.Fatalf("nodeTotals = %d recording, %d lost, %d reconnects, cpu %v; want the last read that answered (550, 120, 2) and the latest CPU", rec, lost, reconn, cpu)
	}
	if got := r.healthErrors(); got != 1 {
		t.Fatalf("healthErrors = %d, want 1", got)
	}
}
