package verify

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func needFFprobe(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ffprobe"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("ffprobe not found: %v", err)
		}
		t.Skipf("ffprobe not found (install ffmpeg): %v", err)
	}
}

// The verifier and ffprobe count the same frames in the same downloaded export: a real
// H.264 recording of 12 s (frames 0..299), a window of frames 60..239 whose export starts
// at the keyframe before frame 60 and runs 4 s past the window.
func TestProbeAgreesWithVerifier(t *testing.T) {
	needFFprobe(t)
	f := newAPIFake(t, 300, 100, 0)
	api := f.serve(t)
	window := Interval{f.at(60), f.at(240)}
	dir := t.TempDir()
	in := Collect(context.Background(), api, "cam-7", window, CollectOptions{CheckSegments: true,
		Keep: func(c string) bool { return c == "cam-7" }, KeepDir: dir})
	in.Sent = f.sent()
	rep := Analyze(in, DefaultOptions())
	if rep.Expected != 180 || rep.Recorded != 180 || !rep.OK() {
		t.Fatalf("verifier: %+v", rep)
	}
	if len(in.Files) != 1 || in.Files[0].Samples == 0 {
		t.Fatalf("kept files %+v, want the window's one export", in.Files)
	}
	pc := RunProbeCheck(context.Background(), ProbeFrames, 1, 1, []ProbeTarget{{Camera: "cam-7", Window: window, Sent: in.Sent, Files: in.Files, Recorded: rep.Recorded}})
	if pc.Skipped != "" || len(pc.Cameras) != 1 {
		t.Fatalf("check %+v", pc)
	}
	r := pc.Cameras[0]
	t.Logf("%+v", r)
	// Frames 0..299 from the keyframe at or before frame 56 (4 s lead = 100 frames: the
	// export starts at frame 0) to frame 299: 300 frames, 120 of them outside the window.
	if !r.Agree || r.FFprobe != 300 || r.Parsed != 300 || r.Outside != 120 || r.WindowFrames != 180 || r.Recorded != 180 {
		t.Errorf("probe %+v: want ffprobe = parsed = 300, 120 outside, 180 window frames = recorded", r)
	}
	// Packets (no decoding) give the same count.
	if n, err := FFprobeCount(context.Background(), "ffprobe", in.Files[0].Path, ProbePackets); err != nil || n != 300 {
		t.Errorf("packets %d, %v; want 300", n, err)
	}
	// A verifier that miscounted is caught.
	bad := Probe(context.Background(), "ffprobe", ProbeFrames, ProbeTarget{Camera: "cam-7", Window: window, Sent: in.Sent, Files: in.Files, Recorded: 179})
	if bad.Agree || !strings.Contains(bad.Why, "180 distinct expected frames of the window, the verifier reported 179") {
		t.Errorf("miscount not caught: %+v", bad)
	}
}

func TestProbeWithoutFFprobeIsSkipped(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	pc := RunProbeCheck(context.Background(), "", 7, 5, []ProbeTarget{{Camera: "a"}})
	if pc.Skipped == "" || !strings.Contains(pc.Skipped, "ffprobe not found") || len(pc.Cameras) != 0 {
		t.Errorf("check %+v, want skipped naming ffprobe", pc)
	}
}

func TestPickCamerasIsSeeded(t *testing.T) {
	ids := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	x, y := PickCameras(ids, 3, 42), PickCameras(ids, 3, 42)
	if len(x) != 3 || strings.Join(x, ",") != strings.Join(y, ",") {
		t.Errorf("%v %v: want the same 3 cameras for the same seed", x, y)
	}
	if len(PickCameras(ids, 20, 1)) != 8 {
		t.Error("more cameras asked than there are: want all")
	}
}
