package cluster

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/vigie-vms/vigie/model"
)

var testKey = bytes.Repeat([]byte{0x42}, 32)

// t0 is a fixed wall-clock origin for catalog times in tests.
var t0 = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testConfig is a node on an in-memory transport with short raft timeouts. The transport
// address is the node id, so a reopened node keeps its address.
func testConfig(t testing.TB, dir string) Config {
	cfg := DefaultConfig()
	cfg.NodeID = "n1"
	cfg.Dir = dir
	_, trans := raft.NewInmemTransport(raft.ServerAddress("inmem-" + t.Name()))
	cfg.Transport = trans
	cfg.SecretKey = testKey
	cfg.Logger = testLogger(t)
	cfg.HeartbeatTimeout = 50 * time.Millisecond
	cfg.ElectionTimeout = 50 * time.Millisecond
	cfg.LeaderLeaseTimeout = 50 * time.Millisecond
	cfg.CommitTimeout = 5 * time.Millisecond
	cfg.ApplyTimeout = 5 * time.Second
	cfg.ManageCameras = false // these tests assign cameras by hand
	cfg.ReconcileInterval = 20 * time.Millisecond
	return cfg
}

func openTest(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	c, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitLeader(ctx); err != nil {
		t.Fatalf("WaitLeader: %v", err)
	}
	return c
}

func newTestCluster(t testing.TB) *Cluster {
	return openTest(t, testConfig(t, t.TempDir()))
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustTenant(t testing.TB, c *Cluster, id model.TenantID, quota int) model.Tenant {
	t.Helper()
	tn, err := c.CreateTenant(ctxT(t), model.Tenant{ID: id, Name: "Commune " + string(id), CameraQuota: quota, RetentionDays: 14})
	if err != nil {
		t.Fatalf("CreateTenant(%s): %v", id, err)
	}
	return tn
}

func cam(id model.CameraID, tenant model.TenantID) model.Camera {
	return model.Camera{ID: id, Tenant: tenant, URL: "rtsp://10.0.0.1:554/" + string(id), Username: "admin", Password: "pw-" + string(id)}
}

func mustCameras(t testing.TB, c *Cluster, cams ...model.Camera) []model.Camera {
	t.Helper()
	out, err := c.CreateCameras(ctxT(t), cams)
	if err != nil {
		t.Fatalf("CreateCameras: %v", err)
	}
	return out
}

func seg(id string, camera model.CameraID, epoch uint64, start time.Time, d time.Duration) model.Segment {
	return model.Segment{ID: model.SegmentID(id), Camera: camera, Epoch: epoch, Node: "n1",
		Start: start, End: start.Add(d), Bytes: 1000, Fragments: 2, CodecHash: "h264-abc", Checksum: 0xdeadbeef, Sealed: true}
}

// standalone FSM, driven without raft

type fsmHarness struct {
	t     testing.TB
	f     *fsm
	index uint64
}

func newFSM(t testing.TB, dir string) *fsmHarness {
	t.Helper()
	logger := slog.New(slog.DiscardHandler) // a *testing.F must not log from the fuzz function
	if _, fuzz := t.(*testing.F); !fuzz {
		logger = testLogger(t)
	}
	f, err := openFSM(dir, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.close() })
	return &fsmHarness{t: t, f: f, index: f.applied.Load()}
}

func (h *fsmHarness) logs(cmds ...command) []*raft.Log {
	logs := make([]*raft.Log, len(cmds))
	for i, c := range cmds {
		h.index++
		logs[i] = &raft.Log{Index: h.index, Term: 1, Type: raft.LogCommand, Data: encodeCommand(c)}
	}
	return logs
}

// apply applies cmds as one batch and fails the test on any error response.
func (h *fsmHarness) apply(cmds ...command) []any {
	h.t.Helper()
	resps := h.f.ApplyBatch(h.logs(cmds...))
	for i, r := range resps {
		if err, ok := r.(error); ok {
			h.t.Fatalf("command %d (%s): %v", i, cmds[i].Op, err)
		}
	}
	return resps
}

func storedCam(id model.CameraID, tenant model.TenantID) storedCamera {
	c := cam(id, tenant)
	c.Normalize(14)
	c.Password = ""
	return storedCamera{Camera: c, Secret: []byte{1, 2, 3}}
}
