package node

import (
	"context"
	"log/slog"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// reconcile makes the catalog agree with the local store after a start: every sealed
// local segment that the catalog lacks is committed (the crash happened between seal and
// commit, or the startup check sealed it), unless it is already past retention; and for
// each camera this node records, the time between its last footage and this start is
// recorded as an outage caused by the node being down.
func (n *Node) reconcile(ctx context.Context, started time.Time) error {
	local, err := n.store.All()
	if err != nil {
		return err
	}
	lastEnd := map[model.CameraID]time.Time{}
	committed := 0
	for _, seg := range local {
		if seg.End.After(lastEnd[seg.Camera]) {
			lastEnd[seg.Camera] = seg.End
		}
		if !seg.Sealed {
			continue
		}
		inCatalog, err := n.clu.Segments(seg.Camera, seg.Start, seg.End.Add(time.Nanosecond))
		if err != nil {
			return err
		}
		if containsSegment(inCatalog, seg.ID) {
			continue
		}
		if n.expired(seg) {
			continue // retention deletes it
		}
		// The committer retries until the leader is reachable, and keeps footage of an
		// epoch that is no longer current as reconciled footage.
		n.comm.add(seg)
		committed++
	}
	if committed > 0 {
		n.log.Info("committing segments the catalog lacks", slog.Int("segments", committed))
	}
	for cam, end := range lastEnd {
		if started.Sub(end) < 2*time.Second {
			continue
		}
		// Only while this node still owns the camera: if it moved to another node while
		// this one was down, the gap is a failover, which the timeline explains itself.
		if a, err := n.clu.Assignment(cam); err != nil || a.Node != model.NodeID(n.cfg.NodeID) {
			continue
		}
		o := model.Outage{Camera: cam, Start: end, End: started, Cause: model.GapNodeDown, Detail: "node " + n.cfg.NodeID + " was not running"}
		if err := n.clu.RecordOutage(ctx, o); err != nil {
			n.log.Warn("record outage", slog.String("camera", string(cam)), slog.Any("err", err))
		}
	}
	return nil
}

func containsSegment(segs []model.Segment, id model.SegmentID) bool {
	for _, s := range segs {
		if s.ID == id {
			return true
		}
	}
	return false
}
