package node

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage"
)

// retentionDays is how long a camera's footage is kept: its own setting, capped by the
// node's cap; a camera that no longer exists keeps the cap.
func (n *Node) retentionDays(cam model.CameraID) int {
	days := n.cfg.RetentionCapDays
	if c, err := n.clu.Camera(cam); err == nil && c.RetentionDays > 0 && c.RetentionDays < days {
		days = c.RetentionDays
	}
	return days
}

// expired reports whether a segment ended before its camera's retention horizon.
func (n *Node) expired(seg model.Segment) bool {
	horizon := time.Now().AddDate(0, 0, -n.retentionDays(seg.Camera))
	return seg.End.Before(horizon)
}

func (n *Node) runRetention(ctx context.Context) {
	t := time.NewTicker(n.cfg.RetentionInterval)
	defer t.Stop()
	for {
		n.applyRetention(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// applyRetention deletes every sealed local segment past retention: the catalog entry
// first (with a deletion record), then the file. A crash between the two leaves a file the
// catalog no longer lists; the startup check does not re-commit it because it is expired,
// and the next pass deletes it.
func (n *Node) applyRetention(ctx context.Context) {
	local, err := n.store.All()
	if err != nil {
		n.log.Error("retention: list segments", slog.Any("err", err))
		return
	}
	n.applyReplicaRetention()
	for _, seg := range local {
		if !seg.Sealed || !n.expired(seg) {
			continue
		}
		if h, ok := n.clu.HeldAt(seg.Camera, seg.Start, seg.End, time.Now()); ok {
			n.log.Debug("retention: segment kept under legal hold", slog.String("segment", string(seg.ID)),
				slog.String("hold", string(h.ID)), slog.String("case", h.CaseRef))
			continue
		}
		if st, striped, err := n.clu.StripeOf(seg.ID); err == nil && striped {
			// Striped footage goes stripe by stripe, once every segment of the stripe is
			// past retention; the other nodes collect their shards as orphans.
			if !n.stripeExpired(st) {
				continue
			}
			if err := n.clu.DeleteStripe(ctx, st.ID, "retention"); err != nil && !errors.Is(err, model.ErrNotFound) {
				n.log.Warn("retention: delete stripe", slog.String("stripe", string(st.ID)), slog.Any("err", err))
				continue
			}
		} else if err := n.clu.DeleteSegments(ctx, []model.SegmentID{seg.ID}, "retention"); err != nil {
			n.log.Error("retention: delete from catalog", slog.String("segment", string(seg.ID)), slog.Any("err", err))
			continue
		}
		if err := n.store.Delete(seg.ID); err != nil {
			n.log.Error("retention: delete file", slog.String("segment", string(seg.ID)), slog.Any("err", err))
			continue
		}
		n.log.Info("retention deleted segment", slog.String("camera", string(seg.Camera)),
			slog.String("segment", string(seg.ID)), slog.Time("end", seg.End))
	}
}

// applyReplicaRetention drops the hot replicas this node holds past their camera's
// retention (the owner deletes the footage itself; a replica never outlives it).
func (n *Node) applyReplicaRetention() {
	held, err := n.rep.Held()
	if err != nil {
		return
	}
	for _, h := range held {
		if h.Segment.Sealed && n.expired(h.Segment) && !n.held(h.Segment) {
			if err := n.rep.Drop(h.Segment.ID); err != nil {
				n.log.Warn("retention: drop replica", slog.String("segment", string(h.Segment.ID)), slog.Any("err", err))
			}
		}
	}
}

// held reports whether a legal hold protects any of the segment's footage now.
func (n *Node) held(seg model.Segment) bool {
	_, ok := n.clu.HeldAt(seg.Camera, seg.Start, seg.End, time.Now())
	return ok
}

// stripeExpired reports whether every data segment of a stripe is past its retention.
func (n *Node) stripeExpired(st model.Stripe) bool {
	for _, sh := range st.Shards {
		if sh.Segment == "" {
			continue
		}
		cam, start, _, err := storage.ParseSegmentID(sh.Segment)
		if err != nil {
			return false
		}
		segs, err := n.clu.Segments(cam, start, start.Add(time.Nanosecond))
		if err != nil {
			return false
		}
		for _, s := range segs {
			if s.ID == sh.Segment && !n.expired(s) {
				return false
			}
		}
	}
	return true
}
