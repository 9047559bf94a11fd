// Package clustertest runs whole Vigie nodes (node.Node: storage, cluster, gateway,
// recorders) inside one test process: raft over raft.InmemTransport, memberlist over the
// in-memory network of cluster/clustertest, forwarded writes carried in memory, one
// temporary data directory and one real HTTP listener (127.0.0.1, a concrete free port)
// per node, and failure-detection timeouts of a few hundred milliseconds. A test kills,
// restarts, partitions and drains nodes while simulated cameras (loadtest/simcam) are
// recorded, then counts the frames each camera's footage holds (SEI frame tags) to find
// what was lost.
//
// What it approximates (see Kill and Partition): node.Node has no abrupt stop, so a kill
// cuts the node off every network first and then closes it gracefully in the background;
// the peer API (footage reads between nodes) is real HTTP on 127.0.0.1, which a partition
// does not cut.
//
// It is for tests only: production code must not import it.
package clustertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/vigie-vms/vigie/cluster"
	ctest "github.com/vigie-vms/vigie/cluster/clustertest"
	"github.com/vigie-vms/vigie/loadtest/simcam"
	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/node"
)

// Key is the secret key every test node shares.
var Key = bytes.Repeat([]byte{0x42}, 32)

// Options tune a test cluster. The zero value is usable.
type Options struct {
	// Configure adjusts node i's configuration (after the harness's settings).
	Configure func(i int, cfg *node.Config)
	// Cluster adjusts node i's cluster configuration after the harness's fast timings.
	Cluster func(i int, cfg *cluster.Config)
	// LogLevel of the nodes' logs sent to t.Log (default warn). CLUSTERTEST_QUIET=1
	// silences them.
	LogLevel slog.Level
	// SegmentMaxAge of every node (default 10 s, the smallest the node accepts).
	SegmentMaxAge time.Duration
}

// Cluster is a test cluster of whole nodes.
type Cluster struct {
	t    testing.TB
	opts Options
	// Net is the gossip network (shared with the cluster-level harness).
	Net *ctest.Network

	mu    sync.Mutex
	nodes []*Node
	cut   map[string]bool // nodes on the cut-off side of a partition
	logW  *testWriter
}

// Node is one node of a test cluster.
type Node struct {
	Index int
	ID    string
	Dir   string
	// HTTPAddr is the node's REST/media/peer listener (kept across restarts).
	HTTPAddr string

	h      *Cluster
	n      *node.Node // nil while down
	raft   *raft.InmemTransport
	closed chan struct{} // closed when the last Close finished (Kill closes in the background)
}

// New starts n nodes — node 0 bootstraps the cluster, the others join through gossip —
// and waits until the leader has all of them in raft with the expected voters.
func New(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	h := &Cluster{t: t, opts: opts, Net: ctest.NewNetwork(), cut: map[string]bool{}}
	if h.opts.LogLevel == 0 {
		h.opts.LogLevel = slog.LevelWarn
	}
	if h.opts.SegmentMaxAge == 0 {
		h.opts.SegmentMaxAge = 10 * time.Second
	}
	h.logW = &testWriter{t: t}
	// The directory first: cleanups run last-in first-out, so the nodes close before it
	// is removed.
	base := t.TempDir()
	t.Cleanup(h.Close)
	for i := 0; i < n; i++ {
		nd := &Node{Index: i, ID: fmt.Sprintf("n%d", i+1), h: h}
		nd.Dir = filepath.Join(base, nd.ID)
		nd.HTTPAddr = freeAddr(t)
		// Every gossip address is known before the first node starts: seeds name them all.
		h.Net.NewTransport(nd.ID).Shutdown() //nolint:errcheck // reserves the address only
		h.nodes = append(h.nodes, nd)
	}
	for _, nd := range h.nodes {
		h.start(nd)
	}
	h.WaitServers(n, 30*time.Second)
	return h
}

// config is node nd's configuration.
func (h *Cluster) config(nd *Node) node.Config {
	cfg := node.DefaultConfig()
	cfg.NodeID = nd.ID
	cfg.DataDir = nd.Dir
	cfg.HTTPAddr = nd.HTTPAddr
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.RTSPAddr = "" // cameras are pulled; no push server
	cfg.RaftAddr = "127.0.0.1:0"
	cfg.SegmentMaxAge = h.opts.SegmentMaxAge
	cfg.NoSync = true
	cfg.LogLevel = "warn"
	var seeds []string
	for _, o := range h.nodes {
		if o != nd {
			seeds = append(seeds, h.Net.Addr(o.ID))
		}
	}
	if nd.Index != 0 {
		cfg.Seeds = seeds // node.Start bootstraps only a node without seeds
	}
	cfg.Inject = node.Inject{
		RaftTransport:   nd.raft,
		MemberTransport: h.Net.NewTransport(nd.ID),
		Forwarder:       forwarder{h: h, self: nd.ID},
		SecretKey:       Key,
		Cluster: func(c *cluster.Config) {
			c.Seeds = seeds // node 0 too: after a restart it rejoins the others
			c.HeartbeatTimeout = 300 * time.Millisecond
			c.ElectionTimeout = 300 * time.Millisecond
			c.LeaderLeaseTimeout = 150 * time.Millisecond
			c.CommitTimeout = 5 * time.Millisecond
			c.ApplyTimeout = 5 * time.Second
			c.ProbeInterval = 200 * time.Millisecond
			c.ProbeTimeout = 100 * time.Millisecond
			c.SuspicionMult = 3
			c.SuspicionMaxTimeoutMult = 2
			c.GossipInterval = 30 * time.Millisecond
			c.PushPullInterval = time.Second
			c.RejoinInterval = 300 * time.Millisecond
			c.ReconcileInterval = 100 * time.Millisecond
			c.DeadNodeGrace = 200 * time.Millisecond
			c.DeadServerGrace = time.Minute
			c.HandoverTimeout = 10 * time.Second
			if h.opts.Cluster != nil {
				h.opts.Cluster(nd.Index, c)
			}
		},
	}
	if h.opts.Configure != nil {
		h.opts.Configure(nd.Index, &cfg)
	}
	return cfg
}

func (h *Cluster) start(nd *Node) {
	h.t.Helper()
	addr := raft.ServerAddress("raft-" + nd.ID)
	_, nd.raft = raft.NewInmemTransport(addr)
	h.mu.Lock()
	for _, o := range h.nodes {
		if o == nd || o.raft == nil || o.n == nil {
			continue
		}
		if h.cut[nd.ID] == h.cut[o.ID] {
			nd.raft.Connect(o.raft.LocalAddr(), o.raft)
			o.raft.Connect(addr, nd.raft)
		}
	}
	h.mu.Unlock()
	cfg := h.config(nd)
	log := slog.New(slog.NewTextHandler(h.logW, &slog.HandlerOptions{Level: h.opts.LogLevel}))
	n, err := node.New(cfg, log.With(slog.String("test_node", nd.ID)))
	if err != nil {
		h.t.Fatalf("node %s: %v", nd.ID, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		h.t.Fatalf("start node %s: %v", nd.ID, err)
	}
	h.mu.Lock()
	nd.n = n
	nd.closed = make(chan struct{})
	h.mu.Unlock()
}

// Nodes returns every node, up or down.
func (h *Cluster) Nodes() []*Node {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Node(nil), h.nodes...)
}

// Node returns node i.
func (h *Cluster) Node(i int) *Node { return h.Nodes()[i] }

// ByID returns the node named id, or nil.
func (h *Cluster) ByID(id model.NodeID) *Node {
	for _, nd := range h.Nodes() {
		if nd.ID == string(id) {
			return nd
		}
	}
	return nil
}

// Up returns the running nodes.
func (h *Cluster) Up() []*Node {
	var out []*Node
	for _, nd := range h.Nodes() {
		if nd.N() != nil {
			out = append(out, nd)
		}
	}
	return out
}

// N is the running node.Node, nil while the node is down.
func (nd *Node) N() *node.Node {
	nd.h.mu.Lock()
	defer nd.h.mu.Unlock()
	return nd.n
}

// C is the node's cluster replica (catalog, assignments); nil while the node is down.
func (nd *Node) C() *cluster.Cluster {
	if n := nd.N(); n != nil {
		return n.Cluster()
	}
	return nil
}

// Base is the node's HTTP base URL.
func (nd *Node) Base() string { return "http://" + nd.HTTPAddr }

// API is a client of the node's REST and media endpoints.
func (nd *Node) API() *API { return &API{Base: nd.Base()} }

// Leader waits (up to 15 s) for a running node outside any cut-off side to lead and
// returns it.
func (h *Cluster) Leader() *Node {
	h.t.Helper()
	var ld *Node
	h.Eventually(15*time.Second, "a leader", func() bool {
		for _, nd := range h.Up() {
			if c := nd.C(); c != nil && !h.isCut(nd.ID) && c.IsLeader() {
				ld = nd
				return true
			}
		}
		return false
	})
	return ld
}

// WaitServers waits until the leader's raft configuration holds n servers with as many
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
		for _, nd := range h.Up() {
			c := nd.C()
			if c == nil || !c.IsLeader() {
				continue
			}
			servers, voters := 0, 0
			for _, m := range c.Members() {
				switch m.Role {
				case "leader", "voter":
					voters++
					servers++
				case "nonvoter":
					servers++
				}
			}
			return servers == n && voters == want
		}
		return false
	})
}

// Kill crashes node i as closely as node.Node allows. node.Node has no abrupt stop:
// Close stops the recorders, seals their open segments and tries to commit them. So Kill
// first cuts the node off gossip, raft and forwarded writes (nothing it does afterwards
// reaches the cluster, as after a power loss; its catalog commits fail and its sealed
// segments stay on its disk, to be reconciled by Restart), then closes it in the
// background. Differences from a real crash: the fragment in flight is sealed instead of
// lost, and the node's HTTP listener answers peer reads for up to ~5 s (the committer's
// drain) before it closes.
func (h *Cluster) Kill(i int) {
	h.t.Helper()
	nd := h.Node(i)
	h.mu.Lock()
	n := nd.n
	nd.n = nil
	done := nd.closed
	h.mu.Unlock()
	if n == nil {
		return
	}
	h.Net.SetDown(nd.ID, true)
	nd.raft.DisconnectAll()
	for _, o := range h.Nodes() {
		if o != nd && o.raft != nil {
			o.raft.Disconnect(nd.raft.LocalAddr())
		}
	}
	go func() {
		defer close(done)
		if err := n.Close(); err != nil {
			h.t.Logf("close killed node %s: %v", nd.ID, err)
		}
	}()
}

// Stop closes node i gracefully (recorders sealed, segments committed) and waits.
func (h *Cluster) Stop(i int) {
	nd := h.Node(i)
	h.mu.Lock()
	n := nd.n
	nd.n = nil
	done := nd.closed
	h.mu.Unlock()
	if n == nil {
		return
	}
	if err := n.Close(); err != nil {
		h.t.Errorf("close node %s: %v", nd.ID, err)
	}
	close(done)
}

// Restart starts node i again on its data directory and addresses (after Kill or Stop).
// It waits for a killed node's background close to end first.
func (h *Cluster) Restart(i int) {
	h.t.Helper()
	nd := h.Node(i)
	if nd.N() != nil {
		h.t.Fatalf("restart %s: it is running", nd.ID)
	}
	if nd.closed != nil {
		<-nd.closed
	}
	h.start(nd)
}

// Partition cuts the given nodes from the others: gossip, raft and forwarded writes
// (peer reads over HTTP are not cut). Inside each side everything works.
func (h *Cluster) Partition(idx ...int) {
	h.mu.Lock()
	var names []string
	for _, i := range idx {
		h.cut[h.nodes[i].ID] = true
		names = append(names, h.nodes[i].ID)
	}
	nodes := append([]*Node(nil), h.nodes...)
	h.mu.Unlock()
	h.Net.Partition(names...)
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b && a.raft != nil && b.raft != nil && h.isCut(a.ID) != h.isCut(b.ID) {
				a.raft.Disconnect(b.raft.LocalAddr())
			}
		}
	}
}

// Heal ends every partition (killed nodes stay down).
func (h *Cluster) Heal() {
	h.mu.Lock()
	h.cut = map[string]bool{}
	nodes := append([]*Node(nil), h.nodes...)
	h.mu.Unlock()
	h.Net.Heal()
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b && a.N() != nil && b.N() != nil {
				a.raft.Connect(b.raft.LocalAddr(), b.raft)
			}
		}
	}
}

func (h *Cluster) isCut(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cut[id]
}

// Drain asks (through node via's REST API) the cluster to drain node i: its cameras move
// away make-before-break.
func (h *Cluster) Drain(ctx context.Context, via, i int) error {
	return h.Node(via).API().Drain(ctx, h.Node(i).ID)
}

// Owners returns, from node via's replica, each camera's owner.
func (h *Cluster) Owners(via int) map[model.CameraID]model.Assignment {
	h.t.Helper()
	as, err := h.Node(via).C().Assignments()
	if err != nil {
		h.t.Fatalf("assignments: %v", err)
	}
	out := make(map[model.CameraID]model.Assignment, len(as))
	for _, a := range as {
		out[a.Camera] = a
	}
	return out
}

// Close stops every node (at the end of the test): the followers first, together, then
// the leader, so their last commits still find a leader.
func (h *Cluster) Close() {
	var leader *Node
	for _, nd := range h.Nodes() {
		if c := nd.C(); c != nil && c.IsLeader() {
			leader = nd
		}
	}
	var wg sync.WaitGroup
	for _, nd := range h.Nodes() {
		if nd == leader {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); h.closeNode(nd) }()
	}
	wg.Wait()
	if leader != nil {
		h.closeNode(leader)
	}
	h.logW.mu.Lock()
	h.logW.done = true
	h.logW.mu.Unlock()
}

func (h *Cluster) closeNode(nd *Node) {
	h.mu.Lock()
	n, done := nd.n, nd.closed
	nd.n = nil
	h.mu.Unlock()
	if n != nil {
		_ = n.Close()
		close(done)
	} else if done != nil {
		<-done
	}
}

// Eventually polls cond every 50 ms until it holds, failing the test after timeout.
func (h *Cluster) Eventually(timeout time.Duration, what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("after %v: still waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// forwarder carries a node's writes to the leader in memory, unless a partition or a
// crash separates them.
type forwarder struct {
	h    *Cluster
	self string
}

func (f forwarder) Forward(ctx context.Context, leader model.NodeID, _ cluster.NodeMeta, payload []byte) ([]byte, error) {
	if !f.h.Net.Reachable(f.self, string(leader)) {
		return nil, fmt.Errorf("node %s unreachable from %s: %w", leader, f.self, model.ErrNotLeader)
	}
	nd := f.h.ByID(leader)
	if nd == nil {
		return nil, fmt.Errorf("node %s unknown: %w", leader, model.ErrNotLeader)
	}
	c := nd.C()
	if c == nil {
		return nil, fmt.Errorf("node %s is down: %w", leader, model.ErrNotLeader)
	}
	return c.ApplyForwarded(ctx, payload)
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

var _ io.Writer = (*testWriter)(nil)

// freeAddr returns a 127.0.0.1 address with a port nobody listens on right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// StartSimcam starts simulated cameras (simcam's embedded H.264 clip: 25 fps, a keyframe
// every 50 frames) on a free port, closed at the end of the test.
func StartSimcam(t testing.TB, cams ...string) *simcam.Server {
	t.Helper()
	sim, err := simcam.New(simcam.Config{Addr: freeAddr(t), Cameras: cams})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	return sim
}

// Register creates tenant and registers the cameras of sim named ids through node via's
// REST API, with the given redundancy class ("" = standard).
func (h *Cluster) Register(ctx context.Context, via int, tenant string, sim *simcam.Server, ids []string, redundancy string) {
	h.t.Helper()
	api := h.Node(via).API()
	if err := api.CreateTenant(ctx, tenant); err != nil {
		var se *StatusError
		if !errors.As(err, &se) || se.Status != http.StatusConflict {
			h.t.Fatalf("create tenant %s: %v", tenant, err)
		}
	}
	specs := make([]CameraSpec, len(ids))
	for i, id := range ids {
		specs[i] = CameraSpec{ID: id, Tenant: tenant, URL: sim.URL(id), Redundancy: redundancy}
	}
	if err := api.ImportCameras(ctx, specs); err != nil {
		h.t.Fatalf("import %d cameras: %v", len(ids), err)
	}
}
