package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/loadtest/simcam"
)

// TestFFmpegPush: ffmpeg publishes the tagged 10 s clip (250 frames) to a pushed camera;
// the export of what was recorded holds every frame from the first recorded keyframe on,
// decodes cleanly, and ffprobe counts as many frames as there are tags.
func TestFFmpegPush(t *testing.T) {
	needTools(t, "ffmpeg", "ffprobe")
	for _, codec := range []string{simcam.CodecH264, simcam.CodecH265} {
		t.Run(codec, func(t *testing.T) {
			if testing.Short() && codec == simcam.CodecH265 {
				t.Skip("skipped in -short mode: the H.264 push covers the path")
			}
			testPush(t, codec)
		})
	}
}

// strictWallClock turns the wall-clock checks of the push test into assertions. It is off
// while node/ingest trusts ffmpeg's RTCP sender reports as they are: they put frames about
// 1–3 s later than they were received (a jump at the first sender report), so a 10 s
// publish shows as an 11–13 s span that ends after the publisher left.
const strictWallClock = true

func testPush(t *testing.T, codec string) {
	dir := t.TempDir()
	n := startNode(t, "node", dir, freeAddrs(t))
	cam := "push-" + strings.ToLower(codec)
	h265 := codec == simcam.CodecH265
	createTenant(t, n.base(), "t1")
	createCamera(t, n.base(), map[string]any{"id": cam, "tenant": "t1", "ingest": "push"})

	clip, frames := taggedClip(t, codec, cam, dir)
	format := "h264"
	if h265 {
		format = "hevc"
	}
	begin := time.Now()
	out, err := run(context.Background(), t, "ffmpeg", "-hide_banner", "-nostdin", "-v", "error",
		"-re", "-fflags", "+genpts", "-f", format, "-framerate", "25", "-i", clip,
		"-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", "rtsp://"+n.addrs.RTSP+"/"+cam)
	if err != nil {
		t.Fatalf("ffmpeg publish to rtsp://%s/%s: %v\n%s", n.addrs.RTSP, cam, err, out)
	}
	gone := time.Now()
	pushed := gone.Sub(begin)

	// The publisher is gone: the node flushes the fragment in progress, then the timeline
	// shows a gap after the span.
	tl := waitSettled(t, n.base(), cam, begin.Add(-time.Minute), 10*time.Second)
	t.Logf("published %d frames in %s; timeline:%s", frames, pushed.Round(time.Millisecond), tl)
	if len(tl.Spans) != 1 {
		t.Errorf("timeline has %d spans, want 1 (one uninterrupted publish)", len(tl.Spans))
	}
	first, last := tl.Spans[0], tl.Spans[len(tl.Spans)-1]
	recorded := last.End.Sub(first.Start)
	ahead := last.End.Sub(gone)
	t.Logf("timeline: %s recorded for a 10s clip; the span ends %s after ffmpeg exited", recorded.Round(time.Millisecond), ahead.Round(time.Millisecond))
	if strictWallClock && (recorded > 11*time.Second || ahead > time.Second) {
		t.Errorf("the span claims %s of footage ending %s after the publisher left, for a 10s clip", recorded, ahead)
	}
	if recorded < 8*time.Second {
		t.Errorf("recorded %s, want about 10s (the clip)", recorded)
	}

	mp4 := filepath.Join(dir, "export.mp4")
	export(t, n.base(), cam, first.Start, last.End, mp4)
	c := verifyExport(t, mp4, h265)
	t.Logf("export: %s (of %d frames published)", c, frames)
	// The node records from the first keyframe it receives: the first frame published is
	// one (the clip opens with an IDR), and the last fragment is flushed when the publisher
	// disconnects. Known limit: under load, the very last frame before the publisher's
	// TEARDOWN can be lost (gortsplib drops the packets still queued when the session
	// closes), so one frame at the end is tolerated; verifyExport has already checked
	// that no frame is missing in between.
	if c.First%50 != 0 {
		t.Errorf("export starts at frame %d, not on a keyframe (every 50 frames)", c.First)
	}
	if c.First != 0 || c.Last+1 < uint64(frames-1) {
		t.Errorf("export holds frames %d..%d, want 0..%d (at most the last one missing)", c.First, c.Last, frames-1)
	}
}
