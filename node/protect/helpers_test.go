package protect

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/vigie-vms/vigie/cluster"
	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage"
	"github.com/vigie-vms/vigie/storage/transfer"
)

// ---- fake catalog: the semantics of cluster's stripe API that the protector relies on ----

type fakeCatalog struct {
	mu        sync.Mutex
	states    map[model.NodeID]string
	segments  map[model.SegmentID]model.Segment
	stripes   map[model.StripeID]model.Stripe
	segStripe map[model.SegmentID]model.StripeID
	tasks     []cluster.RepairTask
	disks     map[model.NodeID]cluster.DiskUsage
	commitErr error
}

func newFakeCatalog() *fakeCatalog {
	return &fakeCatalog{states: map[model.NodeID]string{}, segments: map[model.SegmentID]model.Segment{},
		stripes: map[model.StripeID]model.Stripe{}, segStripe: map[model.SegmentID]model.StripeID{}, disks: map[model.NodeID]cluster.DiskUsage{}}
}

func (f *fakeCatalog) setState(n model.NodeID, s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states[n] = s
}

func (f *fakeCatalog) Members() []model.NodeStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []model.NodeStatus
	for id, s := range f.states {
		out = append(out, model.NodeStatus{ID: id, State: s})
	}
	return out
}

func (f *fakeCatalog) Camera(id model.CameraID) (model.Camera, error) {
	return model.Camera{ID: id, Redundancy: model.RedundancyStandard}, nil
}

func (f *fakeCatalog) commitSegment(s model.Segment) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.segments[s.ID] = s
}

func (f *fakeCatalog) segment(id model.SegmentID) model.Segment {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.segments[id]
}

func (f *fakeCatalog) UnstripedSegments(node model.NodeID, limit int) ([]model.Segment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []model.Segment
	for _, s := range f.segments {
		if _, striped := f.segStripe[s.ID]; s.Node == node && s.Sealed && !striped {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].End.Before(out[j].End) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (f *fakeCatalog) PlaceStripe(k, m int, dataNodes []model.NodeID) ([]model.NodeID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	taken := map[model.NodeID]bool{}
	for _, n := range dataNodes {
		taken[n] = true
	}
	var cands []model.NodeID
	for id, s := range f.states {
		if s == model.NodeActive && !taken[id] {
			cands = append(cands, id)
		}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i] < cands[j] })
	need := k + m - len(dataNodes)
	if len(cands) < need {
		return nil, fmt.Errorf("place stripe: %d nodes for %d: %w", len(cands), need, model.ErrNoSpace)
	}
	return cands[:need], nil
}

func (f *fakeCatalog) CommitStripe(_ context.Context, st model.Stripe) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.commitErr != nil {
		return f.commitErr
	}
	if _, ok := f.stripes[st.ID]; ok {
		return fmt.Errorf("stripe %s: %w", st.ID, model.ErrExists)
	}
	nodes := map[model.NodeID]bool{}
	var largest int64
	for i, sh := range st.Shards {
		if nodes[sh.Node] {
			return model.Invalid(fmt.Sprintf("shards[%d].node", i), "node twice")
		}
		nodes[sh.Node] = true
		largest = max(largest, sh.Bytes)
		if i < st.K {
			s, ok := f.segments[sh.Segment]
			if !ok {
				return fmt.Errorf("segment %s: %w", sh.Segment, model.ErrNotFound)
			}
			if !s.Sealed || s.Bytes != sh.Bytes || s.Checksum != sh.Checksum {
				return model.Invalid(fmt.Sprintf("shards[%d]", i), "does not match the segment")
			}
			if _, used := f.segStripe[sh.Segment]; used {
				return fmt.Errorf("segment %s: %w", sh.Segment, model.ErrInUse)
			}
		} else if sh.Segment != "" || sh.Bytes != st.ShardSize {
			return model.Invalid(fmt.Sprintf("shards[%d]", i), "bad parity shard")
		}
	}
	if largest != st.ShardSize {
		return model.Invalid("shard_size", "not the largest")
	}
	f.stripes[st.ID] = st
	for i := 0; i < st.K; i++ {
		sh := st.Shards[i]
		f.segStripe[sh.Segment] = st.ID
		s := f.segments[sh.Segment]
		s.Node = sh.Node
		f.segments[sh.Segment] = s
	}
	return nil
}

func (f *fakeCatalog) Stripe(id model.StripeID) (model.Stripe, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.stripes[id]
	if !ok {
		return model.Stripe{}, fmt.Errorf("stripe %s: %w", id, model.ErrNotFound)
	}
	return cloneStripe(st), nil
}

func cloneStripe(st model.Stripe) model.Stripe {
	st.Shards = append([]model.StripeShard(nil), st.Shards...)
	return st
}

func (f *fakeCatalog) StripeOf(seg model.SegmentID) (model.Stripe, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.segStripe[seg]
	if !ok {
		return model.Stripe{}, false, nil
	}
	return cloneStripe(f.stripes[id]), true, nil
}

func (f *fakeCatalog) UpdateShard(_ context.Context, id model.StripeID, index int, from model.NodeID, shard model.StripeShard) (model.Stripe, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.stripes[id]
	if !ok {
		return model.Stripe{}, model.ErrNotFound
	}
	if st.Shards[index].Node != from {
		return model.Stripe{}, fmt.Errorf("shard moved: %w", model.ErrStaleEpoch)
	}
	old := st.Shards[index]
	if shard.Bytes != old.Bytes || shard.Checksum != old.Checksum {
		return model.Stripe{}, model.ErrCorrupt
	}
	st.Shards = append([]model.StripeShard(nil), st.Shards...)
	st.Shards[index].Node = shard.Node
	f.stripes[id] = st
	if index < st.K {
		s := f.segments[old.Segment]
		s.Node = shard.Node
		f.segments[old.Segment] = s
	}
	return cloneStripe(st), nil
}

func (f *fakeCatalog) RepairTasks(node model.NodeID, limit int) ([]cluster.RepairTask, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []cluster.RepairTask
	for _, t := range f.tasks {
		st := f.stripes[t.Stripe.ID]
		if t.To == node && st.Shards[t.Index].Node == t.From {
			t.Stripe = cloneStripe(st)
			out = append(out, t)
		}
	}
	return out, nil
}

func (f *fakeCatalog) ReportDisk(_ context.Context, node model.NodeID, u cluster.DiskUsage) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.disks[node] = u
	return nil
}

// ---- test cluster: stores, transfer servers over gRPC on 127.0.0.1, protectors ----

type testNode struct {
	id    model.NodeID
	store *storage.Store
	prot  *Protector
	srv   *grpc.Server
	addr  string
	dir   string
}

type testCluster struct {
	t     testing.TB
	cat   *fakeCatalog
	nodes []*testNode
	conns *Conns
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func newTestCluster(t testing.TB, n int) *testCluster {
	t.Helper()
	c := &testCluster{t: t, cat: newFakeCatalog()}
	c.conns = &Conns{Options: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		Resolve: func(id model.NodeID) (string, error) {
			for _, nd := range c.nodes {
				if nd.id == id {
					return nd.addr, nil
				}
			}
			return "", fmt.Errorf("node %s: %w", id, model.ErrNotFound)
		}}
	for i := range n {
		id := model.NodeID(fmt.Sprintf("n%d", i+1))
		nd := &testNode{id: id, dir: t.TempDir()}
		scfg := storage.DefaultConfig()
		scfg.Dir, scfg.NodeID, scfg.NoSync, scfg.MinFreeBytes = nd.dir, id, true, 0
		scfg.BlockSize = storage.MinBlockSize
		scfg.Logger = testLogger(t)
		s, err := storage.Open(scfg)
		if err != nil {
			t.Fatal(err)
		}
		nd.store = s
		t.Cleanup(func() { _ = s.Close() })
		c.startServer(nd)
		cfg := DefaultConfig()
		cfg.Self, cfg.Store, cfg.Catalog, cfg.Clients = id, s, c.cat, c.client
		cfg.Logger = testLogger(t)
		cfg.MinSegmentAge = 0
		cfg.RowSize = 64 << 10
		cfg.RepairRate, cfg.ScrubRate = 0, 0
		cfg.SurplusGrace = 0 // shipped segments leave at once (TestShippedSegmentStaysForReadsUnderWay tests the grace)
		p, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		nd.prot = p
		c.nodes = append(c.nodes, nd)
		c.cat.setState(id, model.NodeActive)
	}
	t.Cleanup(func() { _ = c.conns.Close() })
	return c
}

func (c *testCluster) startServer(nd *testNode) {
	addr := nd.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		c.t.Fatal(err)
	}
	nd.addr = lis.Addr().String()
	nd.srv = grpc.NewServer()
	transfer.NewServer(nd.store, testLogger(c.t)).Register(nd.srv)
	go func() { _ = nd.srv.Serve(lis) }()
	srv := nd.srv
	c.t.Cleanup(srv.Stop)
}

// kill stops a node's transfer server: its shards become unreachable.
func (c *testCluster) kill(id model.NodeID) {
	nd := c.node(id)
	nd.srv.Stop()
	c.cat.setState(id, model.NodeDead)
}

func (c *testCluster) node(id model.NodeID) *testNode {
	for _, nd := range c.nodes {
		if nd.id == id {
			return nd
		}
	}
	c.t.Fatalf("no node %s", id)
	return nil
}

func (c *testCluster) client(id model.NodeID) (*transfer.Client, error) { return c.conns.Client(id) }

// ---- footage: real fMP4 (mediacommon), one H.264 track and one LPCM track ----

var testSPS = []byte{
	0x67, 0x42, 0xc0, 0x28, 0xd9, 0x00, 0x78, 0x02,
	0x27, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04,
	0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc9,
	0x20,
}

func testInit(t testing.TB) []byte {
	init := fmp4.Init{Tracks: []*fmp4.InitTrack{
		{ID: 1, TimeScale: 48000, Codec: &mp4.CodecLPCM{BitDepth: 16, SampleRate: 48000, ChannelCount: 1}},
		{ID: 2, TimeScale: 90000, Codec: &mp4.CodecH264{SPS: testSPS, PPS: []byte{0x08}}},
	}}
	var buf seekablebuffer.Buffer
	if err := init.Marshal(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// recording is one segment as recorded: its catalog entry and its fragments.
type recording struct {
	seg   model.Segment
	frags []model.FragmentInfo
	bytes []byte
}

// record writes a segment of n one-second fragments (random payloads of roughly avg
// bytes each) to s, seals it and commits it to the catalog.
func record(t testing.TB, c *testCluster, s *storage.Store, node model.NodeID, cam model.CameraID, start time.Time, n, avg int, rng *rand.Rand) recording {
	t.Helper()
	init := testInit(t)
	w, err := s.Create(cam, 1, init, start)
	if err != nil {
		t.Fatal(err)
	}
	base := uint64(rng.IntN(1 << 30))
	const frameTicks = 3000
	const frames = 30
	for i := range n {
		video := &fmp4.PartTrack{ID: 2, BaseTime: base + uint64(i*frames*frameTicks)}
		for j := range frames {
			size := max(1, avg/frames/2+rng.IntN(avg/frames+1))
			payload := make([]byte, size)
			for k := range payload {
				payload[k] = byte(rng.Uint32())
			}
			video.Samples = append(video.Samples, &fmp4.Sample{
				Duration: frameTicks, PTSOffset: int32(1500 * (j % 3)), IsNonSyncSample: j > 0 || i%2 == 1, Payload: payload,
			})
		}
		audio := &fmp4.PartTrack{ID: 1, BaseTime: uint64(i * 48000)}
		for range 50 {
			audio.Samples = append(audio.Samples, &fmp4.Sample{Duration: 960, Payload: make([]byte, 64)})
		}
		part := fmp4.Part{SequenceNumber: uint32(i + 1), Tracks: []*fmp4.PartTrack{audio, video}}
		var buf seekablebuffer.Buffer
		if err := part.Marshal(&buf); err != nil {
			t.Fatal(err)
		}
		f := model.Fragment{
			Start:    start.Add(ticksToDuration(int64(i*frames*frameTicks), 90000)),
			Duration: ticksToDuration(frames*frameTicks, 90000),
			Keyframe: i%2 == 0,
			Data:     buf.Bytes(),
		}
		if err := w.Append(f); err != nil {
			t.Fatal(err)
		}
	}
	seg, err := w.Seal()
	if err != nil {
		t.Fatal(err)
	}
	seg.Node = node
	c.cat.commitSegment(seg)
	r, err := s.OpenReader(seg.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sr, err := s.OpenSegmentShard(seg.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer sr.Close()
	b := make([]byte, sr.Size())
	if _, err := sr.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return recording{seg: seg, frags: r.Fragments(), bytes: b}
}
