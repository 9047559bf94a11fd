package clustertest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// camerasOf returns the cameras among ids that node owns, from the leader's view.
func camerasOf(h *Cluster, ids []string, node string) []string {
	owners := h.Owners(h.Leader().Index)
	var out []string
	for _, id := range ids {
		if owners[model.CameraID(id)].Node == model.NodeID(node) {
			out = append(out, id)
		}
	}
	return out
}

// TestDrainLosesNoFrame drains a node recording 20 cameras: every camera moves to another
// node make-before-break, and its recorded SEI frame numbers are consecutive across the
// handover (duplicates allowed: both nodes record for a while).
func TestDrainLosesNoFrame(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: 3 nodes recording 60 cameras for ~20 s")
	}
	ids := camIDs("dr", 60)
	h, _ := startRecording(t, 3, 0, ids, "", 60*time.Second)
	ctx := context.Background()
	time.Sleep(2 * time.Second)

	victim := h.Node(1)
	moved := camerasOf(h, ids, victim.ID)
	if len(moved) < 15 {
		t.Fatalf("node %s owns %d cameras, want about 20 (60 on 3 nodes)", victim.ID, len(moved))
	}
	before := h.Owners(0)
	drainAt := time.Now()
	if err := h.Drain(ctx, 2, 1); err != nil {
		t.Fatalf("drain %s: %v", victim.ID, err)
	}
	h.Eventually(60*time.Second, "the drained node to own no camera", func() bool {
		for _, a := range h.Owners(h.Leader().Index) {
			if a.Node == model.NodeID(victim.ID) || a.Next != "" {
				return false
			}
		}
		return true
	})
	t.Logf("drained %s (%d cameras) in %s", victim.ID, len(moved), time.Since(drainAt).Round(time.Millisecond))
	waitRecordingTB(t, h, moved, 30*time.Second)
	time.Sleep(3 * time.Second)
	until := time.Now()

	after := h.Owners(0)
	lost := 0
	for _, id := range moved {
		if a, b := before[model.CameraID(id)], after[model.CameraID(id)]; b.Epoch != a.Epoch+1 {
			t.Errorf("camera %s: epoch %d → %d after one planned move, want +1", id, a.Epoch, b.Epoch)
		}
		f, err := h.Footage(ctx, id, drainAt.Add(-5*time.Second), until)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range f.Unreadable() {
			t.Errorf("camera %s: segment unreadable: %v", id, u.Err)
		}
		c := Cover(f.Frames())
		by := f.ByNode()
		if c.Missing > 0 {
			lost++
			t.Errorf("camera %s: %s across the drain; frames by node %v", id, c, spans(by))
		} else if testing.Verbose() {
			t.Logf("camera %s: %s; frames by node %v", id, c, spans(by))
		}
		if len(by) < 2 {
			t.Errorf("camera %s: footage from %d node(s), want the drained node's and its new owner's", id, len(by))
		}
	}
	t.Logf("drain of %d cameras: %d with frames missing", len(moved), lost)

	// What an operator sees: the export across the handover, from a third node.
	id := moved[0]
	api := h.Node(0).API()
	mp4, _, err := api.Export(ctx, id, drainAt.Add(-3*time.Second), until)
	if err != nil {
		t.Fatalf("export of %s across the drain: %v", id, err)
	}
	ef, err := ExportFrames(mp4)
	if err != nil {
		t.Fatal(err)
	}
	c := Cover(uniq(sortedCopy(ef)))
	t.Logf("export of %s across the drain from %s: %s", id, h.Node(0).ID, c)
	if c.Missing > 0 {
		t.Errorf("export of %s across the handover misses frames the two nodes recorded: %s", id, c)
	}
}

// TestCriticalCameraKillOwner: a critical camera is recorded by its owner and a
// secondary; killing the owner loses no frame.
func TestCriticalCameraKillOwner(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: records for ~15 s")
	}
	ids := camIDs("crit", 4)
	h, sim := startRecording(t, 3, 0, ids, string(model.RedundancyCritical), 30*time.Second)
	ctx := context.Background()
	h.Eventually(30*time.Second, "every critical camera recorded by its secondary too", func() bool {
		for _, id := range ids {
			a := h.Owners(h.Leader().Index)[model.CameraID(id)]
			nd := h.ByID(a.Secondary)
			if nd == nil || nd.N() == nil {
				return false
			}
			f, err := h.Footage(ctx, id, time.Now().Add(-time.Minute), time.Now())
			if err != nil || len(f.ByNode()[a.Secondary]) < 2*FPS {
				return false
			}
		}
		return true
	})
	time.Sleep(2 * time.Second)

	// Kill the owner of the first camera; its critical cameras lose their owner.
	owners := h.Owners(h.Leader().Index)
	victim := h.ByID(owners[model.CameraID(ids[0])].Node)
	hit := camerasOf(h, ids, victim.ID)
	sentAtKill := map[string]uint64{}
	for _, id := range hit {
		sentAtKill[id] = sim.FramesSent(id)
	}
	killedAt := time.Now()
	h.Kill(victim.Index)
	h.Eventually(30*time.Second, "the killed node's critical cameras owned by a survivor", func() bool {
		o := h.Owners(h.Leader().Index)
		for _, id := range hit {
			if n := o[model.CameraID(id)].Node; n == "" || n == model.NodeID(victim.ID) {
				return false
			}
		}
		return true
	})
	time.Sleep(4 * time.Second)
	until := time.Now()

	for _, id := range hit {
		// Only survivors' footage: the killed node's disk is unreadable until it returns.
		f, err := h.Footage(ctx, id, killedAt.Add(-10*time.Second), until)
		if err != nil {
			t.Fatal(err)
		}
		var frames []uint64
		for n, ks := range f.ByNode() {
			if n != model.NodeID(victim.ID) {
				frames = append(frames, ks...)
			}
		}
		c := Cover(uniq(sortedCopy(frames)))
		sent := sentAtKill[id]
		t.Logf("critical camera %s (owner %s killed when frame %d was sent): survivors hold %s; by node %v", id, victim.ID, sent, c, spans(f.ByNode()))
		if c.Missing > 0 {
			t.Errorf("critical camera %s lost frames when its owner was killed: %s; segments:%s", id, c, segList(f))
		}
		if c.Frames == 0 || c.First+2*FPS > sent || c.Last < sent+2*FPS {
			t.Errorf("critical camera %s: survivors' footage %s does not cover the kill (frame %d) by 2 s on each side", id, c, sent)
		}
	}
}

// TestPartitionedOwner cuts the owner of about 10 cameras off the quorum, keeps it cut off
// (VIGIE_PARTITION_SECONDS, default 30 s), then heals: no footage of the cut-off side is
// committed as current-epoch footage while it is cut off; after healing, its footage is in
// the catalog as reconciled footage, and the union of both sides' footage of those
// cameras has no hole.
func TestPartitionedOwner(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: 5 nodes, a partition of 30 s")
	}
	cut := 30 * time.Second
	if s := os.Getenv("VIGIE_PARTITION_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("VIGIE_PARTITION_SECONDS=%q: want a positive whole number", s)
		}
		cut = time.Duration(n) * time.Second
	}
	ids := camIDs("pt", 50)
	h, _ := startRecording(t, 5, 0, ids, "", 60*time.Second)
	ctx := context.Background()
	time.Sleep(2 * time.Second)

	ld := h.Leader()
	victim := h.Node((ld.Index + 1) % 5) // a follower: the quorum keeps its leader
	cams := camerasOf(h, ids, victim.ID)
	before := h.Owners(ld.Index)
	partAt := time.Now()
	h.Partition(victim.Index)
	t.Logf("partitioned %s (owner of %d cameras) away from the quorum for %s", victim.ID, len(cams), cut)

	// While cut off: the quorum moves its cameras, and accepts no footage of it that starts
	// after the cut unless marked reconciled.
	stale := func() []model.Segment {
		var bad []model.Segment
		for _, id := range cams {
			segs, err := h.Leader().C().Segments(model.CameraID(id), partAt, time.Now().Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range segs {
				if s.Node == model.NodeID(victim.ID) && !s.Reconciled && s.Start.After(partAt.Add(time.Second)) {
					bad = append(bad, s)
				}
			}
		}
		return bad
	}
	deadline := partAt.Add(cut)
	moved := false
	for time.Now().Before(deadline) {
		if bad := stale(); len(bad) > 0 {
			t.Fatalf("during the partition the catalog accepted footage of the cut-off node as current: %+v", bad[0])
		}
		if !moved {
			o := h.Owners(h.Leader().Index)
			moved = true
			for _, id := range cams {
				if o[model.CameraID(id)].Node == model.NodeID(victim.ID) {
					moved = false
				}
			}
			if moved {
				t.Logf("the quorum moved the cut-off node's cameras after %s", time.Since(partAt).Round(time.Millisecond))
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !moved {
		t.Errorf("the cut-off node's cameras were not moved during a %s partition", cut)
	}
	// The cut-off node itself still believes it owns them, and keeps recording.
	if vo := h.Owners(victim.Index); vo[model.CameraID(cams[0])].Node != model.NodeID(victim.ID) {
		t.Logf("note: the cut-off node's own replica names %s as owner of %s", vo[model.CameraID(cams[0])].Node, cams[0])
	}
	healAt := time.Now()
	h.Heal()

	// After healing, the cut-off node's footage of the cut reaches the catalog, reconciled.
	h.Eventually(60*time.Second, "the cut-off node's footage reconciled into the catalog", func() bool {
		for _, id := range cams {
			segs, err := h.Leader().C().Segments(model.CameraID(id), partAt, healAt)
			if err != nil {
				return false
			}
			found := false
			for _, s := range segs {
				found = found || (s.Node == model.NodeID(victim.ID) && s.Reconciled && s.End.After(healAt.Add(-2*time.Second)))
			}
			if !found {
				return false
			}
		}
		return true
	})
	if bad := stale(); len(bad) > 0 {
		t.Errorf("after healing, footage recorded by the cut-off node during the cut is in the catalog as current-epoch footage: %+v", bad[0])
	}
	time.Sleep(2 * time.Second)
	until := time.Now()
	after := h.Owners(h.Leader().Index)
	for _, id := range cams {
		if a, b := before[model.CameraID(id)], after[model.CameraID(id)]; b.Epoch <= a.Epoch {
			t.Errorf("camera %s: epoch %d → %d, want a new epoch after the move", id, a.Epoch, b.Epoch)
		}
		f, err := h.Footage(ctx, id, partAt.Add(-5*time.Second), until)
		if err != nil {
			t.Fatal(err)
		}
		c := Cover(f.Frames())
		if c.Missing > 0 {
			t.Errorf("camera %s: both sides together %s; by node %v", id, c, spans(f.ByNode()))
		}
		tl, err := h.Leader().API().Timeline(ctx, id, partAt.Add(-3*time.Second), healAt.Add(3*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if len(tl.Gaps) > 0 {
			t.Errorf("camera %s: the timeline across the partition shows gaps though both sides recorded:%s", id, tl)
		}
		if id == cams[0] {
			t.Logf("camera %s: both sides %s; by node %v; timeline%s", id, c, spans(f.ByNode()), tl)
		}
	}
}

// spans summarises frames by node as first..last (count).
func spans(by map[model.NodeID][]uint64) map[model.NodeID]string {
	out := map[model.NodeID]string{}
	for n, ks := range by {
		if len(ks) > 0 {
			out[n] = strconv.FormatUint(ks[0], 10) + ".." + strconv.FormatUint(ks[len(ks)-1], 10) + " (" + strconv.Itoa(len(ks)) + ")"
		}
	}
	return out
}

func sortedCopy(ks []uint64) []uint64 {
	s := append([]uint64(nil), ks...)
	for i := 1; i < len(s); i++ { // insertion sort: inputs are nearly sorted
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

// segList describes each segment of f: node, epoch, reconciled, frame range.
func segList(f Footage) string {
	var b strings.Builder
	for _, s := range f.Segments {
		fmt.Fprintf(&b, "\n  %s node=%s epoch=%d sealed=%v reconciled=%v %s→%s", s.Segment.ID, s.Segment.Node, s.Segment.Epoch,
			s.Segment.Sealed, s.Segment.Reconciled, s.Segment.Start.Format("15:04:05.000"), s.Segment.End.Format("15:04:05.000"))
		if s.Err != nil {
			fmt.Fprintf(&b, " unreadable: %v", s.Err)
		} else if len(s.Frames) > 0 {
			fmt.Fprintf(&b, " frames %d..%d (%d)", s.Frames[0], s.Frames[len(s.Frames)-1], len(s.Frames))
		}
	}
	return b.String()
}
