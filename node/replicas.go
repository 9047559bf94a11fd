package node

import (
	"context"
	"log/slog"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// replicaUpkeepInterval is how often the node looks after the hot replicas it holds.
const replicaUpkeepInterval = 5 * time.Second

// runReplicaUpkeep looks after the hot replicas this node holds for other owners: the
// open copies of a dead owner are sealed and committed so the timeline shows their
// footage (its loss is then at most the fragment in flight); copies whose owner went
// quiet are sealed; copies whose segment is protected by a stripe are dropped.
func (n *Node) runReplicaUpkeep(ctx context.Context) {
	// Copies adopted before a crash that the catalog may lack.
	if held, err := n.rep.Held(); err == nil {
		for _, h := range held {
			if h.Adopted {
				n.comm.add(h.Segment)
			}
		}
	}
	t := time.NewTicker(replicaUpkeepInterval)
	defer t.Stop()
	for {
		n.replicaUpkeep()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *Node) replicaUpkeep() {
	dead := map[model.NodeID]bool{}
	for _, m := range n.clu.Members() {
		if m.State == model.NodeDead || m.State == model.NodeDecommissioned {
			dead[m.ID] = true
		}
	}
	// An owner counts as gone when gossip holds it dead and the leader has moved its
	// camera away. Gossip alone is not enough: a node that has just restarted holds every
	// node it has not heard from yet as dead, and adopting a live owner's open segment
	// would cut that owner's replication (its copy is refused as "adopted").
	orphans, err := n.rep.Orphans(func(camera model.CameraID, owner model.NodeID) bool {
		if !dead[owner] {
			return true
		}
		a, err := n.clu.Assignment(camera)
		return err == nil && (a.Node == owner || a.Next == owner)
	})
	if err != nil {
		n.log.Warn("replicas: orphans", slog.Any("err", err))
	}
	for _, seg := range orphans {
		n.log.Info("owner is gone: its replica becomes the footage", slog.String("segment", string(seg.ID)),
			slog.Int("fragments", seg.Fragments))
		n.comm.add(seg)
	}
	if _, err := n.rep.SealIdle(2 * n.cfg.SegmentMaxAge); err != nil {
		n.log.Warn("replicas: seal idle", slog.Any("err", err))
	}
	held, err := n.rep.Held()
	if err != nil {
		return
	}
	for _, h := range held {
		if _, striped, err := n.clu.StripeOf(h.Segment.ID); err == nil && striped {
			if err := n.rep.Drop(h.Segment.ID); err != nil {
				n.log.Warn("replicas: drop", slog.String("segment", string(h.Segment.ID)), slog.Any("err", err))
			}
		}
	}
}
