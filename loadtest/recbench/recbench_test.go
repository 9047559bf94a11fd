package recbench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/loadtest/simcam"
	"github.com/vigie-vms/vigie/model"
)

func TestDefaultConfigIsValid(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Self = "/bin/true"
	if runtime.NumCPU() < 2 {
		cfg.NoPin = true
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := Config{
		Cameras:          []int{50, 0, MaxCameras + 1},
		Window:           0,
		Warmup:           -time.Second,
		ClipSize:         "big",
		Bitrate:          1,
		FPS:              0,
		MeasuredCPU:      0,
		FleetCPU:         0,
		SkipBare:         true,
		SkipRecord:       true,
		PlaybackRequests: 5,
		BareEnv:          []string{"GOGC"},
	}
	err := cfg.Validate()
	if !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("error %v does not wrap model.ErrInvalid", err)
	}
	for _, want := range []string{"cameras[1]", "cameras[2]", "window", "warmup", "connect-timeout",
		"bitrate", "clip-size", "fps", "self", "fleet-cpu", "skip", "playback-duration", "bare-env[0]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q:\n%v", want, err)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	// Field 2 holds spaces and a ')'; utime=150, stime=50.
	stat := []byte("4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 3 0 12345 1000000 500 18446744073709551615\n")
	got, err := parseStatCPU(stat)
	if err != nil || got != 200 {
		t.Fatalf("parseStatCPU = %d, %v; want 200 ticks", got, err)
	}
	if _, err := parseStatCPU([]byte("4242 (x) S 1 2")); err == nil {
		t.Fatal("a truncated stat line was accepted")
	}
}

func TestReadProcSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc: recbench needs Linux")
	}
	s, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS <= 0 || s.CPU < 0 {
		t.Fatalf("sample %+v: want a positive RSS", s)
	}
	if _, err := ReadProc(-1); err == nil {
		t.Fatal("ReadProc(-1) succeeded")
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 20; i++ {
		ds = append(ds, time.Duration(21-i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 10 * time.Millisecond}, {95, 19 * time.Millisecond}, {100, 20 * time.Millisecond}, {0, time.Millisecond}} {
		if got := Percentile(ds, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if ds[0] != 20*time.Millisecond {
		t.Error("Percentile sorted its input")
	}
	if Percentile(nil, 50) != 0 {
		t.Error("Percentile(nil) != 0")
	}
}

func TestPlaybackPlanStaysInsideTheRecording(t *testing.T) {
	ids := CameraIDs(200)
	from := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	to := from.Add(15 * time.Second)
	cams, starts := playbackPlan(ids, 30, from, to)
	if len(cams) != 30 || len(starts) != 30 {
		t.Fatalf("%d cameras, %d starts; want 30 requests", len(cams), len(starts))
	}
	distinct := map[string]bool{}
	for i := range cams {
		distinct[cams[i]] = true
		if starts[i].Before(from) || starts[i].After(to) {
			t.Errorf("request %d starts at %v, outside [%v, %v]", i, starts[i], from, to)
		}
	}
	if len(distinct) < 20 {
		t.Errorf("only %d distinct cameras over 30 requests", len(distinct))
	}
	if c, _ := playbackPlan(ids, 30, to, from); c != nil {
		t.Error("an empty recorded span still planned requests")
	}
}

func TestSummarisePlayback(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	r := summarisePlayback([]PlaybackSample{
		{Camera: "cam-0001", Start: at, FirstByte: 3 * time.Millisecond, Total: 20 * time.Millisecond, Bytes: 100},
		{Camera: "cam-0002", Start: at, FirstByte: 5 * time.Millisecond, Total: 30 * time.Millisecond, Bytes: 300},
		{Camera: "cam-0003", Start: at, Err: "404 Not Found: nothing recorded"},
	}, 10*time.Second)
	if r.Requests != 3 || r.Failed != 1 || r.FirstByteP50 != 3*time.Millisecond || r.FirstByteMax != 5*time.Millisecond || r.MeanBytes != 200 {
		t.Fatalf("summary %+v", r)
	}
	if !strings.Contains(r.FirstError, "cam-0003") || !strings.Contains(r.FirstError, "nothing recorded") {
		t.Fatalf("first error %q does not say which camera failed and why", r.FirstError)
	}
}

func sampleReport() *Report {
	bare := &Measure{Process: "bare gortsplib", Cameras: 200, MsPerCamSec: 1.0, FramesPerSec: 5000, ExpectedFPS: 5000, RSS: 40 << 20}
	rec := &Measure{Process: "vigie node", Cameras: 200, MsPerCamSec: 1.8, FramesPerSec: 4990, ExpectedFPS: 5000, RSS: 200 << 20,
		DiskBitsPerCamSec: 2.02e6, Problems: []string{"3 reconnections during the window"}}
	return &Report{
		Command: "go run ./loadtest/cmd/recbench -cameras 200",
		Date:    time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC),
		Machine: Machine{CPUs: 2, CPUModel: "AMD EPYC", Kernel: "6.1", GoVersion: "go1.26.8", LoadBefore: "1.00 2.00 3.00", LoadAfter: "1.50 2.00 3.00"},
		Clip:    ClipInfo{Codec: "H264", FPS: 25, Frames: 250, Keyframes: 5, Bitrate: 2.02e6},
		Config:  DefaultConfig(),
		Results: []Result{{Cameras: 200, Bare: bare, Record: rec, Ratio: 1.8,
			Playback: &PlaybackResult{Requests: 30, FirstByteP50: 4 * time.Millisecond, FirstByteP95: 9 * time.Millisecond, Duration: 10 * time.Second}}},
	}
}

func TestMarkdownStatesCommandMachineFiguresAndVerdict(t *testing.T) {
	md := sampleReport().Markdown()
	for _, want := range []string{
		"`go run ./loadtest/cmd/recbench -cameras 200`",
		"2 CPUs (nproc), AMD EPYC", "go1.26.8", "1.00 2.00 3.00",
		"2026-11-27",
		"| 200 | bare gortsplib | **1.000** | 1.00 |",
		"| 200 | vigie node | **1.800** | 1.80 |",
		"first byte median 4.0 ms, p95 9.0 ms",
		"3 reconnections",
		"MISSED by 20 %",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	var tbl strings.Builder
	if err := sampleReport().WriteTable(&tbl); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tbl.String(), "vigie node") || !strings.Contains(tbl.String(), "MISSED") {
		t.Errorf("table:\n%s", tbl.String())
	}
}

func TestAppendMarkdownKeepsWhatWasThere(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	if err := os.WriteFile(path, []byte("# Benchmarks\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := sampleReport()
	if err := rep.AppendMarkdown(path); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), "# Benchmarks\n\n### recbench") {
		t.Fatalf("file after append:\n%s", b)
	}
}

// pipeChild runs a control-protocol body in-process, like the subprocess would.
type pipeChild struct {
	in    io.WriteCloser
	lines *bufio.Scanner
	done  chan error
}

func startPipe(t *testing.T, body func(in io.Reader, out io.Writer) error) *pipeChild {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	pc := &pipeChild{in: inW, lines: bufio.NewScanner(outR), done: make(chan error, 1)}
	go func() {
		err := body(inR, outW)
		outW.Close()
		pc.done <- err
	}()
	t.Cleanup(func() {
		inW.Close()
		go io.Copy(io.Discard, outR) //nolint:errcheck
		select {
		case err := <-pc.done:
			if err != nil {
				t.Errorf("child: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("child did not stop within 10s of its stdin closing")
		}
	})
	return pc
}

func (pc *pipeChild) ready(t *testing.T) string {
	t.Helper()
	if !pc.lines.Scan() {
		t.Fatalf("no ready line: %v", pc.lines.Err())
	}
	d, ok := strings.CutPrefix(pc.lines.Text(), lineReady+" ")
	if !ok {
		t.Fatalf("first line %q, want %q", pc.lines.Text(), lineReady)
	}
	return d
}

func (pc *pipeChild) stats(t *testing.T, v any) {
	t.Helper()
	if _, err := io.WriteString(pc.in, lineStats+"\n"); err != nil {
		t.Fatal(err)
	}
	if !pc.lines.Scan() {
		t.Fatalf("no stats line: %v", pc.lines.Err())
	}
	if err := json.Unmarshal(pc.lines.Bytes(), v); err != nil {
		t.Fatalf("stats %q: %v", pc.lines.Text(), err)
	}
}

// TestBareReceivesEveryFrameOfTheFleet runs the fleet and the bare receiver in-process over
// their control protocol: every camera connects and frames arrive with no loss.
func TestBareReceivesEveryFrameOfTheFleet(t *testing.T) {
	ctx := context.Background()
	const n = 3
	fleet := startPipe(t, func(in io.Reader, out io.Writer) error {
		return RunFleet(ctx, FleetConfig{Addr: "127.0.0.1:0", Cameras: n}, in, out)
	})
	addr := fleet.ready(t)
	bare := startPipe(t, func(in io.Reader, out io.Writer) error {
		return RunBare(ctx, BareConfig{FleetAddr: addr, Cameras: n, ConnectTimeout: 10 * time.Second}, in, out)
	})
	if got := bare.ready(t); got != "3" {
		t.Fatalf("bare ready with %q cameras, want 3", got)
	}
	var s BareStats
	deadline := time.Now().Add(10 * time.Second)
	for s.Frames < 3*n && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		bare.stats(t, &s)
	}
	if s.Frames < 3*n || s.Connected != n || s.Lost != 0 || s.DecodeErrors != 0 {
		t.Fatalf("bare stats %+v: want ≥ %d frames from %d playing cameras, nothing lost", s, 3*n, n)
	}
	var fs FleetStats
	fleet.stats(t, &fs)
	if fs.Readers != n || fs.FramesSkipped != 0 {
		t.Fatalf("fleet stats %+v: want %d readers and no skipped frame", fs, n)
	}
	// An unknown request is an error that names it.
	err := serveControl(ctx, strings.NewReader("bogus\n"), io.Discard, func() any { return nil })
	if err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("unknown request: %v", err)
	}
}

func TestMakeClipLoopsInSimcam(t *testing.T) {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("ffmpeg is required in CI")
		}
		t.Skip("ffmpeg not installed: cannot generate a clip")
	}
	out := filepath.Join(t.TempDir(), "clip.h264")
	if err := MakeClip(context.Background(), out, "320x180", 25, 300_000); err != nil {
		t.Fatal(err)
	}
	c, err := simcam.LoadClip(out)
	if err != nil {
		t.Fatal(err)
	}
	ci := DescribeClip(c)
	if ci.Frames != 250 || ci.Keyframes != 5 || ci.Codec != simcam.CodecH264 {
		t.Fatalf("clip %+v: want 250 H.264 frames with a keyframe every 2 s", ci)
	}
	if ci.Bitrate < 100_000 || ci.Bitrate > 400_000 {
		t.Errorf("clip bitrate %.0f bit/s, asked for 300000", ci.Bitrate)
	}
}
