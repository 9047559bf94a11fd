package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vigie-vms/vigie/loadtest/sei"
	"github.com/vigie-vms/vigie/loadtest/simcam"
	"github.com/vigie-vms/vigie/testdata/clips"
)

// taggedClip writes the committed clip of codec as an Annex-B file in which access unit k
// carries the tag SEI {Camera: camera, Frame: k}, inserted before its first picture NAL unit
// as simcam does, so that the frames can be counted back out of what the node recorded.
func taggedClip(t *testing.T, codec, camera, dir string) (path string, frames int) {
	t.Helper()
	data, ext := clips.H264, ".h264"
	if codec == simcam.CodecH265 {
		data, ext = clips.H265, ".h265"
	}
	clip, err := simcam.ParseClip(data, codec, clips.FPS)
	if err != nil {
		t.Fatal(err)
	}
	h265 := clip.H265()
	var out []byte
	startCode := []byte{0, 0, 0, 1}
	for k, au := range clip.AccessUnits {
		tagged := false
		for _, nal := range au {
			if !tagged && isVCL(nal, h265) {
				tag := sei.Tag{Camera: camera, Frame: uint64(k)}
				out = append(out, startCode...)
				if h265 {
					out = sei.AppendH265(out, tag)
				} else {
					out = sei.AppendH264(out, tag)
				}
				tagged = true
			}
			out = append(out, startCode...)
			out = append(out, nal...)
		}
	}
	path = filepath.Join(dir, camera+ext)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, len(clip.AccessUnits)
}

// isVCL reports whether nal is a picture NAL unit (H.264 types 1–5, H.265 types 0–31).
func isVCL(nal []byte, h265 bool) bool {
	if len(nal) == 0 {
		return false
	}
	if h265 {
		return (nal[0]>>1)&0x3f < 32
	}
	typ := nal[0] & 0x1f
	return typ >= 1 && typ <= 5
}

// decodeErrors decodes input (a file or URL) entirely with ffmpeg and returns what it
// printed at level error: "" for a clean decode.
func decodeErrors(t *testing.T, input string) string {
	t.Helper()
	out, err := run(context.Background(), t, "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", input, "-f", "null", "-")
	if err != nil {
		return fmt.Sprintf("ffmpeg failed (%v): %s", err, out)
	}
	return strings.TrimSpace(out)
}

// countFrames returns the number of video frames ffprobe decodes from input.
func countFrames(t *testing.T, input string) int {
	t.Helper()
	out, err := run(context.Background(), t, "ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", input)
	if err != nil {
		t.Fatalf("ffprobe -count_frames %s: %v: %s", input, err, out)
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(out), ",")))
	if err != nil {
		t.Fatalf("ffprobe -count_frames %s: %q is not a count", input, out)
	}
	return n
}

// firstFrame returns whether the first decoded video frame of input is a keyframe, and
// its picture type (I, P, B).
func firstFrame(t *testing.T, input string) (key bool, pictType string) {
	t.Helper()
	out, err := run(context.Background(), t, "ffprobe", "-v", "error", "-select_streams", "v:0",
		"-read_intervals", "%+#1", "-show_entries", "frame=key_frame,pict_type", "-of", "csv=p=0", input)
	if err != nil {
		t.Fatalf("ffprobe -show_frames %s: %v: %s", input, err, out)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	f := strings.Split(strings.TrimSpace(line), ",")
	if len(f) < 2 {
		t.Fatalf("ffprobe -show_frames %s: unexpected output %q", input, out)
	}
	return f[0] == "1", f[1]
}

// tagsOf extracts the video elementary stream of an MP4 file or URL with ffmpeg and
// returns the SEI tags it carries, in decode order.
func tagsOf(t *testing.T, input string, h265 bool) []sei.Tag {
	t.Helper()
	bsf, format := "h264_mp4toannexb", "h264"
	if h265 {
		bsf, format = "hevc_mp4toannexb", "hevc"
	}
	es := filepath.Join(t.TempDir(), "es."+format)
	out, err := run(context.Background(), t, "ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", input,
		"-map", "0:v:0", "-c:v", "copy", "-bsf:v", bsf, "-f", format, es)
	if err != nil {
		t.Fatalf("extract the elementary stream of %s: %v: %s", input, err, out)
	}
	data, err := os.ReadFile(es)
	if err != nil {
		t.Fatal(err)
	}
	return sei.ScanAnnexB(data, h265)
}

// frameCheck is what the SEI tags of an export say.
type frameCheck struct {
	Tags        int
	First, Last uint64
	Missing     []uint64 // numbers absent between First and Last (capped at 20)
	MissingN    int      // how many are absent in all
	Dup         int      // numbers seen twice or going backwards
}

func checkFrames(tags []sei.Tag) frameCheck {
	c := frameCheck{Tags: len(tags)}
	if len(tags) == 0 {
		return c
	}
	c.First, c.Last = tags[0].Frame, tags[len(tags)-1].Frame
	for i := 1; i < len(tags); i++ {
		prev, cur := tags[i-1].Frame, tags[i].Frame
		if cur <= prev {
			c.Dup++
			continue
		}
		for n := prev + 1; n < cur; n++ {
			c.MissingN++
			if len(c.Missing) < 20 {
				c.Missing = append(c.Missing, n)
			}
		}
	}
	return c
}

func (c frameCheck) String() string {
	s := fmt.Sprintf("%d tagged frames, numbers %d..%d", c.Tags, c.First, c.Last)
	if c.MissingN > 0 {
		s += fmt.Sprintf(", %d missing (first: %v)", c.MissingN, c.Missing)
	}
	if c.Dup > 0 {
		s += fmt.Sprintf(", %d duplicated or out of order", c.Dup)
	}
	return s
}

// verifyExport runs the checks every export must pass: it decodes without an error, its
// frames carry consecutive tag numbers, and ffprobe counts one frame per tag. It returns
// what the tags say.
func verifyExport(t *testing.T, path string, h265 bool) frameCheck {
	t.Helper()
	if msg := decodeErrors(t, path); msg != "" {
		t.Errorf("%s: ffmpeg -v error printed:\n%s", filepath.Base(path), tail(msg, 20))
	}
	c := checkFrames(tagsOf(t, path, h265))
	if c.Tags == 0 {
		t.Fatalf("%s: no SEI tag found in the export", filepath.Base(path))
	}
	if c.MissingN > 0 || c.Dup > 0 {
		t.Errorf("%s: frames not consecutive: %s", filepath.Base(path), c)
	}
	if n := countFrames(t, path); n != c.Tags {
		t.Errorf("%s: ffprobe counts %d frames, the SEI tags %d", filepath.Base(path), n, c.Tags)
	}
	return c
}
