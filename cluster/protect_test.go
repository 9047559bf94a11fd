package cluster

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/vigie-vms/vigie/model"
)

// infos: live active nodes "id:zone" (zone optional).
func infos(specs ...string) map[model.NodeID]*nodeInfo {
	m := map[model.NodeID]*nodeInfo{}
	for _, s := range specs {
		id, zone, _ := strings.Cut(s, ":")
		m[model.NodeID(id)] = &nodeInfo{ID: model.NodeID(id), Zone: zone, Alive: true, Server: true}
	}
	return m
}

func TestPlaceStripe(t *testing.T) {
	in := infos("a:z1", "b:z1", "c:z2", "d:z3", "e:z3", "f:z2")
	in["f"].Disk, in["f"].HasDisk = DiskUsage{FreeBytes: 1 << 40, TotalBytes: 2 << 40, Full: true}, true
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		got, err := placeStripe(2, 2, []model.NodeID{"a", "b"}, in, rng.Float64)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0] == got[1] {
			t.Fatalf("parity nodes %v", got)
		}
		zones := map[string]bool{}
		for _, n := range got {
			if n == "a" || n == "b" || n == "f" {
				t.Fatalf("parity on %s (data node or full): %v", n, got)
			}
			zones[in[n].Zone] = true
		}
		if len(zones) != 2 { // z2 (c) and z3 (d or e): both zones other than the data's
			t.Fatalf("parity nodes %v share a zone although z2 and z3 are free", got)
		}
	}
	// the rest of the data shards too, and weighting by free space
	for _, id := range []model.NodeID{"c", "d", "e"} {
		in[id].HasDisk = true
	}
	in["c"].Disk.FreeBytes, in["d"].Disk.FreeBytes, in["e"].Disk.FreeBytes = 100, 900, 100
	count := map[model.NodeID]int{}
	for i := 0; i < 2000; i++ {
		got, err := placeStripe(1, 1, []model.NodeID{"c"}, in, rng.Float64)
		if err != nil {
			t.Fatal(err)
		}
		count[got[0]]++
	}
	if count["d"] < 4*count["e"] || count["c"] != 0 {
		t.Fatalf("weighted by free space 900 vs 100 (a, b unreported count as the median): %v", count)
	}
	got, err := placeStripe(4, 1, nil, in, rng.Float64)
	if err != nil || len(got) != 5 {
		t.Fatalf("whole stripe: %v %v", got, err)
	}
	// not enough nodes
	_, err = placeStripe(4, 2, []model.NodeID{"a"}, in, rng.Float64)
	if !errors.Is(err, model.ErrNoSpace) || !strings.Contains(err.Error(), "needs 5 more distinct nodes") || !strings.Contains(err.Error(), "full: [f]") {
		t.Fatalf("too few nodes: %v", err)
	}
	if _, err := placeStripe(2, 1, []model.NodeID{"a", "a"}, in, rng.Float64); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("data node twice: %v", err)
	}
}

func TestReplicaChoice(t *testing.T) {
	in := infos("a:east", "b:east", "c:west", "d:west", "e:north")
	var cams []model.CameraID
	for i := 0; i < 300; i++ {
		cams = append(cams, model.CameraID(fmt.Sprintf("cam-%03d", i)))
	}
	first := map[model.CameraID]model.NodeID{}
	per := map[model.NodeID]int{}
	for _, c := range cams {
		r := replicasFor(c, "a", in, 1)
		if len(r) != 1 || r[0] == "a" || in[r[0]].Zone == "east" {
			t.Fatalf("%s: replicas %v for owner a (east)", c, r)
		}
		first[c] = r[0]
		per[r[0]]++
	}
	if per["c"] < 50 || per["d"] < 50 || per["e"] < 50 {
		t.Fatalf("replicas badly spread: %v", per)
	}
	// e fills up: only its cameras move
	in["e"].Disk.Full = true
	moved := 0
	for _, c := range cams {
		r := replicasFor(c, "a", in, 1)
		if r[0] == "e" {
			t.Fatal("replica on a full node")
		}
		if r[0] != first[c] {
			moved++
			if first[c] != "e" {
				t.Fatalf("%s moved from %s to %s although %s is fine", c, first[c], r[0], first[c])
			}
		}
	}
	if moved != per["e"] {
		t.Fatalf("%d cameras moved, %d had their replica on e", moved, per["e"])
	}
	// two replicas: two zones other than the owner's
	r := replicasFor("cam-x", "a", infos("a:east", "b:east", "c:west", "d:north"), 2)
	if !reflect.DeepEqual(len(r), 2) || r[0] == "b" || r[1] == "b" {
		t.Fatalf("two replicas %v should be in west and north", r)
	}
	if r := replicasFor("cam-x", "a", infos("a"), 1); len(r) != 0 {
		t.Fatalf("one-node cluster: %v", r)
	}
}

func TestPlanRepair(t *testing.T) {
	in := infos("n1:z1", "n2:z1", "n3:z2", "n4:z2", "n5:z3", "n6:z3")
	in["n2"].Alive = false
	in["n6"].Disk.Full = true
	sh := func(nodes ...string) []model.StripeShard {
		out := make([]model.StripeShard, len(nodes))
		for i, n := range nodes {
			out[i] = model.StripeShard{Node: model.NodeID(n), Bytes: 100}
		}
		return out
	}
	stripes := []model.Stripe{
		{ID: "a-22", K: 2, M: 2, Shards: sh("n1", "n2", "n3", "n4")}, // 3 survivors, margin 1
		{ID: "b-21", K: 2, M: 1, Shards: sh("n2", "n3", "n5")},       // 2 survivors, margin 0
		{ID: "c-11", K: 1, M: 1, Shards: sh("n5", "n2")},             // 1 survivor, margin 0
		{ID: "d-21", K: 2, M: 1, Shards: sh("n2", "n4", "n7")},       // n7 marked too: 1 survivor < k
	}
	marked := map[model.NodeID]repairMark{"n2": {Node: "n2", Reason: repairDead}, "n7": {Node: "n7", Reason: repairDead}}
	p := planRepair(repairInput{Stripes: stripes, Marked: marked, Nodes: in})
	var order []string
	for _, tk := range p.Tasks {
		order = append(order, fmt.Sprintf("%s/%d", tk.Stripe.ID, tk.Index))
		if tk.From != "n2" || tk.FromAlive {
			t.Fatalf("task %+v: from", tk)
		}
		for _, o := range tk.Stripe.Shards {
			if o.Node == tk.To {
				t.Fatalf("task %+v: target already holds a shard of the stripe", tk)
			}
		}
		if tk.To == "n6" || tk.To == "n2" || !in[tk.To].Alive {
			t.Fatalf("task %+v: target full or dead", tk)
		}
		if len(tk.Sources) != tk.Stripe.K {
			t.Fatalf("task %+v: %d sources", tk, len(tk.Sources))
		}
		for _, s := range tk.Sources {
			if tk.Stripe.Shards[s].Node == "n2" {
				t.Fatalf("task %+v reads the lost shard", tk)
			}
		}
	}
	if want := []string{"c-11/1", "b-21/0", "a-22/1"}; !reflect.DeepEqual(order, want) {
		t.Fatalf("task order %v, want %v (fewest spare shards first)", order, want)
	}
	// a zone not yet in the stripe is preferred: b-21 keeps n3 (z2) and n5 (z3), so its
	// shard goes to z1 (n1)
	if p.Tasks[1].To != "n1" {
		t.Fatalf("b-21 rebuilt on %s, want n1 (the only zone it lacks)", p.Tasks[1].To)
	}
	if p.Unrecoverable != 1 || p.Stuck != 1 || p.Pending != 5 || p.BytesPending != 500 {
		t.Fatalf("plan: unrecoverable %d stuck %d pending %d bytes %d", p.Unrecoverable, p.Stuck, p.Pending, p.BytesPending)
	}
	if want := map[int]int{3: 1, 2: 1, 1: 2}; !reflect.DeepEqual(p.AtRisk, want) {
		t.Fatalf("at risk %v, want %v", p.AtRisk, want)
	}
	// same input, same plan
	if q := planRepair(repairInput{Stripes: stripes, Marked: marked, Nodes: in}); !reflect.DeepEqual(p, q) {
		t.Fatal("the plan is not deterministic")
	}
}

func TestPlanAvoidsFullNodes(t *testing.T) {
	cams := camsOn(40, "", func(int) float64 { return 1e6 })
	ns := nodes("a", "b", "c")
	ns["b"].Full = true
	out := plan(placementInput{Now: t0, Cameras: cams, Nodes: ns, MaxMoves: 64, Tolerance: 0.05})
	for _, ch := range out.Changes {
		if ch.Node == "b" || ch.Next == "b" || ch.Secondary == "b" {
			t.Fatalf("camera given to the full node: %+v", ch)
		}
	}
	if len(out.Changes) != 40 {
		t.Fatalf("%d cameras placed", len(out.Changes))
	}
}

// TestPlanRepairColocatesWhenTooFewNodes: 6 nodes had 4+2 stripes and 2 died; the 4
// survivors already hold a shard of every stripe, so the lost shards go to survivors
// holding the fewest shards of the stripe — never more than m on one node, so losing any
// one node still leaves k shards. A mirror (m = 1) never puts both copies on one node.
func TestPlanRepairColocatesWhenTooFewNodes(t *testing.T) {
	in := infos("n1", "n2", "n3", "n4", "n5", "n6")
	in["n5"].Alive, in["n6"].Alive = false, false
	marked := map[model.NodeID]repairMark{"n5": {Node: "n5", Reason: repairDead}, "n6": {Node: "n6", Reason: repairDead}}
	sh := func(nodes ...string) []model.StripeShard {
		out := make([]model.StripeShard, len(nodes))
		for i, n := range nodes {
			out[i] = model.StripeShard{Node: model.NodeID(n), Bytes: 100}
		}
		return out
	}
	stripes := []model.Stripe{
		{ID: "a-42", K: 4, M: 2, Shards: sh("n1", "n2", "n3", "n4", "n5", "n6")},
		{ID: "b-42", K: 4, M: 2, Shards: sh("n5", "n6", "n1", "n2", "n3", "n4")},
		{ID: "c-11", K: 1, M: 1, Shards: sh("n1", "n5")},
	}
	p := planRepair(repairInput{Stripes: stripes, Marked: marked, Nodes: in})
	if p.Stuck != 0 || p.Unrecoverable != 0 || p.Pending != 5 {
		t.Fatalf("plan: stuck %d unrecoverable %d pending %d, want 0, 0, 5 (tasks %+v)", p.Stuck, p.Unrecoverable, p.Pending, p.Tasks)
	}
	after := map[model.StripeID]map[model.NodeID]int{}
	for _, st := range stripes {
		after[st.ID] = map[model.NodeID]int{}
		for _, s := range st.Shards {
			if _, lost := marked[s.Node]; !lost {
				after[st.ID][s.Node]++
			}
		}
	}
	for _, tk := range p.Tasks {
		if !in[tk.To].Alive {
			t.Fatalf("task %+v: target dead", tk)
		}
		after[tk.Stripe.ID][tk.To]++
	}
	for _, st := range stripes {
		for n, c := range after[st.ID] {
			if c > st.M {
				t.Errorf("stripe %s: %d shards on %s after repair, more than m=%d (losing %s would lose the stripe)", st.ID, c, n, st.M, n)
			}
		}
	}
	// Only n1 alive: the mirror cannot be repaired onto the node that holds its other copy.
	solo := infos("n1", "n5")
	solo["n5"].Alive = false
	q := planRepair(repairInput{Stripes: stripes[2:], Marked: map[model.NodeID]repairMark{"n5": marked["n5"]}, Nodes: solo})
	if len(q.Tasks) != 0 || q.Stuck != 1 {
		t.Fatalf("mirror with one live node: tasks %+v, stuck %d; want none, stuck 1", q.Tasks, q.Stuck)
	}
}
