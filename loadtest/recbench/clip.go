package recbench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/vigie-vms/vigie/loadtest/simcam"
)

// ErrToolMissing is returned when an external program the benchmark needs (ffmpeg,
// taskset, go, perf) is not installed.
var ErrToolMissing = errors.New("required tool not found")

// ClipArgs returns the ffmpeg arguments that write a 10 s test clip to out: testsrc2 at
// size and fps, H.264 at bitrate (constrained with a 0.5 s buffer so every second is close
// to the target), a keyframe every 2 s, no B-frames, parameter sets repeated before every
// IDR (so simcam's loop decodes from any turn).
func ClipArgs(out, size string, fps, bitrate int) []string {
	br := strconv.Itoa(bitrate)
	return []string{
		"-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%s:rate=%d", size, fps),
		"-t", "10", "-pix_fmt", "yuv420p",
		"-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high",
		"-b:v", br, "-maxrate", br, "-bufsize", strconv.Itoa(bitrate / 2),
		"-g", strconv.Itoa(2 * fps), "-keyint_min", strconv.Itoa(2 * fps), "-sc_threshold", "0", "-bf", "0",
		"-x264-params", "repeat-headers=1",
		"-f", "h264", out,
	}
}

// MakeClip writes the clip of ClipArgs to out with ffmpeg, within 2 minutes.
func MakeClip(ctx context.Context, out, size string, fps, bitrate int) error {
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		return fmt.Errorf("generate the %d bit/s clip: ffmpeg: %w (install ffmpeg, or pass -clip FILE.h264)", bitrate, ErrToolMissing)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ffmpeg, ClipArgs(out, size, fps, bitrate)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ffmpeg %s: %w: %s", strings.Join(cmd.Args[1:], " "), err, strings.TrimSpace(string(b)))
	}
	if st, err := os.Stat(out); err != nil || st.Size() == 0 {
		return fmt.Errorf("ffmpeg wrote no clip to %s", out)
	}
	return nil
}

// ClipInfo summarises the clip the cameras loop.
type ClipInfo struct {
	Path      string
	Codec     string
	Frames    int
	FPS       int
	Bytes     int     // payload bytes of all access units (NAL units, no start codes)
	Bitrate   float64 // bit/s when played at FPS
	Keyframes int
}

// DescribeClip computes ClipInfo.
func DescribeClip(c *simcam.Clip) ClipInfo {
	ci := ClipInfo{Path: c.Path, Codec: c.Codec, Frames: len(c.AccessUnits), FPS: c.FPS}
	for _, au := range c.AccessUnits {
		key := false
		for _, n := range au {
			ci.Bytes += len(n)
			if len(n) > 0 && n[0]&0x1f == 5 { // H.264 IDR slice
				key = true
			}
		}
		if key {
			ci.Keyframes++
		}
	}
	if ci.Frames > 0 && ci.FPS > 0 {
		ci.Bitrate = float64(ci.Bytes) * 8 * float64(ci.FPS) / float64(ci.Frames)
	}
	return ci
}

func (ci ClipInfo) String() string {
	gop := 0.0
	if ci.Keyframes > 0 && ci.FPS > 0 {
		gop = float64(ci.Frames) / float64(ci.Keyframes) / float64(ci.FPS)
	}
	return fmt.Sprintf("%s %d fps, %.2f Mbit/s, %d frames, keyframe every %.1f s (%s)",
		ci.Codec, ci.FPS, ci.Bitrate/1e6, ci.Frames, gop, ci.Path)
}
