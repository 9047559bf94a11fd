package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vigie-vms/vigie/model"
)

// ---- writes (through raft) ----
//
// Each write validates its input here, sets timestamps and seals passwords here, then
// applies a command; checks that depend on the state (existence, quota, epoch) are made by
// the state machine, so they hold even against concurrent writers.

// CreateTenant registers a tenant. It fails with model.ErrInvalid (a *model.FieldError)
// or model.ErrExists.
func (c *Cluster) CreateTenant(ctx context.Context, t model.Tenant) (model.Tenant, error) {
	t.Normalize()
	if err := t.Validate(); err != nil {
		return model.Tenant{}, fmt.Errorf("create tenant: %w", err)
	}
	t.CreatedAt = now()
	t.UpdatedAt = t.CreatedAt
	res, err := c.apply(ctx, command{Op: opCreateTenant, Tenant: t})
	if err != nil {
		return model.Tenant{}, fmt.Errorf("create tenant: %w", err)
	}
	return result[model.Tenant](res)
}

// UpdateTenant replaces a tenant's fields, keeping its CreatedAt. model.ErrNotFound when
// it does not exist. Lowering the quota below the current number of cameras is allowed:
// it only stops new cameras.
func (c *Cluster) UpdateTenant(ctx context.Context, t model.Tenant) (model.Tenant, error) {
	t.Normalize()
	if err := t.Validate(); err != nil {
		return model.Tenant{}, fmt.Errorf("update tenant: %w", err)
	}
	t.UpdatedAt = now()
	res, err := c.apply(ctx, command{Op: opUpdateTenant, Tenant: t})
	if err != nil {
		return model.Tenant{}, fmt.Errorf("update tenant: %w", err)
	}
	return result[model.Tenant](res)
}

// DeleteTenant removes a tenant; model.ErrInUse while it has cameras.
func (c *Cluster) DeleteTenant(ctx context.Context, id model.TenantID) error {
	if _, err := c.apply(ctx, command{Op: opDeleteTenant, TenantID: id}); err != nil {
		return fmt.Errorf("delete tenant: %w", err)
	}
	return nil
}

// CreateCameras registers cameras atomically: all of them or none (bulk import). Each is
// normalized with its tenant's retention and validated; the error of a refused request
// names the index and id of the first offending camera and wraps model.ErrInvalid,
// ErrNotFound (tenant), ErrExists (duplicate id, in the request or already registered)
// or ErrQuota. The cameras are returned as stored, password in clear.
func (c *Cluster) CreateCameras(ctx context.Context, cams []model.Camera) ([]model.Camera, error) {
	if len(cams) == 0 {
		return nil, fmt.Errorf("create cameras: %w", model.Invalid("cameras", "is empty"))
	}
	ts := now()
	out := make([]model.Camera, len(cams))
	stored := make([]storedCamera, len(cams))
	retention := map[model.TenantID]int{}
	for i, cam := range cams {
		r, ok := retention[cam.Tenant]
		if !ok {
			if t, err := c.Tenant(cam.Tenant); err == nil {
				r = t.RetentionDays
			}
			retention[cam.Tenant] = r
		}
		cam.Normalize(r)
		if err := cam.Validate(); err != nil {
			return nil, fmt.Errorf("create cameras: camera %d (%q): %w", i, cam.ID, err)
		}
		cam.CreatedAt, cam.UpdatedAt = ts, ts
		cam.Tags = append([]string(nil), cam.Tags...)
		sc, err := c.seal(cam)
		if err != nil {
			return nil, fmt.Errorf("create cameras: camera %d (%q): %w", i, cam.ID, err)
		}
		out[i], stored[i] = cam, sc
	}
	if _, err := c.apply(ctx, command{Op: opCreateCameras, Cameras: stored}); err != nil {
		return nil, fmt.Errorf("create cameras: %w", err)
	}
	return out, nil
}

// UpdateCamera replaces a camera's fields, keeping CreatedAt. An empty Password keeps the
// stored one (unless Username is empty too: then the camera has no credentials). An empty
// Tenant keeps the camera's tenant; another tenant is refused (model.ErrInvalid).
// model.ErrNotFound when the camera does not exist.
func (c *Cluster) UpdateCamera(ctx context.Context, cam model.Camera) (model.Camera, error) {
	if cam.Tenant == "" {
		if old, err := c.Camera(cam.ID); err == nil {
			cam.Tenant = old.Tenant
		}
	}
	r := 0
	if t, err := c.Tenant(cam.Tenant); err == nil {
		r = t.RetentionDays
	}
	cam.Normalize(r)
	if err := cam.Validate(); err != nil {
		return model.Camera{}, fmt.Errorf("update camera %q: %w", cam.ID, err)
	}
	cam.UpdatedAt = now()
	cam.Tags = append([]string(nil), cam.Tags...)
	sc, err := c.seal(cam)
	if err != nil {
		return model.Camera{}, fmt.Errorf("update camera %q: %w", cam.ID, err)
	}
	res, err := c.apply(ctx, command{Op: opUpdateCamera, Cameras: []storedCamera{sc}})
	if err != nil {
		return model.Camera{}, fmt.Errorf("update camera: %w", err)
	}
	sc, err = result[storedCamera](res)
	if err != nil {
		return model.Camera{}, err
	}
	return c.unseal(sc)
}

// DeleteCamera removes a camera. Its segments, outages and deletion records stay in the
// catalog until retention removes them; its assignment epoch moves on, so a former owner
// can no longer commit segments for it.
func (c *Cluster) DeleteCamera(ctx context.Context, id model.CameraID) error {
	if _, err := c.apply(ctx, command{Op: opDeleteCamera, CameraID: id}); err != nil {
		return fmt.Errorf("delete camera: %w", err)
	}
	return nil
}

// Assign makes node the owner of camera (an operator's decision; the leader's placement
// may move it later). When the owner changes the epoch becomes the previous one plus one
// and any handover under way is dropped; assigning the current owner again changes
// nothing. An empty node unassigns the camera (and also moves the epoch on). A
// decommissioned node is refused (model.ErrInvalid).
func (c *Cluster) Assign(ctx context.Context, camera model.CameraID, node model.NodeID) (model.Assignment, error) {
	cur, err := c.Assignment(camera)
	if err != nil {
		return model.Assignment{}, fmt.Errorf("assign camera %q to node %q: %w", camera, node, err)
	}
	ch := assignChange{Camera: camera, Force: true, Node: node, Next: cur.Next, Secondary: cur.Secondary}
	if cur.Node != node {
		ch.Next = ""
	}
	res, err := c.apply(ctx, command{Op: opSetAssignments, Changes: []assignChange{ch}, At: now()})
	if err != nil {
		return model.Assignment{}, fmt.Errorf("assign camera %q to node %q: %w", camera, node, err)
	}
	as, err := result[[]model.Assignment](res)
	if err != nil || len(as) != 1 {
		return model.Assignment{}, fmt.Errorf("assign camera %q: state machine answered %d assignments: %w", camera, len(as), err)
	}
	return as[0], nil
}

// CommitSegment records a segment in the catalog, as a compare-and-set on the camera's
// epoch: seg.Epoch must equal the camera's current assignment epoch, and seg.Node must
// record the camera at that epoch (its owner, its Next during a handover, or its
// Secondary), else model.ErrStaleEpoch and nothing changes (a camera without owner checks
// the epoch only). Committing the same segment ID again overwrites
// it (idempotent; used when a segment is sealed or moved).
func (c *Cluster) CommitSegment(ctx context.Context, seg model.Segment) error {
	if _, err := c.apply(ctx, command{Op: opCommitSegment, Segment: seg}); err != nil {
		return fmt.Errorf("commit segment: %w", err)
	}
	return nil
}

// DeleteSegments removes catalog entries and records one model.Deletion for each, with
// reason and the current time. Ids that are not in the catalog are skipped (deleting is
// idempotent, so a retried retention pass does no harm).
func (c *Cluster) DeleteSegments(ctx context.Context, ids []model.SegmentID, reason string) error {
	if len(ids) == 0 {
		return nil
	}
	if reason == "" {
		return fmt.Errorf("delete segments: %w", model.Invalid("reason", "is required (it is recorded with each deletion)"))
	}
	if _, err := c.apply(ctx, command{Op: opDeleteSegments, SegmentIDs: ids, Reason: reason, At: now()}); err != nil {
		return fmt.Errorf("delete segments: %w", err)
	}
	return nil
}

// RecordOutage inserts or replaces the outage keyed by (camera, start). An empty cause is
// recorded as model.GapUnknown.
func (c *Cluster) RecordOutage(ctx context.Context, o model.Outage) error {
	if o.Cause == "" {
		o.Cause = model.GapUnknown
	}
	if _, err := c.apply(ctx, command{Op: opRecordOutage, Outage: o}); err != nil {
		return fmt.Errorf("record outage: %w", err)
	}
	return nil
}

// result converts the state machine's answer, which is always T for a successful command.
func result[T any](res any) (T, error) {
	v, ok := res.(T)
	if !ok {
		var zero T
		return zero, fmt.Errorf("state machine answered %T, want %T", res, zero)
	}
	return v, nil
}

func (c *Cluster) seal(cam model.Camera) (storedCamera, error) {
	sealed, err := c.sealer.seal(cam.Password, string(cam.ID))
	if err != nil {
		return storedCamera{}, err
	}
	cam.Password = ""
	return storedCamera{Camera: cam, Secret: sealed}, nil
}

func (c *Cluster) unseal(sc storedCamera) (model.Camera, error) {
	p, err := c.sealer.open(sc.Secret, string(sc.ID))
	if err != nil {
		return model.Camera{}, fmt.Errorf("camera %q: %w: %w", sc.ID, err, model.ErrCorrupt)
	}
	cam := sc.Camera
	cam.Password = p
	return cam, nil
}

// ---- reads (local store) ----
//
// Reads see the local store, which holds every entry this node has applied. On the leader,
// after a write returned, they see that write. limit <= 0 means no limit.

// Tenant returns one tenant, or model.ErrNotFound.
func (c *Cluster) Tenant(id model.TenantID) (model.Tenant, error) {
	c.fsm.mu.RLock()
	defer c.fsm.mu.RUnlock()
	return getTenant(c.fsm.db, id)
}

// Tenants lists tenants with id > after, sorted by id.
func (c *Cluster) Tenants(after model.TenantID, limit int) ([]model.Tenant, error) {
	c.fsm.mu.RLock()
	defer c.fsm.mu.RUnlock()
	var out []model.Tenant
	err := scan(c.fsm.db, startAfter(prefixTenant, string(after)), prefixEnd(prefixTenant), func(_, v []byte) (bool, error) {
		t, err := decTenant(v)
		if err != nil {
			return false, err
		}
		out = append(out, t)
		return limit <= 0 || len(out) < limit, nil
	})
	return out, err
}

// Camera returns one camera with its password in clear, or model.ErrNotFound.
func (c *Cluster) Camera(id model.CameraID) (model.Camera, error) {
	c.fsm.mu.RLock()
	sc, err := getCamera(c.fsm.db, id)
	c.fsm.mu.RUnlock()
	if err != nil {
		return model.Camera{}, err
	}
	return c.unseal(sc)
}

// Cameras lists the cameras of tenant (all tenants when empty) with id > after, sorted by
// id, passwords in clear.
func (c *Cluster) Cameras(tenant model.TenantID, after model.CameraID, limit int) ([]model.Camera, error) {
	c.fsm.mu.RLock()
	defer c.fsm.mu.RUnlock()
	var out []model.Camera
	add := func(sc storedCamera) (bool, error) {
		cam, err := c.unseal(sc)
		if err != nil {
			return false, err
		}
		out = append(out, cam)
		return limit <= 0 || len(out) < limit, nil
	}
	if tenant == "" {
		err := scan(c.fsm.db, startAfter(prefixCamera, string(after)), prefixEnd(prefixCamera), func(_, v []byte) (bool, error) {
			sc, err := decCamera(v)
			if err != nil {
				return false, err
			}
			return add(sc)
		})
		return out, err
	}
	p := tenantCamPrefix(tenant)
	err := scan(c.fsm.db, startAfter(p, string(after)), prefixEnd(p), func(k, _ []byte) (bool, error) {
		sc, err := getCamera(c.fsm.db, model.CameraID(k[len(p):]))
		if err != nil {
			return false, err
		}
		return add(sc)
	})
	return out, err
}

// Assignment returns the camera's owner and epoch (Node empty and Epoch 0 when it was
// never assigned), or model.ErrNotFound when the camera does not exist.
func (c *Cluster) Assignment(camera model.CameraID) (model.Assignment, error) {
	c.fsm.mu.RLock()
	defer c.fsm.mu.RUnlock()
	if _, err := getCamera(c.fsm.db, camera); err != nil {
		return model.Assignment{}, err
	}
	a, _, err := getAssignment(c.fsm.db, camera)
	return a, err
}

// Segments returns the camera's segments that overlap [from, to), sorted by start (then
// id). It is a range scan over the camera's segments starting in
// [from - longest segment, to).
func (c *Cluster) Segments(camera model.CameraID, from, to time.Time) ([]model.Segment, error) {
	var out []model.Segment
	var cache strCache
	begin := func(maxDur time.Duration) {
		// size the result once: a day of 2-second segments is 43,200 entries, and
		// growing a slice to that size copies it many times over
		out = make([]model.Segment, 0, segmentsEstimate(maxDur, from, to))
	}
	err := c.fsm.scanTimes(prefixSegment, camera, from, to, begin, func(v []byte) error {
		d := decoder{b: v}
		if d.ver = d.u8(); d.ver < minValueVersion || d.ver > valueVersion {
			return fmt.Errorf("%w segment: unknown value version %d (%w)", errDecode, d.ver, model.ErrCorrupt)
		}
		s := d.storedSegmentCached(&cache)
		if err := d.end(); err != nil {
			return fmt.Errorf("segment: %w (%w)", err, model.ErrCorrupt)
		}
		if s.Overlaps(from, to) {
			out = append(out, s)
		}
		return nil
	})
	return out, err
}

// Outages returns the camera's outages that overlap [from, to) (an ongoing outage, End
// zero, overlaps everything after its start), sorted by start.
func (c *Cluster) Outages(camera model.CameraID, from, to time.Time) ([]model.Outage, error) {
	var out []model.Outage
	err := c.fsm.scanTimes(prefixOutage, camera, from, to, nil, func(v []byte) error {
		o, err := decOutage(v)
		if err != nil {
			return err
		}
		if o.Start.Before(to) && (o.End.IsZero() || o.End.After(from)) {
			out = append(out, o)
		}
		return nil
	})
	return out, err
}

// Deletions returns the deletion records of the camera's footage that overlapped
// [from, to) (the range is on the deleted footage's time, not on when it was deleted),
// sorted by the footage's start.
func (c *Cluster) Deletions(camera model.CameraID, from, to time.Time) ([]model.Deletion, error) {
	var out []model.Deletion
	err := c.fsm.scanTimes(prefixDeletion, camera, from, to, func(time.Duration) {}, func(v []byte) error {
		x, err := decDeletion(v)
		if err != nil {
			return err
		}
		if x.Start.Before(to) && x.End.After(from) {
			out = append(out, x)
		}
		return nil
	})
	return out, err
}

var (
	minQueryTime = time.Unix(0, 0)
	maxQueryTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

func clampTime(t time.Time) time.Time {
	if t.Before(minQueryTime) {
		return minQueryTime
	}
	if t.After(maxQueryTime) {
		return maxQueryTime
	}
	return t
}

// scanTimes visits the values of a camera's time-keyed table whose start is before to.
// With a begin callback, the scan starts at from minus the camera's longest segment (every
// entry of the table lasts at most that long), and begin is told that duration before the
// first value; without, the scan starts at the camera's first entry.
func (f *fsm) scanTimes(prefix []byte, camera model.CameraID, from, to time.Time, begin func(maxDur time.Duration), fn func(v []byte) error) error {
	if !to.After(from) {
		return nil
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	lower := cameraPrefix(prefix, camera)
	if begin != nil {
		maxDur, err := getSegMax(f.db, camera)
		if err != nil {
			return err
		}
		begin(maxDur)
		lower = timeKey(prefix, camera, clampTime(clampTime(from).Add(-maxDur)))
	}
	upper := timeKey(prefix, camera, clampTime(to))
	return scan(f.db, lower, upper, func(_, v []byte) (bool, error) {
		return true, fn(v)
	})
}

// segmentsEstimate guesses how many segments overlap [from, to) from the camera's
// longest segment (exact for cameras whose segments all last the same), capped so a wide
// query does not reserve more than a few MiB up front.
func segmentsEstimate(maxDur time.Duration, from, to time.Time) int {
	if maxDur <= 0 {
		return 16
	}
	n := int64(clampTime(to).Sub(clampTime(from))/maxDur) + 1
	return int(min(max(n, 16), 1<<16))
}

// startAfter is the first key of a table after id (the whole table when id is empty).
func startAfter(prefix []byte, id string) []byte {
	if id == "" {
		return prefix
	}
	return afterKey(prefix, id)
}

// scan visits [lower, upper) in key order until fn returns false or an error.
func scan(r pebble.Reader, lower, upper []byte, fn func(k, v []byte) (bool, error)) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return err
		}
		more, err := fn(it.Key(), v)
		if err != nil {
			_ = it.Close()
			return err
		}
		if !more {
			break
		}
	}
	return errors.Join(it.Error(), it.Close())
}

// assignedCounts counts the cameras assigned to each node.
func (f *fsm) assignedCounts() (map[model.NodeID]int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	counts := map[model.NodeID]int{}
	err := scan(f.db, prefixAssign, prefixEnd(prefixAssign), func(_, v []byte) (bool, error) {
		a, err := decAssignment(v)
		if err != nil {
			return false, err
		}
		if a.Node != "" {
			counts[a.Node]++
		}
		return true, nil
	})
	return counts, err
}
