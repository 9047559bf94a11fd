package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/loadtest/simcam"
	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage"
)

// freeAddr returns a 127.0.0.1 address with a port nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func testConfig(t *testing.T, dir string) Config {
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.RTSPAddr = freeAddr(t)
	cfg.RaftAddr = freeAddr(t)
	cfg.SegmentMaxAge = 10 * time.Second
	return cfg
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func startNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRecordRestartAndServe records a simulated camera, stops the node (which seals the
// open segment), starts it again on the same data, and checks that the footage is in the
// catalog, the time the node was down is an outage with its cause, recording resumes by
// itself, and the media endpoint serves the range.
func TestRecordRestartAndServe(t *testing.T) {
	if testing.Short() {
		t.Skip("records for several seconds")
	}
	clip, err := simcam.DefaultClip(simcam.CodecH264)
	if err != nil {
		t.Fatal(err)
	}
	sim, err := simcam.New(simcam.Config{Addr: freeAddr(t), Clip: clip, Cameras: []string{"cam-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()

	dir := t.TempDir()
	cfg := testConfig(t, dir)
	n := startNode(t, cfg)
	ctx := context.Background()
	if _, err := n.Cluster().CreateTenant(ctx, model.Tenant{ID: "lyon", Name: "Lyon"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Cluster().CreateCameras(ctx, []model.Camera{{ID: "cam-1", Tenant: "lyon", URL: sim.URL("cam-1")}}); err != nil {
		t.Fatal(err)
	}
	rec := &recordings{clu: n.clu, store: n.store}
	recorded := func() time.Duration {
		segs, err := rec.Segments("cam-1", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		var d time.Duration
		for _, s := range segs {
			d += s.End.Sub(s.Start)
		}
		return d
	}
	waitFor(t, "3 s of footage", 20*time.Second, func() bool { return recorded() >= 3*time.Second })
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	// After a clean stop every segment is sealed and in the catalog.
	n = startNode(t, cfg)
	defer n.Close()
	sealed, err := n.clu.Segments("cam-1", time.Now().Add(-time.Hour), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) == 0 || !sealed[0].Sealed {
		t.Fatalf("after a clean stop the catalog holds %d segments (%+v); want the sealed recording", len(sealed), sealed)
	}
	firstEnd := sealed[len(sealed)-1].End
	rec = &recordings{clu: n.clu, store: n.store}
	waitFor(t, "recording to resume after restart", 20*time.Second, func() bool {
		segs, _ := rec.Segments("cam-1", firstEnd.Add(time.Second), time.Now().Add(time.Hour))
		return len(segs) > 0 && segs[len(segs)-1].End.Sub(segs[0].Start) > time.Second
	})

	resp, err := http.Get("http://" + n.HTTPAddr() + "/media/v1/cameras/cam-1/export.mp4?start=" +
		sealed[0].Start.Format(time.RFC3339Nano) + "&end=" + firstEnd.Format(time.RFC3339Nano))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(body) < 10000 || !strings.Contains(string(body[:64]), "ftyp") {
		t.Fatalf("export: status %d, %d bytes; want an MP4", resp.StatusCode, len(body))
	}
}

// TestRetentionDeletesAndRecords writes a segment older than its camera's retention and
// checks that retention removes it from the catalog and the disk and records the deletion,
// while a recent segment stays.
func TestRetentionDeletesAndRecords(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.RTSPAddr = ""
	n := startNode(t, cfg)
	defer n.Close()
	ctx := context.Background()
	if _, err := n.clu.CreateTenant(ctx, model.Tenant{ID: "lyon", Name: "Lyon"}); err != nil {
		t.Fatal(err)
	}
	// Recording off: the test writes the segments itself.
	if _, err := n.clu.CreateCameras(ctx, []model.Camera{{ID: "cam-1", Tenant: "lyon", URL: "rtsp://127.0.0.1:1/x", RetentionDays: 7, Recording: model.RecordOff}}); err != nil {
		t.Fatal(err)
	}
	a, err := n.clu.Assign(ctx, "cam-1", model.NodeID(cfg.NodeID))
	if err != nil {
		t.Fatal(err)
	}
	write := func(start time.Time) model.Segment {
		w, err := n.store.Create("cam-1", a.Epoch, []byte("init"), start)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			f := model.Fragment{Start: start.Add(time.Duration(i) * time.Second), Duration: time.Second, Keyframe: true, Data: []byte("moofmdat")}
			if err := w.Append(f); err != nil {
				t.Fatal(err)
			}
		}
		seg, err := w.Seal()
		if err != nil {
			t.Fatal(err)
		}
		if err := n.clu.CommitSegment(ctx, seg); err != nil {
			t.Fatal(err)
		}
		return seg
	}
	old := write(time.Now().AddDate(0, 0, -8))
	recent := write(time.Now().AddDate(0, 0, -6))

	// A legal hold over the old footage keeps it past retention…
	hold, err := n.clu.CreateHold(ctx, model.Hold{ID: "pv-1", Cameras: []model.CameraID{"cam-1"}, Start: old.Start, End: old.End,
		CaseRef: "PV 2026/42", CreatedBy: "test", CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	n.applyRetention(ctx)
	if _, err := n.store.Segment(old.ID); err != nil {
		t.Fatalf("retention deleted footage under a legal hold: %v", err)
	}
	// …until it is released.
	if _, err := n.clu.ReleaseHold(ctx, hold.ID, "test"); err != nil {
		t.Fatal(err)
	}
	n.applyRetention(ctx)

	if _, err := n.store.Segment(old.ID); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("segment past retention still on disk (err=%v)", err)
	}
	if segs, _ := n.clu.Segments("cam-1", old.Start, old.End); len(segs) != 0 {
		t.Errorf("segment past retention still in the catalog: %+v", segs)
	}
	dels, err := n.clu.Deletions("cam-1", old.Start.Add(-time.Hour), old.End.Add(time.Hour))
	if err != nil || len(dels) != 1 || dels[0].Segment != old.ID || dels[0].Reason != "retention" {
		t.Errorf("deletion record: %+v, %v; want one retention deletion of %s", dels, err, old.ID)
	}
	if _, err := n.store.Segment(recent.ID); err != nil {
		t.Errorf("recent segment deleted: %v", err)
	}
}

// assignCamera registers camera cam-1 (tenant lyon, not recording) and assigns it to the
// node.
func assignCamera(t *testing.T, n *Node, cfg Config) model.Assignment {
	t.Helper()
	ctx := context.Background()
	if _, err := n.clu.CreateTenant(ctx, model.Tenant{ID: "lyon", Name: "Lyon"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.clu.CreateCameras(ctx, []model.Camera{{ID: "cam-1", Tenant: "lyon", URL: "rtsp://127.0.0.1:1/x", Recording: model.RecordOff}}); err != nil {
		t.Fatal(err)
	}
	a, err := n.clu.Assign(ctx, "cam-1", model.NodeID(cfg.NodeID))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestStartupCommitsSegmentsTheCatalogLacks seals a segment without committing it (a
// crash between seal and commit) and checks the next start commits it.
func TestStartupCommitsSegmentsTheCatalogLacks(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.RTSPAddr = ""
	n := startNode(t, cfg)
	a := assignCamera(t, n, cfg)
	start := time.Now().Add(-time.Minute).Truncate(time.Second)
	w, err := n.store.Create("cam-1", a.Epoch, []byte("init"), start)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(model.Fragment{Start: start, Duration: time.Second, Keyframe: true, Data: []byte("moofmdat")}); err != nil {
		t.Fatal(err)
	}
	seg, err := w.Seal()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = startNode(t, cfg)
	defer n.Close()
	var segs []model.Segment
	waitFor(t, "the startup check to commit the segment", 10*time.Second, func() bool {
		segs, err = n.clu.Segments("cam-1", start.Add(-time.Second), start.Add(time.Hour))
		return err != nil || len(segs) > 0
	})
	if err != nil || len(segs) != 1 || segs[0].ID != seg.ID {
		t.Fatalf("catalog after restart: %+v, %v; want the uncommitted segment %s", segs, err, seg.ID)
	}
	outages, _ := n.clu.Outages("cam-1", start, time.Now().Add(time.Minute))
	if len(outages) != 1 || outages[0].Cause != model.GapNodeDown {
		t.Errorf("outages: %+v; want one %s from the end of the footage to the restart", outages, model.GapNodeDown)
	}
}

// TestPeerReadsAreByteIdentical reads a segment through the peer API (as another node
// would) and checks the init and every fragment equal the local reads.
func TestPeerReadsAreByteIdentical(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.RTSPAddr = ""
	n := startNode(t, cfg)
	defer n.Close()
	start := time.Now().Add(-time.Minute)
	w, err := n.store.Create("cam-1", 1, []byte("init-bytes"), start)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		data := []byte(strings.Repeat(string(rune('a'+i)), 1000+i))
		if err := w.Append(model.Fragment{Start: start.Add(time.Duration(i) * time.Second), Duration: time.Second, Keyframe: i == 0, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	seg := w.Info() // still open: peers read open segments too
	peer := newPeerClient(func(model.NodeID) (string, error) { return n.HTTPAddr(), nil })
	ctx := context.Background()
	open, err := peer.openSegments(ctx, "node-1", "cam-1", start.Add(-time.Second), time.Now())
	if err != nil || len(open) != 1 || open[0].ID != seg.ID {
		t.Fatalf("open segments via peer: %+v, %v", open, err)
	}
	remote, err := peer.openSegment(ctx, model.Segment{ID: seg.ID, Node: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	local, err := n.store.OpenReader(seg.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	if string(remote.Init()) != string(local.Init()) {
		t.Errorf("init differs: %q vs %q", remote.Init(), local.Init())
	}
	if len(remote.Fragments()) != 5 {
		t.Fatalf("remote lists %d fragments, want 5", len(remote.Fragments()))
	}
	for _, fi := range remote.Fragments() {
		got, err := remote.ReadFragment(fi, nil)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := local.ReadFragment(fi, nil)
		if string(got) != string(want) {
			t.Errorf("fragment at %d differs", fi.Offset)
		}
	}
	if _, err := peer.openSegment(ctx, model.Segment{ID: "cam-1.0000000000000001.1", Node: "node-1"}); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("unknown segment via peer: %v, want ErrNotFound", err)
	}
}

// TestPeerListsSegmentsTheCatalogLacks: another node asking what this one holds beyond
// the catalog gets its open segments and the sealed ones whose commit is still pending
// (between seal and commit a segment is in neither list: an export made then left out
// everything from its start), not the committed ones.
func TestPeerListsSegmentsTheCatalogLacks(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.RTSPAddr = ""
	n := startNode(t, cfg)
	defer n.Close()
	ctx := context.Background()
	a := assignCamera(t, n, cfg)
	start := time.Now().Add(-time.Minute).Truncate(time.Second)
	write := func(at time.Time, seal bool) model.Segment {
		t.Helper()
		w, err := n.store.Create("cam-1", a.Epoch, []byte("init"), at)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Append(model.Fragment{Start: at, Duration: time.Second, Keyframe: true, Data: []byte("moofmdat")}); err != nil {
			t.Fatal(err)
		}
		if !seal {
			return w.Info()
		}
		seg, err := w.Seal()
		if err != nil {
			t.Fatal(err)
		}
		return seg
	}
	committed := write(start, true)
	if err := n.clu.CommitSegment(ctx, committed); err != nil {
		t.Fatal(err)
	}
	pending := write(start.Add(time.Second), true)
	open := write(start.Add(2*time.Second), false)

	peer := newPeerClient(func(model.NodeID) (string, error) { return n.HTTPAddr(), nil })
	got, err := peer.openSegments(ctx, model.NodeID(cfg.NodeID), "cam-1", start.Add(-time.Second), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ids := map[model.SegmentID]bool{}
	for _, s := range got {
		ids[s.ID] = true
	}
	if len(got) != 2 || !ids[pending.ID] || !ids[open.ID] {
		t.Errorf("peer lists %v; want the sealed-but-uncommitted %s and the open %s (not the committed %s)", ids, pending.ID, open.ID, committed.ID)
	}
}

// TestOpenSegmentSkipsALaggingLocalReplica: a node holding a hot replica of another
// node's open segment reads it locally only when the replica has every fragment the
// listing counted; a replica still being caught up would end the export early, so the
// recording node is read instead.
func TestOpenSegmentSkipsALaggingLocalReplica(t *testing.T) {
	cfgA, cfgB := testConfig(t, t.TempDir()), testConfig(t, t.TempDir())
	cfgA.RTSPAddr, cfgB.RTSPAddr = "", ""
	cfgA.NodeID, cfgB.NodeID = "node-a", "node-b"
	a, b := startNode(t, cfgA), startNode(t, cfgB)
	defer a.Close()
	defer b.Close()
	start := time.Now().Add(-time.Minute).Truncate(time.Second)
	write := func(st *storage.Store, n int) model.Segment {
		t.Helper()
		w, err := st.Create("cam-1", 1, []byte("init"), start)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			f := model.Fragment{Start: start.Add(time.Duration(i) * time.Second), Duration: time.Second, Keyframe: i%2 == 0, Data: []byte(fmt.Sprintf("fragment %d", i))}
			if err := w.Append(f); err != nil {
				t.Fatal(err)
			}
		}
		return w.Info()
	}
	seg := write(b.store, 5) // the recording node, still writing
	write(a.rep.Store(), 2)  // node A's replica of it, 3 fragments behind
	seg.Node = model.NodeID(cfgB.NodeID)
	rec := &recordings{clu: a.clu, store: a.store, rep: a.rep, self: model.NodeID(cfgA.NodeID), log: testLogger(t),
		peer: newPeerClient(func(model.NodeID) (string, error) { return b.HTTPAddr(), nil })}
	rd, err := rec.OpenSegment(context.Background(), seg)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if got := len(rd.Fragments()); got != 5 {
		t.Errorf("open segment %s from node A: %d fragments, want the recording node's 5 (A's replica holds 2)", seg.ID, got)
	}
}
