package clustertest

import (
	"context"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// TestRestartedNodeTakesCamerasBack kills a node, lets its cameras fail over, restarts it
// and waits for the rebalance to hand cameras back to it (make-before-break). Then, while
// every camera is still recording, it exports the minutes around the hand-back from every
// node: the exports of the cameras handed back must hold every frame since the restart —
// the live segments of the new owner included (what the real-process failover scenario
// found missing).
func TestRestartedNodeTakesCamerasBack(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: 3 nodes recording 30 cameras for ~60 s, one killed and restarted")
	}
	ids := camIDs("rb", 30)
	h, _ := startRecording(t, 3, 0, ids, "", 60*time.Second)
	ctx := context.Background()
	time.Sleep(2 * time.Second)

	victim := 2
	if h.Leader().Index == victim {
		victim = 1
	}
	vid := model.NodeID(h.Node(victim).ID)
	via := 3 - victim // the node neither killed nor necessarily the leader
	if via == h.Leader().Index {
		via = 0
	}
	if len(camerasOf(h, ids, string(vid))) < 5 {
		t.Fatalf("node %s owns %d cameras, want about 10", vid, len(camerasOf(h, ids, string(vid))))
	}
	h.Kill(victim)
	h.Eventually(30*time.Second, "the killed node's cameras to move", func() bool {
		for _, a := range h.Owners(h.Leader().Index) {
			if a.Node == vid {
				return false
			}
		}
		return true
	})
	waitRecordingTB(t, h, ids, 30*time.Second)
	time.Sleep(2 * time.Second)

	restartAt := time.Now()
	h.Restart(victim)
	var back []string
	h.Eventually(90*time.Second, "the restarted node to get cameras back", func() bool {
		back = back[:0]
		for id, a := range h.Owners(h.Leader().Index) {
			if a.Next != "" {
				return false
			}
			if a.Node == vid {
				back = append(back, string(id))
			}
		}
		return len(back) >= 5
	})
	t.Logf("node %s restarted and owns %d cameras again after %s", vid, len(back), time.Since(restartAt).Round(time.Millisecond))
	waitRecordingTB(t, h, back, 30*time.Second)
	time.Sleep(5 * time.Second)
	until := time.Now().Add(-2 * time.Second) // the live edge: the last fragment may still be open

	bad := 0
	for _, id := range back {
		for _, nd := range h.Up() {
			mp4, _, err := nd.API().Export(ctx, id, restartAt, until)
			if err != nil {
				t.Errorf("export of %s from %s: %v", id, nd.ID, err)
				bad++
				continue
			}
			ef, err := ExportFrames(mp4)
			if err != nil {
				t.Fatal(err)
			}
			c := Cover(uniq(sortedCopy(ef)))
			want := uint64(until.Sub(restartAt) * FPS / time.Second)
			switch {
			case c.Missing > 0:
				bad++
				t.Errorf("export of %s from %s across the hand-back: %s", id, nd.ID, c)
			case uint64(c.Frames)+2*FPS < want:
				bad++
				t.Errorf("export of %s from %s: %d frames, want about %d (%s of footage)", id, nd.ID, c.Frames, want, until.Sub(restartAt).Round(time.Second))
			case testing.Verbose():
				t.Logf("export of %s from %s: %s", id, nd.ID, c)
			}
		}
	}
	t.Logf("%d cameras handed back, exported from %d nodes: %d exports short or with holes", len(back), len(h.Up()), bad)
}
