package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/loadtest/simcam"
)

// startSimcam starts simulated cameras (the embedded H.264 clip: IDR every 50 frames, 25
// fps) on a free port, closed at the end of the test.
func startSimcam(t *testing.T, cams ...string) *simcam.Server {
	t.Helper()
	sim, err := simcam.New(simcam.Config{Addr: freeAddr(t), Cameras: cams})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	return sim
}

// gopFrames is the IDR period of the committed clips: simcam numbers frames from 0 at
// Start and frame k is the clip's access unit k mod 250, so frame numbers that are
// multiples of 50 are exactly the keyframes.
const gopFrames = 50

// TestSimcamPulled records a simulated camera pulled by the node for about 8 s, then
// checks the export (every frame from the first keyframe on, ffprobe agrees, clean
// decode) and seeking by wall-clock time in the playback stream.
func TestSimcamPulled(t *testing.T) {
	needTools(t, "ffmpeg", "ffprobe")
	const cam = "sim-pull-1"
	sim := startSimcam(t, cam)
	dir := t.TempDir()
	n := startNode(t, "node", dir, freeAddrs(t))
	createTenant(t, n.base(), "t1")
	begin := time.Now()
	createCamera(t, n.base(), map[string]any{"id": cam, "tenant": "t1", "url": sim.URL(cam)})

	// ~8 s of footage (the first 0–2 s before a keyframe are not recordable).
	tl := waitSpan(t, n.base(), cam, begin.Add(-time.Minute), begin.Add(10*time.Second), 30*time.Second)
	t.Logf("timeline after %s:%s", time.Since(begin).Round(time.Millisecond), tl)
	if len(tl.Spans) != 1 {
		t.Errorf("timeline has %d spans, want 1 (uninterrupted recording)", len(tl.Spans))
	}
	rec := tl.Spans[len(tl.Spans)-1]

	t.Run("export", func(t *testing.T) {
		mp4 := filepath.Join(dir, "export.mp4")
		export(t, n.base(), cam, rec.Start, rec.End, mp4)
		c := verifyExport(t, mp4, false)
		sent := sim.FramesSent(cam)
		t.Logf("export of %s: %s; the camera had sent %d frames", rec.End.Sub(rec.Start).Round(time.Millisecond), c, sent)
		if c.First%gopFrames != 0 {
			t.Errorf("export starts at frame %d, not on a keyframe (every %d frames)", c.First, gopFrames)
		}
		if c.Tags < 150 {
			t.Errorf("export holds %d frames, want at least 150 (6 s) of a recording of %s", c.Tags, rec.End.Sub(rec.Start))
		}
	})

	t.Run("seek", func(t *testing.T) {
		// T is 4.5 s into the recording plus a fraction of a frame: not on a keyframe.
		at := rec.Start.Add(4*time.Second + 517*time.Millisecond)
		if !at.Before(rec.End) {
			t.Fatalf("recording too short to seek 4.5 s into it: %+v", rec)
		}
		u := streamURL(n.base(), cam, at, 4*time.Second)
		mp4 := filepath.Join(dir, "seek.mp4")
		h := download(t, u, mp4)
		xs, err := time.Parse(time.RFC3339Nano, h.Get("X-Vigie-Start"))
		if err != nil {
			t.Fatalf("X-Vigie-Start %q: %v", h.Get("X-Vigie-Start"), err)
		}
		if xs.After(at) || !xs.After(at.Add(-2*time.Second)) {
			t.Errorf("seek to %s: X-Vigie-Start %s, want in (T-2s, T] (keyframe at or before T, GOP 2 s)",
				at.Format(time.RFC3339Nano), xs.Format(time.RFC3339Nano))
		}
		key, pict := firstFrame(t, mp4)
		if !key || pict != "I" {
			t.Errorf("first frame of the stream: key_frame=%v pict_type=%s, want a keyframe (I)", key, pict)
		}
		tags := tagsOf(t, mp4, false)
		c := checkFrames(tags)
		if c.Tags == 0 {
			t.Fatal("no SEI tag in the stream")
		}
		if c.First%gopFrames != 0 {
			t.Errorf("first frame served is frame %d, not a keyframe (every %d frames)", c.First, gopFrames)
		}
		if c.MissingN > 0 || c.Dup > 0 {
			t.Errorf("stream frames not consecutive: %s", c)
		}
		if msg := decodeErrors(t, mp4); msg != "" {
			t.Errorf("stream: ffmpeg -v error printed:\n%s", tail(msg, 20))
		}
		// How well the recorded wall time matches the camera's: the first frame was sent
		// (SEI SentAt) at about the time X-Vigie-Start says.
		skew := xs.Sub(tags[0].SentAt)
		t.Logf("seek T=start+%s: X-Vigie-Start = T-%s, first frame %d, sent by the camera %s before X-Vigie-Start; %s",
			at.Sub(rec.Start), at.Sub(xs).Round(time.Millisecond), c.First, skew.Round(time.Millisecond), c)
		if skew > time.Second || skew < -time.Second {
			t.Errorf("X-Vigie-Start is %s away from the time the camera sent that frame", skew)
		}
		// The stream covers [keyframe, T+4s): at least (T+4s - X-Vigie-Start) of frames.
		if want := int((at.Add(4*time.Second).Sub(xs)).Seconds()*25) - 25; c.Tags < want {
			t.Errorf("stream holds %d frames, want at least %d (from the keyframe to T+4s, one fragment of slack)", c.Tags, want)
		}
	})

	t.Run("chromium", func(t *testing.T) {
		playsInChromium(t, streamURL(n.base(), cam, rec.Start, 5*time.Second), dir)
	})
}

// playsInChromium loads a page with a <video> of url in headless Chromium and checks that
// the browser plays it: more than a second of playback and the picture size known, with no
// media error.
func playsInChromium(t *testing.T, url, dir string) {
	t.Helper()
	needTools(t, "chromium")
	page := filepath.Join(dir, "play.html")
	html := `<html><body><video id="v" muted autoplay playsinline src="` + url + `"></video><div id="out">pending</div>
<script>
const v = document.getElementById('v'), out = document.getElementById('out');
v.addEventListener('error', () => { out.textContent = 'error ' + (v.error ? v.error.code + ' ' + v.error.message : ''); });
v.addEventListener('timeupdate', () => { if (v.currentTime > 1 && !out.textContent.startsWith('error')) out.textContent = 'playing ' + v.videoWidth + 'x' + v.videoHeight; });
</script></body></html>`
	if err := os.WriteFile(page, []byte(html), 0o644); err != nil {
		t.Fatal(err)
	}
	// The flags keep Chromium off the network (this machine has none) and let the video
	// start without a user gesture; the virtual time budget lets the page run 8 s. Virtual
	// time does not wait for the media element's own fetch: on a loaded machine the budget
	// can run out before the first bytes arrive, and the page still says "pending" (no
	// verdict, seen once in CI). That, and only that, is tried again.
	var got string
	for try := 1; try <= 3; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		dom, err := run(ctx, t, "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir="+filepath.Join(dir, "chromium-profile"), "--autoplay-policy=no-user-gesture-required",
			"--virtual-time-budget=8000", "--dump-dom", "file://"+page)
		cancel()
		if err != nil {
			t.Fatalf("chromium: %v", err)
		}
		i := strings.Index(dom, `<div id="out">`)
		if i < 0 {
			t.Fatalf("chromium's page has no result:\n%s", tail(dom, 20))
		}
		got = dom[i+len(`<div id="out">`):]
		got = got[:strings.Index(got, "<")]
		if got != "pending" {
			break
		}
		t.Logf("try %d: Chromium's page still pending when its time budget ran out", try)
	}
	if got != "playing 640x360" {
		t.Errorf("in Chromium the stream %s gave %q, want \"playing 640x360\"", url, got)
	}
}
