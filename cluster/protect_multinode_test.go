package cluster_test

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/cluster"
	"github.com/vigie-vms/vigie/cluster/clustertest"
	"github.com/vigie-vms/vigie/model"
)

// sealedSegments commits n sealed segments of camera from its owner and returns their ids.
func sealedSegments(t *testing.T, h *clustertest.Cluster, c *cluster.Cluster, camera model.CameraID, n int) []model.SegmentID {
	t.Helper()
	var a model.Assignment
	h.Eventually(10*time.Second, "an owner for "+string(camera), func() bool {
		a, _ = c.Assignment(camera)
		return a.Node != ""
	})
	var ids []model.SegmentID
	for i := 0; i < n; i++ {
		s := model.Segment{ID: model.SegmentID(fmt.Sprintf("%s-s%d", camera, i)), Camera: camera, Epoch: a.Epoch, Node: a.Node,
			Start: t0.Add(time.Duration(i) * 10 * time.Second), End: t0.Add(time.Duration(i+1) * 10 * time.Second),
			Bytes: int64(1000 * (i + 1)), Checksum: uint32(i + 1), Sealed: true}
		if err := c.CommitSegment(h.Ctx(), s); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	return ids
}

func shards(data []model.SegmentID, nodes ...model.NodeID) []model.StripeShard {
	out := make([]model.StripeShard, len(nodes))
	for i, n := range nodes {
		out[i].Node = n
		if i < len(data) {
			out[i].Segment = data[i]
		}
	}
	return out
}

func TestRepairAfterNodeLoss(t *testing.T) {
	h := clustertest.New(t, 5, clustertest.Options{
		Zones:     []string{"z1", "z2", "z3"},
		Configure: func(_ int, cfg *cluster.Config) { cfg.RepairGrace = 300 * time.Millisecond },
	})
	ld := h.Leader()
	ids := mustTenantCams(t, ld.C, 1)
	segs := sealedSegments(t, h, ld.C, ids[0], 6)
	victim := h.Followers()[0]
	var o []model.NodeID // the other nodes
	for _, nd := range h.Nodes() {
		if nd != victim {
			o = append(o, nd.ID)
		}
	}
	v := victim.ID
	ctx := h.Ctx()
	for _, st := range []model.Stripe{
		{ID: "a-22", K: 2, M: 2, Shards: shards(segs[3:5], o[0], o[1], v, o[2])},
		{ID: "b-21", K: 2, M: 1, Shards: shards(segs[1:3], v, o[0], o[1])},
		{ID: "c-11", K: 1, M: 1, Shards: shards(segs[0:1], o[0], v)},
		{ID: "safe", K: 1, M: 1, Shards: shards(segs[5:6], o[0], o[1])},
	} {
		if err := ld.C.CommitStripe(ctx, st); err != nil {
			t.Fatalf("commit %s: %v", st.ID, err)
		}
	}
	if r, _ := ld.C.RepairStatus(); len(r.Nodes) != 0 || r.Pending != 0 {
		t.Fatalf("repair before any loss: %+v", r)
	}

	h.Kill(victim.Index)
	ld = h.Leader()
	allTasks := func(on *cluster.Cluster) []cluster.RepairTask {
		var out []cluster.RepairTask
		for _, nd := range h.Up() {
			ts, err := on.RepairTasks(nd.ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i < len(ts); i++ {
				if ts[i].Survivors-ts[i].Stripe.K < ts[i-1].Survivors-ts[i-1].Stripe.K {
					t.Fatalf("tasks of %s not most urgent first: %+v", nd.ID, ts)
				}
			}
			out = append(out, ts...)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Survivors < out[j].Survivors })
		return out
	}
	var tasks []cluster.RepairTask
	h.Eventually(10*time.Second, "repair tasks for the dead node's shards", func() bool {
		tasks = allTasks(ld.C)
		return len(tasks) == 3
	})
	var got []string
	for _, tk := range tasks {
		got = append(got, fmt.Sprintf("%s/%d survivors=%d", tk.Stripe.ID, tk.Index, tk.Survivors))
		if tk.From != v || tk.FromAlive {
			t.Fatalf("task %+v: from", tk)
		}
		for _, sh := range tk.Stripe.Shards {
			if sh.Node == tk.To {
				t.Fatalf("task %+v: rebuilt on a node of the stripe", tk)
			}
		}
		if tk.To == v || len(tk.Sources) != tk.Stripe.K {
			t.Fatalf("task %+v: target or sources", tk)
		}
	}
	if want := []string{"c-11/1 survivors=1", "b-21/0 survivors=2", "a-22/2 survivors=3"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("tasks %v, want %v", got, want)
	}
	// every node computes the same plan
	other := h.Followers()[0].C
	h.Eventually(5*time.Second, "a follower to plan the same", func() bool {
		return reflect.DeepEqual(allTasks(other), tasks)
	})
	st, _ := ld.C.RepairStatus()
	if len(st.Nodes) != 1 || st.Nodes[0].ID != v || st.Nodes[0].Reason != "dead" || st.Nodes[0].Shards != 3 || st.Pending != 3 ||
		!reflect.DeepEqual(st.AtRisk, map[int]int{1: 1, 2: 1, 3: 1}) || st.BytesPending != 1000+2000+5000 {
		t.Fatalf("repair status: %+v", st)
	}

	// each target rebuilds and records its shard; a late second repair of the same shard loses
	for _, tk := range tasks {
		var on *cluster.Cluster
		for _, nd := range h.Up() {
			if nd.ID == tk.To {
				on = nd.C
			}
		}
		if _, err := on.UpdateShard(ctx, tk.Stripe.ID, tk.Index, tk.From, model.StripeShard{Node: tk.To}); err != nil {
			t.Fatalf("update %s/%d: %v", tk.Stripe.ID, tk.Index, err)
		}
		if _, err := ld.C.UpdateShard(ctx, tk.Stripe.ID, tk.Index, tk.From, model.StripeShard{Node: tk.To}); !errors.Is(err, model.ErrStaleEpoch) {
			t.Fatalf("second repair of %s/%d: %v", tk.Stripe.ID, tk.Index, err)
		}
	}
	if rest := allTasks(ld.C); len(rest) != 0 {
		t.Fatalf("tasks left after repair: %+v", rest)
	}
	st, _ = ld.C.RepairStatus()
	if st.Pending != 0 || st.Done != 3 || st.Nodes[0].Left != 0 {
		t.Fatalf("repair status after: %+v", st)
	}
	// the data segment of b-21 now lives on its new node
	b, _ := ld.C.Stripe("b-21")
	s, _ := ld.C.Segments(ids[0], t0.Add(10*time.Second), t0.Add(20*time.Second))
	if len(s) != 1 || s[0].Node != b.Shards[0].Node || s[0].Node == v {
		t.Fatalf("segment %+v, stripe data shard on %s", s, b.Shards[0].Node)
	}
}

func TestFullNodeGetsNothingNew(t *testing.T) {
	h := clustertest.New(t, 4, clustertest.Options{Zones: []string{"east", "west"}})
	ld := h.Leader()
	full := h.Followers()[0].ID
	ctx := h.Ctx()
	if err := ld.C.ReportDisk(ctx, full, cluster.DiskUsage{FreeBytes: 1 << 20, TotalBytes: 1 << 40, Full: true}); err != nil {
		t.Fatal(err)
	}
	ids := mustTenantCams(t, ld.C, 24)
	h.Eventually(10*time.Second, "every camera owned", func() bool { return allOwned(assignments(t, ld.C), len(ids)) })
	for cam, a := range assignments(t, ld.C) {
		if a.Node == full {
			t.Fatalf("camera %s given to the full node", cam)
		}
	}
	zone := map[model.NodeID]string{}
	for _, m := range ld.C.Members() {
		zone[m.ID] = m.Zone
	}
	// hot replicas: one per camera, in the other zone, never on the full node, the same on every node
	h.Eventually(5*time.Second, "every node to agree on replicas", func() bool {
		for _, nd := range h.Up() {
			for _, cam := range ids {
				if !reflect.DeepEqual(nd.C.ReplicaNodes(cam), ld.C.ReplicaNodes(cam)) {
					return false
				}
			}
		}
		return true
	})
	for _, cam := range ids {
		a, _ := ld.C.Assignment(cam)
		r := ld.C.ReplicaNodes(cam)
		if len(r) != 1 || r[0] == a.Node || r[0] == full {
			t.Fatalf("camera %s owned by %s: replicas %v (full node %s)", cam, a.Node, r, full)
		}
		if zone[r[0]] == zone[a.Node] {
			t.Fatalf("camera %s: replica %s in the owner's zone %s", cam, r[0], zone[a.Node])
		}
	}
	// stripes: never on the full node; a 2+2 stripe cannot be placed on the 3 others
	for i := 0; i < 50; i++ {
		got, err := ld.C.PlaceStripe(2, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range got {
			if n == full {
				t.Fatalf("stripe placed on the full node: %v", got)
			}
		}
	}
	if _, err := ld.C.PlaceStripe(2, 2, nil); !errors.Is(err, model.ErrNoSpace) {
		t.Fatalf("2+2 on 3 usable nodes: %v", err)
	}
	if d, ok := h.Followers()[1].C.Disk(full); !ok || !d.Full {
		t.Fatalf("disk report seen by a follower: %+v %v", d, ok)
	}
}

func TestDecommissionedNodeShardsAreMoved(t *testing.T) {
	h := clustertest.New(t, 4, clustertest.Options{AutoConfirm: true})
	ld := h.Leader()
	ids := mustTenantCams(t, ld.C, 1)
	segs := sealedSegments(t, h, ld.C, ids[0], 1)
	var leaving *clustertest.Node
	for _, nd := range h.Followers() {
		if a, _ := ld.C.Assignment(ids[0]); a.Node != nd.ID {
			leaving = nd
		}
	}
	ctx := h.Ctx()
	var others []model.NodeID
	for _, nd := range h.Nodes() {
		if nd != leaving {
			others = append(others, nd.ID)
		}
	}
	if err := ld.C.CommitStripe(ctx, model.Stripe{ID: "st", K: 1, M: 1, Shards: shards(segs, others[0], leaving.ID)}); err != nil {
		t.Fatal(err)
	}
	if err := ld.C.Drain(ctx, leaving.ID); err != nil {
		t.Fatal(err)
	}
	h.Eventually(10*time.Second, "the drained node to own no camera", func() bool {
		for _, m := range ld.C.Members() {
			if m.ID == leaving.ID {
				return m.Cameras == 0 && m.Moving == 0
			}
		}
		return false
	})
	if err := ld.C.Decommission(ctx, leaving.ID); err != nil {
		t.Fatal(err)
	}
	var tk cluster.RepairTask
	h.Eventually(10*time.Second, "a task to move the decommissioned node's shard", func() bool {
		for _, nd := range h.Up() {
			if ts, _ := ld.C.RepairTasks(nd.ID, 0); len(ts) == 1 {
				tk = ts[0]
				return true
			}
		}
		return false
	})
	if tk.From != leaving.ID || !tk.FromAlive || tk.Index != 1 || tk.To == others[0] {
		t.Fatalf("task %+v", tk)
	}
	if st, _ := ld.C.RepairStatus(); len(st.Nodes) != 1 || st.Nodes[0].Reason != "decommissioned" {
		t.Fatalf("status %+v", st)
	}
}
