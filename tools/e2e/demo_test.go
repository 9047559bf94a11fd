package e2e

import (
	"fmt"
	"regexp"
	"testing"
	"time"
)

// TestDemo runs `vigie demo` as a newcomer would (in an empty directory, on free ports):
// within 30 s every demo camera records (its span grows between two polls), the Playback
// URL printed on stdout decodes cleanly, and Ctrl-C stops it with status 0.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: the pull test covers recording")
	}
	needTools(t, "ffmpeg")
	dir := t.TempDir()
	a := freeAddrs(t)
	args := append([]string{"demo", "--sim-addr", freeAddr(t)}, a.flags()...)
	begin := time.Now()
	p := startProc(t, "demo", dir, a, args...)
	out := p.waitStdout("Press Ctrl-C", 30*time.Second)
	m := regexp.MustCompile(`Playback:\s+(\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("demo printed no Playback URL:\n%s", out)
	}
	playback := m[1]

	deadline := begin.Add(30 * time.Second)
	for i := 1; i <= 4; i++ {
		cam := fmt.Sprintf("demo-cam-%d", i)
		first := waitSpan(t, p.base(), cam, begin.Add(-time.Minute), begin, time.Until(deadline))
		end1 := first.Spans[len(first.Spans)-1].End
		var end2 time.Time
		for time.Now().Before(deadline) {
			time.Sleep(1200 * time.Millisecond) // longer than a fragment
			tl := getTimeline(t, p.base(), cam, begin.Add(-time.Minute), time.Now().Add(time.Minute))
			if end2 = tl.Spans[len(tl.Spans)-1].End; end2.After(end1) {
				break
			}
		}
		if !end2.After(end1) {
			t.Errorf("%s: the span does not grow within 30 s of the start (end %s then %s)", cam, end1.Format(time.RFC3339Nano), end2.Format(time.RFC3339Nano))
		} else {
			t.Logf("%s recording after %s: span end %s → %s", cam, time.Since(begin).Round(time.Millisecond), end1.Format("15:04:05.000"), end2.Format("15:04:05.000"))
		}
	}

	if msg := decodeErrors(t, playback); msg != "" {
		t.Errorf("the printed Playback URL %s does not decode cleanly:\n%s", playback, tail(msg, 20))
	}
	if n := countFrames(t, playback); n == 0 {
		t.Errorf("the printed Playback URL %s serves no frame", playback)
	} else {
		t.Logf("Playback URL serves %d frames", n)
	}

	p.stop()
	if p.err != nil {
		t.Errorf("demo exited with %v after SIGINT, want status 0", p.err)
	}
}
