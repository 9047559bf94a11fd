package scenario

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// Every shipped scenario parses and validates.
func TestShippedScenariosLoad(t *testing.T) {
	files, _ := filepath.Glob("../scenarios/*.yaml")
	if len(files) < 4 {
		t.Fatalf("found %d scenarios in loadtest/scenarios, want smoke, failover, soak and scale", len(files))
	}
	for _, f := range files {
		sc, err := Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if want := strings.TrimSuffix(filepath.Base(f), ".yaml"); sc.Name != want {
			t.Errorf("%s: name %q, want %q", f, sc.Name, want)
		}
	}
	sc, _ := Load("../scenarios/failover.yaml")
	if sc.Nodes.Count != 3 || sc.Cameras.Count != 200 || sc.Duration.D() != 5*time.Minute ||
		len(sc.Faults) != 2 || sc.Faults[0].Action != FaultKill || sc.Faults[0].At.D() != 2*time.Minute || sc.Faults[1].Action != FaultRestart {
		t.Errorf("failover.yaml: %+v", sc)
	}
}

func TestParseErrorsNameTheKey(t *testing.T) {
	for _, c := range []struct {
		yaml string
		want []string
	}{
		{"name: x\ncameras: {count: 1}\nduration: 1m\nbogus: 1\n", []string{"bogus"}},
		{"cameras: {count: 0, codecs: {VP8: 1}}\nduration: 2s\n", []string{"name", "cameras.count", "cameras.codecs", "duration"}},
		{"name: x\nnodes: {count: 1, hosts: [10.0.0.1]}\ncameras: {count: 1}\nduration: 1m\n", []string{"nodes.hosts[0]", "loopback"}},
		{"name: x\ncameras: {count: 5}\nduration: 1m\nfaults:\n - {at: 2m, action: nuke, node: 7}\n - {at: 1s, action: drain}\n - {at: 1s, action: resolution}\n",
			[]string{"faults[0].action", "faults[0].at", "faults[0].node", "faults[1].path", "faults[2].action", "alt_size"}},
		{"name: x\ncameras: {count: 1}\nduration: 1m\nfaults: [{at: soon, action: kill}]\n", []string{"soon", "duration"}},
	} {
		_, err := Parse([]byte(c.yaml))
		if err == nil {
			t.Errorf("%q: no error", c.yaml)
			continue
		}
		if !errors.Is(err, model.ErrInvalid) && !strings.Contains(err.Error(), "soon") {
			t.Errorf("%q: %v does not wrap ErrInvalid", c.yaml, err)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not name %q", c.yaml, err, w)
			}
		}
	}
}

func TestDefaultsAndCameraMix(t *testing.T) {
	sc, err := Parse([]byte("name: x\nnodes: {count: 2}\ncameras: {count: 8, tenants: 2, codecs: {H264: 3, H265: 1}}\nduration: 1m\nfaults: [{at: 10s, action: add-node}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(sc.Nodes.Hosts, ","); got != "127.0.0.1,127.0.0.2,127.0.0.3" {
		t.Errorf("hosts %s, want one loopback address per node, the added one included", got)
	}
	cams, tenant := cameraList(sc.Cameras)
	n265 := 0
	for _, c := range cams {
		if c.Codec == "H265" {
			n265++
		}
	}
	if len(cams) != 8 || n265 != 2 || tenant["cam-0000"] != "t01" || tenant["cam-0001"] != "t02" {
		t.Errorf("cameras %+v tenants %v: want 8 cameras, 2 of them H265, alternating tenants", cams, tenant)
	}
}

func TestRampSteps(t *testing.T) {
	sc, err := Parse([]byte("name: x\nnodes: {count: 1, cpus: \"0\"}\ncameras: {count: 70, cpus: \"0\"}\nramp: {start: 20, step: 20, every: 20s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	// 20, 40, 60 and the last step at cameras.count.
	if got := fmt.Sprint(sc.Ramp.Steps()); got != "[20 40 60 70]" {
		t.Errorf("steps %s, want [20 40 60 70]", got)
	}
	if sc.Duration.D() != 80*time.Second || sc.Cameras.Initial != 20 || sc.Ramp.Max != 70 || sc.Ramp.Settle.D() != 10*time.Second {
		t.Errorf("duration %v initial %d max %d settle %v: want 4 steps × 20s, 20 cameras first, max = cameras.count, settle 10s",
			sc.Duration.D(), sc.Cameras.Initial, sc.Ramp.Max, sc.Ramp.Settle.D())
	}
	_, err = Parse([]byte("name: x\nnodes: {cpus: \"0-99\"}\ncameras: {count: 10, cpus: \"x\"}\nramp: {start: 0, step: 0, every: 5s, max: 11, settle: 6s}\nfaults: [{at: 1s, action: drop}]\n"))
	for _, want := range []string{"nodes.cpus", "this machine has CPUs", "cameras.cpus", "ramp.start", "ramp.step", "ramp.max", "ramp.every", "ramp.settle", "takes no faults"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %q", err, want)
		}
	}
	if l, err := ParseCPUList("0,0-1"); err != nil || fmt.Sprint(l) != "[0 1]" {
		t.Errorf("ParseCPUList(0,0-1) = %v, %v", l, err)
	}
}

func TestExpandPlaceholders(t *testing.T) {
	a := &nodeProc{index: 0, id: "node-1", dataDir: "/d1", addrs: map[string]string{"raft_addr": "127.0.0.1:7000", "http_addr": "127.0.0.1:8080"}}
	b := &nodeProc{index: 1, id: "node-2", dataDir: "/d2", addrs: map[string]string{"raft_addr": "127.0.0.2:7000", "http_addr": "127.0.0.2:8080"}}
	all := []*nodeProc{a, b}
	for in, want := range map[string]string{
		"--seeds={all:raft_addr}": "--seeds=127.0.0.1:7000,127.0.0.2:7000",
		"{raft_addr:0}":           "127.0.0.1:7000",
		"{node_id}@{raft_addr}":   "node-2@127.0.0.2:7000",
		"plain":                   "plain",
	} {
		if got := expand(in, b, all); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

// A 10-second, 3-camera scenario against the real vigie binary, with one camera's
// sessions dropped: every other camera must have every frame, and the dropped one's loss
// must be explained by a timeline gap, not hidden.
func TestMiniScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real vigie node processes for ~20 s")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("go not found")
		}
		t.Skip("go not found: cannot build vigie")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "vigie")
	build := exec.Command(goBin, "build", "-o", bin, "./tools/vigie")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build vigie: %v\n%s", err, out)
	}
	sc, err := Parse([]byte(`name: mini
nodes: {count: 1, args: ["--no-sync"]}
cameras: {count: 3}
duration: 14s
faults: [{at: 10s, action: drop, cameras: 1}]
verify: {startup_grace: 8s, tail: 2s, ffprobe_check: 2, seed: 7}
`))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(context.Background(), sc, Options{Vigie: bin, Dir: filepath.Join(dir, "run"), Progress: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Failures) > 0 {
		t.Errorf("failures: %q", res.Failures)
	}
	if len(res.Cameras) != 3 {
		t.Fatalf("%d camera reports, want 3", len(res.Cameras))
	}
	for _, c := range res.Cameras {
		t.Logf("%s: expected %d recorded %d lost %d runs %+v problems %q", c.Camera, c.Expected, c.Recorded, c.Lost, c.LossRuns, c.Problems)
		if c.Expected < 80 || c.Duplicated != 0 || c.HiddenGaps != 0 || c.Outside != 0 {
			t.Errorf("%s: %+v", c.Camera, c)
		}
		if c.Camera != "cam-0000" && c.Lost != 0 {
			t.Errorf("%s lost %d frames, want 0 (only cam-0000 was disturbed)", c.Camera, c.Lost)
		}
		for _, r := range c.LossRuns {
			if r.Kind != "gap" && r.Kind != "dropped" {
				t.Errorf("%s: loss run %+v not explained by the timeline", c.Camera, r)
			}
		}
	}
	// The independent check: ffprobe counts the frames of 2 cameras' exports (the files the
	// verifier parsed) and agrees with the verifier.
	if p := res.Probe; p == nil || p.Skipped != "" || len(p.Cameras) != 2 {
		t.Errorf("ffprobe check %+v: want 2 cameras checked", p)
	} else {
		for _, c := range p.Cameras {
			t.Logf("ffprobe %+v", c)
			if !c.Agree || c.FFprobe != c.Parsed || c.WindowFrames != c.Recorded || c.Recorded == 0 || c.Outside == 0 {
				t.Errorf("ffprobe check of %s: %+v", c.Camera, c)
			}
		}
	}
	if len(res.Nodes) != 1 || len(res.Nodes[0].Samples) < 8 || res.Nodes[0].Samples[2].RSS == 0 {
		t.Errorf("node samples: %+v", res.Nodes)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
