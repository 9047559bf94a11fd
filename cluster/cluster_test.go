package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/vigie-vms/vigie/model"
)

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	cfg := DefaultConfig()
	cfg.RaftAddr = "nohost"
	cfg.ElectionTimeout = 0
	cfg.SnapshotRetain = 0
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted an empty config")
	}
	for _, want := range []string{"NodeID: is required", "Dir: is required", `RaftAddr: "nohost" is not host:port`,
		"SecretKey: must be 32 bytes (AES-256), got 0", "ElectionTimeout: must be positive", "SnapshotRetain: must be at least 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}

	good := testConfig(t, t.TempDir())
	if err := good.Validate(); err != nil {
		t.Fatalf("test config invalid: %v", err)
	}
	good.LeaderLeaseTimeout = time.Second
	if err := good.Validate(); err == nil || !strings.Contains(err.Error(), "LeaderLeaseTimeout") {
		t.Fatalf("lease > heartbeat: got %v", err)
	}
}

func TestTenants(t *testing.T) {
	c := newTestCluster(t)
	ctx := ctxT(t)

	tn, err := c.CreateTenant(ctx, model.Tenant{ID: "lyon-3", Name: "Lyon 3e", CameraQuota: 10})
	if err != nil {
		t.Fatal(err)
	}
	if tn.RetentionDays != model.MaxRetentionDays || tn.CreatedAt.IsZero() || !tn.CreatedAt.Equal(tn.UpdatedAt) {
		t.Fatalf("created tenant not normalized/timestamped: %+v", tn)
	}
	if _, err := c.CreateTenant(ctx, model.Tenant{ID: "lyon-3", Name: "again"}); !errors.Is(err, model.ErrExists) {
		t.Fatalf("duplicate tenant: got %v, want ErrExists", err)
	}
	_, err = c.CreateTenant(ctx, model.Tenant{ID: "x", Name: "X", RetentionDays: 90})
	var fe *model.FieldError
	if !errors.As(err, &fe) || fe.Field != "retention_days" || !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("retention 90: got %v, want a FieldError on retention_days", err)
	}

	got, err := c.Tenant("lyon-3")
	if err != nil || got.Name != "Lyon 3e" || !got.CreatedAt.Equal(tn.CreatedAt) {
		t.Fatalf("Tenant: %+v, %v", got, err)
	}
	if _, err := c.Tenant("nope"); !errors.Is(err, model.ErrNotFound) || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("missing tenant: %v", err)
	}

	for _, id := range []model.TenantID{"a", "c", "b"} {
		mustTenant(t, c, id, 0)
	}
	ids := func(ts []model.Tenant) (out []string) {
		for _, t := range ts {
			out = append(out, string(t.ID))
		}
		return out
	}
	all, _ := c.Tenants("", 0)
	if !slices.Equal(ids(all), []string{"a", "b", "c", "lyon-3"}) {
		t.Fatalf("Tenants: %v", ids(all))
	}
	page, _ := c.Tenants("a", 2)
	if !slices.Equal(ids(page), []string{"b", "c"}) {
		t.Fatalf("Tenants(after a, 2): %v", ids(page))
	}

	time.Sleep(2 * time.Millisecond)
	up, err := c.UpdateTenant(ctx, model.Tenant{ID: "lyon-3", Name: "Lyon 3", RetentionDays: 7})
	if err != nil {
		t.Fatal(err)
	}
	if !up.CreatedAt.Equal(tn.CreatedAt) || !up.UpdatedAt.After(tn.UpdatedAt) || up.Name != "Lyon 3" {
		t.Fatalf("update lost CreatedAt or UpdatedAt: %+v (was %+v)", up, tn)
	}
	if _, err := c.UpdateTenant(ctx, model.Tenant{ID: "ghost", Name: "G"}); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}

	mustCameras(t, c, cam("cam-1", "lyon-3"))
	if err := c.DeleteTenant(ctx, "lyon-3"); !errors.Is(err, model.ErrInUse) {
		t.Fatalf("delete tenant with cameras: %v", err)
	}
	if err := c.DeleteCamera(ctx, "cam-1"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteTenant(ctx, "lyon-3"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Tenant("lyon-3"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("deleted tenant still there: %v", err)
	}
	if err := c.DeleteTenant(ctx, "lyon-3"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func TestCameras(t *testing.T) {
	c := newTestCluster(t)
	ctx := ctxT(t)
	mustTenant(t, c, "villeurbanne", 0)
	mustTenant(t, c, "bron", 0)

	push := model.Camera{ID: "push-1", Tenant: "bron"}
	created := mustCameras(t, c, cam("v-2", "villeurbanne"), cam("v-1", "villeurbanne"), push)
	if created[0].Password != "pw-v-2" || created[0].RetentionDays != 14 || created[2].Ingest != model.IngestPush || created[0].CreatedAt.IsZero() {
		t.Fatalf("created cameras not normalized: %+v", created)
	}

	got, err := c.Camera("v-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Password != "pw-v-1" || got.Username != "admin" || got.URL != "rtsp://10.0.0.1:554/v-1" || got.Tenant != "villeurbanne" {
		t.Fatalf("Camera: %+v", got)
	}

	ids := func(cs []model.Camera) (out []string) {
		for _, c := range cs {
			out = append(out, string(c.ID))
		}
		return out
	}
	all, _ := c.Cameras("", "", 0)
	if !slices.Equal(ids(all), []string{"push-1", "v-1", "v-2"}) {
		t.Fatalf("Cameras(all): %v", ids(all))
	}
	vb, _ := c.Cameras("villeurbanne", "", 0)
	if !slices.Equal(ids(vb), []string{"v-1", "v-2"}) || vb[1].Password != "pw-v-2" {
		t.Fatalf("Cameras(villeurbanne): %v", ids(vb))
	}
	vb, _ = c.Cameras("villeurbanne", "v-1", 5)
	if !slices.Equal(ids(vb), []string{"v-2"}) {
		t.Fatalf("Cameras(villeurbanne, after v-1): %v", ids(vb))
	}

	// update: empty password keeps the stored one; CreatedAt kept; empty tenant kept
	upd := got
	upd.Tenant = ""
	upd.Password = ""
	upd.Name = "Place Lazare-Goujon"
	u, err := c.UpdateCamera(ctx, upd)
	if err != nil {
		t.Fatal(err)
	}
	if u.Password != "pw-v-1" || u.Name != "Place Lazare-Goujon" || !u.CreatedAt.Equal(got.CreatedAt) || u.Tenant != "villeurbanne" {
		t.Fatalf("UpdateCamera: %+v", u)
	}
	upd.Password = "new-secret"
	if u, err = c.UpdateCamera(ctx, upd); err != nil || u.Password != "new-secret" {
		t.Fatalf("password change: %+v, %v", u, err)
	}
	if again, _ := c.Camera("v-1"); again.Password != "new-secret" {
		t.Fatalf("stored password after change: %q", again.Password)
	}
	upd.Tenant = "bron"
	var fe *model.FieldError
	if _, err := c.UpdateCamera(ctx, upd); !errors.As(err, &fe) || fe.Field != "tenant" {
		t.Fatalf("tenant change: %v", err)
	}
	if _, err := c.UpdateCamera(ctx, cam("ghost", "bron")); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("update missing camera: %v", err)
	}

	if err := c.DeleteCamera(ctx, "v-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Camera("v-2"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("deleted camera: %v", err)
	}
	if err := c.DeleteCamera(ctx, "v-2"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	vb, _ = c.Cameras("villeurbanne", "", 0)
	if !slices.Equal(ids(vb), []string{"v-1"}) {
		t.Fatalf("tenant index after delete: %v", ids(vb))
	}
}

func TestCreateCamerasIsAtomic(t *testing.T) {
	c := newTestCluster(t)
	ctx := ctxT(t)
	mustTenant(t, c, "lyon", 0)
	mustCameras(t, c, cam("existing", "lyon"))

	bad := cam("c-2", "lyon")
	bad.URL = "http://nope"
	cases := []struct {
		name   string
		cams   []model.Camera
		is     error
		naming string
	}{
		{"invalid url", []model.Camera{cam("c-0", "lyon"), cam("c-1", "lyon"), bad}, model.ErrInvalid, `camera 2 ("c-2"): url:`},
		{"unknown tenant", []model.Camera{cam("c-0", "lyon"), cam("c-1", "ghost")}, model.ErrNotFound, `camera 1 ("c-1"): tenant "ghost": not found`},
		{"duplicate in request", []model.Camera{cam("c-0", "lyon"), cam("c-1", "lyon"), cam("c-0", "lyon")}, model.ErrExists, `camera 2 ("c-0"): same id as camera 0`},
		{"already registered", []model.Camera{cam("c-0", "lyon"), cam("existing", "lyon")}, model.ErrExists, `camera 1 ("existing"): already exists`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.CreateCameras(ctx, tc.cams)
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.naming) {
				t.Fatalf("got %v\nwant %v naming %q", err, tc.is, tc.naming)
			}
			all, _ := c.Cameras("", "", 0)
			if len(all) != 1 || all[0].ID != "existing" {
				t.Fatalf("a refused import left cameras behind: %d cameras", len(all))
			}
		})
	}
}

func TestQuota(t *testing.T) {
	c := newTestCluster(t)
	ctx := ctxT(t)
	mustTenant(t, c, "small", 2)
	mustTenant(t, c, "big", 0)

	_, err := c.CreateCameras(ctx, []model.Camera{cam("s1", "small"), cam("b1", "big"), cam("s2", "small"), cam("s3", "small")})
	if !errors.Is(err, model.ErrQuota) || !strings.Contains(err.Error(), `camera 3 ("s3"): tenant "small"`) {
		t.Fatalf("over quota: %v", err)
	}
	if all, _ := c.Cameras("", "", 0); len(all) != 0 {
		t.Fatalf("over-quota import created %d cameras", len(all))
	}
	mustCameras(t, c, cam("s1", "small"), cam("s2", "small"))
	if _, err := c.CreateCameras(ctx, []model.Camera{cam("s3", "small")}); !errors.Is(err, model.ErrQuota) {
		t.Fatalf("third camera: %v", err)
	}
	// deleting one frees a slot
	if err := c.DeleteCamera(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	mustCameras(t, c, cam("s3", "small"))
}

func TestAssignAndEpochFencing(t *testing.T) {
	c := newTestCluster(t)
	ctx := ctxT(t)
	mustTenant(t, c, "lyon", 0)
	mustCameras(t, c, cam("cam", "lyon"))

	if a, err := c.Assignment("cam"); err != nil || a.Epoch != 0 || a.Node != "" {
		t.Fatalf("unassigned: %+v %v", a, err)
	}
	a, err := c.Assign(ctx, "cam", "n1")
	if err != nil || a.Epoch != 1 || a.Node != "n1" {
		t.Fatalf("assign n1: %+v %v", a, err)
	}
	if a, _ = c.Assign(ctx, "cam", "n1"); a.Epoch != 1 {
		t.Fatalf("same node again changed the epoch: %+v", a)
	}
	if a, _ = c.Assign(ctx, "cam", "n2"); a.Epoch != 2 || a.Node != "n2" {
		t.Fatalf("assign n2: %+v", a)
	}
	if _, err := c.Assign(ctx, "ghost", "n1"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("assign missing camera: %v", err)
	}

	// the old owner (epoch 1) is fenced off
	err = c.CommitSegment(ctx, seg("s-old", "cam", 1, t0, 2*time.Second))
	if !errors.Is(err, model.ErrStaleEpoch) || !strings.Contains(err.Error(), "epoch 1, the camera's epoch is 2") {
		t.Fatalf("stale commit: %v", err)
	}
	if got, _ := c.Segments("cam", t0.Add(-time.Hour), t0.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("stale commit left %d segments", len(got))
	}
	// the current epoch from a node that does not record the camera is fenced too
	err = c.CommitSegment(ctx, seg("s-other", "cam", 2, t0, 2*time.Second)) // from n1
	if !errors.Is(err, model.ErrStaleEpoch) || !strings.Contains(err.Error(), `comes from node "n1"`) {
		t.Fatalf("commit from a node that is not the owner: %v", err)
	}
	s := seg("s-new", "cam", 2, t0, 2*time.Second)
	s.Node = "n2"
	if err := c.CommitSegment(ctx, s); err != nil {
		t.Fatal(err)
	}
	// idempotent re-commit: same id overwrites (here: sealed with more bytes, later end)
	s.Bytes, s.End = 5000, t0.Add(3*time.Second)
	if err := c.CommitSegment(ctx, s); err != nil {
		t.Fatal(err)
	}
	got, _ := c.Segments("cam", t0, t0.Add(time.Hour))
	if len(got) != 1 || got[0].Bytes != 5000 || !got[0].End.Equal(s.End) {
		t.Fatalf("re-commit: %+v", got)
	}
	if err := c.CommitSegment(ctx, seg("s-x", "ghost", 0, t0, time.Second)); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("segment of unknown camera: %v", err)
	}
	var fe *model.FieldError
	if err := c.CommitSegment(ctx, seg("s-y", "cam", 2, t0, -time.Second)); !errors.As(err, &fe) || fe.Field != "end" {
		t.Fatalf("end before start: %v", err)
	}

	// deleting the camera moves the epoch on: a re-created camera never reuses epoch 2
	if err := c.DeleteCamera(ctx, "cam"); err != nil {
		t.Fatal(err)
	}
	if err := c.CommitSegment(ctx, seg("s-late", "cam", 2, t0.Add(time.Minute), time.Second)); !errors.Is(err, model.ErrStaleEpoch) {
		t.Fatalf("commit after delete: %v", err)
	}
	mustCameras(t, c, cam("cam", "lyon"))
	if a, _ = c.Assign(ctx, "cam", "n2"); a.Epoch != 4 {
		t.Fatalf("epoch after delete+recreate+assign: %+v, want 4", a)
	}
	// the deleted camera's segments stay until retention
	if got, _ := c.Segments("cam", t0, t0.Add(time.Hour)); len(got) != 1 {
		t.Fatalf("segments after camera delete: %d", len(got))
	}
}

func TestCatalogRanges(t *testing.T) {
	c := newTestCluster(t)
	ctx := ctxT(t)
	mustTenant(t, c, "lyon", 0)
	mustCameras(t, c, cam("cam", "lyon"), cam("other", "lyon"))
	a, _ := c.Assign(ctx, "cam", "n1")
	b, _ := c.Assign(ctx, "other", "n1")

	// 10-minute segments every 10 minutes for 2 hours, plus one 1-hour segment early
	for i := 0; i < 12; i++ {
		if err := c.CommitSegment(ctx, seg(fmt.Sprintf("s%02d", i), "cam", a.Epoch, t0.Add(time.Duration(i)*10*time.Minute), 10*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.CommitSegment(ctx, seg("long", "cam", a.Epoch, t0.Add(-30*time.Minute), time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := c.CommitSegment(ctx, seg("o1", "other", b.Epoch, t0, time.Hour)); err != nil {
		t.Fatal(err)
	}
	ids := func(ss []model.Segment) (out []string) {
		for _, s := range ss {
			out = append(out, string(s.ID))
		}
		return out
	}
	// [00:25, 00:45): s02 (20-30), s03, s04 (40-50) and "long" (-30..30) which starts well before from
	got, err := c.Segments("cam", t0.Add(25*time.Minute), t0.Add(45*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"long", "s02", "s03", "s04"}; !slices.Equal(ids(got), want) {
		t.Fatalf("Segments: %v, want %v", ids(got), want)
	}
	// end is exclusive, start inclusive: [00:30, 00:40) is exactly s03
	got, _ = c.Segments("cam", t0.Add(30*time.Minute), t0.Add(40*time.Minute))
	if !slices.Equal(ids(got), []string{"s03"}) {
		t.Fatalf("Segments exact: %v", ids(got))
	}
	if got[0].Epoch != a.Epoch || got[0].Checksum != 0xdeadbeef || !got[0].Sealed || got[0].CodecHash != "h264-abc" || got[0].Node != "n1" {
		t.Fatalf("segment fields lost: %+v", got[0])
	}
	if got, _ := c.Segments("cam", time.Time{}, t0.Add(1000*time.Hour)); len(got) != 13 {
		t.Fatalf("open range: %d segments", len(got))
	}

	// outages: a closed one and an ongoing one
	if err := c.RecordOutage(ctx, model.Outage{Camera: "cam", Start: t0.Add(2 * time.Hour), End: t0.Add(2*time.Hour + 5*time.Minute), Cause: model.GapCameraUnreachable}); err != nil {
		t.Fatal(err)
	}
	if err := c.RecordOutage(ctx, model.Outage{Camera: "cam", Start: t0.Add(3 * time.Hour), Detail: "connection refused"}); err != nil {
		t.Fatal(err)
	}
	outs, _ := c.Outages("cam", t0.Add(2*time.Hour+time.Minute), t0.Add(10*time.Hour))
	if len(outs) != 2 || outs[0].Cause != model.GapCameraUnreachable || outs[1].Cause != model.GapUnknown || !outs[1].End.IsZero() {
		t.Fatalf("Outages: %+v", outs)
	}
	// upsert by (camera, start): closing the ongoing outage
	if err := c.RecordOutage(ctx, model.Outage{Camera: "cam", Start: t0.Add(3 * time.Hour), End: t0.Add(4 * time.Hour), Cause: model.GapCameraUnreachable}); err != nil {
		t.Fatal(err)
	}
	outs, _ = c.Outages("cam", t0.Add(5*time.Hour), t0.Add(10*time.Hour))
	if len(outs) != 0 {
		t.Fatalf("closed outage still overlaps later range: %+v", outs)
	}
	outs, _ = c.Outages("cam", t0, t0.Add(10*time.Hour))
	if len(outs) != 2 || !outs[1].End.Equal(t0.Add(4*time.Hour)) {
		t.Fatalf("upsert: %+v", outs)
	}
	if err := c.RecordOutage(ctx, model.Outage{Camera: "ghost", Start: t0}); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("outage of unknown camera: %v", err)
	}

	// deletions
	if err := c.DeleteSegments(ctx, []model.SegmentID{"s00", "s01", "no-such"}, "retention"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSegments(ctx, []model.SegmentID{"s00"}, "retention"); err != nil {
		t.Fatalf("deleting again: %v", err)
	}
	got, _ = c.Segments("cam", t0, t0.Add(20*time.Minute))
	if !slices.Equal(ids(got), []string{"long"}) {
		t.Fatalf("after delete: %v", ids(got))
	}
	dels, _ := c.Deletions("cam", t0, t0.Add(time.Hour))
	if len(dels) != 2 || dels[0].Segment != "s00" || dels[1].Segment != "s01" || dels[0].Reason != "retention" ||
		dels[0].At.IsZero() || dels[0].Bytes != 1000 || !dels[0].End.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("Deletions: %+v", dels)
	}
	if dels, _ := c.Deletions("cam", t0.Add(20*time.Minute), t0.Add(time.Hour)); len(dels) != 0 {
		t.Fatalf("Deletions outside range: %+v", dels)
	}
	if err := c.DeleteSegments(ctx, []model.SegmentID{"s05"}, ""); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("delete without reason: %v", err)
	}
	// other camera untouched
	if got, _ := c.Segments("other", t0, t0.Add(time.Hour)); len(got) != 1 {
		t.Fatalf("other camera: %v", ids(got))
	}
}

func TestChangesSignalled(t *testing.T) {
	c := newTestCluster(t)
	ctx := ctxT(t)
	drain := func() {
		select {
		case <-c.Changes():
		default:
		}
	}
	drain()
	mustTenant(t, c, "lyon", 0)
	select {
	case <-c.Changes():
		t.Fatal("a tenant-only write signalled a camera change")
	default:
	}
	mustCameras(t, c, cam("a", "lyon"))
	select {
	case <-c.Changes():
	case <-time.After(5 * time.Second):
		t.Fatal("no change signal after CreateCameras")
	}
	drain()
	if _, err := c.Assign(ctx, "a", "n1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Changes():
	case <-time.After(5 * time.Second):
		t.Fatal("no change signal after Assign")
	}
}

func TestStatusAndTCPTransport(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Transport = nil
	cfg.RaftAddr = "127.0.0.1:0"
	c := openTest(t, cfg)
	if !c.IsLeader() {
		t.Fatal("single bootstrapped node is not leader")
	}
	mustTenant(t, c, "lyon", 0)
	mustCameras(t, c, cam("a", "lyon"), cam("b", "lyon"))
	_, _ = c.Assign(ctxT(t), "a", "n1")
	st := c.Status()
	if len(st) != 1 || st[0].ID != "n1" || st[0].Role != "leader" || st[0].State != model.NodeActive || st[0].Cameras != 1 ||
		!strings.HasPrefix(st[0].RaftAddr, "127.0.0.1:") || strings.HasSuffix(st[0].RaftAddr, ":0") {
		t.Fatalf("Status: %+v", st)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestWriteWithoutLeaderIsNotLeader(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Bootstrap = false
	cfg.MemberTransport = (&memberlist.MockNetwork{}).NewTransport("n1")
	cfg.Seeds = []string{"127.0.0.1:9"} // nobody: the node waits to be added
	c, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.CreateTenant(ctxT(t), model.Tenant{ID: "lyon", Name: "Lyon"})
	if !errors.Is(err, model.ErrNotLeader) {
		t.Fatalf("write on a node without cluster: %v", err)
	}
}

// TestRestartDoesNotReplay: the store keeps its applied index, so a reopened node applies
// none of the entries it already holds, with or without a raft snapshot.
func TestRestartDoesNotReplay(t *testing.T) {
	for _, snapshot := range []bool{false, true} {
		t.Run(fmt.Sprintf("snapshot=%v", snapshot), func(t *testing.T) {
			cfg := testConfig(t, t.TempDir())
			c := openTest(t, cfg)
			ctx := ctxT(t)
			mustTenant(t, c, "lyon", 0)
			mustCameras(t, c, cam("cam", "lyon"))
			a, _ := c.Assign(ctx, "cam", "n1")
			const n = 300
			for i := 0; i < n; i++ {
				if err := c.CommitSegment(ctx, seg(fmt.Sprintf("s%04d", i), "cam", a.Epoch, t0.Add(time.Duration(i)*2*time.Second), 2*time.Second)); err != nil {
					t.Fatal(err)
				}
			}
			if snapshot {
				if err := c.raft.Snapshot().Error(); err != nil {
					t.Fatal(err)
				}
			}
			applied := c.fsm.applied.Load()
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}

			_, cfg.Transport = raft.NewInmemTransport(raft.ServerAddress("inmem-" + t.Name()))
			c2 := openTest(t, cfg)
			if got := c2.fsm.nApplied.Load(); got != 0 {
				t.Fatalf("restart re-applied %d commands (store was at index %d)", got, applied)
			}
			t.Logf("restart: %d entries skipped, 0 re-applied (store at index %d)", c2.fsm.nSkipped.Load(), applied)
			if snapshot && c2.fsm.nSkipped.Load() > 5 {
				t.Fatalf("after a snapshot raft handed %d old entries to the store", c2.fsm.nSkipped.Load())
			}
			got, _ := c2.Segments("cam", t0, t0.Add(time.Hour))
			if len(got) != n {
				t.Fatalf("after restart: %d segments, want %d", len(got), n)
			}
			if cm, err := c2.Camera("cam"); err != nil || cm.Password != "pw-cam" {
				t.Fatalf("camera after restart: %+v %v", cm, err)
			}
			// and the node goes on: a new write is applied once, with the epoch kept
			if err := c2.CommitSegment(ctx, seg("after", "cam", a.Epoch, t0.Add(2*time.Hour), time.Second)); err != nil {
				t.Fatal(err)
			}
			if got := c2.fsm.nApplied.Load(); got != 1 {
				t.Fatalf("after one new write: %d applied", got)
			}
		})
	}
}

// TestRestoreSnapshotIntoFreshNode takes a raft snapshot of one node and restores it into
// a new, separately bootstrapped node (the disaster-recovery path), then checks that the
// new node reads everything, accepts writes, and keeps them across a restart.
func TestRestoreSnapshotIntoFreshNode(t *testing.T) {
	c1 := newTestCluster(t)
	ctx := ctxT(t)
	mustTenant(t, c1, "lyon", 3)
	mustCameras(t, c1, cam("cam", "lyon"), cam("cam2", "lyon"))
	a, _ := c1.Assign(ctx, "cam", "n1")
	for i := 0; i < 50; i++ {
		if err := c1.CommitSegment(ctx, seg(fmt.Sprintf("s%02d", i), "cam", a.Epoch, t0.Add(time.Duration(i)*time.Minute), time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c1.RecordOutage(ctx, model.Outage{Camera: "cam", Start: t0.Add(-time.Hour), End: t0, Cause: model.GapNodeDown}); err != nil {
		t.Fatal(err)
	}
	if err := c1.DeleteSegments(ctx, []model.SegmentID{"s00"}, "operator"); err != nil {
		t.Fatal(err)
	}
	snap := c1.raft.Snapshot()
	if err := snap.Error(); err != nil {
		t.Fatal(err)
	}
	meta, rc, err := snap.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()

	cfg2 := testConfig(t, t.TempDir())
	_, cfg2.Transport = raft.NewInmemTransport("inmem-restore-target")
	c2 := openTest(t, cfg2)
	mustTenant(t, c2, "junk", 0) // state that the restore must wipe
	if err := c2.raft.Restore(meta, rc, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	check := func(c *Cluster) {
		t.Helper()
		if _, err := c.Tenant("junk"); !errors.Is(err, model.ErrNotFound) {
			t.Fatalf("restore kept old state: %v", err)
		}
		if tn, err := c.Tenant("lyon"); err != nil || tn.CameraQuota != 3 {
			t.Fatalf("tenant: %+v %v", tn, err)
		}
		if cm, err := c.Camera("cam2"); err != nil || cm.Password != "pw-cam2" {
			t.Fatalf("camera: %+v %v", cm, err)
		}
		if as, _ := c.Assignment("cam"); as != a {
			t.Fatalf("assignment: %+v want %+v", as, a)
		}
		if got, _ := c.Segments("cam", t0, t0.Add(time.Hour)); len(got) < 49 {
			t.Fatalf("segments: %d", len(got))
		}
		if o, _ := c.Outages("cam", t0.Add(-2*time.Hour), t0); len(o) != 1 || o[0].Cause != model.GapNodeDown {
			t.Fatalf("outages: %+v", o)
		}
		if d, _ := c.Deletions("cam", t0, t0.Add(time.Hour)); len(d) != 1 || d[0].Reason != "operator" {
			t.Fatalf("deletions: %+v", d)
		}
	}
	check(c2)
	// the restored node accepts writes (its log indexes differ from the source's)
	if err := c2.CommitSegment(ctx, seg("new", "cam", a.Epoch, t0.Add(time.Hour), time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got, _ := c2.Segments("cam", t0, t0.Add(2*time.Hour)); len(got) != 50 {
		t.Fatalf("segments after new write: %d", len(got))
	}
	if err := c2.Close(); err != nil {
		t.Fatal(err)
	}
	_, cfg2.Transport = raft.NewInmemTransport("inmem-restore-target")
	c3 := openTest(t, cfg2)
	check(c3)
	if got, _ := c3.Segments("cam", t0, t0.Add(2*time.Hour)); len(got) != 50 {
		t.Fatalf("segments after restart: %d", len(got))
	}
}

// TestStoreBehindSnapshotIsCaughtUp simulates a store that lost its tail (unsynced writes)
// while raft truncated its log after a snapshot: Open must restore the snapshot.
func TestStoreBehindSnapshotIsCaughtUp(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	c := openTest(t, cfg)
	mustTenant(t, c, "lyon", 0)
	mustCameras(t, c, cam("cam", "lyon"))
	if err := c.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// wipe the store
	if err := os.RemoveAll(filepath.Join(cfg.Dir, "fsm")); err != nil {
		t.Fatal(err)
	}
	_, cfg.Transport = raft.NewInmemTransport(raft.ServerAddress("inmem-" + t.Name()))
	c2 := openTest(t, cfg)
	if cm, err := c2.Camera("cam"); err != nil || cm.Password != "pw-cam" {
		t.Fatalf("camera after catch-up: %+v %v", cm, err)
	}
}

// TestNoPlaintextPasswordOnDisk: neither the raft log nor the Pebble files hold a camera
// password in clear. The username (stored in clear) is the control that the scan can
// find a string at all.
func TestNoPlaintextPasswordOnDisk(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	c := openTest(t, cfg)
	mustTenant(t, c, "lyon", 0)
	const user, pass = "operator-zz9-plural", "Tr0ub4dor&3-horse-battery"
	cm := cam("cam", "lyon")
	cm.Username, cm.Password = user, pass
	mustCameras(t, c, cm)
	cm.Password = pass + "-v2"
	if _, err := c.UpdateCamera(ctxT(t), cm); err != nil {
		t.Fatal(err)
	}
	if err := c.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Camera("cam"); got.Password != pass+"-v2" {
		t.Fatalf("password read back: %q", got.Password)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	var userHits []string
	var files int
	err := filepath.WalkDir(cfg.Dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		if strings.Contains(string(b), pass) {
			t.Errorf("%s holds the password in clear", p)
		}
		if strings.Contains(string(b), user) {
			userHits = append(userHits, filepath.Base(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(userHits, "raft.db") || len(userHits) < 2 {
		t.Fatalf("control failed: username found only in %v (%d files scanned)", userHits, files)
	}
	t.Logf("scanned %d files; username (control) found in %v", files, userHits)
}

func TestWrongKeyIsReported(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	c := openTest(t, cfg)
	mustTenant(t, c, "lyon", 0)
	mustCameras(t, c, cam("cam", "lyon"))
	_ = c.Close()
	cfg.SecretKey = make([]byte, 32)
	_, cfg.Transport = raft.NewInmemTransport(raft.ServerAddress("inmem-" + t.Name()))
	c2 := openTest(t, cfg)
	_, err := c2.Camera("cam")
	if !errors.Is(err, model.ErrCorrupt) || !strings.Contains(err.Error(), "wrong secret key") {
		t.Fatalf("camera with the wrong key: %v", err)
	}
}

func TestContextCancelled(t *testing.T) {
	c := newTestCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.CreateTenant(ctx, model.Tenant{ID: "a", Name: "A"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ctx: %v", err)
	}
}

var _ io.Closer = (*Cluster)(nil)
