package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/node/clustertest"
)

// TestClusterKillNode runs 3 `vigie node` processes on 127.0.0.1 (distinct ports, gossip
// through --seeds, one --secret-key-file), registers 30 simulated cameras through a
// follower, and kills (SIGKILL) the node recording the most cameras. It checks: the
// survivors declare it dead and record every camera again; the timeline of a moved
// camera shows the failover gap with cause node_failover; the export of the minute
// before the kill works from every survivor, for the cameras the killed node did not
// hold and for the ones it did (read from their hot replicas).
func TestClusterKillNode(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: 3 node processes, ~60 s")
	}
	const cams = 30
	var ids []string
	for i := range cams {
		ids = append(ids, fmt.Sprintf("clu-cam-%02d", i+1))
	}
	sim := startSimcam(t, ids...)
	key := writeSecretKey(t)
	nodes := startClusterNodes(t, 3, key, "--segment-max-age", "10s", "--log-level", "info")

	// The three nodes form one cluster with three voters.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := getClusterStatus(t, nodes[0].base())
		voters := 0
		for _, n := range st.Nodes {
			if n.State == "active" && (n.Role == "leader" || n.Role == "voter") {
				voters++
			}
		}
		if voters == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no cluster of 3 voters after 30 s: %+v", st)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Registration through a follower (the write is forwarded to the leader).
	via := nodes[1].base()
	createTenant(t, via, "t1")
	begin := time.Now()
	for _, id := range ids {
		createCamera(t, via, map[string]any{"id": id, "tenant": "t1", "url": sim.URL(id)})
	}
	waitAllRecording(t, nodes[0].base(), ids, 60*time.Second)
	t.Logf("30 cameras recording %s after registration", time.Since(begin).Round(time.Millisecond))
	time.Sleep(12 * time.Second) // a sealed segment (10 s) and more before the kill

	st := getClusterStatus(t, nodes[0].base())
	victim, survivors := busiest(st, nodes)
	owner := ownersOf(t, survivors[0].base(), ids, begin)
	var moved, stayed []string
	for _, id := range ids {
		if owner[id] == victim.id {
			moved = append(moved, id)
		} else {
			stayed = append(stayed, id)
		}
	}
	t.Logf("cameras per node before the kill: %+v; killing %s (%d cameras)", st.Nodes, victim.id, len(moved))
	sentAtKill := map[string]uint64{}
	for _, id := range moved {
		sentAtKill[id] = sim.FramesSent(id)
	}
	killedAt := time.Now()
	victim.kill()

	// Detection and reassignment, as a survivor sees them.
	var detected time.Duration
	for detected == 0 {
		for _, n := range getClusterStatus(t, survivors[0].base()).Nodes {
			if n.ID == victim.id && n.State == "dead" {
				detected = time.Since(killedAt)
			}
		}
		if time.Since(killedAt) > 60*time.Second {
			t.Fatalf("%s not declared dead 60 s after SIGKILL", victim.id)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitAllRecording(t, survivors[0].base(), moved, 60*time.Second)
	recording := time.Since(killedAt)
	t.Logf("%s killed: declared dead after %s, its %d cameras recording on survivors after %s", victim.id,
		detected.Round(time.Millisecond), len(moved), recording.Round(time.Millisecond))
	time.Sleep(12 * time.Second) // the survivors seal a segment of the moved cameras

	// The timeline of the moved cameras names the failover, from every survivor.
	for _, sv := range survivors {
		for _, id := range moved[:min(3, len(moved))] {
			tl := getTimeline(t, sv.base(), id, begin.Add(-time.Minute), time.Now())
			found := false
			for _, g := range tl.Gaps {
				if g.Cause == "node_failover" && g.End.After(killedAt.Add(-15*time.Second)) {
					found = true
					t.Logf("camera %s from %s: failover gap %s → %s (%.1fs): %s", id, sv.id, g.Start.Format("15:04:05.000"), g.End.Format("15:04:05.000"), g.End.Sub(g.Start).Seconds(), g.Detail)
				}
			}
			if !found {
				knownBugE2E(t, "with hot replicas, the timeline of a camera whose dead owner's segments were adopted shows no span and no gap (seen for cameras adopted by their new owner)",
					"camera %s from %s: no node_failover gap around the kill at %s:%s", id, sv.id, killedAt.Format("15:04:05.000"), tl)
			}
		}
	}

	// Export of the minute before the kill from every survivor. For the killed node's
	// cameras, at most the fragment in flight (1 s at 25 frames/s) and the frames sent
	// while the kill was delivered may be missing at the end.
	const lossAtKill = 30
	from, to := killedAt.Add(-time.Minute), killedAt
	for _, sv := range survivors {
		okStayed, okMoved := 0, 0
		var movedErr string
		for _, id := range stayed {
			c, err := exportFrames(sv.base(), id, from, to)
			switch {
			case err != nil:
				t.Errorf("export of %s (never on %s) from %s: %v", id, victim.id, sv.id, err)
			case c.Missing > 0 || c.Frames < 5*25:
				t.Errorf("export of %s from %s: %s; want consecutive frames", id, sv.id, c)
			default:
				okStayed++
			}
		}
		// The killed node's cameras: their sealed segments are read from the node holding
		// their hot replica (kept until striped), the open one from its adopted copy (the
		// replica holder commits it within a few seconds of the death: retried for 30 s).
		for _, id := range moved {
			var c clustertest.Coverage
			var err error
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
				c, err = exportFrames(sv.base(), id, from, to)
				if err == nil && c.Missing == 0 && c.Frames >= 5*25 && c.Last+lossAtKill >= sentAtKill[id] || time.Now().After(deadline) {
					break
				}
			}
			switch {
			case err != nil:
				movedErr = err.Error()
				t.Errorf("export of %s (recorded by %s before the kill) from %s: %v", id, victim.id, sv.id, err)
			case c.Missing > 0 || c.Frames < 5*25 || c.Last+lossAtKill < sentAtKill[id]:
				t.Errorf("export of the minute before the kill of %s (recorded by %s) from %s: %s; want consecutive frames up to within %d of frame %d (sent at the kill)", id, victim.id, sv.id, c, lossAtKill, sentAtKill[id])
			default:
				okMoved++
			}
		}
		t.Logf("from %s, export of the minute before the kill: %d/%d cameras the killed node did not record; %d/%d cameras it recorded (from hot replicas)%s",
			sv.id, okStayed, len(stayed), okMoved, len(moved), errNote(movedErr))
	}
	// Restarted, the killed node brings its footage back (its startup check seals the
	// segments SIGKILL left open; they enter the catalog as reconciled footage): the
	// minute before the kill then exports, and the frames show the real failover gap.
	restartedAt := time.Now()
	again := startProc(t, victim.id+" (restarted)", victim.dir, victim.addrs, victim.cmd.Args[1:]...)
	again.waitReady(60 * time.Second)
	t.Logf("%s restarted, ready in %s", victim.id, time.Since(restartedAt).Round(time.Millisecond))
	var gaps []time.Duration
	for _, id := range moved {
		var c clustertest.Coverage
		var err error
		for end := time.Now().Add(20 * time.Second); ; {
			c, err = exportFrames(survivors[0].base(), id, killedAt.Add(-20*time.Second), killedAt.Add(recording+5*time.Second))
			// Wait for the segment SIGKILL left open (sealed by the startup check) too: the
			// hole then starts less than 2 s before the kill.
			if err == nil && c.Frames > 0 && c.Largest().After+2*25 >= sentAtKill[id] {
				break
			}
			if time.Now().After(end) {
				t.Errorf("camera %s: footage up to the kill (frame %d) not exportable 20 s after %s restarted: %v %s", id, sentAtKill[id], victim.id, err, c)
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err == nil {
			gaps = append(gaps, c.Largest().Duration())
			t.Logf("camera %s across the kill (frame %d sent at SIGKILL; export from %s after %s came back): %s", id, sentAtKill[id], survivors[0].id, victim.id, c)
		}
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	if len(gaps) > 0 {
		t.Logf("SIGKILL failover gaps in recorded frames, %d cameras: min %s, p50 %s, max %s", len(gaps), gaps[0], gaps[len(gaps)/2], gaps[len(gaps)-1])
		if gaps[len(gaps)-1] > 10*time.Second {
			t.Errorf("largest failover gap %s", gaps[len(gaps)-1])
		}
	}

	// The footage recorded after the failover exports from any survivor.
	for _, sv := range survivors {
		id := moved[0]
		c, err := exportFrames(sv.base(), id, killedAt.Add(recording), restartedAt)
		if err != nil || c.Missing > 0 {
			t.Errorf("export of %s after the failover from %s: %s, %v", id, sv.id, c, err)
		}
	}

	// The leader hands cameras back to the restarted node (make-before-break): nothing is
	// lost at the hand-back, as every node's export says while the cameras still record —
	// separate processes map the camera's clock differently (the real-process failover
	// scenario lost a GOP at such seams, and whole live segments between seal and commit).
	all := append([]*clusterNode{{proc: again, id: victim.id, gossip: victim.gossip}}, survivors...)
	deadline = time.Now().Add(90 * time.Second)
	for {
		st := getClusterStatus(t, survivors[0].base())
		back, moving := 0, 0
		for _, n := range st.Nodes {
			moving += n.Moving
			if n.ID == victim.id {
				back = n.Cameras
			}
		}
		if back >= 5 && moving == 0 {
			t.Logf("%s owns %d cameras again %s after its restart", victim.id, back, time.Since(restartedAt).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s owns %d cameras (%d moving) 90 s after its restart; want ≥ 5 handed back", victim.id, back, moving)
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(12 * time.Second) // a sealed segment of the new owners, and a live one
	until := time.Now().Add(-2 * time.Second)
	holes := 0
	for _, nd := range all {
		for _, id := range ids {
			c, err := exportFrames(nd.base(), id, restartedAt.Add(5*time.Second), until)
			switch {
			case err != nil:
				holes++
				t.Errorf("export of %s across the hand-back from %s: %v", id, nd.id, err)
			case c.Missing > 0:
				holes++
				t.Errorf("export of %s across the hand-back from %s: %s", id, nd.id, c)
			}
		}
	}
	t.Logf("hand-back after the restart: %d cameras exported from %d nodes up to the live edge, %d with frames missing", len(ids), len(all), holes)
}

func errNote(s string) string {
	if s == "" {
		return ""
	}
	return "; the others fail: " + s
}

// waitAllRecording waits until the health of every camera, asked of base, is recording.
func waitAllRecording(t *testing.T, base string, ids []string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		left := 0
		for _, id := range ids {
			code, b := do(t, "GET", base+"/v1/cameras/"+id+"/health", nil)
			if code != http.StatusOK || !strings.Contains(string(b), `"recording"`) {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d cameras not recording after %s", left, len(ids), timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// ownersOf returns the node holding each camera's latest segment, from the segment list.
func ownersOf(t *testing.T, base string, ids []string, since time.Time) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, id := range ids {
		var res struct {
			Segments []struct {
				Node  string    `json:"node"`
				Start time.Time `json:"start"`
			} `json:"segments"`
		}
		mustDo(t, "GET", base+"/v1/cameras/"+id+"/segments?"+rangeQuery(since.Add(-time.Minute), time.Now().Add(time.Minute)), nil, http.StatusOK, &res)
		var last time.Time
		for _, s := range res.Segments {
			if !s.Start.Before(last) {
				last, out[id] = s.Start, s.Node
			}
		}
	}
	return out
}

// exportFrames downloads an export and returns the coverage of its SEI frame numbers.
func exportFrames(base, cam string, from, to time.Time) (clustertest.Coverage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u := base + "/media/v1/cameras/" + url.PathEscape(cam) + "/export.mp4?" + rangeQuery(from, to)
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return clustertest.Coverage{}, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return clustertest.Coverage{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return clustertest.Coverage{}, err
	}
	if res.StatusCode != http.StatusOK {
		return clustertest.Coverage{}, fmt.Errorf("status %d: %.200s", res.StatusCode, b)
	}
	frames, err := clustertest.ExportFrames(b)
	if err != nil {
		return clustertest.Coverage{}, err
	}
	sort.Slice(frames, func(i, j int) bool { return frames[i] < frames[j] })
	var u64 []uint64
	for i, k := range frames {
		if i == 0 || k != frames[i-1] {
			u64 = append(u64, k)
		}
	}
	return clustertest.Cover(u64), nil
}
