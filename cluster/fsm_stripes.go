package cluster

import (
	"fmt"
	"regexp"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vigie-vms/vigie/model"
)

// State machine handlers of the stripe catalog, legal holds, disk reports and repair
// marks. The rules of fsm.go hold: no clock, no randomness, no I/O but the batch; check
// everything, then write (a refused command leaves no trace).

// stripeIDPattern is storage's rule for stripe ids (they name shard files).
var stripeIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)

// maxStripeShards: Reed–Solomon over GF(2^8) has at most 256 shards.
const maxStripeShards = 256

// checkStripeShape checks what does not depend on the state, naming the field.
func checkStripeShape(st model.Stripe) error {
	switch {
	case !stripeIDPattern.MatchString(string(st.ID)):
		return model.Invalid("id", "%q must be 1-128 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit", st.ID)
	case st.K < 1:
		return model.Invalid("k", "must be at least 1, got %d", st.K)
	case st.M < 0:
		return model.Invalid("m", "must not be negative, got %d", st.M)
	case st.K+st.M > maxStripeShards:
		return model.Invalid("m", "k+m = %d is more than %d shards", st.K+st.M, maxStripeShards)
	case len(st.Shards) != st.K+st.M:
		return model.Invalid("shards", "%d shards for a %d+%d stripe, want %d", len(st.Shards), st.K, st.M, st.K+st.M)
	case st.ShardSize < 0:
		return model.Invalid("shard_size", "must not be negative, got %d", st.ShardSize)
	}
	nodes := make(map[model.NodeID]int, len(st.Shards))
	segs := make(map[model.SegmentID]int, st.K)
	for i, sh := range st.Shards {
		field := fmt.Sprintf("shards[%d]", i)
		if sh.Node == "" {
			return model.Invalid(field+".node", "is required")
		}
		if j, dup := nodes[sh.Node]; dup {
			return model.Invalid(field+".node", "node %q already holds shard %d: the k+m shards must be on distinct nodes", sh.Node, j)
		}
		nodes[sh.Node] = i
		if sh.Bytes < 0 {
			return model.Invalid(field+".bytes", "must not be negative, got %d", sh.Bytes)
		}
		if i >= st.K {
			if sh.Segment != "" {
				return model.Invalid(field+".segment", "shard %d is a parity shard (k=%d) and has no segment, got %q", i, st.K, sh.Segment)
			}
			continue
		}
		if sh.Segment == "" {
			return model.Invalid(field+".segment", "data shard %d needs its segment", i)
		}
		if j, dup := segs[sh.Segment]; dup {
			return model.Invalid(field+".segment", "segment %q is already data shard %d of this stripe", sh.Segment, j)
		}
		segs[sh.Segment] = i
	}
	return nil
}

// applyCommitStripe records a stripe. Zero Bytes and Checksum of a data shard are taken
// from its segment, zero Bytes of a parity shard and a zero ShardSize are computed. The
// data segments' catalog Node becomes their shard's node (the bytes live there), they
// leave the unstriped index and point to the stripe. Committing the same stripe again is
// a no-op; another stripe under the same id is ErrExists. It returns the stripe as stored.
func applyCommitStripe(b *pebble.Batch, st model.Stripe) (model.Stripe, error) {
	if err := checkStripeShape(st); err != nil {
		return st, fmt.Errorf("stripe %q: %w", st.ID, err)
	}
	st.Shards = append([]model.StripeShard(nil), st.Shards...)
	segs := make([]model.Segment, st.K)
	segKeys := make([][]byte, st.K)
	var largest int64
	for i := 0; i < st.K; i++ {
		sh := &st.Shards[i]
		field := fmt.Sprintf("shards[%d].segment", i)
		key, ok, err := getRaw(b, segIDKey(sh.Segment))
		if err != nil {
			return st, storeErr(err)
		}
		if !ok {
			return st, fmt.Errorf("stripe %q: %s: segment %q is not in the catalog: %w", st.ID, field, sh.Segment, model.ErrNotFound)
		}
		s, err := getSegmentByKey(b, key)
		if err != nil {
			return st, err
		}
		if !s.Sealed {
			return st, fmt.Errorf("stripe %q: %w", st.ID, model.Invalid(field, "segment %q is not sealed: only sealed segments are striped", s.ID))
		}
		other, ok, err := getRaw(b, segStripeKey(s.ID))
		if err != nil {
			return st, storeErr(err)
		}
		if ok && string(other) != string(st.ID) {
			return st, fmt.Errorf("stripe %q: %s: segment %q is already protected by stripe %q: %w", st.ID, field, s.ID, other, model.ErrInUse)
		}
		if sh.Bytes == 0 {
			sh.Bytes = s.Bytes
		}
		if sh.Checksum == 0 {
			sh.Checksum = s.Checksum
		}
		if sh.Bytes != s.Bytes {
			return st, fmt.Errorf("stripe %q: %w", st.ID, model.Invalid(fmt.Sprintf("shards[%d].bytes", i), "%d, but segment %q has %d bytes", sh.Bytes, s.ID, s.Bytes))
		}
		if sh.Checksum != s.Checksum {
			return st, fmt.Errorf("stripe %q: %w", st.ID, model.Invalid(fmt.Sprintf("shards[%d].checksum", i), "%08x, but segment %q has checksum %08x", sh.Checksum, s.ID, s.Checksum))
		}
		largest = max(largest, s.Bytes)
		segs[i], segKeys[i] = s, key
	}
	if st.ShardSize == 0 {
		st.ShardSize = largest
	}
	if st.ShardSize != largest {
		return st, fmt.Errorf("stripe %q: %w", st.ID, model.Invalid("shard_size", "%d, but the largest data segment has %d bytes", st.ShardSize, largest))
	}
	for i := st.K; i < len(st.Shards); i++ {
		sh := &st.Shards[i]
		if sh.Bytes == 0 {
			sh.Bytes = st.ShardSize
		}
		if sh.Bytes != st.ShardSize {
			return st, fmt.Errorf("stripe %q: %w", st.ID, model.Invalid(fmt.Sprintf("shards[%d].bytes", i), "parity shard of %d bytes, the shard size is %d", sh.Bytes, st.ShardSize))
		}
	}
	if raw, ok, err := getRaw(b, stripeKey(st.ID)); err != nil {
		return st, storeErr(err)
	} else if ok {
		old, err := decStripe(raw)
		if err != nil {
			return st, err
		}
		cmp := old
		cmp.CreatedAt = st.CreatedAt
		if string(encStripe(cmp)) == string(encStripe(st)) {
			return old, nil // the same commit again (a retried write)
		}
		return st, fmt.Errorf("stripe %q: another stripe has this id: %w", st.ID, model.ErrExists)
	}
	// writes
	for i, s := range segs {
		if s.Sealed {
			if err := b.Delete(unstripedKey(s), nil); err != nil {
				return st, storeErr(err)
			}
		}
		if node := st.Shards[i].Node; node != s.Node {
			s.Node = node
			if err := b.Set(segKeys[i], encSegment(s), nil); err != nil {
				return st, storeErr(err)
			}
		}
		if err := b.Set(segStripeKey(s.ID), []byte(st.ID), nil); err != nil {
			return st, storeErr(err)
		}
	}
	for _, sh := range st.Shards {
		if err := b.Set(nodeStripeKey(sh.Node, st.ID), nil, nil); err != nil {
			return st, storeErr(err)
		}
	}
	return st, storeErr(b.Set(stripeKey(st.ID), encStripe(st), nil))
}

func getStripe(r pebble.Reader, id model.StripeID) (model.Stripe, error) {
	raw, ok, err := getRaw(r, stripeKey(id))
	if err != nil {
		return model.Stripe{}, storeErr(err)
	}
	if !ok {
		return model.Stripe{}, fmt.Errorf("stripe %q: %w", id, model.ErrNotFound)
	}
	return decStripe(raw)
}

// holdChecker finds the active holds that cover footage, reading each camera's holds
// once per command.
type holdChecker struct {
	r     pebble.Reader
	at    time.Time
	cache map[model.CameraID][]model.Hold
}

func newHoldChecker(r pebble.Reader, at time.Time) *holdChecker {
	return &holdChecker{r: r, at: at, cache: map[model.CameraID][]model.Hold{}}
}

// covering returns an active hold (at the checker's time) covering camera in [from, to).
func (hc *holdChecker) covering(camera model.CameraID, from, to time.Time) (model.Hold, bool, error) {
	hs, ok := hc.cache[camera]
	if !ok {
		var err error
		if hs, err = cameraHolds(hc.r, camera); err != nil {
			return model.Hold{}, false, err
		}
		hc.cache[camera] = hs
	}
	for _, h := range hs {
		if h.Covers(camera, from, to, hc.at) {
			return h, true, nil
		}
	}
	return model.Hold{}, false, nil
}

// cameraHolds returns every hold (released or not) that names the camera, by id.
func cameraHolds(r pebble.Reader, camera model.CameraID) ([]model.Hold, error) {
	var out []model.Hold
	p := cameraHoldPrefix(camera)
	err := scan(r, p, prefixEnd(p), func(k, _ []byte) (bool, error) {
		raw, ok, err := getRaw(r, holdKey(model.HoldID(k[len(p):])))
		if err != nil {
			return false, storeErr(err)
		}
		if !ok {
			return true, nil
		}
		h, err := decHold(raw)
		if err != nil {
			return false, err
		}
		out = append(out, h)
		return true, nil
	})
	return out, err
}

func heldError(what string, s model.Segment, h model.Hold) error {
	return fmt.Errorf("%s: segment %q of camera %q (%s – %s) is under legal hold %q (case %q) until it is released: %w",
		what, s.ID, s.Camera, s.Start.Format(time.RFC3339), s.End.Format(time.RFC3339), h.ID, h.CaseRef, model.ErrInUse)
}

// applyDeleteStripe removes a stripe and its data segments' catalog entries, recording a
// deletion for each (retention deletes stripe by stripe). It is refused (ErrInUse, naming
// the hold) when an active hold covers any of its segments at the command's time. It
// returns how many segments it deleted.
func applyDeleteStripe(b *pebble.Batch, id model.StripeID, reason string, at time.Time) (int, error) {
	st, err := getStripe(b, id)
	if err != nil {
		return 0, fmt.Errorf("delete stripe: %w", err)
	}
	hc := newHoldChecker(b, at)
	var segs []model.Segment
	var keys [][]byte
	for i := 0; i < st.K && i < len(st.Shards); i++ {
		key, ok, err := getRaw(b, segIDKey(st.Shards[i].Segment))
		if err != nil {
			return 0, storeErr(err)
		}
		if !ok {
			continue
		}
		s, err := getSegmentByKey(b, key)
		if err != nil {
			return 0, err
		}
		if h, held, err := hc.covering(s.Camera, s.Start, s.End); err != nil {
			return 0, err
		} else if held {
			return 0, heldError(fmt.Sprintf("delete stripe %q", id), s, h)
		}
		segs = append(segs, s)
		keys = append(keys, key)
	}
	// writes
	for i, s := range segs {
		if err := deleteSegmentEntry(b, keys[i], s, reason, at); err != nil {
			return 0, err
		}
	}
	for i, sh := range st.Shards {
		if i < st.K {
			if err := b.Delete(segStripeKey(sh.Segment), nil); err != nil {
				return 0, storeErr(err)
			}
		}
		if err := b.Delete(nodeStripeKey(sh.Node, id), nil); err != nil {
			return 0, storeErr(err)
		}
	}
	return len(segs), storeErr(b.Delete(stripeKey(id), nil))
}

// deleteSegmentEntry removes a segment's catalog entry and indexes and records its
// deletion.
func deleteSegmentEntry(b *pebble.Batch, key []byte, s model.Segment, reason string, at time.Time) error {
	x := model.Deletion{Segment: s.ID, Camera: s.Camera, Start: s.Start, End: s.End, Bytes: s.Bytes, Reason: reason, At: at}
	for _, k := range [][]byte{key, segIDKey(s.ID), unstripedKey(s)} {
		if err := b.Delete(k, nil); err != nil {
			return storeErr(err)
		}
	}
	return storeErr(b.Set(deletionKey(x), encDeletion(x), nil))
}

// applyUpdateShard records that a repair moved shard index of a stripe from node from to
// sh.Node: a compare-and-set on the shard's node (ErrStaleEpoch when another repair moved
// it first). The rebuilt shard must be the same bytes (zero Bytes/Checksum/Segment mean
// "as recorded"; others must match, ErrCorrupt otherwise), on a node that holds no other
// shard of the stripe. A data shard's segment follows (its catalog Node becomes sh.Node).
func applyUpdateShard(b *pebble.Batch, id model.StripeID, index int, from model.NodeID, sh model.StripeShard) (model.Stripe, error) {
	st, err := getStripe(b, id)
	if err != nil {
		return st, fmt.Errorf("update shard: %w", err)
	}
	if index < 0 || index >= len(st.Shards) {
		return st, fmt.Errorf("stripe %q: %w", id, model.Invalid("index", "%d is not a shard of this %d+%d stripe", index, st.K, st.M))
	}
	cur := st.Shards[index]
	if cur.Node != from {
		return st, fmt.Errorf("stripe %q shard %d is on node %q, not %q: another repair moved it; drop the rebuilt copy: %w", id, index, cur.Node, from, model.ErrStaleEpoch)
	}
	if sh.Node == "" {
		return st, fmt.Errorf("stripe %q shard %d: %w", id, index, model.Invalid("node", "is required"))
	}
	if sh.Node == cur.Node {
		return st, nil
	}
	already := 0
	for i, o := range st.Shards {
		if i != index && o.Node == sh.Node {
			already++
		}
	}
	if already >= max(st.M, 1) {
		return st, fmt.Errorf("stripe %q shard %d: %w", id, index, model.Invalid("node", "node %q already holds %d shards of the stripe (at most m=%d)", sh.Node, already, st.M))
	}
	if sh.Segment == "" {
		sh.Segment = cur.Segment
	}
	if sh.Bytes == 0 {
		sh.Bytes = cur.Bytes
	}
	if sh.Checksum == 0 {
		sh.Checksum = cur.Checksum
	}
	if sh.Segment != cur.Segment {
		return st, fmt.Errorf("stripe %q shard %d: %w", id, index, model.Invalid("segment", "%q, but the shard is segment %q", sh.Segment, cur.Segment))
	}
	if sh.Bytes != cur.Bytes || sh.Checksum != cur.Checksum {
		return st, fmt.Errorf("stripe %q shard %d: rebuilt %d bytes with checksum %08x, recorded %d bytes with checksum %08x: %w",
			id, index, sh.Bytes, sh.Checksum, cur.Bytes, cur.Checksum, model.ErrCorrupt)
	}
	var seg model.Segment
	var segKey []byte
	if index < st.K {
		key, ok, err := getRaw(b, segIDKey(cur.Segment))
		if err != nil {
			return st, storeErr(err)
		}
		if ok {
			if seg, err = getSegmentByKey(b, key); err != nil {
				return st, err
			}
			segKey = key
		}
	}
	// writes
	st.Shards = append([]model.StripeShard(nil), st.Shards...)
	st.Shards[index] = sh
	if segKey != nil {
		seg.Node = sh.Node
		if err := b.Set(segKey, encSegment(seg), nil); err != nil {
			return st, storeErr(err)
		}
	}
	stillThere := false
	for _, o := range st.Shards {
		stillThere = stillThere || o.Node == from
	}
	if !stillThere {
		if err := b.Delete(nodeStripeKey(from, id), nil); err != nil {
			return st, storeErr(err)
		}
	}
	if err := b.Set(nodeStripeKey(sh.Node, id), nil, nil); err != nil {
		return st, storeErr(err)
	}
	return st, storeErr(b.Set(stripeKey(id), encStripe(st), nil))
}

// applyCreateHold records a legal hold (validated caller-side). Every camera must exist;
// an existing id is ErrExists.
func applyCreateHold(b *pebble.Batch, h model.Hold) (model.Hold, error) {
	if err := model.ValidateID("id", string(h.ID)); err != nil {
		return h, fmt.Errorf("hold: %w", err)
	}
	if err := h.Validate(); err != nil {
		return h, fmt.Errorf("hold %q: %w", h.ID, err)
	}
	if !validTime(h.Start) || !validTime(h.End) || !validTime(h.Until) {
		return h, fmt.Errorf("hold %q: %w", h.ID, model.Invalid("start", "start, end and until must be times between 1970 and 2200"))
	}
	if _, ok, err := getRaw(b, holdKey(h.ID)); err != nil {
		return h, storeErr(err)
	} else if ok {
		return h, fmt.Errorf("hold %q: %w", h.ID, model.ErrExists)
	}
	for i, c := range h.Cameras {
		if _, err := getCamera(b, c); err != nil {
			return h, fmt.Errorf("hold %q: cameras[%d]: %w", h.ID, i, err)
		}
	}
	h.ReleasedAt, h.ReleasedBy = time.Time{}, ""
	for _, c := range h.Cameras {
		if err := b.Set(cameraHoldKey(c, h.ID), nil, nil); err != nil {
			return h, storeErr(err)
		}
	}
	return h, storeErr(b.Set(holdKey(h.ID), encHold(h), nil))
}

// applyReleaseHold releases a hold; the record stays, with when and by whom. Releasing a
// released hold changes nothing and returns it.
func applyReleaseHold(b *pebble.Batch, id model.HoldID, by string, at time.Time) (model.Hold, error) {
	raw, ok, err := getRaw(b, holdKey(id))
	if err != nil {
		return model.Hold{}, storeErr(err)
	}
	if !ok {
		return model.Hold{}, fmt.Errorf("hold %q: %w", id, model.ErrNotFound)
	}
	h, err := decHold(raw)
	if err != nil {
		return h, err
	}
	if !h.ReleasedAt.IsZero() {
		return h, nil
	}
	if by == "" {
		return h, fmt.Errorf("release hold %q: %w", id, model.Invalid("released_by", "is required (it is recorded with the hold)"))
	}
	if at.IsZero() || !validTime(at) {
		return h, fmt.Errorf("release hold %q: %w", id, model.Invalid("released_at", "must be a time between 1970 and 2200"))
	}
	h.ReleasedAt, h.ReleasedBy = at, by
	return h, storeErr(b.Set(holdKey(id), encHold(h), nil))
}

// applyReportDisk records a node's disk report.
func applyReportDisk(b *pebble.Batch, node model.NodeID, u DiskUsage) error {
	if node == "" {
		return model.Invalid("node", "is required")
	}
	if u.FreeBytes < 0 || u.TotalBytes < 0 {
		return fmt.Errorf("disk report of node %q: %w", node, model.Invalid("free_bytes", "free %d and total %d must not be negative", u.FreeBytes, u.TotalBytes))
	}
	return storeErr(b.Set(diskKey(node), encDisk(u), nil))
}

// applySetRepair marks a node whose shards must be rebuilt elsewhere (reason "dead" or
// "decommissioned"), counting the shards it holds; an empty reason removes the mark.
// Marking a marked node again keeps the first mark.
func applySetRepair(b *pebble.Batch, node model.NodeID, reason string, at time.Time) error {
	if node == "" {
		return model.Invalid("node", "is required")
	}
	_, ok, err := getRaw(b, repairKey(node))
	if err != nil {
		return storeErr(err)
	}
	switch reason {
	case "":
		if !ok {
			return nil
		}
		return storeErr(b.Delete(repairKey(node), nil))
	case repairDead, repairDecommissioned:
	default:
		return fmt.Errorf("repair mark of node %q: %w", node, model.Invalid("reason", "must be %q, %q or empty, got %q", repairDead, repairDecommissioned, reason))
	}
	if ok {
		return nil
	}
	n, err := countPrefix(b, nodeStripePrefix(node), 1<<40)
	if err != nil {
		return storeErr(err)
	}
	return storeErr(b.Set(repairKey(node), encRepairMark(repairMark{Node: node, Reason: reason, Since: at, Shards: n}), nil))
}

// ensureIndexV3 builds the unstriped-segment index (pu/) of a store written before it
// existed: every sealed segment not in a stripe. It is derived data, the same on every
// node, so building it outside the log keeps replicas identical. It runs at open and
// after a restore, and does nothing once m/index-v3 exists.
func ensureIndexV3(db *pebble.DB) error {
	if _, ok, err := getRaw(db, keyIndexV3); err != nil || ok {
		return err
	}
	b := db.NewBatch()
	defer b.Close()
	err := scan(db, prefixSegment, prefixEnd(prefixSegment), func(_, v []byte) (bool, error) {
		s, err := decSegment(v)
		if err != nil {
			return false, err
		}
		if !s.Sealed {
			return true, nil
		}
		if _, striped, err := getRaw(db, segStripeKey(s.ID)); err != nil || striped {
			return err == nil, err
		}
		return true, b.Set(unstripedKey(s), v, nil)
	})
	if err != nil {
		return fmt.Errorf("build unstriped index: %w", err)
	}
	if err := b.Set(keyIndexV3, nil, nil); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}
