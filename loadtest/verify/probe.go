package verify

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The independent check: ffprobe, a decoder the verifier shares no code with, counts the
// video frames of the very export files the verifier parsed (CollectOptions.Keep), and
// the counts are compared three ways:
//
//   - ffprobe's frames in the files = the samples the verifier parsed in them (same bytes:
//     the MP4 reading is right);
//   - ffprobe's frames minus the samples outside the window (the export starts at the
//     keyframe at or before its start, and runs past the window by the lead) = the window
//     samples, decoded from the SEI tags of the same files;
//   - the distinct expected frames those files hold = the frames the verifier reported
//     recorded for the camera (CameraReport.Recorded: the counting is right).

// Probe count modes.
const (
	ProbeFrames  = "frames"  // decode: -count_frames, nb_read_frames (slower, stronger)
	ProbePackets = "packets" // demux only: -count_packets, nb_read_packets
)

// ProbeTarget is one camera to check: its saved exports and the verifier's verdict.
type ProbeTarget struct {
	Camera   string
	Window   Interval
	Sent     Sent
	Files    []ExportFile
	Recorded int // CameraReport.Recorded
}

// ProbeResult is the check of one camera.
type ProbeResult struct {
	Camera string   `json:"camera"`
	Files  []string `json:"files"`
	Bytes  int64    `json:"bytes"`
	// FFprobe counts the video frames (or packets) of the files, by ffprobe.
	FFprobe int `json:"ffprobe"`
	// Parsed counts the samples the verifier's parser finds in the same files.
	Parsed int `json:"parsed"`
	// Outside counts the parsed samples whose tag is not an expected frame of the window
	// (the keyframe lead-in before it, the lead after it, another camera's, untagged).
	Outside int `json:"outside"`
	// WindowFrames counts the distinct expected frames of the window in the files.
	WindowFrames int `json:"window_frames"`
	// Recorded is the verifier's count for the camera.
	Recorded int    `json:"recorded"`
	Agree    bool   `json:"agree"`
	Why      string `json:"why,omitempty"` // the disagreement or the error
}

// ProbeCheck is the ffprobe check of a run.
type ProbeCheck struct {
	Requested int           `json:"requested"`
	Seed      uint64        `json:"seed"`
	Mode      string        `json:"mode"`
	Skipped   string        `json:"skipped,omitempty"` // why the check did not run
	Cameras   []ProbeResult `json:"cameras,omitempty"`
}

// Disagreements returns the cameras whose counts disagree.
func (p ProbeCheck) Disagreements() []ProbeResult {
	var out []ProbeResult
	for _, c := range p.Cameras {
		if !c.Agree {
			out = append(out, c)
		}
	}
	return out
}

// PickCameras returns n of ids chosen at random with seed (all of them when n ≥ len),
// sorted.
func PickCameras(ids []string, n int, seed uint64) []string {
	s := append([]string(nil), ids...)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	r.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	if n < len(s) {
		s = s[:n]
	}
	sort.Strings(s)
	return s
}

// FFprobeCount counts the video frames (mode ProbeFrames) or packets (ProbePackets) of the
// first video stream of path.
func FFprobeCount(ctx context.Context, ffprobe, path, mode string) (int, error) {
	args := []string{"-v", "error", "-select_streams", "v:0", "-of", "csv=p=0"}
	if mode == ProbePackets {
		args = append(args, "-count_packets", "-show_entries", "stream=nb_read_packets")
	} else {
		args = append(args, "-count_frames", "-show_entries", "stream=nb_read_frames")
	}
	out, err := exec.CommandContext(ctx, ffprobe, append(args, path)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return 0, fmt.Errorf("ffprobe %s: %w: %s", path, err, strings.TrimSpace(string(ee.Stderr)))
		}
		return 0, fmt.Errorf("ffprobe %s: %w", path, err)
	}
	s := strings.TrimSpace(strings.Split(strings.TrimSpace(string(out)), "\n")[0])
	s = strings.TrimSuffix(s, ",")
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("ffprobe %s: output %q is not a count", path, strings.TrimSpace(string(out)))
	}
	return n, nil
}

// Probe runs the check on one camera with the ffprobe binary.
func Probe(ctx context.Context, ffprobe, mode string, t ProbeTarget) ProbeResult {
	r := ProbeResult{Camera: t.Camera, Recorded: t.Recorded}
	if len(t.Files) == 0 {
		r.Why = "no export was saved for this camera (nothing recorded in the window?)"
		r.Agree = t.Recorded == 0
		return r
	}
	var samples []Sample
	for _, f := range t.Files {
		r.Files = append(r.Files, f.Path)
		r.Bytes += f.Bytes
		n, err := FFprobeCount(ctx, ffprobe, f.Path, mode)
		if err != nil {
			r.Why = err.Error()
			return r
		}
		r.FFprobe += n
		fh, err := os.Open(f.Path)
		if err != nil {
			r.Why = err.Error()
			return r
		}
		ss, err := ParseExport(fh, time.Time{})
		fh.Close()
		if err != nil {
			r.Why = fmt.Sprintf("%s: %v", f.Path, err)
			return r
		}
		r.Parsed += len(ss)
		samples = append(samples, ss...)
	}
	inWindow := 0
	seen := map[uint64]bool{}
	if t.Sent.FPS > 0 {
		kmin, kend := t.Sent.firstFrameAtOrAfter(t.Window.Start), t.Sent.firstFrameAtOrAfter(t.Window.End)
		for _, s := range samples {
			ours := false
			for _, tg := range s.Tags {
				if tg.Camera == t.Camera && tg.Frame >= kmin && tg.Frame < kend && !t.Sent.stalled(t.Sent.FrameTime(tg.Frame)) {
					ours = true
					seen[tg.Frame] = true
				}
			}
			if ours {
				inWindow++
			}
		}
	}
	r.Outside = r.Parsed - inWindow
	r.WindowFrames = len(seen)
	var why []string
	if r.FFprobe != r.Parsed {
		why = append(why, fmt.Sprintf("ffprobe counts %d %s in the files, the verifier's parser %d samples", r.FFprobe, orFrames(mode), r.Parsed))
	}
	if r.WindowFrames != r.Recorded {
		why = append(why, fmt.Sprintf("the files hold %d distinct expected frames of the window, the verifier reported %d recorded", r.WindowFrames, r.Recorded))
	}
	r.Agree = len(why) == 0
	r.Why = strings.Join(why, "; ")
	return r
}

func orFrames(mode string) string {
	if mode == ProbePackets {
		return "packets"
	}
	return "frames"
}

// RunProbeCheck checks each target with ffprobe (found in PATH). Without ffprobe the check
// is Skipped with the reason.
func RunProbeCheck(ctx context.Context, mode string, seed uint64, requested int, targets []ProbeTarget) ProbeCheck {
	if mode == "" {
		mode = ProbeFrames
	}
	pc := ProbeCheck{Requested: requested, Seed: seed, Mode: mode}
	ffprobe, err := exec.LookPath("ffprobe")
	if err != nil {
		pc.Skipped = "ffprobe not found in PATH (install ffmpeg): " + err.Error()
		return pc
	}
	for _, t := range targets {
		pc.Cameras = append(pc.Cameras, Probe(ctx, ffprobe, mode, t))
	}
	return pc
}
