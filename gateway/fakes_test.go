package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// fakeCatalog is an in-memory Catalog.
type fakeCatalog struct {
	mu      sync.Mutex
	tenants map[model.TenantID]model.Tenant
	cams    map[model.CameraID]model.Camera
	writes  int
	now     time.Time
}

func newFakeCatalog() *fakeCatalog {
	return &fakeCatalog{tenants: map[model.TenantID]model.Tenant{}, cams: map[model.CameraID]model.Camera{},
		now: time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)}
}

func (f *fakeCatalog) CreateTenant(ctx context.Context, t model.Tenant) (model.Tenant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tenants[t.ID]; ok {
		return model.Tenant{}, fmt.Errorf("tenant %q: %w", t.ID, model.ErrExists)
	}
	t.CreatedAt, t.UpdatedAt = f.now, f.now
	f.tenants[t.ID] = t
	f.writes++
	return t, nil
}

func (f *fakeCatalog) UpdateTenant(ctx context.Context, t model.Tenant) (model.Tenant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	old, ok := f.tenants[t.ID]
	if !ok {
		return model.Tenant{}, fmt.Errorf("tenant %q: %w", t.ID, model.ErrNotFound)
	}
	t.CreatedAt, t.UpdatedAt = old.CreatedAt, f.now
	f.tenants[t.ID] = t
	f.writes++
	return t, nil
}

func (f *fakeCatalog) DeleteTenant(ctx context.Context, id model.TenantID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tenants[id]; !ok {
		return fmt.Errorf("tenant %q: %w", id, model.ErrNotFound)
	}
	for _, c := range f.cams {
		if c.Tenant == id {
			return fmt.Errorf("tenant %q has cameras: %w", id, model.ErrInUse)
		}
	}
	delete(f.tenants, id)
	f.writes++
	return nil
}

func (f *fakeCatalog) Tenant(id model.TenantID) (model.Tenant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tenants[id]
	if !ok {
		return model.Tenant{}, fmt.Errorf("tenant %q: %w", id, model.ErrNotFound)
	}
	return t, nil
}

func (f *fakeCatalog) Tenants(after model.TenantID, limit int) ([]model.Tenant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []model.Tenant
	for _, t := range f.tenants {
		if t.ID > after {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (f *fakeCatalog) CreateCameras(ctx context.Context, cams []model.Camera) ([]model.Camera, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cams {
		if _, ok := f.cams[c.ID]; ok {
			return nil, fmt.Errorf("camera %q: %w", c.ID, model.ErrExists)
		}
	}
	out := make([]model.Camera, len(cams))
	for i, c := range cams {
		c.CreatedAt, c.UpdatedAt = f.now, f.now
		f.cams[c.ID] = c
		out[i] = c
	}
	f.writes++
	return out, nil
}

func (f *fakeCatalog) UpdateCamera(ctx context.Context, c model.Camera) (model.Camera, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	old, ok := f.cams[c.ID]
	if !ok {
		return model.Camera{}, fmt.Errorf("camera %q: %w", c.ID, model.ErrNotFound)
	}
	c.CreatedAt, c.UpdatedAt = old.CreatedAt, f.now
	f.cams[c.ID] = c
	f.writes++
	return c, nil
}

func (f *fakeCatalog) DeleteCamera(ctx context.Context, id model.CameraID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.cams[id]; !ok {
		return fmt.Errorf("camera %q: %w", id, model.ErrNotFound)
	}
	delete(f.cams, id)
	f.writes++
	return nil
}

func (f *fakeCatalog) Camera(id model.CameraID) (model.Camera, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.cams[id]
	if !ok {
		return model.Camera{}, fmt.Errorf("camera %q: %w", id, model.ErrNotFound)
	}
	return c, nil
}

func (f *fakeCatalog) Cameras(tenant model.TenantID, after model.CameraID, limit int) ([]model.Camera, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []model.Camera
	for _, c := range f.cams {
		if c.ID > after && (tenant == "" || c.Tenant == tenant) {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// fakeSegment is a segment's bytes in memory.
type fakeSegment struct {
	seg   model.Segment
	init  []byte
	frags []model.FragmentInfo
	data  [][]byte // fragment bytes, parallel to frags
}

// fakeRecordings is an in-memory Recordings; segments are sorted by Start and found by
// binary search, as a real catalog's range scan would.
type fakeRecordings struct {
	segs      []*fakeSegment
	outages   []model.Outage
	deletions []model.Deletion
	opened    int
}

func (f *fakeRecordings) Segments(camera model.CameraID, from, to time.Time) ([]model.Segment, error) {
	i := sort.Search(len(f.segs), func(i int) bool { return f.segs[i].seg.End.After(from) })
	var out []model.Segment
	for ; i < len(f.segs) && f.segs[i].seg.Start.Before(to); i++ {
		if f.segs[i].seg.Camera == camera {
			out = append(out, f.segs[i].seg)
		}
	}
	return out, nil
}

func (f *fakeRecordings) Outages(camera model.CameraID, from, to time.Time) ([]model.Outage, error) {
	return f.outages, nil
}

func (f *fakeRecordings) Deletions(camera model.CameraID, from, to time.Time) ([]model.Deletion, error) {
	return f.deletions, nil
}

func (f *fakeRecordings) OpenSegment(ctx context.Context, seg model.Segment) (SegmentReader, error) {
	for _, s := range f.segs {
		if s.seg.ID == seg.ID {
			f.opened++
			return &fakeReader{s}, nil
		}
	}
	return nil, fmt.Errorf("segment %s: %w", seg.ID, model.ErrNotFound)
}

type fakeReader struct{ s *fakeSegment }

func (r *fakeReader) Init() []byte                    { return r.s.init }
func (r *fakeReader) Fragments() []model.FragmentInfo { return r.s.frags }
func (r *fakeReader) Close() error                    { return nil }
func (r *fakeReader) ReadFragment(fi model.FragmentInfo, dst []byte) ([]byte, error) {
	i := sort.Search(len(r.s.frags), func(i int) bool { return !r.s.frags[i].Start.Before(fi.Start) })
	if i == len(r.s.frags) || !r.s.frags[i].Start.Equal(fi.Start) {
		return nil, fmt.Errorf("fragment at %s: %w", fi.Start, model.ErrNotFound)
	}
	return append(dst[:0], r.s.data[i]...), nil
}

type fakeHealth map[model.CameraID]model.CameraHealth

func (f fakeHealth) CameraHealth(id model.CameraID) (model.CameraHealth, bool) {
	h, ok := f[id]
	return h, ok
}

type fakeCluster []model.NodeStatus

func (f fakeCluster) Status() []model.NodeStatus { return f }

func (f fakeCluster) setState(id model.NodeID, state string) error {
	for i := range f {
		if f[i].ID == id {
			if state == model.NodeDecommissioned && f[i].Cameras > 0 {
				return fmt.Errorf("node %s still records %d cameras: drain it first: %w", id, f[i].Cameras, model.ErrInUse)
			}
			f[i].State = state
			return nil
		}
	}
	return fmt.Errorf("node %s: %w", id, model.ErrNotFound)
}

func (f fakeCluster) Drain(_ context.Context, id model.NodeID) error {
	return f.setState(id, model.NodeDraining)
}

func (f fakeCluster) Activate(_ context.Context, id model.NodeID) error {
	return f.setState(id, model.NodeActive)
}

func (f fakeCluster) Decommission(_ context.Context, id model.NodeID) error {
	return f.setState(id, model.NodeDecommissioned)
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startGateway runs a gateway on 127.0.0.1:0 with the given fakes.
func startGateway(t testing.TB, cat *fakeCatalog, rec *fakeRecordings, mod func(*Config)) *Gateway {
	t.Helper()
	cfg := DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Catalog, cfg.Recordings = cat, rec
	cfg.Logger = testLogger(t)
	cfg.Version = "test"
	if mod != nil {
		mod(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// fakeHolds keeps holds in memory, like the catalog would.
type fakeHolds struct{ list []model.Hold }

func (f *fakeHolds) CreateHold(_ context.Context, h model.Hold) (model.Hold, error) {
	for _, o := range f.list {
		if o.ID == h.ID {
			return model.Hold{}, fmt.Errorf("hold %s: %w", h.ID, model.ErrExists)
		}
	}
	f.list = append(f.list, h)
	return h, nil
}

func (f *fakeHolds) ReleaseHold(_ context.Context, id model.HoldID, by string) (model.Hold, error) {
	for i := range f.list {
		if f.list[i].ID == id {
			f.list[i].ReleasedAt, f.list[i].ReleasedBy = time.Date(2025, 3, 2, 0, 0, 0, 0, time.UTC), by
			return f.list[i], nil
		}
	}
	return model.Hold{}, fmt.Errorf("hold %s: %w", id, model.ErrNotFound)
}

func (f *fakeHolds) Holds(camera model.CameraID, includeReleased bool) ([]model.Hold, error) {
	var out []model.Hold
	for _, h := range f.list {
		if (camera == "" || slices.Contains(h.Cameras, camera)) && (includeReleased || h.ReleasedAt.IsZero()) {
			out = append(out, h)
		}
	}
	return out, nil
}

// fakeProtection answers a fixed protection status.
type fakeProtection ProtectionStatus

func (f fakeProtection) ProtectionStatus(context.Context) ProtectionStatus {
	return ProtectionStatus(f)
}
