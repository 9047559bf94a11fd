package cluster

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
)

func nodes(ids ...string) map[model.NodeID]*placeNode {
	m := map[model.NodeID]*placeNode{}
	for _, id := range ids {
		m[model.NodeID(id)] = &placeNode{ID: model.NodeID(id), Weight: 1, Alive: true, Eligible: true}
	}
	return m
}

func camsOn(n int, owner model.NodeID, bps func(i int) float64) []placeCamera {
	cams := make([]placeCamera, n)
	for i := range cams {
		id := model.CameraID(fmt.Sprintf("c%04d", i))
		cams[i] = placeCamera{ID: id, Bps: bps(i), A: model.Assignment{Camera: id, Node: owner, Epoch: 1}}
	}
	return cams
}

// apply plays the changes on the cameras as the state machine would.
func applyChanges(cams []placeCamera, out placementOutput) {
	idx := map[model.CameraID]int{}
	for i, c := range cams {
		idx[c.ID] = i
	}
	for _, ch := range out.Changes {
		a := &cams[idx[ch.Camera]].A
		if a.Node != ch.Node {
			a.Epoch++
		}
		a.Node, a.Next, a.Secondary = ch.Node, ch.Next, ch.Secondary
	}
}

func loadsOf(cams []placeCamera) map[model.NodeID]float64 {
	l := map[model.NodeID]float64{}
	for _, c := range cams {
		l[c.A.Node] += c.Bps
	}
	return l
}

func TestPlanPlacesUnownedCamerasBalanced(t *testing.T) {
	cams := camsOn(100, "", func(i int) float64 { return float64(1+i%8) * 1e6 })
	in := placementInput{Now: t0, Cameras: cams, Nodes: nodes("a", "b", "c", "d", "e"), MaxMoves: 64, Tolerance: 0.05}
	out := plan(in)
	if len(out.Changes) != 100 {
		t.Fatalf("%d changes, want 100", len(out.Changes))
	}
	applyChanges(cams, out)
	var total float64
	for _, c := range cams {
		total += c.Bps
	}
	for n, l := range loadsOf(cams) {
		if math.Abs(l-total/5) > 0.05*total/5 {
			t.Errorf("node %s carries %.0f, mean %.0f", n, l, total/5)
		}
	}
	// deterministic: the same input gives the same decisions
	again := plan(placementInput{Now: t0, Cameras: camsOn(100, "", func(i int) float64 { return float64(1+i%8) * 1e6 }),
		Nodes: nodes("a", "b", "c", "d", "e"), MaxMoves: 64, Tolerance: 0.05})
	if !reflect.DeepEqual(out.Changes, again.Changes) {
		t.Fatal("two plans of the same state differ")
	}
}

func TestPlanDeadNodeWaitsForGrace(t *testing.T) {
	ns := nodes("a", "b", "c")
	ns["c"].Alive, ns["c"].Eligible, ns["c"].DeadSince = false, false, t0
	cams := camsOn(10, "c", func(int) float64 { return 1e6 })
	in := placementInput{Now: t0.Add(time.Second), Cameras: cams, Nodes: ns, DeadGrace: 2 * time.Second, MaxMoves: 64}
	out := plan(in)
	if len(out.Changes) != 0 || !out.WakeAt.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("within grace: %d changes, wake at %v", len(out.Changes), out.WakeAt)
	}
	in.Now = t0.Add(2 * time.Second)
	out = plan(in)
	if len(out.Changes) != 10 {
		t.Fatalf("after grace: %d changes, want 10", len(out.Changes))
	}
	for _, ch := range out.Changes {
		if ch.Node == "c" || ch.Node == "" || ch.IfNode != "c" || ch.IfEpoch != 1 {
			t.Fatalf("change %+v", ch)
		}
	}
	applyChanges(cams, out)
	if l := loadsOf(cams); l["a"] != 5e6 || l["b"] != 5e6 {
		t.Fatalf("loads %v", l)
	}
}

func TestPlanDrainIsMakeBeforeBreakAndBounded(t *testing.T) {
	ns := nodes("a", "b", "c")
	ns["c"].Draining, ns["c"].Eligible = true, false
	cams := camsOn(10, "c", func(int) float64 { return 1e6 })
	out := plan(placementInput{Now: t0, Cameras: cams, Nodes: ns, MaxMoves: 4, HandoverTimeout: time.Minute})
	if len(out.Changes) != 4 {
		t.Fatalf("%d handovers started, want MaxMoves=4", len(out.Changes))
	}
	for _, ch := range out.Changes {
		if ch.Node != "c" || (ch.Next != "a" && ch.Next != "b") {
			t.Fatalf("drain change %+v: the owner must stay until the next node confirms", ch)
		}
	}
	applyChanges(cams, out)
	// handovers under way count against the bound
	if out := plan(placementInput{Now: t0, Cameras: cams, Nodes: ns, MaxMoves: 4, HandoverTimeout: time.Minute}); len(out.Changes) != 0 {
		t.Fatalf("%d more handovers while 4 are under way", len(out.Changes))
	}
	// a handover not confirmed in time is retried elsewhere
	since := map[model.CameraID]time.Time{}
	for _, c := range cams {
		if c.A.Next != "" {
			since[c.ID] = t0
		}
	}
	out = plan(placementInput{Now: t0.Add(time.Minute), Cameras: cams, Nodes: ns, MaxMoves: 4, HandoverTimeout: time.Minute, NextSince: since})
	if len(out.Changes) != 4 {
		t.Fatalf("%d retried handovers, want 4", len(out.Changes))
	}
	for _, ch := range out.Changes {
		if ch.Next == ch.IfNext || ch.Next == "" || ch.Node != "c" {
			t.Fatalf("retry %+v must pick another node", ch)
		}
	}
}

func TestPlanRebalancesWithNext(t *testing.T) {
	cams := camsOn(20, "a", func(int) float64 { return 1e6 })
	out := plan(placementInput{Now: t0, Cameras: cams, Nodes: nodes("a", "b"), MaxMoves: 64, Tolerance: 0.05})
	if len(out.Changes) != 10 {
		t.Fatalf("%d moves, want 10", len(out.Changes))
	}
	for _, ch := range out.Changes {
		if ch.Node != "a" || ch.Next != "b" {
			t.Fatalf("rebalance %+v must be a handover a→b", ch)
		}
	}
}

func TestPlanCriticalSecondaryInAnotherZone(t *testing.T) {
	ns := nodes("a", "b", "c")
	ns["a"].Zone, ns["b"].Zone, ns["c"].Zone = "x", "x", "y"
	cams := camsOn(1, "a", func(int) float64 { return 1e6 })
	cams[0].Critical = true
	out := plan(placementInput{Now: t0, Cameras: cams, Nodes: ns, MaxMoves: 64})
	if len(out.Changes) != 1 || out.Changes[0].Secondary != "c" || out.Changes[0].Node != "a" {
		t.Fatalf("changes %+v, want secondary c (zone y)", out.Changes)
	}
}

func TestNodeStateAndHandoverCommands(t *testing.T) {
	c := newTestCluster(t)
	ctx := ctxT(t)
	mustTenant(t, c, "lyon", 0)
	mustCameras(t, c, cam("a", "lyon"), cam("b", "lyon"))
	if _, err := c.Assign(ctx, "a", "n1"); err != nil {
		t.Fatal(err)
	}
	// a handover: Next records, confirms, becomes the owner with a new epoch
	res, err := c.apply(ctx, command{Op: opSetAssignments, At: t0, Changes: []assignChange{{Camera: "a", IfEpoch: 1, IfNode: "n1", Node: "n1", Next: "n2"}}})
	if err != nil || len(res.([]model.Assignment)) != 1 {
		t.Fatalf("set next: %v %v", res, err)
	}
	// a stale decision is skipped, not applied
	res, _ = c.apply(ctx, command{Op: opSetAssignments, At: t0, Changes: []assignChange{{Camera: "a", IfEpoch: 1, IfNode: "n1", Node: "n3"}}})
	if len(res.([]model.Assignment)) != 0 {
		t.Fatalf("a decision made on an old state was applied: %v", res)
	}
	if err := c.CommitSegment(ctx, model.Segment{ID: "from-next", Camera: "a", Epoch: 1, Node: "n2", Start: t0, End: t0.Add(time.Second)}); err != nil {
		t.Fatalf("the incoming node's footage is refused during the handover: %v", err)
	}
	if _, err := c.ConfirmRecording(ctx, "a", "n3"); !errors.Is(err, model.ErrStaleEpoch) || !strings.Contains(err.Error(), "stop recording it") {
		t.Fatalf("confirm by a node that is not Next: %v", err)
	}
	a, err := c.ConfirmRecording(ctx, "a", "n2")
	if err != nil || a.Node != "n2" || a.Epoch != 2 || a.Next != "" || a.Since.IsZero() {
		t.Fatalf("confirm: %+v %v", a, err)
	}
	if again, err := c.ConfirmRecording(ctx, "a", "n2"); err != nil || again != a {
		t.Fatalf("confirm again: %+v %v", again, err)
	}
	if err := c.CommitSegment(ctx, model.Segment{ID: "old-owner", Camera: "a", Epoch: 1, Node: "n1", Start: t0, End: t0.Add(time.Second)}); !errors.Is(err, model.ErrStaleEpoch) {
		t.Fatalf("former owner after the handover: %v", err)
	}
	// loads: only from a node that records the camera
	if err := c.ReportLoad(ctx, "n2", map[model.CameraID]float64{"a": 3e6, "b": 5e6, "ghost": 1}); err != nil {
		t.Fatal(err)
	}
	if v, ok := c.Bitrate("a"); !ok || v != 3e6 {
		t.Fatalf("bitrate of a: %v %v", v, ok)
	}
	if _, ok := c.Bitrate("b"); ok {
		t.Fatal("a node reported the bitrate of a camera it does not record")
	}
	// node states
	err = c.Decommission(ctx, "n2")
	if !errors.Is(err, model.ErrInUse) || !strings.Contains(err.Error(), `node "n2" still owns 1 cameras`) {
		t.Fatalf("decommission of an owner: %v", err)
	}
	if err := c.Drain(ctx, "ghost"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("drain unknown node: %v", err)
	}
	if _, err := c.Assign(ctx, "a", "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.apply(ctx, command{Op: opSetNodeState, Node: "n2", State: model.NodeDecommissioned, At: t0}); err != nil {
		t.Fatalf("decommission n2 once it owns nothing: %v", err)
	}
	var fe *model.FieldError
	if _, err := c.Assign(ctx, "b", "n2"); !errors.As(err, &fe) || fe.Field != "node" {
		t.Fatalf("assign to a decommissioned node: %v", err)
	}
	if _, err := c.apply(ctx, command{Op: opSetNodeState, Node: "n2", State: "sleeping"}); !errors.As(err, &fe) || fe.Field != "state" {
		t.Fatalf("bad state: %v", err)
	}
}

func TestForwardedAnswersKeepErrors(t *testing.T) {
	for _, want := range []error{
		fmt.Errorf("camera %q: %w", "x", model.ErrNotFound),
		fmt.Errorf("tenant: %w", model.ErrExists),
		fmt.Errorf("x: %w", model.ErrInUse), fmt.Errorf("x: %w", model.ErrQuota),
		fmt.Errorf("x: %w", model.ErrStaleEpoch), fmt.Errorf("x: %w", model.ErrNotLeader),
		fmt.Errorf("x: %w", model.ErrCorrupt), fmt.Errorf("x: %w", model.ErrNoSpace),
		fmt.Errorf("x: %w", context.DeadlineExceeded),
		fmt.Errorf("camera 3: %w", model.Invalid("url", "must start with rtsp://")),
		errors.New("plain"),
	} {
		_, idx, got := decodeAnswer(encodeAnswer(nil, 42, want))
		if got == nil || got.Error() != want.Error() || idx != 42 {
			t.Fatalf("%v came back as %v (index %d)", want, got, idx)
		}
		for _, s := range forwardSentinels {
			if errors.Is(want, s) != errors.Is(got, s) {
				t.Fatalf("%v: errors.Is(%v) differs after the trip", want, s)
			}
		}
		var fw, fg *model.FieldError
		if errors.As(want, &fw) && (!errors.As(got, &fg) || *fw != *fg) {
			t.Fatalf("field error lost: %v", got)
		}
	}
	for _, res := range []any{nil, model.Tenant{ID: "t", Name: "T", CreatedAt: t0}, []storedCamera{storedCam("a", "t")}, storedCam("b", "t"),
		model.Assignment{Camera: "a", Node: "n", Epoch: 3, Since: t0, Next: "m", Secondary: "s"}, []model.Assignment{{Camera: "a"}}, 7,
		model.Segment{ID: "s", Camera: "c", Epoch: 2, Start: t0, End: t0.Add(time.Second), Reconciled: true},
		model.Stripe{ID: "st", K: 1, M: 1, ShardSize: 4, Shards: []model.StripeShard{{Node: "a", Segment: "s", Bytes: 4, Checksum: 9}, {Node: "b", Bytes: 4}}, CreatedAt: t0},
		model.Hold{ID: "h", Cameras: []model.CameraID{"c"}, Start: t0, End: t0.Add(time.Hour), CaseRef: "PV", CreatedAt: t0, ReleasedAt: t0.Add(time.Hour), ReleasedBy: "x"}} {
		got, _, err := decodeAnswer(encodeAnswer(res, 1, nil))
		if err != nil || !reflect.DeepEqual(got, res) {
			t.Fatalf("%#v came back as %#v, %v", res, got, err)
		}
	}
}

func TestOldValueVersionsStillRead(t *testing.T) {
	// version 1 of an assignment (before Since/Next/Secondary) and of a segment
	e := encoder{}
	e.u8(1)
	e.str("cam")
	e.str("n1")
	e.uvarint(7)
	a, err := decAssignment(e.b)
	if err != nil || a != (model.Assignment{Camera: "cam", Node: "n1", Epoch: 7}) {
		t.Fatalf("v1 assignment: %+v %v", a, err)
	}
	s := seg("s", "cam", 7, t0, time.Second)
	e = encoder{}
	e.u8(1)
	e.segment(s)
	got, err := decSegment(e.b)
	if err != nil || !reflect.DeepEqual(got, s) {
		t.Fatalf("v1 segment: %+v %v", got, err)
	}
}

func TestMetaRoundTrip(t *testing.T) {
	m := NodeMeta{RaftAddr: "10.0.0.1:7000", HTTPAddr: "10.0.0.1:8080", GRPCAddr: "10.0.0.1:9090", RTSPAddr: "10.0.0.1:8554", Zone: "room-a", CapacityBps: 2e9}
	got, err := decodeMeta(m.encode())
	if err != nil || got != m {
		t.Fatalf("%+v %v", got, err)
	}
	// a later version may append fields
	if got, err := decodeMeta(append(append([]byte{2}, m.encode()[1:]...), 9, 9)); err != nil || got != m {
		t.Fatalf("newer meta: %+v %v", got, err)
	}
	cfg := testConfig(t, t.TempDir())
	cfg.Meta.Zone = string(make([]byte, 600))
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "Meta: encodes to") {
		t.Fatalf("oversized meta: %v", err)
	}
}

func FuzzDecodeAnswer(f *testing.F) {
	f.Add(encodeAnswer(model.Assignment{Camera: "a", Node: "n", Epoch: 1}, 3, nil))
	f.Add(encodeAnswer(nil, 0, fmt.Errorf("x: %w", model.Invalid("f", "r"))))
	f.Add(encodeAnswer([]storedCamera{storedCam("a", "t")}, 9, nil))
	f.Add(encodeAnswer(model.Stripe{ID: "st", K: 1, Shards: []model.StripeShard{{Node: "a", Segment: "s"}}}, 4, nil))
	f.Add(encodeAnswer(model.Hold{ID: "h", Cameras: []model.CameraID{"c"}}, 5, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = decodeAnswer(b)
	})
}

func FuzzDecodeForward(f *testing.F) {
	for _, c := range workload() {
		f.Add(encodeForward(encodeCommand(c)))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeForward(b)
	})
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add(NodeMeta{RaftAddr: "a:1", HTTPAddr: "b:2", Zone: "z", CapacityBps: 5}.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodeMeta(b); err == nil && len(b) > 0 && b[0] == metaVersion {
			if got, err := decodeMeta(m.encode()); err != nil || got != m {
				t.Fatalf("re-encoding %+v: %+v %v", m, got, err)
			}
		}
	})
}

// confirmAll completes every handover as the incoming nodes would (ConfirmRecording):
// Next becomes the owner with a new epoch.
func confirmAll(cams []placeCamera) {
	for i := range cams {
		if a := &cams[i].A; a.Next != "" {
			a.Node, a.Next = a.Next, ""
			a.Epoch++
		}
	}
}

// camsSpread places n cameras round-robin on owners.
func camsSpread(n int, owners ...model.NodeID) []placeCamera {
	cams := camsOn(n, "", func(int) float64 { return 1e6 })
	for i := range cams {
		cams[i].A.Node = owners[i%len(owners)]
	}
	return cams
}

func TestPlanFullNodeHandsItsCamerasOverMakeBeforeBreak(t *testing.T) {
	ns := nodes("a", "b", "c")
	cams := camsSpread(9, "a", "b", "c")
	ns["c"].Full = true
	in := placementInput{Now: t0, Cameras: cams, Nodes: ns, MaxMoves: 2, Tolerance: 0.05, HandoverTimeout: time.Minute}
	out := plan(in)
	if len(out.Changes) != 2 {
		t.Fatalf("%d handovers started, want MaxMoves=2: %+v", len(out.Changes), out.Changes)
	}
	for _, ch := range out.Changes {
		if ch.IfNode != "c" || ch.Node != "c" || (ch.Next != "a" && ch.Next != "b") {
			t.Fatalf("change %+v: the full node must keep recording until a node with space confirms", ch)
		}
	}
	if ns["c"].Draining || !ns["c"].Eligible {
		t.Fatal("placement changed the full node's admin state")
	}
	// round after round, as the leader does, the incoming nodes confirming in between
	for round := 0; round < 5; round++ {
		applyChanges(cams, plan(in))
		confirmAll(cams)
	}
	l := loadsOf(cams)
	if l["c"] != 0 || l["a"] != 4e6 && l["a"] != 5e6 || l["a"]+l["b"] != 9e6 {
		t.Fatalf("loads after the full node left: %v, want c empty and a, b balanced", l)
	}
	if out := plan(in); len(out.Changes) != 0 {
		t.Fatalf("the plan is not stable while c stays full: %+v", out.Changes)
	}

	// free space again: rebalancing gives it cameras back, make-before-break too
	ns["c"].Full = false
	out = plan(in)
	if len(out.Changes) == 0 {
		t.Fatal("the node with free space again gets no cameras")
	}
	for _, ch := range out.Changes {
		if ch.Next != "c" || ch.Node == "c" || ch.Node != ch.IfNode {
			t.Fatalf("change %+v: cameras come back to c as handovers", ch)
		}
	}
	for round := 0; round < 5; round++ {
		applyChanges(cams, plan(in))
		confirmAll(cams)
	}
	for n, v := range loadsOf(cams) {
		if v != 3e6 {
			t.Fatalf("loads once c has space again: %v, want 3 cameras each (node %s)", loadsOf(cams), n)
		}
	}
}

func TestPlanEveryNodeFullKeepsCamerasWhereTheyAre(t *testing.T) {
	ns := nodes("a", "b", "c")
	for _, n := range ns {
		n.Full = true
	}
	// unbalanced on purpose: no rebalance onto full nodes either
	cams := camsSpread(8, "a", "a", "a", "b")
	out := plan(placementInput{Now: t0, Cameras: cams, Nodes: ns, MaxMoves: 64, Tolerance: 0.05, HandoverTimeout: time.Minute})
	if len(out.Changes) != 0 {
		t.Fatalf("cameras moved while every node is full: %+v", out.Changes)
	}
	// a camera whose owner is gone still gets an owner (it records into the reserve)
	cams = append(cams, placeCamera{ID: "new", Bps: 1e6, A: model.Assignment{Camera: "new"}})
	out = plan(placementInput{Now: t0, Cameras: cams, Nodes: ns, MaxMoves: 64, Tolerance: 0.05, HandoverTimeout: time.Minute})
	if out.Unplaced != 0 || len(out.Changes) != 1 || out.Changes[0].Camera != "new" || out.Changes[0].Node != "c" {
		t.Fatalf("unowned camera with every node full: %+v (unplaced %d), want it on c (least loaded)", out.Changes, out.Unplaced)
	}
}

func TestPlanHandoverToANodeThatFillsUpIsRedirected(t *testing.T) {
	ns := nodes("a", "b", "c", "d")
	ns["a"].Draining, ns["a"].Eligible = true, false
	ns["c"].Full = true
	cams := camsOn(1, "a", func(int) float64 { return 1e6 })
	cams[0].A.Next = "c" // chosen before c filled up
	cams = append(cams, camsSpread(2, "b")...)
	cams[1].ID, cams[2].ID = "x1", "x2"
	cams = append(cams, placeCamera{ID: "y", Bps: 1e6, A: model.Assignment{Camera: "y", Node: "b", Next: "c", Epoch: 1}})
	out := plan(placementInput{Now: t0, Cameras: cams, Nodes: ns, MaxMoves: 64, Tolerance: 10, HandoverTimeout: time.Minute,
		NextSince: map[model.CameraID]time.Time{"c0000": t0, "y": t0}})
	got := map[model.CameraID]assignChange{}
	for _, ch := range out.Changes {
		got[ch.Camera] = ch
	}
	// the draining owner's handover goes to a node with space instead
	if ch, ok := got["c0000"]; !ok || ch.Node != "a" || ch.Next != "d" {
		t.Fatalf("handover from draining a to full c: %+v, want Next d", ch)
	}
	// a rebalance towards c is dropped: b keeps the camera
	if ch, ok := got["y"]; !ok || ch.Node != "b" || ch.Next != "" {
		t.Fatalf("rebalance onto full c: %+v, want dropped", ch)
	}
}

func TestPlanOwnerGoneSkipsFullNextAndSecondary(t *testing.T) {
	ns := nodes("a", "b", "c")
	ns["b"].Full = true
	cams := []placeCamera{{ID: "k", Critical: true, Bps: 1e6, A: model.Assignment{Camera: "k", Node: "gone", Next: "b", Secondary: "b", Epoch: 3}}}
	out := plan(placementInput{Now: t0, Cameras: cams, Nodes: ns, MaxMoves: 64, HandoverTimeout: time.Minute})
	if len(out.Changes) != 1 {
		t.Fatalf("changes %+v", out.Changes)
	}
	if ch := out.Changes[0]; ch.Node == "b" || ch.Next == "b" || ch.Secondary == "b" || ch.Node == "" || ch.Secondary == "" || ch.Secondary == ch.Node {
		t.Fatalf("change %+v: the full node b must not be chosen while a and c have space", ch)
	}
}

func TestPlanCriticalSecondaryLeavesAFullNode(t *testing.T) {
	ns := nodes("a", "b", "c")
	ns["b"].Full = true
	cams := camsOn(1, "a", func(int) float64 { return 1e6 })
	cams[0].Critical, cams[0].A.Secondary = true, "b"
	out := plan(placementInput{Now: t0, Cameras: cams, Nodes: ns, MaxMoves: 64, HandoverTimeout: time.Minute})
	if len(out.Changes) != 1 || out.Changes[0].Node != "a" || out.Changes[0].Secondary != "c" {
		t.Fatalf("changes %+v, want the secondary moved from full b to c", out.Changes)
	}
	// no other node with space: the secondary on the full node stays
	ns["c"].Full = true
	if out := plan(placementInput{Now: t0, Cameras: cams, Nodes: ns, MaxMoves: 64, HandoverTimeout: time.Minute}); len(out.Changes) != 0 {
		t.Fatalf("changes %+v, want none (only full nodes to choose from)", out.Changes)
	}
}
