package cluster_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"slices"
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
	var total time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		mls := startMemberlists(b, clustertest.NewNetwork(), n)
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

// BenchmarkFailureDetection measures memberlist's failure detection with the cluster's
// default timings at 3, 10 and 50 in-process nodes: one op starts n nodes, waits until all
// see all, stops one (its transport goes down, as a crashed machine's would), and measures
// until the first survivor and until every survivor declares it dead. Run it with
// -benchtime 5x: each op takes seconds.
func BenchmarkFailureDetection(b *testing.B) {
	for _, n := range []int{3, 10, 50} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			var first, all []time.Duration
			for i := 0; i < b.N; i++ {
				f, a := detectOnce(b, n)
				first, all = append(first, f), append(all, a)
			}
			b.ReportMetric(medianMs(first), "ms-first-sees-dead")
			b.ReportMetric(medianMs(all), "ms-all-see-dead")
			b.Logf("%d nodes, %d runs: first survivor declares it dead after %v, all after %v", n, b.N, first, all)
		})
	}
}

// detectOnce runs one detection: see BenchmarkFailureDetection.
func detectOnce(b *testing.B, n int) (first, all time.Duration) {
	net := clustertest.NewNetwork()
	mls := startMemberlists(b, net, n)
	defer func() {
		for _, ml := range mls {
			_ = ml.Shutdown()
		}
	}()
	waitMembers := func(what string, ok func(ml *memberlist.Memberlist) bool, skip int) time.Duration {
		start := time.Now()
		for {
			done := true
			for j, ml := range mls {
				if j != skip && !ok(ml) {
					done = false
					break
				}
			}
			if done {
				return time.Since(start)
			}
			if time.Since(start) > 2*time.Minute {
				short := 0
				for j, ml := range mls {
					if j != skip && !ok(ml) {
						short++
					}
				}
				b.Fatalf("%d nodes: %s not within 2 minutes (%d nodes still not there)", n, what, short)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	waitMembers("convergence", func(ml *memberlist.Memberlist) bool { return ml.NumMembers() == n }, -1)
	time.Sleep(time.Second) // settle: no suspicion left over from the joins

	victim := n - 1
	name := mls[victim].LocalNode().Name
	net.SetDown(name, true)
	killed := time.Now()
	seesDead := func(ml *memberlist.Memberlist) bool {
		for _, m := range ml.Members() {
			if m.Name == name {
				return false // Members lists alive and suspect nodes only
			}
		}
		return true
	}
	for {
		seen := false
		for j, ml := range mls {
			if j != victim && seesDead(ml) {
				seen = true
			}
		}
		if seen {
			first = time.Since(killed)
			break
		}
		if time.Since(killed) > time.Minute {
			b.Fatalf("%d nodes: no survivor declared the stopped node dead within a minute", n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	waitMembers("every survivor declares it dead", seesDead, victim)
	all = time.Since(killed)
	return first, all
}

func medianMs(ds []time.Duration) float64 {
	s := append([]time.Duration(nil), ds...)
	slices.Sort(s)
	return float64(s[len(s)/2].Microseconds()) / 1000
}

// startMemberlists starts n memberlist nodes m00… on net with the cluster's default
// gossip timings, each joining through m00.
func startMemberlists(b *testing.B, net *clustertest.Network, n int) []*memberlist.Memberlist {
	def := cluster.DefaultConfig()
	mls := make([]*memberlist.Memberlist, n)
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
	return mls
}
