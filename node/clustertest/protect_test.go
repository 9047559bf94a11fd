package clustertest

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/node"
	"github.com/vigie-vms/vigie/node/protect"
)

// TestStripedFootageSurvivesALostNode: on 3 nodes (2+1 stripes), cameras record until
// sealed segments are striped across the nodes; each striped segment is exported; the node
// holding one of them is killed; the same exports, from a surviving node, are byte for
// byte what they were (rebuilt from the other shards of the stripe when needed).
func TestStripedFootageSurvivesALostNode(t *testing.T) {
	if testing.Short() {
		t.Skip("records until segments are sealed and striped (~30 s)")
	}
	ids := camIDs("ec", 3)
	sim := StartSimcam(t, ids...)
	h := New(t, 3, Options{Configure: func(_ int, cfg *node.Config) {
		cfg.Inject.Protect = func(p *protect.Config) {
			p.StripeInterval, p.MinSegmentAge, p.MaxStripeWait = time.Second, time.Second, 2*time.Second
		}
	}})
	ctx := context.Background()
	h.Register(ctx, 0, "t1", sim, ids, "")
	waitRecordingTB(t, h, ids, 30*time.Second)

	type striped struct {
		seg    model.Segment
		holder model.NodeID
	}
	var found []striped
	h.Eventually(90*time.Second, "a striped segment for every camera", func() bool {
		found = found[:0]
		c := h.Leader().C()
		for _, id := range ids {
			segs, err := c.Segments(model.CameraID(id), time.Now().Add(-time.Hour), time.Now())
			if err != nil {
				return false
			}
			ok := false
			for _, s := range segs {
				if st, isStriped, _ := c.StripeOf(s.ID); isStriped {
					for _, sh := range st.Shards {
						if sh.Segment == s.ID {
							found = append(found, striped{seg: s, holder: sh.Node})
							ok = true
						}
					}
				}
			}
			if !ok {
				return false
			}
		}
		return true
	})

	// The node to kill holds the first striped segment; the exports are read through
	// another node, before and after.
	victim := found[0].holder
	var reader *Node
	victimIdx := -1
	for i, nd := range h.Nodes() {
		if model.NodeID(nd.ID) == victim {
			victimIdx = i
		} else if reader == nil {
			reader = nd
		}
	}
	if victimIdx < 0 || reader == nil {
		t.Fatalf("holder %s of segment %s is not a node of the test cluster", victim, found[0].seg.ID)
	}
	before := map[model.SegmentID][]byte{}
	for _, f := range found {
		// Whole fragments inside the segment: from its first keyframe to a second before its end.
		mp4, _, err := reader.API().Export(ctx, string(f.seg.Camera), f.seg.Start, f.seg.End.Add(-time.Second))
		if err != nil {
			t.Fatalf("export of %s (held by %s) before the kill: %v", f.seg.ID, f.holder, err)
		}
		before[f.seg.ID] = mp4
	}
	// Hot replicas are dropped once their segment is striped (the nodes look every 5 s):
	// after that, only the stripe protects the footage.
	time.Sleep(6 * time.Second)
	victimBase := h.Node(victimIdx).Base()
	h.Kill(victimIdx)
	// The harness closes a killed node in the background: wait until it no longer answers.
	h.Eventually(30*time.Second, "the killed node's listeners to close", func() bool {
		resp, err := http.Get(victimBase + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	})
	lost := 0
	for _, f := range found {
		if f.holder == victim {
			lost++
		}
		mp4, _, err := reader.API().Export(ctx, string(f.seg.Camera), f.seg.Start, f.seg.End.Add(-time.Second))
		if err != nil {
			t.Errorf("export of %s (held by %s, killed: %v) after the kill: %v", f.seg.ID, f.holder, f.holder == victim, err)
			continue
		}
		if !bytes.Equal(mp4, before[f.seg.ID]) {
			t.Errorf("export of %s (held by %s, killed: %v) differs after the kill: %d bytes, was %d", f.seg.ID, f.holder, f.holder == victim, len(mp4), len(before[f.seg.ID]))
		}
	}
	t.Logf("%d striped segments exported byte-identical after killing %s, which held %d of them; reads rebuilt from shards on %s: %d",
		len(found), victim, lost, reader.ID, reader.N().ProtectStats().DegradedReads)
	if lost == 0 {
		t.Fatal("the killed node held none of the exported segments: the test proved nothing")
	}
	if reader.N().ProtectStats().DegradedReads == 0 {
		t.Error("no read was rebuilt from the stripe: the killed node's segments were served from another copy")
	}
}
