package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/vigie-vms/vigie/model"
)

// workload is a deterministic sequence of commands touching every table, with some
// refusals among them.
func workload() []command {
	var cmds []command
	tn := model.Tenant{ID: "lyon", Name: "Lyon", RetentionDays: 14, CameraQuota: 3, CreatedAt: t0, UpdatedAt: t0}
	cmds = append(cmds,
		command{Op: opCreateTenant, Tenant: tn},
		command{Op: opCreateTenant, Tenant: tn}, // refused: exists
		command{Op: opCreateCameras, Cameras: []storedCamera{storedCam("a", "lyon"), storedCam("b", "lyon")}},
		command{Op: opCreateCameras, Cameras: []storedCamera{storedCam("c", "lyon"), storedCam("d", "lyon")}}, // refused: quota
		command{Op: opAssign, CameraID: "a", Node: "n1"},
		command{Op: opAssign, CameraID: "a", Node: "n2"},
		command{Op: opAssign, CameraID: "b", Node: "n1"},
	)
	for i := 0; i < 40; i++ {
		s := seg(fmt.Sprintf("s%d", i), "a", 2, t0.Add(time.Duration(i)*2*time.Second), 2*time.Second)
		s.Node = "n2" // the owner at epoch 2
		cmds = append(cmds, command{Op: opCommitSegment, Segment: s})
	}
	cmds = append(cmds,
		command{Op: opCommitSegment, Segment: seg("stale", "a", 1, t0, time.Second)}, // refused
		command{Op: opRecordOutage, Outage: model.Outage{Camera: "b", Start: t0, Cause: model.GapCameraUnreachable}},
		command{Op: opDeleteSegments, SegmentIDs: []model.SegmentID{"s1", "s2"}, Reason: "retention", At: t0.Add(time.Hour)},
		command{Op: opSetAssignments, At: t0, Changes: []assignChange{{Camera: "a", IfEpoch: 2, IfNode: "n2", Node: "n2", Next: "n3", Secondary: "n1"}}},
		command{Op: opReportLoad, Node: "n2", Loads: []cameraLoad{{Camera: "a", Bps: 2.5e6}, {Camera: "b", Bps: 1e6}}},
		command{Op: opConfirmRecording, CameraID: "a", Node: "n3", At: t0.Add(time.Minute)},
		command{Op: opReconcileSegment, Segment: seg("late", "a", 2, t0.Add(time.Hour), time.Second)},
		command{Op: opSetNodeState, Node: "n2", State: model.NodeDraining, At: t0},
		command{Op: opSetNodeState, Node: "n2", State: model.NodeDecommissioned, At: t0},
		command{Op: opDeleteCamera, CameraID: "b"},
		command{Op: opUpdateTenant, Tenant: model.Tenant{ID: "lyon", Name: "Lyon Métropole", RetentionDays: 30, UpdatedAt: t0.Add(time.Hour)}},
	)
	// stripes, holds, disks, repair marks
	stripe := func(id string, a, b model.SegmentID) model.Stripe {
		return model.Stripe{ID: model.StripeID(id), K: 2, M: 1, CreatedAt: t0,
			Shards: []model.StripeShard{{Node: "n2", Segment: a}, {Node: "n4", Segment: b}, {Node: "n5"}}}
	}
	cmds = append(cmds,
		command{Op: opCommitStripe, Stripe: stripe("st", "s3", "s4")},
		command{Op: opCommitStripe, Stripe: stripe("st-bad", "s3", "s5")}, // refused: s3 is in st
		command{Op: opCommitStripe, Stripe: stripe("st2", "s5", "s6")},
		command{Op: opUpdateShard, StripeID: "st", Index: 2, Node: "n5", Shard: model.StripeShard{Node: "n6"}},
		command{Op: opCreateHold, Hold: model.Hold{ID: "h1", Cameras: []model.CameraID{"a"}, Start: t0, End: t0.Add(9 * time.Second), CaseRef: "PV-1", CreatedBy: "officer", CreatedAt: t0}},
		command{Op: opDeleteStripe, StripeID: "st", Reason: "retention", At: t0.Add(time.Hour)}, // refused: held
		command{Op: opDeleteStripe, StripeID: "st2", Reason: "retention", At: t0.Add(time.Hour)},
		command{Op: opReleaseHold, Hold: model.Hold{ID: "h1", ReleasedBy: "magistrate", ReleasedAt: t0.Add(2 * time.Hour)}},
		command{Op: opDeleteStripe, StripeID: "st", Reason: "retention", At: t0.Add(3 * time.Hour)},
		command{Op: opReportDisk, Node: "n3", Disk: DiskUsage{FreeBytes: 1 << 30, TotalBytes: 1 << 40}},
		command{Op: opSetRepair, Node: "n5", Reason: repairDead, At: t0},
	)
	return cmds
}

func snapshotBytes(t *testing.T, f *fsm) []byte {
	t.Helper()
	var buf bytes.Buffer
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	if err := writeSnapshot(&buf, snap.(*fsmSnapshot).snap, 0); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestFSMIsDeterministic applies the same log to two stores, once as a single batch and
// once entry by entry, and expects byte-identical snapshots.
func TestFSMIsDeterministic(t *testing.T) {
	cmds := workload()
	h1 := newFSM(t, t.TempDir())
	r1 := h1.f.ApplyBatch(h1.logs(cmds...))
	h2 := newFSM(t, t.TempDir())
	var r2 []any
	for _, c := range cmds {
		r2 = append(r2, h2.f.ApplyBatch(h2.logs(c))...)
	}
	for i := range r1 {
		e1, _ := r1[i].(error)
		e2, _ := r2[i].(error)
		if fmt.Sprint(e1) != fmt.Sprint(e2) {
			t.Fatalf("command %d: %v vs %v", i, e1, e2)
		}
	}
	refused := 0
	for _, r := range r1 {
		if _, ok := r.(error); ok {
			refused++
		}
	}
	if refused != 5 {
		t.Fatalf("%d commands refused, want 5: %v", refused, r1)
	}
	if !bytes.Equal(snapshotBytes(t, h1.f), snapshotBytes(t, h2.f)) {
		t.Fatal("same log, different state")
	}
	if h1.f.applied.Load() != uint64(len(cmds)) {
		t.Fatalf("applied index %d, want %d", h1.f.applied.Load(), len(cmds))
	}
}

// TestFSMSourceHasNoClockOrRandomness guards the state machine's code: the files the FSM
// is made of must not read the wall clock or randomness.
func TestFSMSourceHasNoClockOrRandomness(t *testing.T) {
	for _, file := range []string{"fsm.go", "fsm_cluster.go", "fsm_stripes.go", "values.go", "values_stripes.go", "codec.go", "keys.go", "snapshot.go"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"time.Now", "time.Since", "time.Until", "math/rand", "crypto/rand", "os.Open", "net."} {
			if bytes.Contains(b, []byte(bad)) {
				t.Errorf("%s uses %s: the state machine must be deterministic", file, bad)
			}
		}
	}
}

func TestFSMSkipsEntriesAlreadyApplied(t *testing.T) {
	dir := t.TempDir()
	h := newFSM(t, dir)
	cmds := workload()
	logs := h.logs(cmds...)
	h.f.ApplyBatch(logs)
	before := snapshotBytes(t, h.f)
	// raft hands the same entries again (replay after restart): nothing changes
	resps := h.f.ApplyBatch(logs)
	for i, r := range resps {
		if r != nil {
			t.Fatalf("replayed entry %d answered %v", i, r)
		}
	}
	if !bytes.Equal(before, snapshotBytes(t, h.f)) {
		t.Fatal("replaying applied entries changed the state")
	}
	if got := h.f.nSkipped.Load(); got != uint64(len(logs)) {
		t.Fatalf("skipped %d, want %d", got, len(logs))
	}
	// a batch straddling the applied index applies only the new part
	more := h.logs(command{Op: opCreateTenant, Tenant: model.Tenant{ID: "bron", Name: "Bron", RetentionDays: 1}})
	straddle := append(logs[len(logs)-2:], more...)
	n := h.f.nApplied.Load()
	h.f.ApplyBatch(straddle)
	if h.f.nApplied.Load() != n+1 {
		t.Fatalf("straddling batch applied %d commands, want 1", h.f.nApplied.Load()-n)
	}
	// configuration entries move the applied index too
	h.index++
	h.f.ApplyBatch([]*raft.Log{{Index: h.index, Type: raft.LogConfiguration}})
	if h.f.applied.Load() != h.index {
		t.Fatalf("applied %d after a configuration entry at %d", h.f.applied.Load(), h.index)
	}
}

type bufSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *bufSink) ID() string    { return "test" }
func (s *bufSink) Cancel() error { s.cancelled = true; return nil }
func (s *bufSink) Close() error  { return nil }

func TestFSMSnapshotPersistRestore(t *testing.T) {
	src := newFSM(t, t.TempDir())
	src.f.ApplyBatch(src.logs(workload()...))
	snap, err := src.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// writes after Snapshot() are not in it (the Pebble snapshot is a point in time)
	src.apply(command{Op: opCreateTenant, Tenant: model.Tenant{ID: "late", Name: "Late", RetentionDays: 1}})
	sink := &bufSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	stream := sink.Bytes()

	dst := newFSM(t, t.TempDir())
	dst.apply(command{Op: opCreateTenant, Tenant: model.Tenant{ID: "junk", Name: "Junk", RetentionDays: 1}})
	if err := dst.f.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatal(err)
	}
	if _, err := getTenant(dst.f.db, "junk"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("restore kept old state: %v", err)
	}
	if _, err := getTenant(dst.f.db, "late"); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("snapshot holds a write made after it: %v", err)
	}
	// same content: compare re-taken snapshots (the header's index is 0 in both)
	ref := newFSM(t, t.TempDir())
	ref.f.ApplyBatch(ref.logs(workload()...))
	if !bytes.Equal(snapshotBytes(t, dst.f), snapshotBytes(t, ref.f)) {
		t.Fatal("restored store differs from the source")
	}
	if dst.f.applied.Load() != 0 {
		t.Fatalf("applied index after restore: %d, want 0 (unknown)", dst.f.applied.Load())
	}

	// a damaged stream is refused, and the store refuses entries until a good restore
	for _, damage := range []func([]byte) []byte{
		func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b },
		func(b []byte) []byte { return b[:len(b)-7] },
		func(b []byte) []byte { return b[:5] },
	} {
		bad := damage(append([]byte(nil), stream...))
		if err := dst.f.Restore(io.NopCloser(bytes.NewReader(bad))); !errors.Is(err, errDecode) {
			t.Fatalf("damaged snapshot: %v", err)
		}
		if r := dst.f.ApplyBatch(dst.logs(command{Op: opCreateTenant, Tenant: model.Tenant{ID: "z", Name: "Z", RetentionDays: 1}})); r[0] == nil {
			t.Fatal("store accepted an entry after a failed restore")
		}
	}
	if err := dst.f.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatalf("good restore after failures: %v", err)
	}
	dst.apply(command{Op: opCreateTenant, Tenant: model.Tenant{ID: "z", Name: "Z", RetentionDays: 1}})
}

// TestImports enforces the dependency direction: cluster imports only model of ours.
func TestImports(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	for _, f := range files {
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(p, "github.com/vigie-vms/vigie/") && p != "github.com/vigie-vms/vigie/model" &&
				!(strings.HasSuffix(f, "_test.go") && strings.HasPrefix(p, "github.com/vigie-vms/vigie/cluster")) {
				t.Errorf("%s imports %s: cluster may import only model of ours", f, p)
			}
		}
	}
	// the test harness may use cluster and model, nothing else of ours
	files, _ = filepath.Glob("clustertest/*.go")
	if len(files) == 0 {
		t.Fatal("no clustertest sources found")
	}
	for _, f := range files {
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(p, "github.com/vigie-vms/vigie/") && p != "github.com/vigie-vms/vigie/model" && p != "github.com/vigie-vms/vigie/cluster" {
				t.Errorf("%s imports %s: clustertest may import only cluster and model of ours", f, p)
			}
		}
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for _, c := range workload() {
		got, err := decodeCommand(encodeCommand(c))
		if err != nil {
			t.Fatalf("%s: %v", c.Op, err)
		}
		if !bytes.Equal(encodeCommand(got), encodeCommand(c)) {
			t.Fatalf("%s: round trip changed the command", c.Op)
		}
	}
	s := seg("x", "cam", 7, t0.Add(123456789), 2*time.Second)
	got, err := decSegment(encSegment(s))
	if err != nil || got != s {
		t.Fatalf("segment round trip: %+v %v", got, err)
	}
	if _, err := decodeCommand([]byte{2, 1}); !errors.Is(err, errDecode) || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("future version: %v", err)
	}
	if _, err := decodeCommand([]byte{1, 99}); !errors.Is(err, errDecode) {
		t.Fatalf("unknown op: %v", err)
	}
}

func fuzzSeeds(f *testing.F) {
	for _, c := range workload() {
		f.Add(encodeCommand(c))
	}
	f.Add(encodeCommand(command{Op: opUpdateCamera, Cameras: []storedCamera{storedCam("a", "b")}}))
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{1, byte(opCreateCameras), 0xff, 0xff, 0xff, 0xff, 0x0f})
}

// FuzzDecodeCommand: any bytes in the raft log decode to an error or to a command that
// re-encodes to something that decodes to the same command; never a panic.
func FuzzDecodeCommand(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeCommand(b)
		if err != nil {
			return
		}
		again, err := decodeCommand(encodeCommand(c))
		if err != nil {
			t.Fatalf("re-encoded command does not decode: %v", err)
		}
		if !bytes.Equal(encodeCommand(again), encodeCommand(c)) {
			t.Fatal("encoding is not stable")
		}
	})
}

// FuzzDecodeValues: stored values and snapshot streams never panic the decoders.
func FuzzDecodeValues(f *testing.F) {
	f.Add(encSegment(seg("s", "c", 1, t0, time.Second)))
	f.Add(encCamera(storedCam("a", "b")))
	f.Add(encTenant(model.Tenant{ID: "t", Name: "T"}))
	f.Add(encOutage(model.Outage{Camera: "c", Start: t0}))
	f.Add(encDeletion(model.Deletion{Segment: "s", Camera: "c"}))
	f.Add(encAssignment(model.Assignment{Camera: "c", Node: "n", Epoch: 3}))
	f.Add(encStripe(model.Stripe{ID: "st", K: 1, M: 1, ShardSize: 5, Shards: []model.StripeShard{{Node: "a", Segment: "s", Bytes: 5}, {Node: "b", Bytes: 5}}}))
	f.Add(encHold(model.Hold{ID: "h", Cameras: []model.CameraID{"c"}, Start: t0, End: t0.Add(time.Hour), CaseRef: "PV"}))
	f.Add(encDisk(DiskUsage{FreeBytes: 1, TotalBytes: 2, Full: true}))
	f.Add(encRepairMark(repairMark{Node: "n", Reason: repairDead, Since: t0, Shards: 3}))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decStripe(b)
		_, _ = decHold(b)
		_, _ = decDisk(b)
		_, _ = decRepairMark(b)
		_, _ = decSegment(b)
		_, _ = decCamera(b)
		_, _ = decTenant(b)
		_, _ = decOutage(b)
		_, _ = decDeletion(b)
		_, _ = decAssignment(b)
		_, _ = decDuration(b)
		_, _ = readSnapshot(bytes.NewReader(append([]byte(snapMagic+"\x01\x00\x00\x00\x00\x00\x00\x00\x01"), b...)), func([]kv) error { return nil })
	})
}

// FuzzApply: whatever a log entry holds, applying it never panics and a refused entry
// changes nothing.
func FuzzApply(f *testing.F) {
	fuzzSeeds(f)
	h := newFSM(f, f.TempDir())
	h.f.ApplyBatch(h.logs(workload()...))
	f.Fuzz(func(t *testing.T, b []byte) {
		h.index++
		_ = h.f.ApplyBatch([]*raft.Log{{Index: h.index, Type: raft.LogCommand, Data: b}})
		if p := h.f.failed.Load(); p != nil {
			t.Fatalf("store failed: %v", *p)
		}
	})
}
