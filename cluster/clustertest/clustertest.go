// Package clustertest runs several cluster nodes inside one test process: real raft over
// raft.InmemTransport, real memberlist over an in-memory Network, writes forwarded in
// memory, temporary directories and timeouts in tens of milliseconds. A test kills,
// restarts and partitions nodes and watches what the cluster does.
//
// It is for tests only: it must not be imported by production code.
package clustertest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/vigie-vms/vigie/cluster"
	"github.com/vigie-vms/vigie/model"
)

// Key is the secret key every test node shares.
var Key = bytes.Repeat([]byte{0x42}, 32)

// Options tune a test cluster.
type Options struct {
	// Zones, when set, gives node i the zone Zones[i % len(Zones)].
	Zones []string
	// AutoConfirm runs a fake recorder on every node: it confirms each handover to its
	// node (Assignment.Next) after ConfirmDelay, as a node does once it records.
	AutoConfirm  bool
	ConfirmDelay time.Duration
	// Configure adjusts node i's configuration before it opens.
	Configure func(i int, cfg *cluster.Config)
	// LogLevel of the nodes' logs in t.Log (default warn).
	LogLevel slog.Level
}

// Cluster is a test cluster.
type Cluster struct {
	t    testing.TB
	opts Options
	Net  *Network

	mu    sync.Mutex
	nodes []*Node
	cut   map[model.NodeID]bool // partitioned side
	logW  *testWriter
}

// Node is one node of a test cluster.
type Node struct {
	Index int
	ID    model.NodeID
	Dir   string
	// C is the running node; nil while the node is down.
	C    *cluster.Cluster
	Raft *raft.InmemTransport

	h       *Cluster
	stopRec chan struct{}
	recDone chan struct{}
}

// New starts n nodes — node 0 bootstraps, the others join through the seeds — and waits
// until the leader has every node in its raft configuration with the expected voters.
func New(t testing.TB, n int, opts ...Options) *Cluster {
	t.Helper()
	h := &Cluster{t: t, Net: NewNetwork(), cut: map[model.NodeID]bool{}}
	if len(opts) > 0 {
		h.opts = opts[0]
	}
	if h.opts.LogLevel == 0 {
		h.opts.LogLevel = slog.LevelWarn
	}
	h.logW = &testWriter{t: t}
	t.Cleanup(h.Close)
	for i := 0; i < n; i++ {
		h.addNode()
	}
	h.WaitServers(n, 20*time.Second)
	return h
}

// Add starts one more node that joins the cluster, and returns it (it does not wait for
// the node to join raft; see WaitServers).
func (h *Cluster) Add() *Node { return h.addNode() }

func (h *Cluster) addNode() *Node {
	h.mu.Lock()
	i := len(h.nodes)
	nd := &Node{Index: i, ID: model.NodeID(fmt.Sprintf("n%d", i+1)), h: h}
	nd.Dir = filepath.Join(h.t.TempDir(), string(nd.ID))
	h.nodes = append(h.nodes, nd)
	h.mu.Unlock()
	h.start(nd)
	return nd
}

// Config returns the configuration node i opens with (fast test timings).
func (h *Cluster) Config(nd *Node) cluster.Config {
	cfg := cluster.DefaultConfig()
	cfg.NodeID = nd.ID
	cfg.Dir = nd.Dir
	cfg.Transport = nd.Raft
	cfg.SecretKey = Key
	cfg.Logger = slog.New(slog.NewTextHandler(h.logW, &slog.HandlerOptions{Level: h.opts.LogLevel})).With(slog.String("test_node", string(nd.ID)))
	cfg.HeartbeatTimeout = 100 * time.Millisecond
	cfg.ElectionTimeout = 100 * time.Millisecond
	cfg.LeaderLeaseTimeout = 50 * time.Millisecond
	cfg.CommitTimeout = 5 * time.Millisecond
	cfg.ApplyTimeout = 5 * time.Second

	cfg.MemberTransport = h.Net.NewTransport(string(nd.ID))
	cfg.Bootstrap = nd.Index == 0
	for j := 0; j < 8; j++ { // the seed list: the first nodes, like a deployment's
		if j != nd.Index {
			cfg.Seeds = append(cfg.Seeds, h.Net.Addr(fmt.Sprintf("n%d", j+1)))
		}
	}
	cfg.Meta = cluster.NodeMeta{HTTPAddr: "http-" + string(nd.ID), GRPCAddr: "grpc-" + string(nd.ID)}
	if len(h.opts.Zones) > 0 {
		cfg.Meta.Zone = h.opts.Zones[nd.Index%len(h.opts.Zones)]
	}
	cfg.Forwarder = forwarder{h: h, self: nd.ID}

	cfg.ProbeInterval = 200 * time.Millisecond
	cfg.ProbeTimeout = 100 * time.Millisecond
	cfg.SuspicionMult = 3
	cfg.SuspicionMaxTimeoutMult = 2
	cfg.GossipInterval = 30 * time.Millisecond
	cfg.PushPullInterval = time.Second
	cfg.RejoinInterval = 300 * time.Millisecond

	cfg.ReconcileInterval = 100 * time.Millisecond
	cfg.DeadNodeGrace = 200 * time.Millisecond
	cfg.DeadServerGrace = 3 * time.Second
	cfg.HandoverTimeout = 3 * time.Second
	cfg.RepairGrace = time.Second
	if h.opts.Configure != nil {
		h.opts.Configure(nd.Index, &cfg)
	}
	return cfg
}

func (h *Cluster) start(nd *Node) {
	h.t.Helper()
	addr := raft.ServerAddress("raft-" + string(nd.ID))
	_, nd.Raft = raft.NewInmemTransport(addr)
	h.mu.Lock()
	for _, o := range h.nodes {
		if o == nd || o.Raft == nil {
			continue
		}
		if !h.cut[nd.ID] == !h.cut[o.ID] { // same side of any partition
			nd.Raft.Connect(o.Raft.LocalAddr(), o.Raft)
			o.Raft.Connect(addr, nd.Raft)
		}
	}
	h.mu.Unlock()
	c, err := cluster.Open(h.Config(nd))
	if err != nil {
		h.t.Fatalf("open %s: %v", nd.ID, err)
	}
	h.mu.Lock()
	nd.C = c
	h.mu.Unlock()
	if h.opts.AutoConfirm {
		nd.stopRec, nd.recDone = make(chan struct{}), make(chan struct{})
		go nd.recorder(h.opts.ConfirmDelay)
	}
}

// Nodes returns every node, up or down.
func (h *Cluster) Nodes() []*Node {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Node(nil), h.nodes...)
}

// Node returns node i.
func (h *Cluster) Node(i int) *Node { return h.Nodes()[i] }

// Up returns the running nodes.
func (h *Cluster) Up() []*Node {
	var out []*Node
	for _, nd := range h.Nodes() {
		if nd.C != nil {
			out = append(out, nd)
		}
	}
	return out
}

// Leader waits (up to 10 s) for a running node outside any cut-off side to lead, and
// returns it.
func (h *Cluster) Leader() *Node {
	h.t.Helper()
	var ld *Node
	h.Eventually(10*time.Second, "a leader", func() bool {
		for _, nd := range h.Up() {
			h.mu.Lock()
			cut := h.cut[nd.ID]
			h.mu.Unlock()
			if !cut && nd.C.IsLeader() {
				ld = nd
				return true
			}
		}
		return false
	})
	return ld
}

// Followers returns the running nodes that are not the leader.
func (h *Cluster) Followers() []*Node {
	ld := h.Leader()
	var out []*Node
	for _, nd := range h.Up() {
		if nd != ld {
			out = append(out, nd)
		}
	}
	return out
}

// WaitServers waits until the leader's raft configuration holds n servers, with as many
// voters as the cluster keeps for n nodes (3 from 3, 5 from 6, else 1).
func (h *Cluster) WaitServers(n int, timeout time.Duration) {
	h.t.Helper()
	want := 1
	switch {
	case n >= 6:
		want = 5
	case n >= 3:
		want = 3
	}
	h.Eventually(timeout, fmt.Sprintf("%d raft servers with %d voters", n, want), func() bool {
		var ld *Node
		for _, nd := range h.Up() {
			if nd.C.IsLeader() {
				ld = nd
			}
		}
		if ld == nil {
			return false
		}
		servers, voters := 0, 0
		for _, m := range ld.C.Members() {
			switch m.Role {
			case "leader", "voter":
				voters++
				servers++
			case "nonvoter":
				servers++
			}
		}
		return servers == n && voters == want
	})
}

// Kill crashes node i: it is cut from every network first (nothing it does afterwards
// reaches anyone, as after a power loss), then closed.
func (h *Cluster) Kill(i int) {
	h.t.Helper()
	nd := h.Node(i)
	if nd.C == nil {
		return
	}
	h.Net.SetDown(string(nd.ID), true)
	nd.Raft.DisconnectAll()
	for _, o := range h.Nodes() {
		if o != nd && o.Raft != nil {
			o.Raft.Disconnect(nd.Raft.LocalAddr())
		}
	}
	nd.stop()
}

func (nd *Node) stop() {
	if nd.stopRec != nil {
		close(nd.stopRec)
		<-nd.recDone
		nd.stopRec = nil
	}
	c := nd.C
	nd.h.mu.Lock()
	nd.C = nil
	nd.h.mu.Unlock()
	if err := c.Close(); err != nil {
		nd.h.t.Errorf("close %s: %v", nd.ID, err)
	}
}

// Restart starts node i again on its data directory (after Kill).
func (h *Cluster) Restart(i int) {
	h.t.Helper()
	nd := h.Node(i)
	if nd.C != nil {
		h.t.Fatalf("restart %s: it is running", nd.ID)
	}
	h.start(nd)
}

// Partition cuts the given nodes from the others: gossip, raft and forwarded writes.
// Inside each side everything works.
func (h *Cluster) Partition(idx ...int) {
	h.mu.Lock()
	var names []string
	for _, i := range idx {
		nd := h.nodes[i]
		h.cut[nd.ID] = true
		names = append(names, string(nd.ID))
	}
	nodes := append([]*Node(nil), h.nodes...)
	h.mu.Unlock()
	h.Net.Partition(names...)
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b && a.Raft != nil && b.Raft != nil && h.isCut(a.ID) != h.isCut(b.ID) {
				a.Raft.Disconnect(b.Raft.LocalAddr())
			}
		}
	}
}

// Heal ends every partition.
func (h *Cluster) Heal() {
	h.mu.Lock()
	h.cut = map[model.NodeID]bool{}
	nodes := append([]*Node(nil), h.nodes...)
	h.mu.Unlock()
	h.Net.Heal()
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b && a.C != nil && b.C != nil {
				a.Raft.Connect(b.Raft.LocalAddr(), b.Raft)
			}
		}
	}
}

func (h *Cluster) isCut(id model.NodeID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cut[id]
}

// Close stops every node.
func (h *Cluster) Close() {
	for _, nd := range h.Nodes() {
		if nd.C != nil {
			nd.stop()
		}
	}
	h.logW.mu.Lock()
	h.logW.done = true
	h.logW.mu.Unlock()
}

// Eventually polls cond every 20 ms until it holds, failing the test after timeout.
func (h *Cluster) Eventually(timeout time.Duration, what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("after %v: still waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Ctx is a context that ends with the test (or after 20 s).
func (h *Cluster) Ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	h.t.Cleanup(cancel)
	return ctx
}

// forwarder carries a node's writes to the leader in memory, unless a partition or a
// crash separates them.
type forwarder struct {
	h    *Cluster
	self model.NodeID
}

func (f forwarder) Forward(ctx context.Context, leader model.NodeID, _ cluster.NodeMeta, payload []byte) ([]byte, error) {
	if !f.h.Net.Reachable(string(f.self), string(leader)) {
		return nil, fmt.Errorf("node %s unreachable from %s", leader, f.self)
	}
	for _, nd := range f.h.Up() {
		if nd.ID == leader {
			return nd.C.ApplyForwarded(ctx, payload)
		}
	}
	return nil, fmt.Errorf("node %s is down", leader)
}

// recorder is a fake node's camera manager: it confirms handovers to its node.
func (nd *Node) recorder(delay time.Duration) {
	defer close(nd.recDone)
	c := nd.C
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	seen := map[model.CameraID]time.Time{}
	for {
		select {
		case <-nd.stopRec:
			return
		case <-c.Changes():
		case <-tick.C:
		}
		as, err := c.Assignments()
		if err != nil {
			continue
		}
		for _, a := range as {
			if a.Next != nd.ID {
				delete(seen, a.Camera)
				continue
			}
			if _, ok := seen[a.Camera]; !ok {
				seen[a.Camera] = time.Now()
			}
			if time.Since(seen[a.Camera]) < delay {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, _ = c.ConfirmRecording(ctx, a.Camera, nd.ID)
			cancel()
		}
	}
}

// testWriter sends log lines to t.Log until the test ends.
type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done && os.Getenv("CLUSTERTEST_QUIET") == "" {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
