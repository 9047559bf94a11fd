package cli

import (
	"flag"
	"strings"
	"testing"
)

func TestFleetCameras(t *testing.T) {
	cams, err := fleetCameras(8, "x", "H264=3,h265=1")
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, c := range cams {
		n[c.Codec]++
	}
	if len(cams) != 8 || n["H264"] != 6 || n["H265"] != 2 || cams[0].ID != "x-0000" {
		t.Errorf("cameras %+v", cams)
	}
	for _, bad := range []string{"VP8", "H264=x", "H264=0"} {
		if _, err := fleetCameras(2, "x", bad); err == nil || !strings.Contains(err.Error(), "-codecs") {
			t.Errorf("-codecs %q: %v, want an error naming -codecs", bad, err)
		}
	}
}

func TestFlagsAfterScenario(t *testing.T) {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	d := fs.String("vigie", "", "")
	if err := parseInterspersed(fs, []string{"smoke.yaml", "-vigie", "bin/vigie"}); err != nil {
		t.Fatal(err)
	}
	if *d != "bin/vigie" || fs.NArg() != 1 || fs.Arg(0) != "smoke.yaml" {
		t.Errorf("vigie %q args %q", *d, fs.Args())
	}
}

func TestUnknownCommand(t *testing.T) {
	if err := Main([]string{"explode"}); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Errorf("Main(explode) = %v", err)
	}
}

func TestScaleNeedsARamp(t *testing.T) {
	err := Main([]string{"scale", "-vigie", "/nonexistent", "-out", t.TempDir(), "../scenarios/smoke.yaml"})
	if err == nil || !strings.Contains(err.Error(), "no ramp section") {
		t.Errorf("scale smoke.yaml: %v, want an error saying the scenario has no ramp", err)
	}
	// Flags that make a ramp are checked like the file: a step below 10 s is refused
	// before anything starts.
	err = Main([]string{"scale", "-vigie", "/nonexistent", "-out", t.TempDir(), "-start", "5", "-step", "5", "-every", "5s", "../scenarios/smoke.yaml"})
	if err == nil || !strings.Contains(err.Error(), "ramp.every") {
		t.Errorf("scale -every 5s: %v, want an error naming ramp.every", err)
	}
}
