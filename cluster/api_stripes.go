package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// ---- stripe catalog ----

// CommitStripe records a stripe: k sealed data segments (whole, as shards) and m parity
// shards on k+m distinct nodes. The node calls it once every shard is durable on its
// node (write path step 5), then drops the hot replicas of those segments.
//
// It is refused, naming the field (shards[i].node, shards[i].segment, ...), with
// model.ErrInvalid when the shape is wrong (k < 1, m < 0, len(Shards) != k+m, a node
// twice, a data shard without segment or a parity shard with one, a data segment not
// sealed, bytes/checksum that differ from the segment's, a shard size that is not the
// largest segment's), model.ErrNotFound when a data segment is not in the catalog,
// model.ErrInUse when a segment already belongs to another stripe, model.ErrExists when
// another stripe has the id. Zero Bytes, Checksum and ShardSize are filled in from the
// segments; a zero CreatedAt is set to now. Committing the same stripe again is a no-op.
//
// Each data segment's catalog Node becomes its shard's node (where its bytes now live),
// the segment leaves UnstripedSegments and StripeOf finds its stripe.
func (c *Cluster) CommitStripe(ctx context.Context, st model.Stripe) error {
	if st.CreatedAt.IsZero() {
		st.CreatedAt = now()
	}
	if err := checkStripeShape(st); err != nil {
		return fmt.Errorf("commit stripe %q: %w", st.ID, err)
	}
	if _, err := c.apply(ctx, command{Op: opCommitStripe, Stripe: st}); err != nil {
		return fmt.Errorf("commit stripe: %w", err)
	}
	return nil
}

// Stripe returns one stripe, or model.ErrNotFound.
func (c *Cluster) Stripe(id model.StripeID) (model.Stripe, error) {
	c.fsm.mu.RLock()
	defer c.fsm.mu.RUnlock()
	return getStripe(c.fsm.db, id)
}

// StripeOf returns the stripe that protects a segment (ok false when the segment is not
// striped, or not in the catalog).
func (c *Cluster) StripeOf(segment model.SegmentID) (model.Stripe, bool, error) {
	c.fsm.mu.RLock()
	defer c.fsm.mu.RUnlock()
	id, ok, err := getRaw(c.fsm.db, segStripeKey(segment))
	if err != nil || !ok {
		return model.Stripe{}, false, storeErr(err)
	}
	st, err := getStripe(c.fsm.db, model.StripeID(id))
	if err != nil {
		return model.Stripe{}, false, fmt.Errorf("segment %q points to stripe %q: %w", segment, id, err)
	}
	return st, true, nil
}

// Stripes lists stripes with id > after, sorted by id (limit <= 0: all).
func (c *Cluster) Stripes(after model.StripeID, limit int) ([]model.Stripe, error) {
	c.fsm.mu.RLock()
	defer c.fsm.mu.RUnlock()
	var out []model.Stripe
	err := scan(c.fsm.db, startAfter(prefixStripe, string(after)), prefixEnd(prefixStripe), func(_, v []byte) (bool, error) {
		st, err := decStripe(v)
		if err != nil {
			return false, err
		}
		out = append(out, st)
		return limit <= 0 || len(out) < limit, nil
	})
	return out, err
}

// StripesOn lists the ids of the stripes with a shard on node, sorted (limit <= 0: all).
// Scrub and the node's shard inventory use it.
func (c *Cluster) StripesOn(node model.NodeID, limit int) ([]model.StripeID, error) {
	c.fsm.mu.RLock()
	defer c.fsm.mu.RUnlock()
	var out []model.StripeID
	p := nodeStripePrefix(node)
	err := scan(c.fsm.db, p, prefixEnd(p), func(k, _ []byte) (bool, error) {
		out = append(out, model.StripeID(k[len(p):]))
		return limit <= 0 || len(out) < limit, nil
	})
	return out, err
}

// DeleteStripe removes a stripe and the catalog entries of its data segments, recording
// a model.Deletion (with reason) for each: retention deletes footage stripe by stripe,
// then the node deletes the shard files. It is refused with model.ErrInUse, naming the
// hold and its case, when an active hold covers any of the stripe's segments now;
// model.ErrNotFound when the stripe does not exist (a retried deletion: treat it as
// done).
func (c *Cluster) DeleteStripe(ctx context.Context, id model.StripeID, reason string) error {
	if reason == "" {
		return fmt.Errorf("delete stripe %q: %w", id, model.Invalid("reason", "is required (it is recorded with each deletion)"))
	}
	if _, err := c.apply(ctx, command{Op: opDeleteStripe, StripeID: id, Reason: reason, At: now()}); err != nil {
		return fmt.Errorf("delete stripe %q: %w", id, err)
	}
	return nil
}

// UpdateShard records that a repair rebuilt shard index of a stripe on shard.Node, as a
// compare-and-set: from must be the node the catalog holds the shard on, else
// model.ErrStaleEpoch (another repair moved it first: drop the rebuilt copy). The new
// node must hold no other shard of the stripe (model.ErrInvalid). Zero Segment, Bytes
// and Checksum mean "as recorded"; a rebuilt shard whose size or checksum differs from
// the recorded one is model.ErrCorrupt. For a data shard the segment's catalog Node
// follows. It returns the stripe as stored.
func (c *Cluster) UpdateShard(ctx context.Context, stripe model.StripeID, index int, from model.NodeID, shard model.StripeShard) (model.Stripe, error) {
	res, err := c.apply(ctx, command{Op: opUpdateShard, StripeID: stripe, Index: index, Node: from, Shard: shard})
	if err != nil {
		return model.Stripe{}, fmt.Errorf("update shard %d of stripe %q: %w", index, stripe, err)
	}
	return result[model.Stripe](res)
}

// UnstripedSegments lists the sealed segments whose bytes are on node and that no stripe
// protects yet (only the owner's copy and its hot replicas hold them), oldest first. The
// owner groups k of them into a stripe. limit <= 0: all.
func (c *Cluster) UnstripedSegments(node model.NodeID, limit int) ([]model.Segment, error) {
	c.fsm.mu.RLock()
	defer c.fsm.mu.RUnlock()
	var out []model.Segment
	p := unstripedPrefix(node)
	err := scan(c.fsm.db, p, prefixEnd(p), func(_, v []byte) (bool, error) {
		s, err := decSegment(v)
		if err != nil {
			return false, err
		}
		out = append(out, s)
		return limit <= 0 || len(out) < limit, nil
	})
	return out, err
}

// ---- disk reports ----

// diskThreshold: a free-space change smaller than this fraction of the disk is not sent.
const diskThreshold = 0.01

// ReportDisk records node's disk usage. The node calls it every ~10 s: only a change of
// Full or TotalBytes, or of FreeBytes by more than 1 % of TotalBytes, goes into a raft
// command, so a steady node writes almost nothing. Placement reads it: a full node gets
// no new cameras, hot replicas or shards, and its cameras move to nodes with space.
func (c *Cluster) ReportDisk(ctx context.Context, node model.NodeID, u DiskUsage) error {
	if old, ok := c.Disk(node); ok && old.Full == u.Full && old.TotalBytes == u.TotalBytes &&
		float64(abs64(old.FreeBytes-u.FreeBytes)) <= diskThreshold*float64(u.TotalBytes) {
		return nil
	}
	if _, err := c.apply(ctx, command{Op: opReportDisk, Node: node, Disk: u}); err != nil {
		return fmt.Errorf("report disk of node %q: %w", node, err)
	}
	return nil
}

func abs64(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// Disk returns the last disk report of node (ok false when it never reported).
func (c *Cluster) Disk(node model.NodeID) (DiskUsage, bool) {
	c.fsm.mu.RLock()
	defer c.fsm.mu.RUnlock()
	raw, ok, err := getRaw(c.fsm.db, diskKey(node))
	if err != nil || !ok {
		return DiskUsage{}, false
	}
	u, err := decDisk(raw)
	return u, err == nil
}

// Disks returns the last disk report of every node that sent one.
func (c *Cluster) Disks() (map[model.NodeID]DiskUsage, error) {
	c.fsm.mu.RLock()
	defer c.fsm.mu.RUnlock()
	out := map[model.NodeID]DiskUsage{}
	err := scan(c.fsm.db, prefixDisk, prefixEnd(prefixDisk), func(k, v []byte) (bool, error) {
		u, err := decDisk(v)
		if err != nil {
			return false, err
		}
		out[model.NodeID(k[len(prefixDisk):])] = u
		return true, nil
	})
	return out, err
}

// ---- legal holds ----

// CreateHold records a legal hold: the footage of its cameras in [Start, End) is kept
// (DeleteStripe and DeleteSegments refuse it) until it is released or Until passes. An
// empty ID is generated ("hold-" + 16 hex digits); CreatedAt is set to now. It fails with
// model.ErrInvalid (model.Hold.Validate, naming the field), model.ErrNotFound naming the
// first camera that does not exist, or model.ErrExists. The stored hold is the audit
// record of its creation.
func (c *Cluster) CreateHold(ctx context.Context, h model.Hold) (model.Hold, error) {
	if h.ID == "" {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return model.Hold{}, fmt.Errorf("create hold: id: %w", err)
		}
		h.ID = model.HoldID("hold-" + hex.EncodeToString(b[:]))
	}
	h.CreatedAt = now()
	for _, t := range []*time.Time{&h.Start, &h.End, &h.Until} {
		if !t.IsZero() {
			*t = t.UTC().Round(0)
		}
	}
	h.ReleasedAt, h.ReleasedBy = time.Time{}, ""
	h.Cameras = append([]model.CameraID(nil), h.Cameras...)
	if err := model.ValidateID("id", string(h.ID)); err != nil {
		return model.Hold{}, fmt.Errorf("create hold: %w", err)
	}
	if err := h.Validate(); err != nil {
		return model.Hold{}, fmt.Errorf("create hold: %w", err)
	}
	res, err := c.apply(ctx, command{Op: opCreateHold, Hold: h})
	if err != nil {
		return model.Hold{}, fmt.Errorf("create hold: %w", err)
	}
	return result[model.Hold](res)
}

// ReleaseHold releases a hold: the record stays, with ReleasedAt (now) and ReleasedBy.
// Releasing a released hold returns it unchanged; model.ErrNotFound when it does not
// exist; by is required (model.ErrInvalid).
func (c *Cluster) ReleaseHold(ctx context.Context, id model.HoldID, by string) (model.Hold, error) {
	if by == "" {
		return model.Hold{}, fmt.Errorf("release hold %q: %w", id, model.Invalid("released_by", "is required (it is recorded with the hold)"))
	}
	res, err := c.apply(ctx, command{Op: opReleaseHold, Hold: model.Hold{ID: id, ReleasedBy: by, ReleasedAt: now()}})
	if err != nil {
		return model.Hold{}, fmt.Errorf("release hold %q: %w", id, err)
	}
	return result[model.Hold](res)
}

// Hold returns one hold, or model.ErrNotFound.
func (c *Cluster) Hold(id model.HoldID) (model.Hold, error) {
	c.fsm.mu.RLock()
	defer c.fsm.mu.RUnlock()
	raw, ok, err := getRaw(c.fsm.db, holdKey(id))
	if err != nil {
		return model.Hold{}, storeErr(err)
	}
	if !ok {
		return model.Hold{}, fmt.Errorf("hold %q: %w", id, model.ErrNotFound)
	}
	return decHold(raw)
}

// Holds lists the holds naming camera (every hold when camera is empty), sorted by id.
// Released holds are listed only with includeReleased; expired ones (Until passed) are
// listed (use Hold.Active to tell).
func (c *Cluster) Holds(camera model.CameraID, includeReleased bool) ([]model.Hold, error) {
	c.fsm.mu.RLock()
	defer c.fsm.mu.RUnlock()
	var all []model.Hold
	if camera != "" {
		var err error
		if all, err = cameraHolds(c.fsm.db, camera); err != nil {
			return nil, err
		}
	} else {
		err := scan(c.fsm.db, prefixHold, prefixEnd(prefixHold), func(_, v []byte) (bool, error) {
			h, err := decHold(v)
			if err != nil {
				return false, err
			}
			all = append(all, h)
			return true, nil
		})
		if err != nil {
			return nil, err
		}
	}
	out := all[:0]
	for _, h := range all {
		if includeReleased || h.ReleasedAt.IsZero() {
			out = append(out, h)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// HeldAt reports whether an active hold (at now) covers camera's footage in [from, to),
// and returns it. Retention calls it before choosing what to delete. When the catalog
// cannot be read it answers true (with a hold whose CaseRef says so): footage is kept
// rather than deleted on doubt.
func (c *Cluster) HeldAt(camera model.CameraID, from, to, now time.Time) (model.Hold, bool) {
	c.fsm.mu.RLock()
	defer c.fsm.mu.RUnlock()
	h, held, err := newHoldChecker(c.fsm.db, now).covering(camera, from, to)
	if err != nil {
		c.logger.Warn("holds: cannot read the catalog; keeping the footage", slog.String("camera", string(camera)), slog.Any("error", err))
		return model.Hold{Cameras: []model.CameraID{camera}, Start: from, End: to, CaseRef: "catalog unreadable: " + err.Error()}, true
	}
	return h, held
}
