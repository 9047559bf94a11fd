package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/cluster"
	"github.com/vigie-vms/vigie/cluster/clustertest"
	"github.com/vigie-vms/vigie/model"
)

// Multi-node tests: real raft (InmemTransport), real memberlist (in-memory network),
// writes forwarded in memory; see package clustertest.

var t0 = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)

func roles(ms []model.NodeStatus) (leaders, voters, nonvoters int) {
	for _, m := range ms {
		switch m.Role {
		case "leader":
			leaders++
		case "voter":
			voters++
		case "nonvoter":
			nonvoters++
		}
	}
	return
}

func TestFormation(t *testing.T) {
	t0 := time.Now()
	defer func() { t.Logf("total %v", time.Since(t0)) }()
	h := clustertest.New(t, 3, clustertest.Options{Zones: []string{"a", "b", "c"}})
	t.Logf("New: %v", time.Since(t0))
	start := time.Now()
	check := func(n, wantVoters int) {
		t.Helper()
		h.WaitServers(n, 20*time.Second)
		t.Logf("%d nodes: raft formed after %v", n, time.Since(start).Round(time.Millisecond))
		ld := h.Leader()
		// every node sees every node, active, with its gossiped addresses
		h.Eventually(10*time.Second, fmt.Sprintf("all %d nodes see %d active members", n, n), func() bool {
			for _, nd := range h.Up() {
				ms := nd.C.Members()
				if len(ms) != n {
					return false
				}
				for _, m := range ms {
					if m.State != model.NodeActive || m.HTTPAddr != "http-"+string(m.ID) || m.RaftAddr == "" {
						return false
					}
				}
			}
			return true
		})
		t.Logf("%d nodes: all see all after %v", n, time.Since(start).Round(time.Millisecond))
		l, v, nv := roles(ld.C.Members())
		if l != 1 || l+v != wantVoters || nv != n-wantVoters {
			t.Fatalf("%d nodes: %d leader, %d voters, %d non-voters; want %d voters in all\n%+v", n, l, v, nv, wantVoters, ld.C.Members())
		}
		zones := map[string]bool{}
		for _, m := range ld.C.Members() {
			if m.Role == "leader" || m.Role == "voter" {
				zones[m.Zone] = true
			}
		}
		if len(zones) != 3 {
			t.Fatalf("%d nodes: voters in zones %v, want all three zones", n, zones)
		}
	}
	check(3, 3)
	start = time.Now()
	h.Add()
	h.Add()
	check(5, 3)
	start = time.Now()
	h.Add()
	check(6, 5)
	start = time.Now()
	h.Add()
	check(7, 5)
}

func mustTenantCams(t *testing.T, c *cluster.Cluster, n int, critical ...int) []model.CameraID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.CreateTenant(ctx, model.Tenant{ID: "lyon", Name: "Lyon", RetentionDays: 14}); err != nil && !errors.Is(err, model.ErrExists) {
		t.Fatal(err)
	}
	crit := map[int]bool{}
	for _, i := range critical {
		crit[i] = true
	}
	cams := make([]model.Camera, n)
	ids := make([]model.CameraID, n)
	for i := range cams {
		ids[i] = model.CameraID(fmt.Sprintf("cam-%03d", i))
		cams[i] = model.Camera{ID: ids[i], Tenant: "lyon", URL: "rtsp://192.0.2.1/" + string(ids[i]), Username: "u", Password: "p"}
		if crit[i] {
			cams[i].Redundancy = model.RedundancyCritical
		}
	}
	if _, err := c.CreateCameras(ctx, cams); err != nil {
		t.Fatal(err)
	}
	return ids
}

func assignments(t *testing.T, c *cluster.Cluster) map[model.CameraID]model.Assignment {
	t.Helper()
	as, err := c.Assignments()
	if err != nil {
		t.Fatal(err)
	}
	out := map[model.CameraID]model.Assignment{}
	for _, a := range as {
		out[a.Camera] = a
	}
	return out
}

func allOwned(as map[model.CameraID]model.Assignment, n int) bool {
	if len(as) != n {
		return false
	}
	for _, a := range as {
		if a.Node == "" {
			return false
		}
	}
	return true
}

func TestWritesOnFollowerAreForwarded(t *testing.T) {
	h := clustertest.New(t, 3)
	ctx := h.Ctx()
	f := h.Followers()[0]
	tn, err := f.C.CreateTenant(ctx, model.Tenant{ID: "lyon", Name: "Lyon", RetentionDays: 10})
	if err != nil || tn.ID != "lyon" || tn.CreatedAt.IsZero() {
		t.Fatalf("create tenant on a follower: %+v %v", tn, err)
	}
	// errors keep their identity across the forward
	if _, err := f.C.CreateTenant(ctx, model.Tenant{ID: "lyon", Name: "Lyon", RetentionDays: 10}); !errors.Is(err, model.ErrExists) {
		t.Fatalf("duplicate tenant through a follower: %v", err)
	}
	var fe *model.FieldError
	if _, err := f.C.CreateCameras(ctx, []model.Camera{{ID: "c1", Tenant: "lyon", URL: "rtsp://192.0.2.1/a"}, {ID: "c1", Tenant: "lyon", URL: "rtsp://192.0.2.1/b"}}); !errors.Is(err, model.ErrExists) {
		t.Fatalf("duplicate camera in one request: %v", err)
	}
	if _, err := f.C.UpdateCamera(ctx, model.Camera{ID: "nope", Tenant: "lyon", URL: "rtsp://192.0.2.1/a"}); !errors.Is(err, model.ErrNotFound) || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("update missing camera through a follower: %v", err)
	}
	if _, err := f.C.ReconcileSegment(ctx, model.Segment{ID: "s", Camera: "x", Start: t0, End: t0.Add(-time.Second)}); !errors.As(err, &fe) || fe.Field != "end" {
		t.Fatalf("field error through a follower: %v", err)
	}
	cams, err := f.C.CreateCameras(ctx, []model.Camera{{ID: "c1", Tenant: "lyon", URL: "rtsp://192.0.2.1/a", Username: "u", Password: "secret"}})
	if err != nil || len(cams) != 1 {
		t.Fatal(err)
	}
	up, err := f.C.UpdateCamera(ctx, model.Camera{ID: "c1", Name: "Place Bellecour", URL: "rtsp://192.0.2.1/a", Username: "u"})
	if err != nil || up.Password != "secret" || up.Name != "Place Bellecour" {
		t.Fatalf("update through a follower: %+v %v", up, err)
	}
	// every node applies the log: reads are local
	h.Eventually(5*time.Second, "every node to read the camera", func() bool {
		for _, nd := range h.Up() {
			if c, err := nd.C.Camera("c1"); err != nil || c.Name != "Place Bellecour" || c.Password != "secret" {
				return false
			}
		}
		return true
	})
}

func TestLeaderKilledWritesContinue(t *testing.T) {
	h := clustertest.New(t, 3)
	ctx := h.Ctx()
	old := h.Leader()
	if _, err := old.C.CreateTenant(ctx, model.Tenant{ID: "before", Name: "B", RetentionDays: 10}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	h.Kill(old.Index)
	ld := h.Leader()
	t.Logf("new leader %s elected %v after the old one was killed", ld.ID, time.Since(start).Round(time.Millisecond))
	if ld == old {
		t.Fatal("killed node still leads")
	}
	var f *clustertest.Node
	for _, nd := range h.Up() {
		if nd != ld {
			f = nd
		}
	}
	if _, err := f.C.CreateTenant(ctx, model.Tenant{ID: "after", Name: "A", RetentionDays: 10}); err != nil {
		t.Fatalf("write on a follower after the leader died: %v", err)
	}
	h.Restart(old.Index)
	h.Eventually(10*time.Second, "the restarted node to catch up", func() bool {
		_, err := old.C.Tenant("after")
		return err == nil
	})
	if _, err := old.C.CreateTenant(ctx, model.Tenant{ID: "again", Name: "A", RetentionDays: 10}); err != nil {
		t.Fatalf("write on the restarted node: %v", err)
	}
}

// ownerOf picks a follower that owns at least one camera, and its cameras.
func followerOwner(t *testing.T, h *clustertest.Cluster) (*clustertest.Node, map[model.CameraID]model.Assignment) {
	t.Helper()
	as := assignments(t, h.Leader().C)
	for _, f := range h.Followers() {
		mine := map[model.CameraID]model.Assignment{}
		for id, a := range as {
			if a.Node == f.ID {
				mine[id] = a
			}
		}
		if len(mine) > 0 {
			return f, mine
		}
	}
	t.Fatal("no follower owns a camera")
	return nil, nil
}

func TestDeadNodeCamerasMoveToSurvivors(t *testing.T) {
	h := clustertest.New(t, 3)
	ld := h.Leader()
	ids := mustTenantCams(t, ld.C, 30)
	h.Eventually(10*time.Second, "every camera owned", func() bool { return allOwned(assignments(t, ld.C), len(ids)) })
	victim, mine := followerOwner(t, h)
	start := time.Now()
	h.Kill(victim.Index)
	var detected time.Duration
	h.Eventually(15*time.Second, "the dead node's cameras on survivors", func() bool {
		if detected == 0 {
			for _, m := range ld.C.Members() {
				if m.ID == victim.ID && m.State == model.NodeDead {
					detected = time.Since(start)
				}
			}
		}
		as := assignments(t, ld.C)
		for id, old := range mine {
			a := as[id]
			if a.Node == victim.ID || a.Node == "" {
				return false
			}
			if a.Epoch != old.Epoch+1 {
				t.Fatalf("camera %s moved from %s (epoch %d) to %s with epoch %d, want %d", id, old.Node, old.Epoch, a.Node, a.Epoch, old.Epoch+1)
			}
		}
		return allOwned(as, len(ids))
	})
	t.Logf("killed %s owning %d cameras: declared dead after %v, cameras reassigned after %v",
		victim.ID, len(mine), detected.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	// the dead node can no longer commit
	for id, old := range mine {
		err := ld.C.CommitSegment(h.Ctx(), model.Segment{ID: "late", Camera: id, Epoch: old.Epoch, Node: victim.ID, Start: t0, End: t0.Add(time.Second)})
		if !errors.Is(err, model.ErrStaleEpoch) {
			t.Fatalf("commit from the dead owner: %v", err)
		}
		break
	}
}

func TestBalancedByBitrate(t *testing.T) {
	h := clustertest.New(t, 5, clustertest.Options{AutoConfirm: true,
		Configure: func(i int, cfg *cluster.Config) { cfg.ReconcileInterval = 50 * time.Millisecond }})
	ld := h.Leader()
	ids := mustTenantCams(t, ld.C, 100)
	h.Eventually(10*time.Second, "every camera owned", func() bool { return allOwned(assignments(t, ld.C), len(ids)) })
	// Skew the real bitrates against the first placement (made before any report, all
	// cameras counted at 2 Mbit/s): the cameras of n1 turn out to be 8 Mbit/s, of n2
	// 4 Mbit/s, the others 1 to 3.
	first := assignments(t, ld.C)
	bitrate := map[model.CameraID]float64{}
	var total float64
	for i, id := range ids {
		switch first[id].Node {
		case "n1":
			bitrate[id] = 8e6
		case "n2":
			bitrate[id] = 4e6
		default:
			bitrate[id] = float64(1+i%3) * 1e6
		}
		total += bitrate[id]
	}
	mean := total / 5
	ctx := h.Ctx()
	var loads map[model.NodeID]float64
	h.Eventually(30*time.Second, "load within ±10 % of the mean on every node, no move under way", func() bool {
		// every node reports the bitrate of what it records, as a node does every 10 s
		as := assignments(t, ld.C)
		byNode := map[model.NodeID]map[model.CameraID]float64{}
		loads = map[model.NodeID]float64{}
		moving := 0
		for id, a := range as {
			if a.Node == "" {
				return false
			}
			if byNode[a.Node] == nil {
				byNode[a.Node] = map[model.CameraID]float64{}
			}
			byNode[a.Node][id] = bitrate[id]
			loads[a.Node] += bitrate[id]
			if a.Next != "" {
				moving++
			}
		}
		for _, nd := range h.Up() {
			if err := nd.C.ReportLoad(ctx, nd.ID, byNode[nd.ID]); err != nil {
				t.Fatalf("ReportLoad on %s: %v", nd.ID, err)
			}
		}
		if moving > 0 || len(loads) != 5 {
			return false
		}
		for _, l := range loads {
			if l < mean*0.9 || l > mean*1.1 {
				return false
			}
		}
		return true
	})
	moves := 0
	for id, a := range assignments(t, ld.C) {
		moves += int(a.Epoch - first[id].Epoch)
	}
	t.Logf("mean %.1f Mbit/s; loads (Mbit/s): %v; %d cameras moved", mean/1e6, fmtLoads(loads), moves)
	h.Eventually(5*time.Second, "Members to show the loads", func() bool {
		for _, m := range ld.C.Members() {
			if m.LoadBps != loads[m.ID] || m.Cameras == 0 {
				return false
			}
		}
		return true
	})
}

func fmtLoads(l map[model.NodeID]float64) string {
	var parts []string
	for id, v := range l {
		parts = append(parts, fmt.Sprintf("%s=%.1f", id, v/1e6))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// watchOwnership samples every camera's assignment on c until stop, and reports a camera
// that was ever without owner, or whose epoch went back.
func watchOwnership(t *testing.T, c *cluster.Cluster, stop <-chan struct{}) <-chan string {
	problems := make(chan string, 1)
	go func() {
		defer close(problems)
		last := map[model.CameraID]uint64{}
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			as, err := c.Assignments()
			if err != nil {
				continue
			}
			for _, a := range as {
				if a.Node == "" {
					problems <- fmt.Sprintf("camera %s without owner", a.Camera)
					return
				}
				if a.Epoch < last[a.Camera] {
					problems <- fmt.Sprintf("camera %s epoch went back from %d to %d", a.Camera, last[a.Camera], a.Epoch)
					return
				}
				last[a.Camera] = a.Epoch
			}
		}
	}()
	return problems
}

func TestDrainThenDecommission(t *testing.T) {
	h := clustertest.New(t, 3, clustertest.Options{AutoConfirm: true, ConfirmDelay: 300 * time.Millisecond})
	ld := h.Leader()
	ctx := h.Ctx()
	ids := mustTenantCams(t, ld.C, 30)
	h.Eventually(10*time.Second, "every camera owned", func() bool { return allOwned(assignments(t, ld.C), len(ids)) })
	victim, mine := followerOwner(t, h)

	err := ld.C.Decommission(ctx, victim.ID)
	if !errors.Is(err, model.ErrInUse) || !strings.Contains(err.Error(), fmt.Sprintf("still owns %d cameras", len(mine))) ||
		!strings.Contains(err.Error(), "drain it") {
		t.Fatalf("decommission of a node that owns cameras: %v", err)
	}

	stop := make(chan struct{})
	problems := watchOwnership(t, ld.C, stop)
	// drain from another node than the leader: forwarded
	if err := h.Followers()[0].C.Drain(ctx, victim.ID); err != nil {
		t.Fatal(err)
	}
	h.Eventually(5*time.Second, "every camera of the draining node to get a Next", func() bool {
		as := assignments(t, ld.C)
		for id := range mine {
			if a := as[id]; a.Node == victim.ID && (a.Next == "" || a.Next == victim.ID) {
				return false
			}
		}
		return true
	})
	h.Eventually(15*time.Second, "handovers to complete", func() bool {
		as := assignments(t, ld.C)
		for id, old := range mine {
			a := as[id]
			if a.Node == victim.ID || a.Next != "" {
				return false
			}
			if a.Epoch != old.Epoch+1 {
				t.Fatalf("camera %s handed over with epoch %d, want %d", id, a.Epoch, old.Epoch+1)
			}
		}
		return true
	})
	close(stop)
	if p, ok := <-problems; ok {
		t.Fatal(p)
	}
	var st model.NodeStatus
	for _, m := range ld.C.Members() {
		if m.ID == victim.ID {
			st = m
		}
	}
	if st.State != model.NodeDraining || st.Cameras != 0 {
		t.Fatalf("drained node: %+v", st)
	}
	if err := ld.C.Decommission(ctx, victim.ID); err != nil {
		t.Fatalf("decommission after drain: %v", err)
	}
	for _, m := range ld.C.Members() {
		if m.ID == victim.ID && (m.State != model.NodeDecommissioned || m.Role != "") {
			t.Fatalf("decommissioned node: %+v", m)
		}
	}
	// it never gets a camera again
	more := mustTenantCams2(t, ld.C, "more", 10)
	h.Eventually(10*time.Second, "new cameras owned", func() bool {
		as := assignments(t, ld.C)
		for _, id := range more {
			if as[id].Node == "" {
				return false
			}
			if as[id].Node == victim.ID {
				t.Fatalf("camera %s given to the decommissioned node", id)
			}
		}
		return true
	})
}

func mustTenantCams2(t *testing.T, c *cluster.Cluster, prefix string, n int) []model.CameraID {
	t.Helper()
	var cams []model.Camera
	var ids []model.CameraID
	for i := 0; i < n; i++ {
		id := model.CameraID(fmt.Sprintf("%s-%03d", prefix, i))
		ids = append(ids, id)
		cams = append(cams, model.Camera{ID: id, Tenant: "lyon", URL: "rtsp://192.0.2.1/" + string(id)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.CreateCameras(ctx, cams); err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestPartitionFencingThenReconcile(t *testing.T) {
	h := clustertest.New(t, 3)
	ld := h.Leader()
	ids := mustTenantCams(t, ld.C, 12)
	h.Eventually(10*time.Second, "every camera owned", func() bool { return allOwned(assignments(t, ld.C), len(ids)) })
	cut, mine := followerOwner(t, h)
	var cam model.CameraID
	var old model.Assignment
	for id, a := range mine {
		if cam == "" || id < cam {
			cam, old = id, a
		}
	}
	h.Partition(cut.Index)
	// the majority moves the camera on
	h.Eventually(15*time.Second, "the cut-off node's camera owned by the majority", func() bool {
		a, _ := ld.C.Assignment(cam)
		return a.Node != cut.ID && a.Node != "" && a.Epoch == old.Epoch+1
	})
	// the cut-off node keeps recording under the old epoch; it cannot commit
	stale := model.Segment{ID: "cut-1", Camera: cam, Epoch: old.Epoch, Node: cut.ID, Start: t0, End: t0.Add(4 * time.Second), Bytes: 100, Sealed: true}
	short, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	if err := cut.C.CommitSegment(short, stale); err == nil {
		t.Fatal("a node cut off from the quorum committed a segment")
	}
	cancel()
	// the same segment through the majority is fenced
	if err := ld.C.CommitSegment(h.Ctx(), stale); !errors.Is(err, model.ErrStaleEpoch) {
		t.Fatalf("stale-epoch commit during the partition: %v", err)
	}
	// the new owner records the same span at the new epoch
	cur, _ := ld.C.Assignment(cam)
	fresh := model.Segment{ID: "new-1", Camera: cam, Epoch: cur.Epoch, Node: cur.Node, Start: t0.Add(time.Second), End: t0.Add(5 * time.Second), Bytes: 100, Sealed: true}
	if err := ld.C.CommitSegment(h.Ctx(), fresh); err != nil {
		t.Fatal(err)
	}

	h.Heal()
	h.Eventually(15*time.Second, "the healed node to learn the new epoch", func() bool {
		a, err := cut.C.Assignment(cam)
		return err == nil && a.Epoch == cur.Epoch
	})
	ctx := h.Ctx()
	if err := cut.C.CommitSegment(ctx, stale); !errors.Is(err, model.ErrStaleEpoch) {
		t.Fatalf("stale commit after heal: %v", err)
	}
	got, err := cut.C.ReconcileSegment(ctx, stale)
	if err != nil || !got.Reconciled {
		t.Fatalf("reconcile: %+v %v", got, err)
	}
	// reconciled footage never replaces a current one
	if got, err := cut.C.ReconcileSegment(ctx, model.Segment{ID: "new-1", Camera: cam, Epoch: old.Epoch, Node: cut.ID, Start: t0, End: t0.Add(time.Second)}); err != nil || got.Reconciled || !got.End.Equal(fresh.End) {
		t.Fatalf("reconcile over a current segment: %+v %v", got, err)
	}
	h.Eventually(5*time.Second, "every node to list both spans", func() bool {
		for _, nd := range h.Up() {
			segs, err := nd.C.Segments(cam, t0, t0.Add(time.Minute))
			if err != nil || len(segs) != 2 {
				return false
			}
			if !(segs[0].ID == "cut-1" && segs[0].Reconciled && segs[1].ID == "new-1" && !segs[1].Reconciled) {
				t.Fatalf("segments on %s: %+v", nd.ID, segs)
			}
		}
		return true
	})
	// the cluster is whole again: the healed node is alive and a raft server
	h.Eventually(10*time.Second, "the healed node active again", func() bool {
		for _, m := range ld.C.Members() {
			if m.ID == cut.ID {
				return m.State == model.NodeActive && m.Role != ""
			}
		}
		return false
	})
}

func TestCriticalCameraHasSecondary(t *testing.T) {
	h := clustertest.New(t, 3, clustertest.Options{Zones: []string{"east", "west", "east"}})
	ld := h.Leader()
	ids := mustTenantCams(t, ld.C, 4, 0) // cam-000 is critical
	cam := ids[0]
	zone := map[model.NodeID]string{}
	for _, m := range ld.C.Members() {
		zone[m.ID] = m.Zone
	}
	var a model.Assignment
	h.Eventually(10*time.Second, "a secondary for the critical camera", func() bool {
		as := assignments(t, ld.C)
		a = as[cam]
		for _, id := range ids[1:] {
			if as[id].Secondary != "" {
				t.Fatalf("standard camera %s has a secondary: %+v", id, as[id])
			}
		}
		return a.Node != "" && a.Secondary != "" && a.Secondary != a.Node
	})
	if zone[a.Node] == zone[a.Secondary] {
		t.Fatalf("owner %s and secondary %s in the same zone %q although another exists", a.Node, a.Secondary, zone[a.Node])
	}
	// both record: the secondary's footage is committed at the same epoch
	ctx := h.Ctx()
	for i, n := range []model.NodeID{a.Node, a.Secondary} {
		s := model.Segment{ID: model.SegmentID(fmt.Sprintf("s%d", i)), Camera: cam, Epoch: a.Epoch, Node: n, Start: t0, End: t0.Add(2 * time.Second)}
		if err := ld.C.CommitSegment(ctx, s); err != nil {
			t.Fatalf("commit from %s: %v", n, err)
		}
	}
	// the owner dies: the secondary, already recording, takes over; a new secondary comes
	var victim int
	for _, nd := range h.Nodes() {
		if nd.ID == a.Node {
			victim = nd.Index
		}
	}
	if h.Node(victim) == ld {
		t.Log("the owner is the leader; killing it too")
	}
	h.Kill(victim)
	ld = h.Leader()
	h.Eventually(15*time.Second, "the secondary to own the camera", func() bool {
		b, _ := ld.C.Assignment(cam)
		return b.Node == a.Secondary && b.Epoch == a.Epoch+1 && b.Secondary != "" && b.Secondary != a.Node
	})
}
