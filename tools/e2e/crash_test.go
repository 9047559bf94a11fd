package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCrashRecovery records 5 simulated cameras, kills the node with SIGKILL after ~8 s,
// restarts it on the same data directory and lets it record ~8 s more. For every camera:
// recording resumed by itself (spans before and after, a gap in between with its cause),
// a kill -9 lost at most the fragment in flight (≤ 25 frames at 25 fps, + 5 of slack for
// the frames sent while SIGKILL was delivered), and every segment plays cleanly.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: records for ~20 s")
	}
	needTools(t, "ffmpeg", "ffprobe")
	const (
		cameras       = 5
		framesPerFrag = 25 // --fragment-max 1s at 25 fps
		slack         = 5
	)
	var ids []string
	for i := range cameras {
		ids = append(ids, fmt.Sprintf("crash-cam-%d", i+1))
	}
	sim := startSimcam(t, ids...)
	dir := t.TempDir()
	a := freeAddrs(t)
	n1 := startNode(t, "node (first run)", dir, a)
	createTenant(t, n1.base(), "t1")
	begin := time.Now()
	for _, id := range ids {
		createCamera(t, n1.base(), map[string]any{"id": id, "tenant": "t1", "url": sim.URL(id)})
	}
	for _, id := range ids {
		waitSpan(t, n1.base(), id, begin.Add(-time.Minute), begin.Add(8*time.Second), 30*time.Second)
	}

	// Read what each camera has sent, then crash the node at once.
	sentAtKill := make(map[string]uint64, cameras)
	for _, id := range ids {
		sentAtKill[id] = sim.FramesSent(id)
	}
	killedAt := time.Now()
	n1.kill()
	t.Logf("node killed (SIGKILL) %s after the cameras were registered", killedAt.Sub(begin).Round(time.Millisecond))

	time.Sleep(time.Second) // a little footage that nobody records
	restarted := time.Now()
	n2 := startNode(t, "node (after the crash)", dir, a)
	t.Logf("node restarted on the same data dir, ready in %s", time.Since(restarted).Round(time.Millisecond))
	if lines := n2.logLines("startup check"); len(lines) == 0 {
		t.Errorf("the restarted node's log does not mention the startup check, though %d segments were left open by the crash", cameras)
	} else {
		for _, l := range lines {
			t.Logf("restarted node's log: %s", l)
		}
		if !strings.Contains(strings.Join(lines, "\n"), "sealed") {
			t.Errorf("the startup check does not say it sealed the segments left open by the crash")
		}
	}
	until := time.Now().Add(8 * time.Second)
	for _, id := range ids {
		waitSpan(t, n2.base(), id, killedAt, until, 30*time.Second)
	}

	for _, id := range ids {
		t.Run(id, func(t *testing.T) {
			checkCrashedCamera(t, n2, id, begin, killedAt, sentAtKill[id], framesPerFrag+slack)
		})
	}
}

func checkCrashedCamera(t *testing.T, n *proc, cam string, begin, killedAt time.Time, sentAtKill uint64, maxLost uint64) {
	dir := t.TempDir()
	tl := getTimeline(t, n.base(), cam, begin.Add(-time.Minute), time.Now().Add(time.Minute))
	var before, after []span
	for _, s := range tl.Spans {
		if s.Start.Before(killedAt) {
			before = append(before, s)
		} else {
			after = append(after, s)
		}
	}
	if len(before) == 0 || len(after) == 0 {
		t.Fatalf("want spans before and after the crash at %s (recording resumed by itself):%s", killedAt.Format("15:04:05.000"), tl)
	}
	pre, post := before[len(before)-1], after[0]
	var causes []string
	for _, g := range tl.Gaps {
		if !g.Start.Before(pre.End) && !g.End.After(post.Start) {
			causes = append(causes, g.Cause)
		}
	}
	named := false
	for _, c := range causes {
		named = named || (c != "" && c != "unknown")
	}
	if !named {
		t.Errorf("the gap of the crash (%s → %s) has causes %q, want one naming it (node_down…):%s",
			pre.End.Format("15:04:05.000"), post.Start.Format("15:04:05.000"), causes, tl)
	}

	preMP4 := filepath.Join(dir, "before.mp4")
	export(t, n.base(), cam, pre.Start, pre.End, preMP4)
	pc := verifyExport(t, preMP4, false)
	postMP4 := filepath.Join(dir, "after.mp4")
	export(t, n.base(), cam, post.Start, post.End, postMP4)
	ac := verifyExport(t, postMP4, false)
	if ac.First%gopFrames != 0 {
		t.Errorf("recording after the restart starts at frame %d, not on a keyframe", ac.First)
	}

	// Frames the camera had sent when the node was killed but that were not recorded.
	var lost uint64
	if sentAtKill > pc.Last+1 {
		lost = sentAtKill - (pc.Last + 1)
	}
	t.Logf("before the crash %s; after %s; sent at kill: %d, lost at the crash: %d frames (%.2f s); gap %s → %s (%.2f s) cause %v",
		pc, ac, sentAtKill, lost, float64(lost)/25, pre.End.Format("15:04:05.000"), post.Start.Format("15:04:05.000"), post.Start.Sub(pre.End).Seconds(), causes)
	if lost > maxLost {
		t.Errorf("the crash lost %d frames already sent (last recorded %d, sent %d), want at most %d (one fragment in flight)", lost, pc.Last, sentAtKill, maxLost)
	}

	segs := listSegments(t, n.base(), cam, begin.Add(-time.Minute), time.Now().Add(time.Minute))
	if len(segs) < 2 {
		t.Errorf("%d segments listed, want at least 2 (one sealed by the startup check, one recording)", len(segs))
	}
	for i, sg := range segs {
		mp4 := filepath.Join(dir, fmt.Sprintf("segment-%d.mp4", i))
		export(t, n.base(), cam, sg.Start, sg.End, mp4)
		if msg := decodeErrors(t, mp4); msg != "" {
			t.Errorf("segment %s (%s → %s, sealed=%v): ffmpeg -v error printed:\n%s", sg.ID, sg.Start.Format("15:04:05.000"), sg.End.Format("15:04:05.000"), sg.Sealed, tail(msg, 20))
		}
	}
}
