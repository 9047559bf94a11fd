package cluster

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// BenchmarkCommitSegment: one CommitSegment at a time through raft on a single node
// (raft log fsync per write).
func BenchmarkCommitSegment(b *testing.B) {
	c := newTestCluster(b)
	ctx := ctxT(b)
	mustTenant(b, c, "lyon", 0)
	mustCameras(b, c, cam("cam", "lyon"))
	a, _ := c.Assign(ctx, "cam", "n1")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.CommitSegment(ctx, seg(fmt.Sprintf("s%09d", i), "cam", a.Epoch, t0.Add(time.Duration(i)*2*time.Second), 2*time.Second)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCommitSegmentParallel: many cameras committing at once, as a node recording
// many cameras does; raft groups the entries (one fsync, one Pebble batch per group).
func BenchmarkCommitSegmentParallel(b *testing.B) {
	c := newTestCluster(b)
	ctx := ctxT(b)
	mustTenant(b, c, "lyon", 0)
	const cams = 64
	var list []model.Camera
	for i := 0; i < cams; i++ {
		list = append(list, cam(model.CameraID(fmt.Sprintf("cam-%02d", i)), "lyon"))
	}
	mustCameras(b, c, list...)
	for _, cm := range list {
		if _, err := c.Assign(ctx, cm.ID, "n1"); err != nil {
			b.Fatal(err)
		}
	}
	var n atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			id := model.CameraID(fmt.Sprintf("cam-%02d", i%cams))
			if err := c.CommitSegment(ctx, seg(fmt.Sprintf("s%09d", i), id, 1, t0.Add(time.Duration(i)*2*time.Second), 2*time.Second)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkApplyBatchSegments: the state machine alone, 64 segment commits per batch.
func BenchmarkApplyBatchSegments(b *testing.B) {
	h := newFSM(b, b.TempDir())
	h.apply(command{Op: opCreateTenant, Tenant: model.Tenant{ID: "lyon", Name: "Lyon", RetentionDays: 30}},
		command{Op: opCreateCameras, Cameras: []storedCamera{storedCam("cam", "lyon")}},
		command{Op: opAssign, CameraID: "cam", Node: "n1"})
	b.ResetTimer()
	for i := 0; i < b.N; i += 64 {
		cmds := make([]command, 0, 64)
		for j := i; j < i+64 && j < b.N; j++ {
			cmds = append(cmds, command{Op: opCommitSegment, Segment: seg(fmt.Sprintf("s%09d", j), "cam", 1, t0.Add(time.Duration(j)*2*time.Second), 2*time.Second)})
		}
		h.apply(cmds...)
	}
}

// BenchmarkSegmentsDay: a day of 2-second segments of one camera (43,200 entries), among
// other cameras' entries, read back with one Segments call.
func BenchmarkSegmentsDay(b *testing.B) {
	h := newFSM(b, b.TempDir())
	h.apply(command{Op: opCreateTenant, Tenant: model.Tenant{ID: "lyon", Name: "Lyon", RetentionDays: 30}},
		command{Op: opCreateCameras, Cameras: []storedCamera{storedCam("cam-a", "lyon"), storedCam("cam-b", "lyon"), storedCam("cam-c", "lyon")}},
		command{Op: opAssign, CameraID: "cam-a", Node: "n1"},
		command{Op: opAssign, CameraID: "cam-b", Node: "n1"},
		command{Op: opAssign, CameraID: "cam-c", Node: "n1"})
	const perDay = 43200
	for _, id := range []model.CameraID{"cam-a", "cam-b", "cam-c"} {
		for i := 0; i < perDay; i += 1000 {
			cmds := make([]command, 0, 1000)
			for j := i; j < i+1000; j++ {
				cmds = append(cmds, command{Op: opCommitSegment, Segment: seg(fmt.Sprintf("%s-%06d", id, j), id, 1, t0.Add(time.Duration(j)*2*time.Second), 2*time.Second)})
			}
			h.apply(cmds...)
		}
	}
	if err := h.f.db.Flush(); err != nil {
		b.Fatal(err)
	}
	c := &Cluster{fsm: h.f}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got, err := c.Segments("cam-b", t0, t0.Add(24*time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		if len(got) != perDay {
			b.Fatalf("%d segments", len(got))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/perDay, "ns/segment")
}

// BenchmarkReassign1000: the leader's work when a node that owned 1,000 cameras is
// declared dead: read the state, plan, and commit the reassignments as one raft command
// (applied on a single node; a real cluster adds one replication round trip).
func BenchmarkReassign1000(b *testing.B) {
	c := newTestCluster(b)
	ctx := ctxT(b)
	mustTenant(b, c, "lyon", 0)
	cams := make([]model.Camera, 1000)
	for i := range cams {
		cams[i] = cam(model.CameraID(fmt.Sprintf("cam-%04d", i)), "lyon")
	}
	mustCameras(b, c, cams...)
	toDead := make([]assignChange, len(cams))
	for i, cm := range cams {
		toDead[i] = assignChange{Camera: cm.ID, Force: true, Node: "dead"}
	}
	var readT, planT, applyT time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if _, err := c.apply(ctx, command{Op: opSetAssignments, Changes: toDead, At: t0}); err != nil {
			b.Fatal(err)
		}
		ns := map[model.NodeID]*placeNode{}
		for _, id := range []model.NodeID{"n1", "n2", "n3", "n4"} {
			ns[id] = &placeNode{ID: id, Weight: 1, Alive: true, Eligible: true}
		}
		ns["dead"] = &placeNode{ID: "dead", Weight: 1, DeadSince: t0}
		b.StartTimer()

		start := time.Now()
		pc, known, err := c.fsm.placementCameras()
		if err != nil {
			b.Fatal(err)
		}
		estimateBitrates(pc, known)
		t1 := time.Now()
		out := plan(placementInput{Now: t0.Add(time.Minute), Cameras: pc, Nodes: ns, DeadGrace: time.Second, MaxMoves: 64, HandoverTimeout: time.Minute})
		t2 := time.Now()
		res, err := c.applyLocal(ctx, command{Op: opSetAssignments, Changes: out.Changes, At: t0})
		if err != nil {
			b.Fatal(err)
		}
		if n := len(res.([]model.Assignment)); n != 1000 {
			b.Fatalf("%d cameras reassigned, want 1000", n)
		}
		readT += t1.Sub(start)
		planT += t2.Sub(t1)
		applyT += time.Since(t2)
	}
	b.ReportMetric(float64(readT.Microseconds())/float64(b.N), "read-µs/op")
	b.ReportMetric(float64(planT.Microseconds())/float64(b.N), "plan-µs/op")
	b.ReportMetric(float64(applyT.Microseconds())/float64(b.N), "apply-µs/op")
}
