package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vigie-vms/vigie/loadtest/simcam"
)

// ErrToolMissing is returned when a clip must be generated and ffmpeg is not installed.
var ErrToolMissing = errors.New("required tool not found")

// ClipSpec says which clip cameras loop. The zero value is the embedded clip of the codec
// (640x360, 25 fps, about 1 Mbit/s).
type ClipSpec struct {
	Codec string // simcam.CodecH264 (default) or simcam.CodecH265
	// Bitrate in bit/s; 0, or within 25 % of 1 Mbit/s with Size "", uses the embedded clip.
	// Any other value generates a 10 s clip with ffmpeg (cached in Config.ClipDir).
	Bitrate int
	// Size is WIDTHxHEIGHT of a generated clip; "" means 640x360 up to 1.5 Mbit/s, else
	// 1280x720.
	Size string
}

func (s ClipSpec) embedded() bool {
	return s.Size == "" && (s.Bitrate == 0 || (s.Bitrate > 750_000 && s.Bitrate < 1_250_000))
}

func (s ClipSpec) size() string {
	switch {
	case s.Size != "":
		return s.Size
	case s.Bitrate > 1_500_000:
		return "1280x720"
	}
	return "640x360"
}

// ClipArgs returns the ffmpeg arguments that write the 10 s, 25 fps clip of spec to out:
// testsrc2, constant-ish bitrate (0.5 s buffer), an IDR every 2 s with parameter sets
// before each, no B-frames, single-threaded (reproducible), as testdata/clips/generate.sh.
func ClipArgs(spec ClipSpec, out string) []string {
	br := strconv.Itoa(spec.Bitrate)
	buf := strconv.Itoa(max(spec.Bitrate/2, 1))
	args := []string{"-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=" + spec.size() + ":rate=25", "-t", "10", "-an",
		"-threads", "1", "-pix_fmt", "yuv420p", "-b:v", br, "-maxrate", br, "-bufsize", buf}
	if spec.Codec == simcam.CodecH265 {
		return append(args, "-c:v", "libx265", "-preset", "veryfast",
			"-x265-params", "keyint=50:min-keyint=50:scenecut=0:bframes=0:open-gop=0:repeat-headers=1:info=0:pools=1:frame-threads=1:log-level=error",
			"-f", "hevc", out)
	}
	return append(args, "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main",
		"-bf", "0", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
		"-x264-params", "repeat-headers=1:open-gop=0", "-f", "h264", out)
}

// LoadClip returns the clip of spec: the embedded one, or a generated one from dir (made
// with ffmpeg within 2 minutes when not there yet).
func LoadClip(ctx context.Context, spec ClipSpec, dir string) (*simcam.Clip, error) {
	if spec.Codec == "" {
		spec.Codec = simcam.CodecH264
	}
	if spec.embedded() {
		return simcam.DefaultClip(spec.Codec)
	}
	ext := ".h264"
	if spec.Codec == simcam.CodecH265 {
		ext = ".h265"
	}
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "vigie-loadtest-clips")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("clip directory: %w", err)
	}
	path := filepath.Join(dir, fmt.Sprintf("testsrc2-%s-25fps-%dbps%s", spec.size(), spec.Bitrate, ext))
	if st, err := os.Stat(path); err != nil || st.Size() == 0 {
		ffmpeg, err := exec.LookPath("ffmpeg")
		if err != nil {
			return nil, fmt.Errorf("generate a %s %s clip at %d bit/s: ffmpeg: %w (install ffmpeg, or use the embedded 1 Mbit/s clips)",
				spec.Codec, spec.size(), spec.Bitrate, ErrToolMissing)
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		tmp := path + ".tmp" + ext
		cmd := exec.CommandContext(ctx, ffmpeg, ClipArgs(spec, tmp)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp)
			return nil, fmt.Errorf("ffmpeg %s: %w: %s", strings.Join(cmd.Args[1:], " "), err, strings.TrimSpace(string(b)))
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, err
		}
	}
	return simcam.LoadClip(path)
}

// Bitrate returns the clip's bit rate when played at its FPS.
func Bitrate(c *simcam.Clip) float64 {
	var n int
	for _, au := range c.AccessUnits {
		for _, nal := range au {
			n += len(nal)
		}
	}
	if len(c.AccessUnits) == 0 {
		return 0
	}
	return float64(n) * 8 * float64(c.FPS) / float64(len(c.AccessUnits))
}
