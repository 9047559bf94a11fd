package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/cluster"
	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/node"
	"github.com/vigie-vms/vigie/node/clustertest"
	"github.com/vigie-vms/vigie/node/protect"
)

// Issue 4 acceptance on whole node processes: a killed owner's open segment survives on
// its hot replica (TestOwnerKilledMidSegment), and kills during sealing and striping
// leave no half-state (TestCrashConsistency).

// TestOwnerKilledMidSegment runs 3 `vigie node` processes with 6 simulated cameras and a
// segment max age of 60 s, and kills (SIGKILL) the node recording the most cameras about
// 22 s into their open segments. It does not restart it: whatever a survivor shows of the
// minute before the kill comes from the hot replicas the survivors adopted. For every
// camera the killed node recorded, over [kill−20 s, kill+10 s] read from a survivor:
// the timeline has footage up to at most one fragment (1 s) before the kill, with no gap
// before that; the export holds every frame from the window start up to at most one
// fragment (25 frames, + 5 for the frames sent while SIGKILL was delivered) before the
// frame the camera was sending at the kill.
func TestOwnerKilledMidSegment(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: 3 node processes, ~70 s")
	}
	const (
		cams          = 6
		framesPerFrag = 25 // --fragment-max 1s at 25 fps, a GOP is 2 s: fragments are 1 s
		slack         = 5  // frames sent while SIGKILL was being delivered
		before        = 20 * time.Second
		after         = 10 * time.Second
	)
	var ids []string
	for i := range cams {
		ids = append(ids, fmt.Sprintf("mid-cam-%d", i+1))
	}
	sim := startSimcam(t, ids...)
	key := writeSecretKey(t)
	nodes := startClusterNodes(t, 3, key, "--segment-max-age", "60s", "--log-level", "info")
	waitVoters(t, nodes[0].base(), 3, 30*time.Second)

	via := nodes[1].base()
	createTenant(t, via, "t1")
	begin := time.Now()
	for _, id := range ids {
		createCamera(t, via, map[string]any{"id": id, "tenant": "t1", "url": sim.URL(id)})
	}
	waitAllRecording(t, nodes[0].base(), ids, 60*time.Second)
	t.Logf("%d cameras recording %s after registration", cams, time.Since(begin).Round(time.Millisecond))
	time.Sleep(before + 2*time.Second) // the whole window before the kill is in open segments (max age 60 s)

	st := getClusterStatus(t, nodes[0].base())
	victim, survivors := busiest(st, nodes)
	owner := ownersOf(t, survivors[0].base(), ids, begin)
	var moved []string
	for _, id := range ids {
		if owner[id] == victim.id {
			moved = append(moved, id)
		}
	}
	if len(moved) == 0 {
		t.Fatalf("the node with the most cameras (%s) holds none of the latest segments: %v", victim.id, owner)
	}
	// The segments the kill interrupts: open, started before the window.
	openAtKill := map[string]segment{}
	for _, id := range moved {
		for _, sg := range listSegments(t, survivors[0].base(), id, begin.Add(-time.Minute), time.Now().Add(time.Minute)) {
			if !sg.Sealed {
				openAtKill[id] = sg
			}
		}
	}
	sentAtKill := map[string]uint64{}
	for _, id := range moved {
		sentAtKill[id] = sim.FramesSent(id)
	}
	killedAt := time.Now()
	victim.kill()
	t.Logf("killed %s (SIGKILL) recording %d cameras %v; their open segments at the kill: %s", victim.id, len(moved), moved, describeOpen(openAtKill, killedAt))

	// Failover, as a survivor sees it.
	waitAllRecording(t, survivors[0].base(), moved, 60*time.Second)
	recording := time.Since(killedAt)
	t.Logf("the %d cameras record on survivors again %s after the kill", len(moved), recording.Round(time.Millisecond))
	if wait := time.Until(killedAt.Add(after + 3*time.Second)); wait > 0 {
		time.Sleep(wait) // the window's end is recorded and behind the live edge
	}

	from, to := killedAt.Add(-before), killedAt.Add(after)
	var worstFrames uint64
	var worstTL time.Duration
	for _, id := range moved {
		t.Run(id, func(t *testing.T) {
			sv := survivors[0]
			// The adopted replica reaches the catalog within the replica upkeep interval
			// (5 s) of the owner being declared dead: poll for it.
			var c clustertest.Coverage
			var err error
			var pre uint64
			var havePre bool
			deadline := time.Now().Add(30 * time.Second)
			for {
				var frames []uint64
				frames, c, err = exportFrameList(sv.base(), id, from, to)
				pre, havePre = lastBelow(frames, sentAtKill[id])
				if err == nil && havePre && pre+1+framesPerFrag+slack >= sentAtKill[id] {
					break
				}
				if time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Second)
			}
			if err != nil {
				t.Fatalf("export of %s [kill−%s, kill+%s] from %s (the killed %s not restarted): %v", id, before, after, sv.id, victim.id, err)
			}
			if !havePre {
				t.Fatalf("export of %s from %s holds no frame recorded before the kill (frame %d was being sent): %s", id, sv.id, sentAtKill[id], c)
			}
			lost := sentAtKill[id] - (pre + 1)
			if pre+1 > sentAtKill[id] {
				lost = 0
			}
			worstFrames = max(worstFrames, lost)
			// Every frame from the window start to the last one before the kill.
			var holesBefore []clustertest.Hole
			for _, h := range c.Holes {
				if h.After < pre {
					holesBefore = append(holesBefore, h)
				}
			}
			wantFirst := int64(sentAtKill[id]) - int64(before/time.Second)*25 + gopFrames + 10
			t.Logf("export from %s: %s; frame at kill %d, last recorded before it %d: %d frames lost (%.2f s); segment open at the kill: %s",
				sv.id, c, sentAtKill[id], pre, lost, float64(lost)/25, describeOpen(map[string]segment{id: openAtKill[id]}, killedAt))
			if lost > framesPerFrag+slack {
				t.Errorf("the kill lost %d frames already sent (last recorded %d, frame %d was being sent), want at most %d (one fragment)", lost, pre, sentAtKill[id], framesPerFrag+slack)
			}
			if len(holesBefore) > 0 {
				t.Errorf("frames missing before the kill: %+v (%s)", holesBefore, c)
			}
			if int64(c.First) > wantFirst {
				t.Errorf("the export starts at frame %d, want at most %d (the window starts 20 s before the kill, at frame ≈ %d)", c.First, wantFirst, int64(sentAtKill[id])-500)
			}

			// The timeline, from both survivors: footage up to ≤ 1 fragment before the kill.
			for _, s := range survivors {
				tl := getTimeline(t, s.base(), id, from, to)
				var edge time.Time
				var covered time.Duration
				for _, sp := range tl.Spans {
					if sp.Start.Before(killedAt) {
						end := sp.End
						if end.After(killedAt) {
							end = killedAt
						}
						if end.After(edge) {
							edge = end
						}
						covered += end.Sub(maxTime(sp.Start, from))
					}
				}
				var gapsBefore []string
				for _, g := range tl.Gaps {
					if g.Start.Before(edge.Add(-100*time.Millisecond)) && g.End.After(from.Add(time.Second)) {
						gapsBefore = append(gapsBefore, fmt.Sprintf("%s→%s %s", g.Start.Format("15:04:05.000"), g.End.Format("15:04:05.000"), g.Cause))
					}
				}
				short := killedAt.Sub(edge)
				if edge.IsZero() {
					short = before
				}
				worstTL = max(worstTL, short)
				t.Logf("timeline from %s: footage before the kill %.1f s of %s, ends %s before the kill; gaps before it: %v", s.id, covered.Seconds(), before, short.Round(time.Millisecond), gapsBefore)
				if short > time.Second+500*time.Millisecond {
					t.Errorf("timeline from %s: footage before the kill at %s ends %s before it, want ≤ 1 fragment (1 s + 0.5 s):%s", s.id, killedAt.Format("15:04:05.000"), short.Round(time.Millisecond), tl)
				}
				if len(gapsBefore) > 0 {
					t.Errorf("timeline from %s: gaps in the footage before the kill: %v", s.id, gapsBefore)
				}
			}
		})
	}
	adopted := 0
	for _, s := range survivors {
		adopted += len(s.logLines("its replica becomes the footage"))
	}
	t.Logf("SIGKILL mid-segment, %d cameras: worst loss %d frames (%.2f s) in the export, timeline ends ≤ %s before the kill; %d replica adoptions logged by the survivors",
		len(moved), worstFrames, float64(worstFrames)/25, worstTL.Round(time.Millisecond), adopted)
}

func describeOpen(open map[string]segment, killedAt time.Time) string {
	var parts []string
	for id, sg := range open {
		if sg.ID == "" {
			parts = append(parts, id+": none")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: %s opened %.1f s before", id, sg.ID, killedAt.Sub(sg.Start).Seconds()))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// lastBelow returns the largest of sorted frames that is < n.
func lastBelow(frames []uint64, n uint64) (uint64, bool) {
	i := sort.Search(len(frames), func(i int) bool { return frames[i] >= n })
	if i == 0 {
		return 0, false
	}
	return frames[i-1], true
}

// exportFrameList is exportFrames that also returns the sorted unique frame numbers.
func exportFrameList(base, cam string, from, to time.Time) ([]uint64, clustertest.Coverage, error) {
	c, err := exportFrames(base, cam, from, to)
	if err != nil {
		return nil, c, err
	}
	// exportFrames keeps only the coverage: the frames are First..Last less the holes.
	var out []uint64
	next := c.First
	for _, h := range c.Holes {
		for k := next; k <= h.After; k++ {
			out = append(out, k)
		}
		next = h.Before
	}
	for k := next; c.Frames > 0 && k <= c.Last; k++ {
		out = append(out, k)
	}
	return out, c, nil
}

// waitVoters waits until base reports n active voters (leader included).
func waitVoters(t *testing.T, base string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := getClusterStatus(t, base)
		voters := 0
		for _, nd := range st.Nodes {
			if nd.State == "active" && (nd.Role == "leader" || nd.Role == "voter") {
				voters++
			}
		}
		if voters == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no cluster of %d voters after %s: %+v", n, timeout, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------------------
// Crash consistency.

// crashTimings are the striping, orphan and repair settings of the nodes of
// TestCrashConsistency. `vigie node` cannot set them (node.Config has no key for the
// protect settings: only Inject.Protect, in-process), so the test runs its nodes as this
// test binary re-executed as a node (TestHelperNodeProcess): the same node.Load and
// node.New as `vigie node`, with these set through Inject.
var crashTimings = struct {
	StripeInterval, MinSegmentAge, MaxStripeWait, OrphanGrace, RepairInterval, RepairGrace time.Duration
}{
	StripeInterval: time.Second,
	MinSegmentAge:  time.Second,
	MaxStripeWait:  12 * time.Second,
	OrphanGrace:    15 * time.Second,
	RepairInterval: 2 * time.Second,
	RepairGrace:    4 * time.Second,
}

// helperNodeEnv, when set, makes TestHelperNodeProcess run a node: its value is the JSON of
// a helperSpec.
const helperNodeEnv = "VIGIE_E2E_HELPER_NODE"

type helperSpec struct {
	Args      []string `json:"args"`       // as for `vigie node`
	DebugAddr string   `json:"debug_addr"` // serves GET /catalog (helperCatalog)
	// CommitDelay slows this node's stripe commits (a slow Raft round): the striper waits
	// this long after its shards are shipped and before CommitStripe, and as long again
	// after it and before deleting the shipped segments, printing faultShipped and
	// faultCommitted on stderr; a kill then lands in one of the two crash windows.
	CommitDelay time.Duration `json:"commit_delay"`
}

// Markers a helper node with a CommitDelay prints on stderr.
const (
	faultShipped   = "e2e-fault: stripe shipped, commit delayed"
	faultCommitted = "e2e-fault: stripe committed, delete delayed"
)

// slowCommits is a protect.Catalog whose CommitStripe is slow (see helperSpec.CommitDelay).
type slowCommits struct {
	protect.Catalog
	delay time.Duration
}

func (c slowCommits) CommitStripe(ctx context.Context, st model.Stripe) error {
	fmt.Fprintf(os.Stderr, "%s: stripe=%s k=%d m=%d\n", faultShipped, st.ID, st.K, st.M)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(c.delay):
	}
	err := c.Catalog.CommitStripe(ctx, st)
	if err == nil {
		fmt.Fprintf(os.Stderr, "%s: stripe=%s\n", faultCommitted, st.ID)
		time.Sleep(c.delay)
	}
	return err
}

// helperCatalog is what a helper node's debug endpoint tells of the catalog (its local
// replica of it) and of its own protector.
type helperCatalog struct {
	Node    string               `json:"node"`
	Leader  bool                 `json:"leader"`
	Members []model.NodeStatus   `json:"members"`
	Stripes []model.Stripe       `json:"stripes"`
	Tasks   []cluster.RepairTask `json:"tasks"`
	Repair  cluster.RepairReport `json:"repair"`
	Stats   protect.Stats        `json:"stats"`
}

// TestHelperNodeProcess is not a test: it is the node process TestCrashConsistency starts
// (this binary, re-executed with helperNodeEnv set). It runs until SIGINT/SIGTERM.
func TestHelperNodeProcess(t *testing.T) {
	raw := os.Getenv(helperNodeEnv)
	if raw == "" {
		t.Skip("not a test: the node process of TestCrashConsistency (runs only with " + helperNodeEnv + " set)")
	}
	if err := runHelperNode(raw); err != nil {
		fmt.Fprintln(os.Stderr, "helper node:", err)
		os.Exit(1)
	}
}

func runHelperNode(raw string) error {
	var spec helperSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		return fmt.Errorf("%s: %w", helperNodeEnv, err)
	}
	fset := flag.NewFlagSet("node", flag.ContinueOnError)
	cfg, err := node.Load(fset, spec.Args, os.LookupEnv)
	if err != nil {
		return err
	}
	tm := crashTimings
	cfg.Inject.Protect = func(c *protect.Config) {
		c.StripeInterval, c.MinSegmentAge, c.MaxStripeWait = tm.StripeInterval, tm.MinSegmentAge, tm.MaxStripeWait
		c.OrphanGrace, c.RepairInterval = tm.OrphanGrace, tm.RepairInterval
		c.SurplusGrace = 2 * time.Second // shipped segments leave well within the 10 s the check allows after a stripe is made
		c.ScrubPause, c.DiskInterval = 10*time.Second, 2*time.Second
		if spec.CommitDelay > 0 {
			c.Catalog = slowCommits{Catalog: c.Catalog, delay: spec.CommitDelay}
		}
	}
	cfg.Inject.Cluster = func(c *cluster.Config) { c.RepairGrace = tm.RepairGrace }
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.New(cfg, nil)
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /catalog", func(w http.ResponseWriter, _ *http.Request) {
		defer func() {
			if r := recover(); r != nil {
				http.Error(w, fmt.Sprintf("panic: %v\n%s", r, debug.Stack()), http.StatusInternalServerError)
			}
		}()
		clu := n.Cluster()
		out := helperCatalog{Node: cfg.NodeID, Leader: clu.IsLeader(), Members: clu.Members(), Stats: n.ProtectStats()}
		var err error
		if out.Stripes, err = clu.Stripes("", 0); err == nil {
			out.Repair, err = clu.RepairStatus()
		}
		for _, m := range out.Members {
			if err != nil {
				break
			}
			var tasks []cluster.RepairTask
			tasks, err = clu.RepairTasks(m.ID, 1<<20)
			out.Tasks = append(out.Tasks, tasks...)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	ln, err := net.Listen("tcp", spec.DebugAddr)
	if err != nil {
		_ = n.Close()
		return fmt.Errorf("debug listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Printf("Vigie helper node %s is running (debug %s).\n", cfg.NodeID, spec.DebugAddr)
	<-ctx.Done()
	_ = srv.Close()
	return n.Close()
}

// helperNode is one helper node process of TestCrashConsistency.
type helperNode struct {
	*proc
	id, gossip, debug string
	dataDir           string
	spec              helperSpec
	started           time.Time // last (re)start
	starts            int
	past              []*proc // the processes of earlier starts (killed)
}

// allLogLines is logLines over every process this node ran.
func (h *helperNode) allLogLines(substr string) []string {
	var out []string
	for _, p := range append(append([]*proc(nil), h.past...), h.proc) {
		out = append(out, p.logLines(substr)...)
	}
	return out
}

// startExe is startProc for any executable with extra environment.
func startExe(t *testing.T, exe string, env []string, name, dir string, a addrs, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, addrs: a, dir: dir, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(exe, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s (pid %d) stderr:\n%s", p.name, p.cmd.Process.Pid, tail(p.stderr.String(), 120))
		}
	})
	return p
}

// run starts (or restarts) the helper node process on its data dir.
func (h *helperNode) run(t *testing.T) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(h.spec)
	if err != nil {
		t.Fatal(err)
	}
	if h.proc != nil {
		h.past = append(h.past, h.proc)
	}
	h.starts++
	name := h.id
	if h.starts > 1 {
		name = fmt.Sprintf("%s (start %d)", h.id, h.starts)
	}
	a := addrs{}
	for k := 0; k+1 < len(h.spec.Args); k++ {
		switch h.spec.Args[k] {
		case "--http-addr":
			a.HTTP = h.spec.Args[k+1]
		case "--grpc-addr":
			a.GRPC = h.spec.Args[k+1]
		case "--rtsp-addr":
			a.RTSP = h.spec.Args[k+1]
		case "--raft-addr":
			a.Raft = h.spec.Args[k+1]
		}
	}
	h.proc = startExe(t, exe, []string{helperNodeEnv + "=" + string(raw), "VIGIE_E2E_BIN=" + vigieBin},
		name, h.dataDir, a, "-test.run=^TestHelperNodeProcess$", "-test.count=1", "-test.timeout=30m")
	h.started = time.Now()
}

func (h *helperNode) catalog(t *testing.T) helperCatalog {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var c helperCatalog
		res, err := http.Get("http://" + h.debug + "/catalog")
		if err == nil {
			var b []byte
			b, err = io.ReadAll(res.Body)
			res.Body.Close()
			switch {
			case err != nil:
			case res.StatusCode != http.StatusOK:
				t.Fatalf("%s: GET /catalog: status %d: %s", h.id, res.StatusCode, b)
			default:
				if err := json.Unmarshal(b, &c); err != nil {
					t.Fatalf("%s: GET /catalog: %v", h.id, err)
				}
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: GET /catalog: %v", h.id, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startHelperCluster is startClusterNodes with helper node processes; node i gets
// delays[i] as its CommitDelay.
func startHelperCluster(t *testing.T, n int, delays []time.Duration, keyFile string, extra ...string) []*helperNode {
	t.Helper()
	nodes := make([]*helperNode, n)
	for i := range nodes {
		nodes[i] = &helperNode{id: fmt.Sprintf("cc-n%d", i+1), gossip: freeUDPAndTCP(t), debug: freeAddr(t), dataDir: t.TempDir()}
	}
	for i, nd := range nodes {
		var seeds []string
		for j, o := range nodes {
			if j != i {
				seeds = append(seeds, o.gossip)
			}
		}
		args := append([]string{"--data-dir", nd.dataDir, "--node-id", nd.id, "--gossip-addr", nd.gossip,
			"--secret-key-file", keyFile}, freeAddrs(t).flags()...)
		if i > 0 {
			args = append(args, "--seeds", strings.Join(seeds, ","))
		}
		nd.spec = helperSpec{Args: append(args, extra...), DebugAddr: nd.debug}
		if i < len(delays) {
			nd.spec.CommitDelay = delays[i]
		}
		nd.run(t)
		if i == 0 {
			nd.waitReady(30 * time.Second)
		}
	}
	for _, nd := range nodes[1:] {
		nd.waitReady(30 * time.Second)
	}
	return nodes
}

// diskFile is a file found in a node's store.
type diskFile struct {
	name  string
	mtime time.Time
}

// inventory is what a node's store holds on disk: shard files by name
// (<stripe>.<index>.shard), segment files by segment id, and unfinished transfers.
type inventory struct {
	shards   map[string]diskFile
	segments map[string]diskFile
	tmp      []diskFile
}

func takeInventory(t *testing.T, dataDir string) inventory {
	t.Helper()
	inv := inventory{shards: map[string]diskFile{}, segments: map[string]diskFile{}}
	store := filepath.Join(dataDir, "segments")
	entries, err := os.ReadDir(filepath.Join(store, "shards"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		f := diskFile{name: e.Name(), mtime: info.ModTime()}
		switch {
		case strings.Contains(e.Name(), ".tmp-"):
			inv.tmp = append(inv.tmp, f)
		case strings.HasSuffix(e.Name(), ".shard"):
			inv.shards[e.Name()] = f
		}
	}
	_ = filepath.WalkDir(filepath.Join(store, "segments"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(d.Name(), ".seg") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		inv.segments[strings.TrimSuffix(d.Name(), ".seg")] = diskFile{name: path, mtime: info.ModTime()}
		return nil
	})
	return inv
}

func shardFileName(stripe model.StripeID, index int) string {
	return fmt.Sprintf("%s.%d.shard", stripe, index)
}

// parseShardFile splits <stripe>.<index>.shard.
func parseShardFile(name string) (model.StripeID, int, bool) {
	base := strings.TrimSuffix(name, ".shard")
	i := strings.LastIndexByte(base, '.')
	if i < 0 {
		return "", 0, false
	}
	idx, err := strconv.Atoi(base[i+1:])
	if err != nil {
		return "", 0, false
	}
	return model.StripeID(base[:i]), idx, true
}

// stripeTime is the creation time encoded in a stripe id (s<unix nanos hex>-<random>).
func stripeTime(id model.StripeID) (time.Time, bool) {
	s := strings.TrimPrefix(string(id), "s")
	if i := strings.IndexByte(s, '-'); i > 0 {
		s = s[:i]
	}
	ns, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, int64(ns)), true
}

// TestCrashConsistency (issue 4 item 7) runs 3 nodes (2+1 stripes; striping every 1 s,
// orphan grace 15 s, repair grace 4 s: see crashTimings) recording 9 simulated cameras
// with 10 s segments, then kills (SIGKILL) one node 6 times at random moments 0.5–4 s
// after it came back, restarting it each time: kills land while it seals, ships or
// receives stripe shards, and commits. After the orphan grace it checks the stores of
// all three nodes against the catalog: every shard of every committed stripe is on the
// node the stripe names (a shard file, or the segment file for a data shard), or queued
// for repair; no shard file older than the orphan grace belongs to no committed stripe;
// no segment file remains where a stripe moved it elsewhere; no unfinished transfer is
// left; and every listed segment of every camera exports.
func TestCrashConsistency(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: 3 node processes killed and restarted, ~2.5 min")
	}
	const (
		cams        = 9
		kills       = 8
		commitDelay = time.Second
	)
	var ids []string
	for i := range cams {
		ids = append(ids, fmt.Sprintf("cc-cam-%d", i+1))
	}
	sim := startSimcam(t, ids...)
	key := writeSecretKey(t)
	nodes := startHelperCluster(t, 3, []time.Duration{0, 0, commitDelay}, key, "--segment-max-age", "10s", "--log-level", "info")
	waitVoters(t, nodes[0].base(), 3, 30*time.Second)
	createTenant(t, nodes[0].base(), "t1")
	begin := time.Now()
	for _, id := range ids {
		createCamera(t, nodes[0].base(), map[string]any{"id": id, "tenant": "t1", "url": sim.URL(id)})
	}
	waitAllRecording(t, nodes[0].base(), ids, 60*time.Second)

	// Striping under way: wait for the first stripes.
	deadline := time.Now().Add(45 * time.Second)
	for len(nodes[0].catalog(t).Stripes) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 3 stripes 45 s after the cameras recorded: %+v", nodes[0].catalog(t).Stripes)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("%d stripes committed %s after registration; now killing %s %d times", len(nodes[0].catalog(t).Stripes), time.Since(begin).Round(time.Millisecond), nodes[2].id, kills)

	victim := nodes[2]
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 4))
	var killTimes []string
	for k := 0; k < kills; k++ {
		up := time.Now()
		what := "random"
		if k%2 == 1 {
			// Aimed: wait for the victim to ship a stripe, then kill it at a random moment
			// of the next 2×commitDelay: before its commit, or after it and before it
			// deleted the shipped segments.
			shipped := func() int { return strings.Count(victim.stderr.String(), faultShipped) }
			seen := shipped()
			for shipped() == seen && time.Since(up) < 20*time.Second {
				time.Sleep(50 * time.Millisecond)
			}
			if shipped() > seen {
				time.Sleep(time.Duration(rng.Int64N(int64(2 * commitDelay))))
				what = "aimed"
			}
		} else {
			time.Sleep(500*time.Millisecond + time.Duration(rng.Int64N(int64(3500*time.Millisecond))))
		}
		victim.kill()
		window := faultWindow(victim.stderr.String())
		down := time.Duration(rng.Int64N(int64(3 * time.Second)))
		killTimes = append(killTimes, fmt.Sprintf("%s kill after %.1fs up (%s), %.1fs down", what, time.Since(up).Seconds(), window, down.Seconds()))
		time.Sleep(down)
		victim.run(t)
		victim.waitReady(60 * time.Second)
	}
	t.Logf("%d kills of %s:\n  %s", kills, victim.id, strings.Join(killTimes, "\n  "))

	// Settle: everything the kills left is past the orphan grace since the last restart.
	settle := crashTimings.OrphanGrace + 5*crashTimings.StripeInterval + 5*time.Second
	time.Sleep(settle)
	waitAllRecording(t, nodes[0].base(), ids, 30*time.Second)

	checkAt := time.Now()
	var inv1, inv2 []inventory
	for _, nd := range nodes {
		inv1 = append(inv1, takeInventory(t, nd.dataDir))
	}
	cat := nodes[0].catalog(t)
	for _, nd := range nodes {
		inv2 = append(inv2, takeInventory(t, nd.dataDir))
	}
	byNode := map[model.NodeID]int{}
	for i, nd := range nodes {
		byNode[model.NodeID(nd.id)] = i
	}
	queued := map[string]bool{}
	for _, task := range cat.Tasks {
		queued[shardFileName(task.Stripe.ID, task.Index)] = true
	}
	t.Logf("catalog (from %s, leader=%v): %d stripes, %d repair tasks, repair report %+v", cat.Node, cat.Leader, len(cat.Stripes), len(cat.Tasks), cat.Repair)

	// 1. Every shard a committed stripe claims is where it says, or queued for repair.
	placed := map[model.NodeID]map[string]bool{}
	dataOn := map[string]model.NodeID{} // segment id → node holding its data shard
	codes := map[string]int{}
	present, asSegment, repairQueued := 0, 0, 0
	for _, st := range cat.Stripes {
		codes[fmt.Sprintf("%d+%d", st.K, st.M)]++
		for i, sh := range st.Shards {
			name := shardFileName(st.ID, i)
			if placed[sh.Node] == nil {
				placed[sh.Node] = map[string]bool{}
			}
			placed[sh.Node][name] = true
			if i < st.K && sh.Segment != "" {
				dataOn[string(sh.Segment)] = sh.Node
			}
			ni, ok := byNode[sh.Node]
			switch {
			case !ok:
				t.Errorf("stripe %s shard %d is placed on %q, not a node of this cluster", st.ID, i, sh.Node)
			case inv2[ni].shards[name].name != "":
				present++
			case i < st.K && sh.Segment != "" && inv2[ni].segments[string(sh.Segment)].name != "":
				present++
				asSegment++
			case queued[name]:
				repairQueued++
			default:
				t.Errorf("stripe %s (%d+%d) claims shard %d (segment %q, %d bytes) on %s: not on its disk (no %s, no segment file) and not queued for repair",
					st.ID, st.K, st.M, i, sh.Segment, sh.Bytes, sh.Node, name)
			}
		}
	}
	t.Logf("stripes by code %v: %d shards present (%d as segment files), %d queued for repair", codes, present, asSegment, repairQueued)

	// 2. No orphan shard, surplus segment or unfinished transfer outlived the grace.
	old := func(nd *helperNode, f diskFile, grace time.Duration) bool {
		limit := checkAt.Add(-grace)
		return f.mtime.Before(limit) && nd.started.Before(limit)
	}
	orphanGrace := crashTimings.OrphanGrace + 3*crashTimings.StripeInterval + 2*time.Second
	for i, nd := range nodes {
		orphans, young, surplus, unknownSegs := 0, 0, 0, 0
		for name, f := range inv1[i].shards {
			if placed[model.NodeID(nd.id)][name] {
				continue
			}
			if _, _, ok := parseShardFile(name); !ok {
				t.Errorf("%s: file %s in the shard directory is not <stripe>.<index>.shard", nd.id, name)
				continue
			}
			if old(nd, f, orphanGrace) {
				orphans++
				t.Errorf("%s: shard file %s (written %s before the check) belongs to no committed stripe placing it here, %s after the orphan grace (%s) began",
					nd.id, name, checkAt.Sub(f.mtime).Round(time.Millisecond), orphanGrace, crashTimings.OrphanGrace)
			} else {
				young++
			}
		}
		for seg, f := range inv1[i].segments {
			holder, striped := dataOn[seg]
			if !striped {
				unknownSegs++
				continue
			}
			if holder == model.NodeID(nd.id) {
				continue
			}
			var sid model.StripeID
			for _, st := range cat.Stripes {
				for _, sh := range st.Shards {
					if string(sh.Segment) == seg {
						sid = st.ID
					}
				}
			}
			if at, ok := stripeTime(sid); ok && at.Before(checkAt.Add(-10*time.Second)) && old(nd, f, 10*time.Second) {
				surplus++
				t.Errorf("%s: segment file %s remains though stripe %s (committed %s ago) keeps it on %s (surplus not collected)",
					nd.id, seg, sid, checkAt.Sub(at).Round(time.Second), holder)
			}
		}
		for _, f := range inv1[i].tmp {
			if old(nd, f, 20*time.Second) {
				t.Errorf("%s: unfinished shard transfer %s left %s ago", nd.id, f.name, checkAt.Sub(f.mtime).Round(time.Second))
			}
		}
		cn := catalogOf(t, nd)
		t.Logf("%s (started %d×, last %s before the check): %d shard files, %d segment files (%d not striped yet), %d unfinished transfers; not placed here: %d past the grace, %d younger; surplus segments %d; counters: stripes made %d, failed %d, orphans deleted %d, surplus deleted %d, repairs %d done %d failed",
			nd.id, nd.starts, checkAt.Sub(nd.started).Round(time.Second), len(inv1[i].shards), len(inv1[i].segments), unknownSegs, len(inv1[i].tmp), orphans, young, surplus,
			cn.Stats.StripesMade, cn.Stats.StripeFailures, cn.Stats.OrphansDeleted, cn.Stats.SurplusDeleted, cn.Stats.RepairsDone, cn.Stats.RepairsFailed)
	}

	// What the kills left, in the logs: startup checks, abandoned stripes, collections.
	for _, nd := range nodes {
		t.Logf("%s logs (all its processes): %d startup checks that repaired something, %d stripes not made, %d orphan shards deleted, %d surplus segments deleted, %d replica adoptions, %d camera sessions ended",
			nd.id, countNot(nd.allLogLines("storage startup check"), "nothing to repair"), len(nd.allLogLines("stripe not made")),
			len(nd.allLogLines("orphan shard deleted")), len(nd.allLogLines("surplus segment deleted")), len(nd.allLogLines("its replica becomes the footage")),
			len(nd.allLogLines("camera session ended")))
	}
	for _, nd := range nodes {
		for i, l := range nd.allLogLines("stripe not made") {
			if i < 3 {
				t.Logf("%s: %.400s", nd.id, l)
			}
		}
	}
	for _, l := range victim.allLogLines("storage startup check") {
		t.Logf("%s startup check: %s", victim.id, l)
	}

	// 3. Every listed segment of every camera exports, from a node that was never killed.
	segs, bad, frames := 0, 0, 0
	for _, id := range ids {
		for _, sg := range listSegments(t, nodes[0].base(), id, begin.Add(-time.Minute), time.Now().Add(time.Minute)) {
			if !sg.Sealed {
				continue // the open one grows; its sealed predecessors are checked
			}
			segs++
			c, err := exportFrames(nodes[0].base(), id, sg.Start, sg.End)
			switch {
			case err != nil:
				bad++
				t.Errorf("segment %s of %s (%s → %s, %d fragments): export: %v", sg.ID, id, sg.Start.Format("15:04:05.000"), sg.End.Format("15:04:05.000"), sg.Fragments, err)
			case c.Frames == 0:
				bad++
				t.Errorf("segment %s of %s (%s → %s): export holds no frame", sg.ID, id, sg.Start.Format("15:04:05.000"), sg.End.Format("15:04:05.000"))
			default:
				frames += c.Frames
				if c.Missing > 0 {
					t.Logf("segment %s of %s: %s", sg.ID, id, c)
				}
			}
		}
	}
	t.Logf("%d sealed segments of %d cameras listed: %d export (%d frames), %d do not", segs, cams, segs-bad, frames, bad)
	if segs == 0 {
		t.Errorf("no sealed segment listed")
	}
}

func catalogOf(t *testing.T, nd *helperNode) helperCatalog {
	t.Helper()
	return nd.catalog(t)
}

func countNot(lines []string, substr string) int {
	n := 0
	for _, l := range lines {
		if !strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// faultWindow names where the last stripe of a killed helper node's log stood: between
// shipping and commit, between commit and the deletion of the shipped segments, or
// neither.
func faultWindow(stderr string) string {
	lines := strings.Split(stderr, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		switch l := lines[i]; {
		case strings.Contains(l, "msg=\"stripe committed\"") || strings.Contains(l, "msg=\"stripe not made\""):
			return "not striping"
		case strings.Contains(l, faultCommitted):
			return "committed, shipped segments not deleted yet"
		case strings.Contains(l, faultShipped):
			return "shards shipped, not committed"
		}
	}
	return "not striping"
}
