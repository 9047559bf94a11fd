package protect

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/cluster"
	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage"
)

var t0 = time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)

// readAll reads a segment through a reader: init, then every fragment in order.
func readAll(t *testing.T, r interface {
	Init() []byte
	Fragments() []model.FragmentInfo
	ReadFragment(model.FragmentInfo, []byte) ([]byte, error)
}) []byte {
	t.Helper()
	out := append([]byte(nil), r.Init()...)
	for _, fi := range r.Fragments() {
		b, err := r.ReadFragment(fi, nil)
		if err != nil {
			t.Fatalf("fragment at %d: %v", fi.Offset, err)
		}
		out = append(out, b...)
	}
	return out
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func segPath(nd *testNode, seg model.Segment) string {
	return filepath.Join(nd.dir, "segments", string(seg.Camera), string(seg.ID)+".seg")
}

func checkRead(t *testing.T, p *Protector, rec recording, wantRebuilt bool) *Segment {
	t.Helper()
	r, err := p.OpenSegment(context.Background(), rec.seg)
	if err != nil {
		t.Fatalf("OpenSegment(%s) on %s: %v", rec.seg.ID, p.cfg.Self, err)
	}
	defer r.Close()
	if got := readAll(t, r); !bytes.Equal(got, rec.bytes) {
		t.Fatalf("segment %s read on %s: %d bytes differ from the %d recorded", rec.seg.ID, p.cfg.Self, len(got), len(rec.bytes))
	}
	if !reflect.DeepEqual(r.Fragments(), rec.frags) {
		t.Fatalf("segment %s fragment index on %s (rebuilt %v):\n got %+v\nwant %+v", rec.seg.ID, p.cfg.Self, r.Rebuilt, r.Fragments(), rec.frags)
	}
	if r.Rebuilt != wantRebuilt {
		t.Errorf("segment %s on %s: index rebuilt = %v, want %v", rec.seg.ID, p.cfg.Self, r.Rebuilt, wantRebuilt)
	}
	return r
}

func TestStripeDegradedReadScrubRepair(t *testing.T) {
	c := newTestCluster(t, 4) // 4 live nodes: 2+1
	ctx := context.Background()
	n1 := c.node("n1")
	rng := rand.New(rand.NewPCG(1, 2))
	var recs []recording
	for i, frags := range []int{6, 5, 7, 6} {
		recs = append(recs, record(t, c, n1.store, "n1", model.CameraID([]string{"cam-a", "cam-b"}[i%2]), t0.Add(time.Duration(i)*time.Hour), frags, 40<<10, rng))
	}
	var recorded int64
	for _, r := range recs {
		recorded += r.seg.Bytes
	}

	// Striping: two 2+1 stripes, each on 3 distinct nodes; the shipped segments leave n1.
	made, err := n1.prot.StripeOnce(ctx)
	if err != nil || made != 2 {
		t.Fatalf("StripeOnce = %d, %v; want 2 stripes", made, err)
	}
	byStripe := map[model.StripeID][]recording{}
	for _, r := range recs {
		st, ok, err := c.cat.StripeOf(r.seg.ID)
		if err != nil || !ok {
			t.Fatalf("segment %s not striped: %v", r.seg.ID, err)
		}
		if st.K != 2 || st.M != 1 {
			t.Fatalf("stripe %s is %d+%d, want 2+1", st.ID, st.K, st.M)
		}
		nodes := map[model.NodeID]bool{}
		for _, sh := range st.Shards {
			nodes[sh.Node] = true
		}
		if len(nodes) != 3 || st.Shards[0].Node != "n1" {
			t.Fatalf("stripe %s shards on %v, want 3 distinct nodes, data shard 0 on n1", st.ID, st.Shards)
		}
		i := dataIndex(st, r.seg.ID)
		_, local := n1.store.Segment(r.seg.ID)
		if (i == 0) != (local == nil) {
			t.Errorf("segment %s is data shard %d; on n1's store: %v", r.seg.ID, i, local == nil)
		}
		if got := c.cat.segment(r.seg.ID).Node; got != st.Shards[i].Node {
			t.Errorf("catalog places segment %s on %s, its shard is on %s", r.seg.ID, got, st.Shards[i].Node)
		}
		byStripe[st.ID] = append(byStripe[st.ID], r)
	}
	if s, _ := c.cat.UnstripedSegments("n1", 0); len(s) != 0 {
		t.Errorf("%d segments still unstriped", len(s))
	}

	// Storage overhead and east-west traffic (logged; the figure is (k+m)/k = 1.5 for
	// equal segments, a little more with padding).
	var onDisk int64
	for _, nd := range c.nodes {
		b, _ := nd.store.Usage()
		sb, _ := nd.store.ShardUsage()
		onDisk += b + sb
	}
	st := n1.prot.Stats()
	t.Logf("recorded %d bytes; on disk %d (overhead %.3f, 2+1 ideal 1.5); shipped east-west %d (%.3f per recorded byte)",
		recorded, onDisk, float64(onDisk)/float64(recorded), st.ShippedBytes, float64(st.ShippedBytes)/float64(recorded))
	if o := float64(onDisk) / float64(recorded); o < 1.49 || o > 1.7 {
		t.Errorf("storage overhead %.3f, want about (k+m)/k = 1.5", o)
	}
	if st.StripesMade != 2 || st.StripedBytes != recorded {
		t.Errorf("stats after striping: %+v", st)
	}

	// Healthy reads from every node: the recording node uses its index, the others
	// rebuild it from the bytes; the node holding a shipped segment serves it by id.
	for _, r := range recs {
		st, _, _ := c.cat.StripeOf(r.seg.ID)
		i := dataIndex(st, r.seg.ID)
		checkRead(t, n1.prot, r, i != 0)
		checkRead(t, c.node("n4").prot, r, true)
		holder := c.node(st.Shards[i].Node)
		lr, err := holder.prot.OpenLocal(ctx, r.seg.ID)
		if err != nil {
			t.Fatalf("OpenLocal(%s) on its holder %s: %v", r.seg.ID, holder.id, err)
		}
		if got := readAll(t, lr); !bytes.Equal(got, r.bytes) || !reflect.DeepEqual(lr.Fragments(), r.frags) {
			t.Fatalf("OpenLocal(%s) on %s: bytes or index differ", r.seg.ID, holder.id)
		}
		if lr.Segment().Bytes != r.seg.Bytes || !lr.Segment().End.Equal(r.seg.End) {
			t.Errorf("OpenLocal segment = %+v, want bytes %d end %s", lr.Segment(), r.seg.Bytes, r.seg.End)
		}
		lr.Close()
	}
	if d := n1.prot.Stats().DegradedReads; d != 0 {
		t.Errorf("healthy reads counted %d degraded", d)
	}

	var stA, stB model.Stripe
	for id := range byStripe {
		if st, _ := c.cat.Stripe(id); stA.ID == "" || st.ID < stA.ID {
			stA = st
		}
	}
	for id := range byStripe {
		if id != stA.ID {
			stB, _ = c.cat.Stripe(id)
		}
	}
	// Flip a byte of n1's copy of data shard 0 of stripe B, and one of its parity shard:
	// reads stay correct, scrub finds both and repairs them, a second pass finds nothing.
	var rec0 recording
	for _, r := range byStripe[stB.ID] {
		if dataIndex(stB, r.seg.ID) == 0 {
			rec0 = r
		}
	}
	flipByte(t, segPath(n1, rec0.seg), rec0.frags[2].Offset+100)
	checkRead(t, n1.prot, rec0, false)
	findings := n1.prot.ScrubOnce(ctx)
	if len(findings) != 1 || findings[0].Segment != rec0.seg.ID || !errors.Is(findings[0].Err, model.ErrCorrupt) {
		t.Fatalf("scrub findings = %+v, want one on segment %s", findings, rec0.seg.ID)
	}
	if st := n1.prot.Stats(); st.ScrubFindings != 1 || st.ScrubRepaired != 1 {
		t.Errorf("stats after scrub: %+v", st)
	}
	if f := n1.prot.ScrubOnce(ctx); len(f) != 0 {
		t.Errorf("second scrub pass found %+v", f)
	}
	if err := n1.store.Verify(rec0.seg.ID); err != nil {
		t.Errorf("segment after repair: %v", err)
	}
	parityNode := c.node(stB.Shards[2].Node)
	parityID := storage.ShardID{Stripe: storage.StripeID(stB.ID), Index: 2}
	flipByte(t, filepath.Join(parityNode.dir, "shards", string(stB.ID)+".2.shard"), 5000)
	if err := parityNode.store.VerifyShard(parityID); !errors.Is(err, model.ErrCorrupt) {
		t.Fatalf("VerifyShard after the flip = %v", err)
	}
	if f := parityNode.prot.ScrubOnce(ctx); len(f) != 1 || f[0].Shard != parityID {
		t.Fatalf("scrub on %s found %+v, want parity shard %s", parityNode.id, f, parityID)
	}
	if err := parityNode.store.VerifyShard(parityID); err != nil {
		t.Fatalf("parity shard after scrub repair: %v", err)
	}

	// Kill the node holding data shard 1 of the first stripe: every segment of it still
	// reads byte-identical, with the rebuilt index equal to the recorded one.
	dead := stA.Shards[1].Node
	c.kill(dead)
	for _, r := range byStripe[stA.ID] {
		i := dataIndex(stA, r.seg.ID)
		checkRead(t, n1.prot, r, i != 0)
	}
	if st := n1.prot.Stats(); st.DegradedReads == 0 || st.DegradedBytes == 0 || st.ShardErrors == 0 {
		t.Errorf("after a degraded read: %+v", st)
	}

	// Repair: the dead node's shard of stripe A is rebuilt on the 4th node, recorded, and
	// the stripe reads without it.
	var to model.NodeID
	for _, nd := range c.nodes {
		in := false
		for _, sh := range stA.Shards {
			in = in || sh.Node == nd.id
		}
		if !in {
			to = nd.id
		}
	}
	c.cat.mu.Lock()
	c.cat.tasks = []cluster.RepairTask{{Stripe: stA, Index: 1, Segment: stA.Shards[1].Segment, From: dead, To: to, Bytes: stA.Shards[1].Bytes}}
	c.cat.mu.Unlock()
	if done := c.node(to).prot.RepairOnce(ctx); done != 1 {
		t.Fatalf("RepairOnce on %s = %d, want 1 (stats %+v)", to, done, c.node(to).prot.Stats())
	}
	after, _ := c.cat.Stripe(stA.ID)
	if after.Shards[1].Node != to {
		t.Fatalf("after repair shard 1 is on %s, want %s", after.Shards[1].Node, to)
	}
	if err := c.node(to).store.VerifyShard(storage.ShardID{Stripe: storage.StripeID(stA.ID), Index: 1}); err != nil {
		t.Fatalf("repaired shard: %v", err)
	}
	before := n1.prot.Stats().DegradedReads
	for _, r := range byStripe[stA.ID] {
		checkRead(t, n1.prot, r, dataIndex(stA, r.seg.ID) != 0)
	}
	if n1.prot.Stats().DegradedReads != before {
		t.Errorf("reads after repair still degraded")
	}
	if st := c.node(to).prot.Stats(); st.RepairsDone != 1 || st.RepairBytes != stA.Shards[1].Bytes {
		t.Errorf("repair stats %+v", st)
	}
	// A second run has nothing to do.
	if done := c.node(to).prot.RepairOnce(ctx); done != 0 {
		t.Errorf("second RepairOnce = %d", done)
	}

}

func TestTwoNodesMirrorOneNodeNothing(t *testing.T) {
	c := newTestCluster(t, 2)
	ctx := context.Background()
	n1 := c.node("n1")
	rng := rand.New(rand.NewPCG(3, 4))
	rec := record(t, c, n1.store, "n1", "cam-a", t0, 3, 20<<10, rng)
	made, err := n1.prot.StripeOnce(ctx)
	if err != nil || made != 1 {
		t.Fatalf("StripeOnce = %d, %v", made, err)
	}
	st, ok, _ := c.cat.StripeOf(rec.seg.ID)
	if !ok || st.K != 1 || st.M != 1 || st.Shards[1].Node != "n2" {
		t.Fatalf("stripe = %+v, want a 1+1 mirror on n2", st)
	}
	c.kill("n1")
	// n2 reads it from its parity (a copy) alone.
	checkRead(t, c.node("n2").prot, rec, true)

	c1 := newTestCluster(t, 1)
	c1.node("n1")
	record(t, c1, c1.node("n1").store, "n1", "cam-a", t0, 2, 10<<10, rng)
	if made, err := c1.node("n1").prot.StripeOnce(ctx); made != 0 || err != nil {
		t.Errorf("single node: StripeOnce = %d, %v; want nothing", made, err)
	}
}

func TestFailedShippingLeavesNoHalfState(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := context.Background()
	n1 := c.node("n1")
	rng := rand.New(rand.NewPCG(5, 6))
	a := record(t, c, n1.store, "n1", "cam-a", t0, 3, 20<<10, rng)
	b := record(t, c, n1.store, "n1", "cam-a", t0.Add(time.Hour), 3, 20<<10, rng)

	// The commit fails (leader lost, say): nothing is deleted on n1, the segments stay
	// unstriped, and the shipped shards are orphans collected after the grace.
	c.cat.commitErr = errors.New("no leader")
	if made, err := n1.prot.StripeOnce(ctx); made != 0 || err == nil || !strings.Contains(err.Error(), "no leader") {
		t.Fatalf("StripeOnce = %d, %v; want the commit error", made, err)
	}
	for _, r := range []recording{a, b} {
		if _, err := n1.store.Segment(r.seg.ID); err != nil {
			t.Fatalf("segment %s gone after a failed commit: %v", r.seg.ID, err)
		}
	}
	orphans := 0
	for _, nd := range c.nodes[1:] {
		s, _ := nd.store.Shards()
		orphans += len(s)
	}
	if orphans != 2 {
		t.Fatalf("%d shards shipped, want 2 (data shard 1 and parity)", orphans)
	}
	for _, nd := range c.nodes[1:] {
		nd.prot.CollectGarbage(ctx) // first sight: kept
		nd.prot.cfg.OrphanGrace = time.Nanosecond
		time.Sleep(time.Millisecond)
		nd.prot.CollectGarbage(ctx)
		if s, _ := nd.store.Shards(); len(s) != 0 {
			t.Errorf("%s keeps orphan shards %+v", nd.id, s)
		}
		if nd.prot.Stats().OrphansDeleted != 1 {
			t.Errorf("%s: %+v", nd.id, nd.prot.Stats())
		}
	}

	// Later it works, and a crash between commit and the local delete (simulated: the
	// copy is put back) is cleaned up by garbage collection.
	c.cat.commitErr = nil
	if made, err := n1.prot.StripeOnce(ctx); made != 1 || err != nil {
		t.Fatalf("StripeOnce = %d, %v", made, err)
	}
	checkRead(t, c.node("n2").prot, a, true)
	checkRead(t, c.node("n2").prot, b, true)
}

func TestConfigValidate(t *testing.T) {
	err := Config{RepairLimit: 0, ScrubRate: -1}.Validate()
	for _, want := range []string{"protect.self", "protect.store", "protect.catalog", "protect.clients", "protect.stripe_interval", "protect.repair_limit", "protect.scrub_rate"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %s", err, want)
		}
	}
	if !errors.Is(err, model.ErrInvalid) {
		t.Errorf("Validate() does not wrap ErrInvalid")
	}
}

func TestGroupSegments(t *testing.T) {
	now := t0.Add(24 * time.Hour)
	seg := func(id string, bytes int64, end time.Duration) model.Segment {
		return model.Segment{ID: model.SegmentID(id), Bytes: bytes, End: t0.Add(end)}
	}
	segs := []model.Segment{seg("a", 100, 1), seg("b", 900, 2), seg("c", 110, 3), seg("d", 950, 4), seg("e", 500, 5)}
	got := groupSegments(segs, 2, now, 0)
	ids := func(g []model.Segment) string {
		var s []string
		for _, x := range g {
			s = append(s, string(x.ID))
		}
		return strings.Join(s, "")
	}
	if len(got) != 2 || ids(got[0]) != "ac" || ids(got[1]) != "bd" {
		t.Errorf("groups = %v %v, want ac bd (e waits)", got, len(got))
	}
	if got := groupSegments(segs, 2, now, time.Hour); len(got) != 3 || ids(got[2]) != "e" {
		t.Errorf("with max wait: %d groups", len(got))
	}
}

func TestStartReportsDiskAndStops(t *testing.T) {
	c := newTestCluster(t, 2)
	p := c.node("n1").prot
	p.cfg.DiskInterval, p.cfg.StripeInterval, p.cfg.RepairInterval = 10*time.Millisecond, 10*time.Millisecond, 10*time.Millisecond
	p.Start(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.cat.mu.Lock()
		u, ok := c.cat.disks["n1"]
		c.cat.mu.Unlock()
		if ok {
			if u.TotalBytes <= 0 || u.FreeBytes <= 0 || u.Full {
				t.Errorf("disk report %+v", u)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no disk report")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestShippedSegmentStaysForReadsUnderWay: a segment shipped to another node as a stripe's
// data shard stays readable on the node that recorded it for SurplusGrace (a playback or
// export opened there before the stripe was committed goes on), then garbage collection
// deletes it.
func TestShippedSegmentStaysForReadsUnderWay(t *testing.T) {
	c := newTestCluster(t, 4)
	ctx := context.Background()
	n1 := c.node("n1")
	n1.prot.cfg.SurplusGrace = 300 * time.Millisecond
	rng := rand.New(rand.NewPCG(3, 4))
	var recs []recording
	for i := range 2 {
		recs = append(recs, record(t, c, n1.store, "n1", "cam-a", t0.Add(time.Duration(i)*time.Hour), 5, 40<<10, rng))
	}
	if made, err := n1.prot.StripeOnce(ctx); err != nil || made != 1 {
		t.Fatalf("StripeOnce = %d, %v; want 1 stripe", made, err)
	}
	var shipped model.SegmentID
	for _, r := range recs {
		st, _, _ := c.cat.StripeOf(r.seg.ID)
		if st.Shards[dataIndex(st, r.seg.ID)].Node != "n1" {
			shipped = r.seg.ID
		}
	}
	if shipped == "" {
		t.Fatal("no segment was shipped to another node")
	}
	n1.prot.CollectGarbage(ctx)
	if _, local := n1.store.Segment(shipped); local != nil {
		t.Fatalf("shipped segment %s deleted on n1 before the grace: %v", shipped, local)
	}
	time.Sleep(400 * time.Millisecond)
	n1.prot.CollectGarbage(ctx)
	if _, local := n1.store.Segment(shipped); local == nil {
		t.Fatalf("shipped segment %s still on n1 after the grace", shipped)
	}
	if got := n1.prot.Stats().SurplusDeleted; got != 1 {
		t.Errorf("surplus segments deleted: %d, want 1", got)
	}
}
