package clustertest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
)

func camIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%03d", prefix, i+1)
	}
	return ids
}

// TestAnyNodeAnswers: the timeline, health and export of a camera work from a node that
// does not record it, and the footage read there is the footage its owner recorded.
func TestAnyNodeAnswers(t *testing.T) {
	ids := camIDs("any", 6)
	sim := StartSimcam(t, ids...)
	h := New(t, 3, Options{})
	ctx := context.Background()
	begin := time.Now()
	h.Register(ctx, 1, "t1", sim, ids, "")
	waitRecordingTB(t, h, ids, 30*time.Second)
	time.Sleep(4 * time.Second) // a few seconds of footage, still in open segments

	owners := h.Owners(0)
	checked := 0
	for _, id := range ids {
		a := owners[model.CameraID(id)]
		for _, nd := range h.Up() {
			if nd.ID == string(a.Node) {
				continue
			}
			api := nd.API()
			tl, err := api.Timeline(ctx, id, begin.Add(-time.Minute), time.Now().Add(time.Minute))
			if err != nil {
				t.Fatalf("timeline of %s from %s (owner %s): %v", id, nd.ID, a.Node, err)
			}
			if len(tl.Spans) != 1 {
				t.Errorf("timeline of %s from %s (owner %s): %d spans, want 1:%s", id, nd.ID, a.Node, len(tl.Spans), tl)
			}
			hl, err := api.Health(ctx, id)
			if err != nil || hl.State != string(model.CameraRecording) {
				t.Errorf("health of %s from %s (owner %s): %+v, %v; want recording", id, nd.ID, a.Node, hl, err)
			}
			if len(tl.Spans) == 0 {
				continue
			}
			sp := tl.Spans[len(tl.Spans)-1]
			mp4, _, err := api.Export(ctx, id, sp.Start, sp.End)
			if err != nil {
				t.Errorf("export of %s from %s (owner %s): %v", id, nd.ID, a.Node, err)
				continue
			}
			frames, err := ExportFrames(mp4)
			if err != nil {
				t.Fatalf("export of %s from %s: %v", id, nd.ID, err)
			}
			c := Cover(frames)
			if c.Frames < 2*FPS || c.Missing > 0 {
				t.Errorf("export of %s from %s (owner %s): %s; want ≥ %d consecutive frames", id, nd.ID, a.Node, c, 2*FPS)
			}
			if checked == 0 {
				t.Logf("camera %s recorded by %s, read from %s: timeline%s; export %s", id, a.Node, nd.ID, tl, c)
			}
			checked++
		}
	}
	if checked != 2*len(ids) {
		t.Errorf("checked %d (camera, other node) pairs, want %d", checked, 2*len(ids))
	}
}
