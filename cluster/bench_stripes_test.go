package cluster

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// stripeBenchFSM: a store with camera "cam" and n sealed segments s%09d on n1.
func stripeBenchFSM(b *testing.B, n int) *fsmHarness {
	h := newFSM(b, b.TempDir())
	h.apply(command{Op: opCreateTenant, Tenant: model.Tenant{ID: "lyon", Name: "Lyon", RetentionDays: 30}},
		command{Op: opCreateCameras, Cameras: []storedCamera{storedCam("cam", "lyon")}},
		command{Op: opAssign, CameraID: "cam", Node: "n1"})
	for i := 0; i < n; i += 256 {
		var cmds []command
		for j := i; j < min(i+256, n); j++ {
			cmds = append(cmds, command{Op: opCommitSegment, Segment: seg(fmt.Sprintf("s%09d", j), "cam", 1, t0.Add(time.Duration(j)*2*time.Second), 2*time.Second)})
		}
		h.apply(cmds...)
	}
	return h
}

func benchStripe(i int) model.Stripe {
	return model.Stripe{ID: model.StripeID(fmt.Sprintf("st%09d", i)), K: 4, M: 2, CreatedAt: t0, Shards: []model.StripeShard{
		{Node: "n1", Segment: model.SegmentID(fmt.Sprintf("s%09d", 4*i))}, {Node: "n2", Segment: model.SegmentID(fmt.Sprintf("s%09d", 4*i+1))},
		{Node: "n3", Segment: model.SegmentID(fmt.Sprintf("s%09d", 4*i+2))}, {Node: "n4", Segment: model.SegmentID(fmt.Sprintf("s%09d", 4*i+3))},
		{Node: "n5"}, {Node: "n6"},
	}}
}

// BenchmarkApplyBatchStripes: the state machine alone, 4+2 stripe commits in batches of
// 64 (each reads and rewrites its 4 segments).
func BenchmarkApplyBatchStripes(b *testing.B) {
	h := stripeBenchFSM(b, 4*b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i += 64 {
		var cmds []command
		for j := i; j < min(i+64, b.N); j++ {
			cmds = append(cmds, command{Op: opCommitStripe, Stripe: benchStripe(j)})
		}
		h.apply(cmds...)
	}
}

// BenchmarkCommitStripe: CommitStripe through raft on one node, 16 concurrent writers
// (as the owners of a cluster striping at once).
func BenchmarkCommitStripe(b *testing.B) {
	c := newTestCluster(b)
	ctx := ctxT(b)
	mustTenant(b, c, "lyon", 0)
	mustCameras(b, c, cam("cam", "lyon"))
	a, _ := c.Assign(ctx, "cam", "n1")
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := w; j < 4*b.N; j += 16 {
				if err := c.CommitSegment(ctx, seg(fmt.Sprintf("s%09d", j), "cam", a.Epoch, t0.Add(time.Duration(j)*2*time.Second), 2*time.Second)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ResetTimer()
	var next sync.Mutex
	i := 0
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			next.Lock()
			n := i
			i++
			next.Unlock()
			if err := c.CommitStripe(ctx, benchStripe(n)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkUnstripedSegments: listing the oldest 64 unprotected segments of a node that
// has 20,000 of them (one owner's backlog), and listing them all.
func BenchmarkUnstripedSegments(b *testing.B) {
	h := stripeBenchFSM(b, 20000)
	c := &Cluster{fsm: h.f}
	for _, limit := range []int{64, 0} {
		b.Run(fmt.Sprintf("limit=%d", limit), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				segs, err := c.UnstripedSegments("n1", limit)
				if err != nil || (limit > 0 && len(segs) != limit) || (limit == 0 && len(segs) != 20000) {
					b.Fatalf("%d segments, %v", len(segs), err)
				}
			}
		})
	}
}
