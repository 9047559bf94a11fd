package cluster_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/vigie-vms/vigie/cluster"
	"github.com/vigie-vms/vigie/cluster/clustertest"
	"github.com/vigie-vms/vigie/model"
)

// BenchmarkMemberlistConvergence50: 50 memberlist nodes in one process, with the
// cluster's default gossip timings, all joining through one seed; one op is the time
// until every node sees all 50 alive.
func BenchmarkMemberlistConvergence50(b *testing.B) {
	const n = 50
	def := cluster.DefaultConfig()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		net := clustertest.NewNetwork()
		mls := make([]*memberlist.Memberlist, n)
		start := time.Now()
		for j := range mls {
			mc := memberlist.DefaultLANConfig()
			mc.Name = fmt.Sprintf("m%02d", j)
			mc.Transport = net.NewTransport(mc.Name)
			mc.ProbeInterval, mc.ProbeTimeout = def.ProbeInterval, def.ProbeTimeout
			mc.SuspicionMult, mc.SuspicionMaxTimeoutMult = def.SuspicionMult, def.SuspicionMaxTimeoutMult
			mc.GossipInterval, mc.PushPullInterval = def.GossipInterval, def.PushPullInterval
			mc.Logger = log.New(io.Discard, "", 0)
			ml, err := memberlist.Create(mc)
			if err != nil {
				b.Fatal(err)
			}
			mls[j] = ml
			if j > 0 {
				if _, err := ml.Join([]string{net.Addr("m00")}); err != nil {
					b.Fatal(err)
				}
			}
		}
		joined := time.Since(start)
		for {
			all := true
			for _, ml := range mls {
				if ml.NumMembers() != n {
					all = false
					break
				}
			}
			if all {
				break
			}
			if time.Since(start) > time.Minute {
				b.Fatal("no convergence within a minute")
			}
			time.Sleep(5 * time.Millisecond)
		}
		total += time.Since(start)
		b.Logf("joined in %v, converged in %v", joined, time.Since(start))
		for _, ml := range mls {
			_ = ml.Shutdown()
		}
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-converge")
}

// BenchmarkFailover: a node owning cameras dies in a 3-node cluster that runs the
// default failure detection (probe 500 ms, timeout 250 ms, suspicion ×4, max ×4) and the
// default DeadNodeGrace (2 s); one op is the time from the crash until every one of its
// cameras is owned by a survivor. Reported: detection (memberlist declares it dead) and
// reassignment, in ms. Run it with -benchtime 3x: each op takes seconds.
func BenchmarkFailover(b *testing.B) {
	def := cluster.DefaultConfig()
	var detect, reassign time.Duration
	for i := 0; i < b.N; i++ {
		h := clustertest.New(b, 3, clustertest.Options{Configure: func(_ int, cfg *cluster.Config) {
			cfg.ProbeInterval, cfg.ProbeTimeout = def.ProbeInterval, def.ProbeTimeout
			cfg.SuspicionMult, cfg.SuspicionMaxTimeoutMult = def.SuspicionMult, def.SuspicionMaxTimeoutMult
			cfg.GossipInterval = def.GossipInterval
			cfg.DeadNodeGrace = def.DeadNodeGrace
		}})
		ld := h.Leader()
		ids := benchCams(b, ld.C, 300)
		h.Eventually(20*time.Second, "every camera owned", func() bool {
			as, _ := ld.C.Assignments()
			for _, a := range as {
				if a.Node == "" {
					return false
				}
			}
			return len(as) == len(ids)
		})
		victim := h.Followers()[0]
		start := time.Now()
		h.Kill(victim.Index)
		var d time.Duration
		h.Eventually(60*time.Second, "cameras reassigned", func() bool {
			if d == 0 {
				for _, m := range ld.C.Members() {
					if m.ID == victim.ID && m.State == model.NodeDead {
						d = time.Since(start)
					}
				}
			}
			as, _ := ld.C.Assignments()
			for _, a := range as {
				if a.Node == victim.ID || a.Node == "" {
					return false
				}
			}
			return true
		})
		detect += d
		reassign += time.Since(start)
		b.Logf("declared dead after %v, cameras reassigned after %v", d.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		h.Close()
	}
	b.ReportMetric(float64(detect.Milliseconds())/float64(b.N), "detect-ms")
	b.ReportMetric(float64(reassign.Milliseconds())/float64(b.N), "reassigned-ms")
}

func benchCams(b *testing.B, c *cluster.Cluster, n int) []model.CameraID {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.CreateTenant(ctx, model.Tenant{ID: "lyon", Name: "Lyon", RetentionDays: 14}); err != nil {
		b.Fatal(err)
	}
	cams := make([]model.Camera, n)
	ids := make([]model.CameraID, n)
	for i := range cams {
		ids[i] = model.CameraID(fmt.Sprintf("cam-%04d", i))
		cams[i] = model.Camera{ID: ids[i], Tenant: "lyon", URL: "rtsp://192.0.2.1/" + string(ids[i])}
	}
	if _, err := c.CreateCameras(ctx, cams); err != nil {
		b.Fatal(err)
	}
	return ids
}
