package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/hashicorp/raft"

	"github.com/vigie-vms/vigie/model"
)

// fsm is Vigie's replicated state machine: a thin layer that decodes raft log entries and
// applies them to the Pebble store.
//
// What must never happen inside Apply/ApplyBatch: reading the wall clock, talking to
// other nodes, reading files other than the Pebble store, randomness, or anything else
// whose result could differ between two nodes applying the same log. Timestamps and sealed
// passwords are in the command itself, set by the caller before raft.Apply.
//
// Each ApplyBatch is one Pebble batch that also writes the index of its last entry
// (m/applied), so the store is always a consistent prefix of the log. Entries at or below
// that index are skipped without decoding: on restart raft replays from its last snapshot,
// but the store already holds them.
//
// Pebble batches are committed without fsync: the raft log (fsynced) is the durable
// record, and a lost tail of the store is replayed from it. Before a snapshot is taken the
// Pebble WAL is synced, so the store is never behind a snapshot raft may truncate the log
// to (Open checks this anyway and restores the latest snapshot if it is).
type fsm struct {
	db     *pebble.DB
	logger *slog.Logger

	// mu: readers hold it shared; Restore holds it exclusively while it replaces the store.
	mu sync.RWMutex

	applied atomic.Uint64 // mirror of m/applied
	// failed is set when a Pebble write fails: the store no longer follows the log, so
	// every later entry is refused (the node must restart and replay from m/applied).
	failed atomic.Pointer[error]

	changes chan struct{}
	// kick wakes the leader's placement loop (assignments, cameras, loads, node states).
	kick chan struct{}

	// counters for tests and metrics
	nApplied atomic.Uint64 // commands applied to the store
	nSkipped atomic.Uint64 // entries skipped because the store already had them
}

var (
	_ raft.BatchingFSM = (*fsm)(nil)
)

func openFSM(dir string, logger *slog.Logger) (*fsm, error) {
	db, err := pebble.Open(dir, storeOptions(logger))
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	f := &fsm{db: db, logger: logger, changes: make(chan struct{}, 1), kick: make(chan struct{}, 1)}
	v, ok, err := getRaw(db, keyApplied)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("read applied index: %w", err)
	}
	if ok {
		if len(v) != 8 {
			_ = db.Close()
			return nil, fmt.Errorf("applied index is %d bytes, want 8: %w", len(v), model.ErrCorrupt)
		}
		f.applied.Store(binary.BigEndian.Uint64(v))
	}
	if err := ensureIndexV3(db); err != nil {
		_ = db.Close()
		return nil, err
	}
	return f, nil
}

// storeOptions: bloom filters on every level, because the state machine's hot path (a
// segment commit) looks up keys that mostly do not exist (si/{id}); a 64 MiB block cache
// so the recent catalog is read without decompressing blocks again.
func storeOptions(logger *slog.Logger) *pebble.Options {
	o := &pebble.Options{Logger: pebbleLogger{logger}, CacheSize: 64 << 20}
	for i := range o.Levels {
		o.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	return o
}

func (f *fsm) close() error { return f.db.Close() }

func (f *fsm) signal() {
	select {
	case f.changes <- struct{}{}:
	default:
	}
	f.signalKick()
}

func (f *fsm) signalKick() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// internalError marks a failure of the store itself (not a refusal of the command).
type internalError struct{ err error }

func (e *internalError) Error() string { return "store: " + e.err.Error() }
func (e *internalError) Unwrap() error { return e.err }

func storeErr(err error) error {
	if err == nil {
		return nil
	}
	return &internalError{err}
}

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch implements raft.BatchingFSM: the whole batch is one Pebble batch.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	resps := make([]any, len(logs))
	if p := f.failed.Load(); p != nil {
		for i := range resps {
			resps[i] = *p
		}
		return resps
	}
	b := f.db.NewIndexedBatch()
	defer b.Close()
	applied := f.applied.Load()
	last := applied
	touched, kicked := false, false
	var nApplied, nSkipped uint64
	for i, l := range logs {
		if l.Index <= applied {
			nSkipped++
			continue
		}
		last = l.Index
		if l.Type != raft.LogCommand {
			continue
		}
		cmd, err := decodeCommand(l.Data)
		if err != nil {
			f.logger.Error("undecodable raft entry skipped", slog.Uint64("index", l.Index), slog.Any("error", err))
			resps[i] = fmt.Errorf("raft entry %d: %w", l.Index, err)
			continue
		}
		res, err := f.apply(b, cmd)
		var ie *internalError
		if errors.As(err, &ie) {
			f.fail(err, resps)
			return resps
		}
		if err != nil {
			resps[i] = err
			continue
		}
		nApplied++
		resps[i] = res
		switch cmd.Op {
		case opCreateCameras, opUpdateCamera, opDeleteCamera, opAssign, opSetAssignments, opConfirmRecording, opSetRepair:
			touched = true
		case opSetNodeState, opReportLoad, opReportDisk:
			kicked = true
		}
	}
	if last != applied {
		if err := b.Set(keyApplied, binary.BigEndian.AppendUint64(nil, last), nil); err != nil {
			f.fail(err, resps)
			return resps
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			f.fail(err, resps)
			return resps
		}
		f.applied.Store(last)
	}
	f.nApplied.Add(nApplied)
	f.nSkipped.Add(nSkipped)
	if touched {
		f.signal()
	} else if kicked {
		f.signalKick()
	}
	return resps
}

func (f *fsm) fail(err error, resps []any) {
	err = fmt.Errorf("state machine stopped, restart the node: %w", err)
	f.failed.Store(&err)
	f.logger.Error("state machine write failed; refusing further entries until restart", slog.Any("error", err))
	for i := range resps {
		resps[i] = err
	}
}

// apply runs one command against the batch. Every handler checks first and writes
// second, so a refused command leaves no trace in the batch.
func (f *fsm) apply(b *pebble.Batch, c command) (any, error) {
	switch c.Op {
	case opCreateTenant:
		return applyCreateTenant(b, c.Tenant)
	case opUpdateTenant:
		return applyUpdateTenant(b, c.Tenant)
	case opDeleteTenant:
		return nil, applyDeleteTenant(b, c.TenantID)
	case opCreateCameras:
		return applyCreateCameras(b, c.Cameras)
	case opUpdateCamera:
		return applyUpdateCamera(b, c.Cameras[0])
	case opDeleteCamera:
		return nil, applyDeleteCamera(b, c.CameraID)
	case opAssign:
		return applyAssign(b, c.CameraID, c.Node)
	case opCommitSegment:
		return nil, applyCommitSegment(b, c.Segment)
	case opDeleteSegments:
		return applyDeleteSegments(b, c.SegmentIDs, c.Reason, c.At)
	case opRecordOutage:
		return nil, applyRecordOutage(b, c.Outage)
	case opSetAssignments:
		return applySetAssignments(b, c.Changes, c.At)
	case opConfirmRecording:
		return applyConfirmRecording(b, c.CameraID, c.Node, c.At)
	case opSetNodeState:
		return nil, applySetNodeState(b, c.Node, c.State, c.At)
	case opReportLoad:
		return applyReportLoad(b, c.Node, c.Loads)
	case opReconcileSegment:
		return applyReconcileSegment(b, c.Segment)
	case opCommitStripe:
		return applyCommitStripe(b, c.Stripe)
	case opDeleteStripe:
		return applyDeleteStripe(b, c.StripeID, c.Reason, c.At)
	case opUpdateShard:
		return applyUpdateShard(b, c.StripeID, c.Index, c.Node, c.Shard)
	case opCreateHold:
		return applyCreateHold(b, c.Hold)
	case opReleaseHold:
		return applyReleaseHold(b, c.Hold.ID, c.Hold.ReleasedBy, c.Hold.ReleasedAt)
	case opReportDisk:
		return nil, applyReportDisk(b, c.Node, c.Disk)
	case opSetRepair:
		return nil, applySetRepair(b, c.Node, c.Reason, c.At)
	}
	return nil, fmt.Errorf("%w: unknown command op %d", errDecode, byte(c.Op))
}

// ---- handlers ----

func applyCreateTenant(b *pebble.Batch, t model.Tenant) (model.Tenant, error) {
	if t.ID == "" {
		return t, model.Invalid("id", "is required")
	}
	_, ok, err := getRaw(b, tenantKey(t.ID))
	if err != nil {
		return t, storeErr(err)
	}
	if ok {
		return t, fmt.Errorf("tenant %q: %w", t.ID, model.ErrExists)
	}
	return t, storeErr(b.Set(tenantKey(t.ID), encTenant(t), nil))
}

func applyUpdateTenant(b *pebble.Batch, t model.Tenant) (model.Tenant, error) {
	old, err := getTenant(b, t.ID)
	if err != nil {
		return t, err
	}
	t.CreatedAt = old.CreatedAt
	return t, storeErr(b.Set(tenantKey(t.ID), encTenant(t), nil))
}

func applyDeleteTenant(b *pebble.Batch, id model.TenantID) error {
	if _, err := getTenant(b, id); err != nil {
		return err
	}
	n, err := countPrefix(b, tenantCamPrefix(id), 1)
	if err != nil {
		return storeErr(err)
	}
	if n > 0 {
		return fmt.Errorf("tenant %q still has cameras; delete or move them first: %w", id, model.ErrInUse)
	}
	return storeErr(b.Delete(tenantKey(id), nil))
}

func applyCreateCameras(b *pebble.Batch, cams []storedCamera) ([]storedCamera, error) {
	type quota struct {
		t        model.Tenant
		existing int
		added    int
	}
	tenants := map[model.TenantID]*quota{}
	seen := make(map[model.CameraID]int, len(cams))
	for i, c := range cams {
		if c.ID == "" {
			return nil, fmt.Errorf("camera %d: %w", i, model.Invalid("id", "is required"))
		}
		if j, dup := seen[c.ID]; dup {
			return nil, fmt.Errorf("camera %d (%q): same id as camera %d of the request: %w", i, c.ID, j, model.ErrExists)
		}
		seen[c.ID] = i
		_, ok, err := getRaw(b, cameraKey(c.ID))
		if err != nil {
			return nil, storeErr(err)
		}
		if ok {
			return nil, fmt.Errorf("camera %d (%q): %w", i, c.ID, model.ErrExists)
		}
		q := tenants[c.Tenant]
		if q == nil {
			t, err := getTenant(b, c.Tenant)
			if err != nil {
				return nil, fmt.Errorf("camera %d (%q): %w", i, c.ID, err)
			}
			q = &quota{t: t}
			if t.CameraQuota > 0 {
				if q.existing, err = countPrefix(b, tenantCamPrefix(t.ID), t.CameraQuota+1); err != nil {
					return nil, storeErr(err)
				}
			}
			tenants[c.Tenant] = q
		}
		q.added++
		if q.t.CameraQuota > 0 && q.existing+q.added > q.t.CameraQuota {
			return nil, fmt.Errorf("camera %d (%q): tenant %q has %d cameras and a quota of %d (this request adds %d or more): %w",
				i, c.ID, c.Tenant, q.existing, q.t.CameraQuota, q.added, model.ErrQuota)
		}
	}
	for _, c := range cams {
		if err := b.Set(cameraKey(c.ID), encCamera(c), nil); err != nil {
			return nil, storeErr(err)
		}
		if err := b.Set(tenantCamKey(c.Tenant, c.ID), nil, nil); err != nil {
			return nil, storeErr(err)
		}
	}
	return cams, nil
}

func applyUpdateCamera(b *pebble.Batch, c storedCamera) (storedCamera, error) {
	old, err := getCamera(b, c.ID)
	if err != nil {
		return c, err
	}
	if c.Tenant != old.Tenant {
		return c, fmt.Errorf("camera %q: %w", c.ID, model.Invalid("tenant",
			"cannot change from %q to %q; delete the camera and create it under the new tenant", old.Tenant, c.Tenant))
	}
	c.CreatedAt = old.CreatedAt
	if len(c.Secret) == 0 && c.Username != "" {
		c.Secret = old.Secret // empty password in an update keeps the stored one
	}
	return c, storeErr(b.Set(cameraKey(c.ID), encCamera(c), nil))
}

func applyDeleteCamera(b *pebble.Batch, id model.CameraID) error {
	c, err := getCamera(b, id)
	if err != nil {
		return err
	}
	a, ok, err := getAssignment(b, id)
	if err != nil {
		return err
	}
	if ok {
		// Keep the epoch and move it on, so a re-created camera never hands out an epoch
		// that a former owner could still be writing with.
		a.Node, a.Next, a.Secondary = "", "", ""
		a.Epoch++
		if err := b.Set(assignKey(id), encAssignment(a), nil); err != nil {
			return storeErr(err)
		}
	}
	if err := b.Delete(cameraKey(id), nil); err != nil {
		return storeErr(err)
	}
	if err := b.Delete(loadKey(id), nil); err != nil {
		return storeErr(err)
	}
	return storeErr(b.Delete(tenantCamKey(c.Tenant, id), nil))
}

func applyAssign(b *pebble.Batch, cam model.CameraID, node model.NodeID) (model.Assignment, error) {
	if _, err := getCamera(b, cam); err != nil {
		return model.Assignment{}, err
	}
	a, ok, err := getAssignment(b, cam)
	if err != nil {
		return a, err
	}
	if ok && a.Node == node {
		return a, nil
	}
	a = model.Assignment{Camera: cam, Node: node, Epoch: a.Epoch + 1}
	return a, storeErr(b.Set(assignKey(cam), encAssignment(a), nil))
}

func checkSegment(s model.Segment) error {
	switch {
	case s.ID == "":
		return model.Invalid("id", "is required")
	case s.Camera == "":
		return model.Invalid("camera", "is required")
	case s.Start.IsZero() || !validTime(s.Start):
		return model.Invalid("start", "must be a time between 1970 and 2200, got %v", s.Start)
	case s.End.IsZero() || !validTime(s.End):
		return model.Invalid("end", "must be a time between 1970 and 2200, got %v", s.End)
	case s.End.Before(s.Start):
		return model.Invalid("end", "%v is before start %v", s.End, s.Start)
	}
	return nil
}

func applyCommitSegment(b *pebble.Batch, s model.Segment) error {
	if err := checkSegment(s); err != nil {
		return fmt.Errorf("segment %q: %w", s.ID, err)
	}
	a, ok, err := getAssignment(b, s.Camera)
	if err != nil {
		return err
	}
	if !ok {
		if _, err := getCamera(b, s.Camera); err != nil {
			return fmt.Errorf("segment %q: %w", s.ID, err)
		}
	}
	if s.Epoch != a.Epoch {
		return fmt.Errorf("segment %q of camera %q carries epoch %d, the camera's epoch is %d (owner %q): %w",
			s.ID, s.Camera, s.Epoch, a.Epoch, a.Node, model.ErrStaleEpoch)
	}
	if !mayWrite(a, s.Node) {
		return fmt.Errorf("segment %q of camera %q comes from node %q, which does not record the camera at epoch %d (owner %q, next %q, secondary %q): %w",
			s.ID, s.Camera, s.Node, a.Epoch, a.Node, a.Next, a.Secondary, model.ErrStaleEpoch)
	}
	s.Reconciled = false
	return putSegment(b, s)
}

// mayWrite reports whether node records the camera at the assignment's epoch: its owner,
// the incoming owner of a handover (its footage counts from the start), or the secondary
// of a critical camera. A camera without owner fences on the epoch alone.
func mayWrite(a model.Assignment, node model.NodeID) bool {
	if a.Node == "" {
		return true
	}
	return node == a.Node || (a.Next != "" && node == a.Next) || (a.Secondary != "" && node == a.Secondary)
}

// putSegment stores a segment (the checks are done), replacing an entry with the same id.
func putSegment(b *pebble.Batch, s model.Segment) error {
	key := segmentKey(s)
	oldKey, ok, err := getRaw(b, segIDKey(s.ID))
	if err != nil {
		return storeErr(err)
	}
	var old model.Segment
	striped := false
	if ok {
		if old, err = getSegmentByKey(b, oldKey); err != nil {
			return err
		}
		if old.Camera != s.Camera {
			return fmt.Errorf("segment %q already belongs to camera %q, not %q: %w", s.ID, old.Camera, s.Camera, model.ErrExists)
		}
		stripe, in, err := getRaw(b, segStripeKey(s.ID))
		if err != nil {
			return storeErr(err)
		}
		striped = in
		if striped && (s.Node != old.Node || !s.Start.Equal(old.Start) || !s.End.Equal(old.End) ||
			s.Bytes != old.Bytes || s.Checksum != old.Checksum || !s.Sealed) {
			return fmt.Errorf("segment %q is data shard of stripe %q: its node, times, bytes and checksum cannot change (node %q → %q, bytes %d → %d): %w",
				s.ID, stripe, old.Node, s.Node, old.Bytes, s.Bytes, model.ErrInUse)
		}
	}
	maxDur, err := getSegMax(b, s.Camera)
	if err != nil {
		return err
	}
	// writes
	if ok && string(oldKey) != string(key) {
		if err := b.Delete(oldKey, nil); err != nil {
			return storeErr(err)
		}
	}
	if ok && old.Sealed && !striped {
		if err := b.Delete(unstripedKey(old), nil); err != nil {
			return storeErr(err)
		}
	}
	if err := b.Set(key, encSegment(s), nil); err != nil {
		return storeErr(err)
	}
	if err := b.Set(segIDKey(s.ID), key, nil); err != nil {
		return storeErr(err)
	}
	if s.Sealed && !striped {
		if err := b.Set(unstripedKey(s), encSegment(s), nil); err != nil {
			return storeErr(err)
		}
	}
	if d := s.End.Sub(s.Start); d > maxDur {
		return storeErr(b.Set(segMaxKey(s.Camera), encDuration(d), nil))
	}
	return nil
}

func applyDeleteSegments(b *pebble.Batch, ids []model.SegmentID, reason string, at time.Time) (int, error) {
	// check every segment first: all are deleted, or none
	hc := newHoldChecker(b, at)
	segs := make([]model.Segment, 0, len(ids))
	keys := make([][]byte, 0, len(ids))
	seen := make(map[model.SegmentID]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		key, ok, err := getRaw(b, segIDKey(id))
		if err != nil {
			return 0, storeErr(err)
		}
		if !ok {
			continue // already deleted: deleting is idempotent
		}
		s, err := getSegmentByKey(b, key)
		if err != nil {
			return 0, err
		}
		if stripe, in, err := getRaw(b, segStripeKey(id)); err != nil {
			return 0, storeErr(err)
		} else if in {
			return 0, fmt.Errorf("segment %q is data shard of stripe %q: delete the stripe (DeleteStripe), not the segment: %w", id, stripe, model.ErrInUse)
		}
		if h, held, err := hc.covering(s.Camera, s.Start, s.End); err != nil {
			return 0, err
		} else if held {
			return 0, heldError("delete segments", s, h)
		}
		segs = append(segs, s)
		keys = append(keys, key)
	}
	for i, s := range segs {
		if err := deleteSegmentEntry(b, keys[i], s, reason, at); err != nil {
			return i, err
		}
	}
	return len(segs), nil
}

func applyRecordOutage(b *pebble.Batch, o model.Outage) error {
	switch {
	case o.Camera == "":
		return model.Invalid("camera", "is required")
	case o.Start.IsZero() || !validTime(o.Start):
		return fmt.Errorf("outage of camera %q: %w", o.Camera, model.Invalid("start", "must be a time between 1970 and 2200, got %v", o.Start))
	case !validTime(o.End) || (!o.End.IsZero() && o.End.Before(o.Start)):
		return fmt.Errorf("outage of camera %q: %w", o.Camera, model.Invalid("end", "must be zero (ongoing) or not before start, got %v", o.End))
	}
	if _, ok, err := getAssignment(b, o.Camera); err != nil {
		return err
	} else if !ok {
		// a camera deleted after its outage keeps its assignment record, so only a camera
		// that never existed lands here
		if _, err := getCamera(b, o.Camera); err != nil {
			return fmt.Errorf("outage: %w", err)
		}
	}
	return storeErr(b.Set(outageKey(o), encOutage(o), nil))
}

// ---- point reads shared by handlers (on the batch) and queries (on the DB) ----

// getRaw returns a copy of the value at key.
func getRaw(r pebble.Reader, key []byte) ([]byte, bool, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := append([]byte{}, v...)
	_ = closer.Close()
	return out, true, nil
}

func getTenant(r pebble.Reader, id model.TenantID) (model.Tenant, error) {
	v, ok, err := getRaw(r, tenantKey(id))
	if err != nil {
		return model.Tenant{}, storeErr(err)
	}
	if !ok {
		return model.Tenant{}, fmt.Errorf("tenant %q: %w", id, model.ErrNotFound)
	}
	return decTenant(v)
}

func getCamera(r pebble.Reader, id model.CameraID) (storedCamera, error) {
	v, ok, err := getRaw(r, cameraKey(id))
	if err != nil {
		return storedCamera{}, storeErr(err)
	}
	if !ok {
		return storedCamera{}, fmt.Errorf("camera %q: %w", id, model.ErrNotFound)
	}
	return decCamera(v)
}

// getAssignment returns the camera's assignment record, ok=false when it never had one.
func getAssignment(r pebble.Reader, id model.CameraID) (model.Assignment, bool, error) {
	v, ok, err := getRaw(r, assignKey(id))
	if err != nil {
		return model.Assignment{}, false, storeErr(err)
	}
	if !ok {
		return model.Assignment{Camera: id}, false, nil
	}
	a, err := decAssignment(v)
	return a, err == nil, err
}

func getSegmentByKey(r pebble.Reader, key []byte) (model.Segment, error) {
	v, ok, err := getRaw(r, key)
	if err != nil {
		return model.Segment{}, storeErr(err)
	}
	if !ok {
		return model.Segment{}, fmt.Errorf("segment index points to a missing entry: %w", model.ErrCorrupt)
	}
	return decSegment(v)
}

func getSegMax(r pebble.Reader, id model.CameraID) (time.Duration, error) {
	v, ok, err := getRaw(r, segMaxKey(id))
	if err != nil || !ok {
		return 0, storeErr(err)
	}
	return decDuration(v)
}

// countPrefix counts keys under prefix, stopping at limit.
func countPrefix(r pebble.Reader, prefix []byte, limit int) (int, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return 0, err
	}
	n := 0
	for ok := it.First(); ok && n < limit; ok = it.Next() {
		n++
	}
	return n, errors.Join(it.Error(), it.Close())
}

// ---- snapshots ----

// Snapshot stream: "VIGIESNAP" + version byte + applied index (8 bytes BE), then records
// (uvarint key length, key, uvarint value length, value) in key order, then a zero key
// length, then the CRC-32C (Castagnoli) of everything before it, 4 bytes BE.
const snapMagic = "VIGIESNAP"
const snapVersion = 1

// Snapshot implements raft.FSM. It is quick: one WAL sync (so the store is durable up to
// the index raft will record for this snapshot) and a Pebble snapshot; Persist does the I/O.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.db.LogData(nil, pebble.Sync); err != nil {
		return nil, fmt.Errorf("sync store before snapshot: %w", err)
	}
	return &fsmSnapshot{snap: f.db.NewSnapshot(), applied: f.applied.Load()}, nil
}

type fsmSnapshot struct {
	snap    *pebble.Snapshot
	applied uint64
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, s.snap, s.applied); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() { _ = s.snap.Close() }

// Restore implements raft.FSM: it replaces the whole store with the snapshot's content.
//
// The applied index is set to 0, not to the snapshot's: raft may restore a snapshot under
// a different index than the one it was taken at (a user restore into another cluster),
// and 0 means "skip nothing"; the next batch writes the right index. Were the node to stop
// before that, Open sees the store behind the latest snapshot and restores it again.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.restore(rc); err != nil {
		f.fail(fmt.Errorf("restore snapshot: %w", err), nil)
		return err
	}
	return nil
}

func (f *fsm) restore(r io.Reader) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.db.NewBatch()
	if err := b.DeleteRange([]byte{}, []byte{0xff}, nil); err != nil {
		return err
	}
	if err := b.Set(keyApplied, binary.BigEndian.AppendUint64(nil, 0), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	f.applied.Store(0)
	_, err := readSnapshot(r, func(batch []kv) error {
		wb := f.db.NewBatch()
		defer wb.Close()
		for _, e := range batch {
			if err := wb.Set(e.k, e.v, nil); err != nil {
				return err
			}
		}
		return wb.Commit(pebble.NoSync)
	})
	if err != nil {
		return err
	}
	if err := ensureIndexV3(f.db); err != nil { // a snapshot of a store from before the index
		return err
	}
	if err := f.db.LogData(nil, pebble.Sync); err != nil {
		return err
	}
	f.failed.Store(nil)
	f.signal()
	return nil
}

// restoreAt restores a snapshot and records its index as applied (used at Open, when the
// index is known to be the one the snapshot was taken at).
func (f *fsm) restoreAt(r io.Reader, index uint64) error {
	if err := f.restore(r); err != nil {
		return err
	}
	if err := f.db.Set(keyApplied, binary.BigEndian.AppendUint64(nil, index), pebble.Sync); err != nil {
		return err
	}
	f.applied.Store(index)
	return nil
}
