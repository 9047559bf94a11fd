package cluster

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vigie-vms/vigie/model"
)

// stripeFixture: one node, camera "cam" owned by n1, sealed segments s0..s{n-1} of 2 s
// each (1000+i bytes, checksum 0xc0+i) and one open segment "open".
func stripeFixture(t *testing.T, n int) (*Cluster, context.Context) {
	t.Helper()
	c := newTestCluster(t)
	ctx := ctxT(t)
	mustTenant(t, c, "lyon", 0)
	mustCameras(t, c, cam("cam", "lyon"))
	a, err := c.Assign(ctx, "cam", "n1")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		s := seg(fmt.Sprintf("s%d", i), "cam", a.Epoch, t0.Add(time.Duration(i)*2*time.Second), 2*time.Second)
		s.Bytes, s.Checksum = int64(1000+i), uint32(0xc0+i)
		if err := c.CommitSegment(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	open := seg("open", "cam", a.Epoch, t0.Add(time.Hour), 2*time.Second)
	open.Sealed = false
	if err := c.CommitSegment(ctx, open); err != nil {
		t.Fatal(err)
	}
	return c, ctx
}

// stripe21 is a 2+1 stripe over two segments on n1, n2 with parity on n3.
func stripe21(id string, a, b string) model.Stripe {
	return model.Stripe{ID: model.StripeID(id), K: 2, M: 1, Shards: []model.StripeShard{
		{Node: "n1", Segment: model.SegmentID(a)}, {Node: "n2", Segment: model.SegmentID(b)}, {Node: "n3"},
	}}
}

func segIDs(ss []model.Segment) []string {
	var out []string
	for _, s := range ss {
		out = append(out, string(s.ID))
	}
	return out
}

func TestCommitStripeRefusalsNameTheProblem(t *testing.T) {
	c, ctx := stripeFixture(t, 4)
	if err := c.CommitStripe(ctx, stripe21("taken", "s2", "s3")); err != nil {
		t.Fatal(err)
	}
	mod := func(f func(st *model.Stripe)) model.Stripe {
		st := stripe21("x", "s0", "s1")
		st.Shards = append([]model.StripeShard(nil), st.Shards...)
		f(&st)
		return st
	}
	for _, tc := range []struct {
		name     string
		st       model.Stripe
		sentinel error
		want     string
	}{
		{"bad id", mod(func(st *model.Stripe) { st.ID = "Bad/Id" }), model.ErrInvalid, "id: "},
		{"k zero", mod(func(st *model.Stripe) { st.K, st.M = 0, 3 }), model.ErrInvalid, "k: must be at least 1"},
		{"m negative", mod(func(st *model.Stripe) { st.M = -1 }), model.ErrInvalid, "m: must not be negative"},
		{"shard count", mod(func(st *model.Stripe) { st.Shards = st.Shards[:2] }), model.ErrInvalid, "shards: 2 shards for a 2+1 stripe, want 3"},
		{"same node twice", mod(func(st *model.Stripe) { st.Shards[2].Node = "n1" }), model.ErrInvalid, `shards[2].node: node "n1" already holds shard 0`},
		{"no node", mod(func(st *model.Stripe) { st.Shards[1].Node = "" }), model.ErrInvalid, "shards[1].node: is required"},
		{"data without segment", mod(func(st *model.Stripe) { st.Shards[1].Segment = "" }), model.ErrInvalid, "shards[1].segment: data shard 1 needs its segment"},
		{"parity with segment", mod(func(st *model.Stripe) { st.Shards[2].Segment = "s3" }), model.ErrInvalid, "shards[2].segment: shard 2 is a parity shard"},
		{"segment twice", mod(func(st *model.Stripe) { st.Shards[1].Segment = "s0" }), model.ErrInvalid, `shards[1].segment: segment "s0" is already data shard 0`},
		{"unknown segment", mod(func(st *model.Stripe) { st.Shards[1].Segment = "nope" }), model.ErrNotFound, `shards[1].segment: segment "nope" is not in the catalog`},
		{"open segment", mod(func(st *model.Stripe) { st.Shards[0].Segment = "open" }), model.ErrInvalid, `shards[0].segment: segment "open" is not sealed`},
		{"other stripe", mod(func(st *model.Stripe) { st.Shards[1].Segment = "s3" }), model.ErrInUse, `shards[1].segment: segment "s3" is already protected by stripe "taken"`},
		{"wrong bytes", mod(func(st *model.Stripe) { st.Shards[0].Bytes = 5 }), model.ErrInvalid, `shards[0].bytes: 5, but segment "s0" has 1000 bytes`},
		{"wrong checksum", mod(func(st *model.Stripe) { st.Shards[1].Checksum = 7 }), model.ErrInvalid, `shards[1].checksum: 00000007, but segment "s1" has checksum 000000c1`},
		{"wrong shard size", mod(func(st *model.Stripe) { st.ShardSize = 4096 }), model.ErrInvalid, "shard_size: 4096, but the largest data segment has 1001 bytes"},
		{"short parity", mod(func(st *model.Stripe) { st.Shards[2].Bytes = 10 }), model.ErrInvalid, "shards[2].bytes: parity shard of 10 bytes, the shard size is 1001"},
		{"id taken", mod(func(st *model.Stripe) { st.ID = "taken" }), model.ErrExists, `stripe "taken": another stripe has this id`},
	} {
		err := c.CommitStripe(ctx, tc.st)
		if !errors.Is(err, tc.sentinel) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %v containing %q", tc.name, err, tc.sentinel, tc.want)
		}
	}
	// nothing of the refused commits stayed: s0 and s1 are still unstriped
	if _, ok, _ := c.StripeOf("s0"); ok {
		t.Fatal("a refused stripe left s0 striped")
	}
}

func TestStripeCatalog(t *testing.T) {
	c, ctx := stripeFixture(t, 4)
	un, err := c.UnstripedSegments("n1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := segIDs(un); !reflect.DeepEqual(got, []string{"s0", "s1", "s2", "s3"}) {
		t.Fatalf("unstriped before: %v (the open segment is not listed, oldest first)", got)
	}
	if un, _ := c.UnstripedSegments("n1", 2); len(un) != 2 {
		t.Fatalf("limit 2: %d", len(un))
	}
	st := stripe21("st-1", "s0", "s1")
	if err := c.CommitStripe(ctx, st); err != nil {
		t.Fatal(err)
	}
	if err := c.CommitStripe(ctx, st); err != nil { // a retried commit
		t.Fatalf("same stripe again: %v", err)
	}
	got, ok, err := c.StripeOf("s1")
	if err != nil || !ok {
		t.Fatalf("StripeOf(s1): %v %v", ok, err)
	}
	want := []model.StripeShard{{Node: "n1", Segment: "s0", Bytes: 1000, Checksum: 0xc0}, {Node: "n2", Segment: "s1", Bytes: 1001, Checksum: 0xc1}, {Node: "n3", Bytes: 1001}}
	if got.ID != "st-1" || got.ShardSize != 1001 || !reflect.DeepEqual(got.Shards, want) || got.CreatedAt.IsZero() {
		t.Fatalf("stored stripe: %+v", got)
	}
	if _, ok, _ := c.StripeOf("s2"); ok {
		t.Fatal("s2 is not striped")
	}
	// s1's bytes now live on n2: the catalog says so, and it left n1's unstriped list
	segs, _ := c.Segments("cam", t0, t0.Add(time.Minute))
	if segs[1].ID != "s1" || segs[1].Node != "n2" || segs[0].Node != "n1" {
		t.Fatalf("segment nodes after striping: %+v", segs[:2])
	}
	if un, _ := c.UnstripedSegments("n1", 0); !reflect.DeepEqual(segIDs(un), []string{"s2", "s3"}) {
		t.Fatalf("unstriped after: %v", segIDs(un))
	}
	if list, _ := c.Stripes("", 0); len(list) != 1 || list[0].ID != "st-1" {
		t.Fatalf("Stripes: %+v", list)
	}
	if list, _ := c.Stripes("st-1", 0); len(list) != 0 {
		t.Fatalf("Stripes after st-1: %+v", list)
	}
	if ids, _ := c.StripesOn("n3", 0); !reflect.DeepEqual(ids, []model.StripeID{"st-1"}) {
		t.Fatalf("StripesOn(n3): %v", ids)
	}
	// a striped segment's bytes cannot change, nor can it be deleted alone
	s := segs[0]
	s.Bytes++
	if err := c.CommitSegment(ctx, s); !errors.Is(err, model.ErrInUse) || !strings.Contains(err.Error(), `stripe "st-1"`) {
		t.Fatalf("changing a striped segment: %v", err)
	}
	if err := c.CommitSegment(ctx, segs[0]); err != nil {
		t.Fatalf("re-committing a striped segment unchanged: %v", err)
	}
	if err := c.DeleteSegments(ctx, []model.SegmentID{"s2", "s0"}, "operator"); !errors.Is(err, model.ErrInUse) || !strings.Contains(err.Error(), "DeleteStripe") {
		t.Fatalf("deleting a striped segment: %v", err)
	}
	if segs, _ := c.Segments("cam", t0, t0.Add(time.Minute)); len(segs) != 4 {
		t.Fatalf("a refused deletion deleted %d segments", 4-len(segs))
	}
	// retention: the stripe goes, with a deletion record per segment
	if err := c.DeleteStripe(ctx, "st-1", "retention"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteStripe(ctx, "st-1", "retention"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("deleting again: %v", err)
	}
	if segs, _ := c.Segments("cam", t0, t0.Add(time.Minute)); !reflect.DeepEqual(segIDs(segs), []string{"s2", "s3"}) {
		t.Fatalf("after DeleteStripe: %v", segIDs(segs))
	}
	dels, _ := c.Deletions("cam", t0, t0.Add(time.Minute))
	if len(dels) != 2 || dels[0].Segment != "s0" || dels[1].Segment != "s1" || dels[1].Bytes != 1001 || dels[0].Reason != "retention" {
		t.Fatalf("deletions: %+v", dels)
	}
	if _, ok, _ := c.StripeOf("s0"); ok {
		t.Fatal("StripeOf a deleted segment")
	}
	if ids, _ := c.StripesOn("n3", 0); len(ids) != 0 {
		t.Fatalf("StripesOn(n3) after delete: %v", ids)
	}
}

func TestUpdateShardIsCompareAndSet(t *testing.T) {
	c, ctx := stripeFixture(t, 2)
	if err := c.CommitStripe(ctx, stripe21("st", "s0", "s1")); err != nil {
		t.Fatal(err)
	}
	// two repairs rebuilt shard 1 (segment s1, lost with n2): the first one wins
	st, err := c.UpdateShard(ctx, "st", 1, "n2", model.StripeShard{Node: "n4"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Shards[1] != (model.StripeShard{Node: "n4", Segment: "s1", Bytes: 1001, Checksum: 0xc1}) {
		t.Fatalf("updated shard: %+v", st.Shards[1])
	}
	if _, err := c.UpdateShard(ctx, "st", 1, "n2", model.StripeShard{Node: "n5"}); !errors.Is(err, model.ErrStaleEpoch) || !strings.Contains(err.Error(), `is on node "n4", not "n2"`) {
		t.Fatalf("second repair: %v", err)
	}
	if segs, _ := c.Segments("cam", t0, t0.Add(time.Minute)); segs[1].Node != "n4" {
		t.Fatalf("segment s1 is on %q, want n4", segs[1].Node)
	}
	for _, tc := range []struct {
		index    int
		from     model.NodeID
		sh       model.StripeShard
		sentinel error
		want     string
	}{
		{5, "n3", model.StripeShard{Node: "n6"}, model.ErrInvalid, "index: 5 is not a shard"},
		{2, "n3", model.StripeShard{Node: "n1"}, model.ErrInvalid, `node: node "n1" already holds 1 shards of the stripe (at most m=1)`},
		{2, "n3", model.StripeShard{Node: "n6", Checksum: 99}, model.ErrCorrupt, "checksum 00000063"},
		{2, "n3", model.StripeShard{Node: "n6", Segment: "s0"}, model.ErrInvalid, "segment:"},
		{2, "n3", model.StripeShard{}, model.ErrInvalid, "node: is required"},
	} {
		if _, err := c.UpdateShard(ctx, "st", tc.index, tc.from, tc.sh); !errors.Is(err, tc.sentinel) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("UpdateShard(%d, %s, %+v): %v, want %v %q", tc.index, tc.from, tc.sh, err, tc.sentinel, tc.want)
		}
	}
	if _, err := c.UpdateShard(ctx, "nope", 0, "n1", model.StripeShard{Node: "n6"}); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("unknown stripe: %v", err)
	}
	if ids, _ := c.StripesOn("n2", 0); len(ids) != 0 {
		t.Fatalf("n2 still listed as holding %v", ids)
	}
}

func TestHoldBlocksRetentionUntilReleased(t *testing.T) {
	c, ctx := stripeFixture(t, 4)
	if err := c.CommitStripe(ctx, stripe21("st", "s0", "s1")); err != nil {
		t.Fatal(err)
	}
	// refusals
	if _, err := c.CreateHold(ctx, model.Hold{Cameras: []model.CameraID{"cam", "ghost"}, Start: t0, End: t0.Add(time.Hour), CaseRef: "PV-1"}); !errors.Is(err, model.ErrNotFound) || !strings.Contains(err.Error(), `cameras[1]: camera "ghost"`) {
		t.Fatalf("hold on a missing camera: %v", err)
	}
	if _, err := c.CreateHold(ctx, model.Hold{Cameras: []model.CameraID{"cam"}, Start: t0, End: t0.Add(time.Hour)}); !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "case_ref") {
		t.Fatalf("hold without case: %v", err)
	}
	// footage of s1 (t0+2s..t0+4s) is seized
	h, err := c.CreateHold(ctx, model.Hold{Cameras: []model.CameraID{"cam"}, Start: t0.Add(3 * time.Second), End: t0.Add(3500 * time.Millisecond), CaseRef: "PV-2025-042", CreatedBy: "officer-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(h.ID), "hold-") || h.CreatedAt.IsZero() || !h.Active(time.Now()) {
		t.Fatalf("created hold: %+v", h)
	}
	if _, err := c.CreateHold(ctx, model.Hold{ID: h.ID, Cameras: []model.CameraID{"cam"}, Start: t0, End: t0.Add(time.Hour), CaseRef: "x"}); !errors.Is(err, model.ErrExists) {
		t.Fatalf("same id: %v", err)
	}
	if got, held := c.HeldAt("cam", t0, t0.Add(4*time.Second), time.Now()); !held || got.ID != h.ID {
		t.Fatalf("HeldAt over s0..s1: %v %+v", held, got)
	}
	if _, held := c.HeldAt("cam", t0.Add(4*time.Second), t0.Add(8*time.Second), time.Now()); held {
		t.Fatal("HeldAt over s2..s3: held")
	}
	err = c.DeleteStripe(ctx, "st", "retention")
	if !errors.Is(err, model.ErrInUse) || !strings.Contains(err.Error(), string(h.ID)) || !strings.Contains(err.Error(), "PV-2025-042") || !strings.Contains(err.Error(), `segment "s1"`) {
		t.Fatalf("retention under hold: %v", err)
	}
	// an unstriped held segment is protected too; unheld ones go
	if _, err := c.CreateHold(ctx, model.Hold{ID: "h2", Cameras: []model.CameraID{"cam"}, Start: t0.Add(5 * time.Second), End: t0.Add(6 * time.Second), CaseRef: "PV-2"}); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteSegments(ctx, []model.SegmentID{"s3", "s2"}, "retention"); !errors.Is(err, model.ErrInUse) || !strings.Contains(err.Error(), `"h2"`) {
		t.Fatalf("deleting a held unstriped segment: %v", err)
	}
	if err := c.DeleteSegments(ctx, []model.SegmentID{"s3"}, "retention"); err != nil {
		t.Fatal(err)
	}
	if hs, _ := c.Holds("cam", false); len(hs) != 2 {
		t.Fatalf("Holds(cam): %+v", hs)
	}
	// release: the record stays, retention proceeds
	rel, err := c.ReleaseHold(ctx, h.ID, "magistrate")
	if err != nil {
		t.Fatal(err)
	}
	if rel.ReleasedAt.IsZero() || rel.ReleasedBy != "magistrate" || rel.CaseRef != "PV-2025-042" {
		t.Fatalf("released: %+v", rel)
	}
	if again, err := c.ReleaseHold(ctx, h.ID, "someone-else"); err != nil || again.ReleasedBy != "magistrate" {
		t.Fatalf("second release: %+v %v", again, err)
	}
	if _, err := c.ReleaseHold(ctx, "nope", "x"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("release unknown: %v", err)
	}
	if hs, _ := c.Holds("", false); len(hs) != 1 || hs[0].ID != "h2" {
		t.Fatalf("active holds: %+v", hs)
	}
	if hs, _ := c.Holds("", true); len(hs) != 2 {
		t.Fatalf("all holds: %+v", hs)
	}
	if err := c.DeleteStripe(ctx, "st", "retention"); err != nil {
		t.Fatalf("retention after release: %v", err)
	}
	// an expired hold (Until passed) no longer protects
	h3, err := c.CreateHold(ctx, model.Hold{Cameras: []model.CameraID{"cam"}, Start: t0, End: t0.Add(time.Hour), CaseRef: "PV-3", Until: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, held := c.HeldAt("cam", t0.Add(4*time.Second), t0.Add(6*time.Second), h3.Until.Add(time.Second)); !held {
		t.Fatal("h2 still covers s2")
	}
	if _, held := c.HeldAt("cam", t0.Add(7*time.Second), t0.Add(8*time.Second), h3.Until.Add(time.Second)); held {
		t.Fatal("an expired hold still holds")
	}
}

func TestUnstripedIndexBuiltForOldStores(t *testing.T) {
	dir := t.TempDir()
	f0, err := openFSM(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	h := &fsmHarness{t: t, f: f0}
	h.apply(command{Op: opCreateTenant, Tenant: model.Tenant{ID: "lyon", Name: "Lyon", RetentionDays: 30}},
		command{Op: opCreateCameras, Cameras: []storedCamera{storedCam("cam", "lyon")}},
		command{Op: opAssign, CameraID: "cam", Node: "n1"})
	for i := 0; i < 3; i++ {
		h.apply(command{Op: opCommitSegment, Segment: seg(fmt.Sprintf("s%d", i), "cam", 1, t0.Add(time.Duration(i)*time.Second), time.Second)})
	}
	// make it look like a store written before the index existed
	b := h.f.db.NewBatch()
	_ = b.DeleteRange(prefixUnstriped, prefixEnd(prefixUnstriped), nil)
	_ = b.Delete(keyIndexV3, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	_ = h.f.close()
	f, err := openFSM(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	n, err := countPrefix(f.db, unstripedPrefix("n1"), 100)
	if err != nil || n != 3 {
		t.Fatalf("rebuilt index holds %d entries (%v), want 3", n, err)
	}
}

func TestStripeValuesRoundTripAndOldVersionsRefused(t *testing.T) {
	st := model.Stripe{ID: "st", K: 2, M: 1, ShardSize: 9, CreatedAt: t0, Shards: []model.StripeShard{{Node: "a", Segment: "s", Bytes: 9, Checksum: 1}, {Node: "b", Segment: "t", Bytes: 3}, {Node: "c", Bytes: 9, Checksum: 7}}}
	if got, err := decStripe(encStripe(st)); err != nil || !reflect.DeepEqual(got, st) {
		t.Fatalf("stripe: %+v %v", got, err)
	}
	h := model.Hold{ID: "h", Cameras: []model.CameraID{"a", "b"}, Start: t0, End: t0.Add(time.Hour), CaseRef: "PV", CreatedBy: "me", CreatedAt: t0, Until: t0.Add(48 * time.Hour), ReleasedAt: t0.Add(time.Hour), ReleasedBy: "you"}
	if got, err := decHold(encHold(h)); err != nil || !reflect.DeepEqual(got, h) {
		t.Fatalf("hold: %+v %v", got, err)
	}
	u := DiskUsage{FreeBytes: 5 << 30, TotalBytes: 10 << 40, Full: true}
	if got, err := decDisk(encDisk(u)); err != nil || got != u {
		t.Fatalf("disk: %+v %v", got, err)
	}
	r := repairMark{Node: "n2", Reason: repairDead, Since: t0, Shards: 12}
	if got, err := decRepairMark(encRepairMark(r)); err != nil || got != r {
		t.Fatalf("repair mark: %+v %v", got, err)
	}
	old := encStripe(st)
	old[0] = 2
	if _, err := decStripe(old); !errors.Is(err, errDecode) {
		t.Fatalf("a stripe at version 2: %v", err)
	}
}
