package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage"
	"github.com/vigie-vms/vigie/storage/erasure"
)

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// node is a store served over a real gRPC listener on 127.0.0.1.
type node struct {
	id     model.NodeID
	dir    string
	store  *storage.Store
	srv    *grpc.Server
	client *Client
}

func startNode(t testing.TB, id model.NodeID) *node {
	t.Helper()
	n := &node{id: id, dir: t.TempDir()}
	cfg := storage.DefaultConfig()
	cfg.Dir, cfg.NodeID, cfg.NoSync, cfg.MinFreeBytes = n.dir, id, true, 0
	cfg.BlockSize = 64 << 10
	cfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := storage.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.store = s
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.srv = grpc.NewServer()
	NewServer(s, cfg.Logger).Register(n.srv)
	go func() { _ = n.srv.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	n.client = NewClient(cc)
	t.Cleanup(func() {
		_ = cc.Close()
		n.srv.Stop()
		_ = s.Close()
	})
	return n
}

// shardFiles lists the node's shard directory.
func (n *node) shardFiles(t testing.TB) []string {
	ents, err := os.ReadDir(filepath.Join(n.dir, "shards"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func crc(b []byte) uint32 { return crc32c(b) }

func TestPutGetDeleteOverGRPC(t *testing.T) {
	n := startNode(t, "n1")
	ctx := context.Background()
	id := storage.ShardID{Stripe: "st-1", Index: 3}
	data := randBytes(1, 8<<20+12345)
	if err := n.client.PutShard(ctx, id, bytes.NewReader(data), int64(len(data)), crc(data)); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if m, err := n.client.GetShard(ctx, storage.ShardRef{Stripe: id.Stripe, Index: id.Index}, 0, 0, &got); err != nil || m != int64(len(data)) || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("GetShard whole = %d, %v; bytes equal %v", m, err, bytes.Equal(got.Bytes(), data))
	}
	ref := storage.ShardRef{Stripe: id.Stripe, Index: id.Index}
	for _, rg := range [][2]int64{{0, 1}, {65535, 3}, {1 << 20, 3 << 20}, {int64(len(data)) - 10, 10}} {
		p := make([]byte, rg[1])
		if err := n.client.ReadShard(ctx, ref, p, rg[0]); err != nil || !bytes.Equal(p, data[rg[0]:rg[0]+rg[1]]) {
			t.Errorf("ReadShard(%d, %d): %v", rg[0], rg[1], err)
		}
	}
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"put again", n.client.PutShard(ctx, id, bytes.NewReader(data), int64(len(data))), model.ErrExists},
		{"get unknown", n.client.ReadShard(ctx, storage.ShardRef{Stripe: "nope", Index: 1}, make([]byte, 1), 0), model.ErrNotFound},
		{"get past the end", n.client.ReadShard(ctx, ref, make([]byte, 2), int64(len(data))-1), model.ErrInvalid},
		{"bad checksum", n.client.PutShard(ctx, storage.ShardID{Stripe: "st-1", Index: 4}, bytes.NewReader(data[:1000]), 1000, 7), model.ErrCorrupt},
		{"short source", n.client.PutShard(ctx, storage.ShardID{Stripe: "st-1", Index: 5}, bytes.NewReader(data[:1000]), 2000), io.ErrUnexpectedEOF},
		{"bad id", n.client.PutShard(ctx, storage.ShardID{Stripe: "UP", Index: 5}, bytes.NewReader(data[:10]), 10), model.ErrInvalid},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	if err := n.client.DeleteShard(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := n.client.DeleteShard(ctx, id); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("second delete = %v, want ErrNotFound", err)
	}
	waitEmpty(t, n)
}

// waitEmpty waits until the node holds no shard and no shard file (server handlers finish
// asynchronously after the client gave up).
func waitEmpty(t testing.TB, n *node) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := n.store.Shards()
		files := n.shardFiles(t)
		if err == nil && len(list) == 0 && len(files) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node still holds shards %v and files %v", list, files)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stallingReader serves data up to half, then blocks until ctx is done.
type stallingReader struct {
	ctx     context.Context
	data    []byte
	half    int
	off     int
	halfway chan struct{}
	once    sync.Once
}

func (r *stallingReader) Read(p []byte) (int, error) {
	if r.off >= r.half {
		r.once.Do(func() { close(r.halfway) })
		<-r.ctx.Done()
		return 0, r.ctx.Err()
	}
	n := copy(p[:min(len(p), r.half-r.off)], r.data[r.off:])
	r.off += n
	return n, nil
}

func TestCancelMidStreamLeavesNothing(t *testing.T) {
	n := startNode(t, "n1")
	data := randBytes(2, 6<<20)
	ctx, cancel := context.WithCancel(context.Background())
	r := &stallingReader{ctx: ctx, data: data, half: 3 << 20, halfway: make(chan struct{})}
	done := make(chan error, 1)
	id := storage.ShardID{Stripe: "st-2", Index: 2}
	go func() { done <- n.client.PutShard(ctx, id, r, int64(len(data))) }()
	<-r.halfway
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled PutShard = %v, want context.Canceled", err)
	}
	waitEmpty(t, n)
	// The same shard can be sent again afterwards.
	if err := n.client.PutShard(context.Background(), id, bytes.NewReader(data), int64(len(data)), crc(data)); err != nil {
		t.Fatalf("PutShard after a cancelled one: %v", err)
	}
}

// recordSegment writes a sealed segment of nfrag fragments on s and returns it.
func recordSegment(t testing.TB, s *storage.Store, cam model.CameraID, nfrag int) (model.Segment, []model.FragmentInfo, [][]byte) {
	t.Helper()
	start := time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC)
	w, err := s.Create(cam, 1, randBytes(7, 800), start)
	if err != nil {
		t.Fatal(err)
	}
	var frags [][]byte
	for i := range nfrag {
		f := model.Fragment{Start: start.Add(time.Duration(i) * time.Second), Duration: time.Second, Keyframe: true,
			Data: randBytes(uint64(i)+uint64(len(cam))*100, 50_000+i*7_777)}
		if err := w.Append(f); err != nil {
			t.Fatal(err)
		}
		frags = append(frags, f.Data)
	}
	seg, err := w.Seal()
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.OpenReader(seg.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	return seg, r.Fragments(), frags
}

// TestDegradedReadOverGRPC: a 2+1 stripe over three nodes; node n1 dies; n0 still serves
// n1's segment, rebuilt from its own segment and n2's parity fetched over gRPC.
func TestDegradedReadOverGRPC(t *testing.T) {
	nodes := []*node{startNode(t, "n0"), startNode(t, "n1"), startNode(t, "n2")}
	ctx := context.Background()
	seg0, _, _ := recordSegment(t, nodes[0].store, "cam-a", 20)
	seg1, infos1, frags1 := recordSegment(t, nodes[1].store, "cam-b", 13)
	st := storage.Stripe{ID: "stripe-9", K: 2, M: 1, ShardSize: max(seg0.Bytes, seg1.Bytes), Shards: []storage.StripeShard{
		{Node: "n0", Segment: seg0.ID, Bytes: seg0.Bytes, Checksum: seg0.Checksum},
		{Node: "n1", Segment: seg1.ID, Bytes: seg1.Bytes, Checksum: seg1.Checksum},
		{Node: "n2"},
	}}
	// n0 encodes: its own segment locally, n1's over gRPC, parity streamed to n2.
	f0 := &Fetcher{Self: "n0", Local: nodes[0].store, Clients: func(id model.NodeID) (*Client, error) {
		for _, n := range nodes {
			if n.id == id {
				return n.client, nil
			}
		}
		return nil, fmt.Errorf("unknown node %q: %w", id, model.ErrNotFound)
	}}
	data := []io.ReaderAt{fetchReader{f0, st, 0}, fetchReader{f0, st, 1}}
	pr, pw := io.Pipe()
	putErr := make(chan error, 1)
	go func() {
		err := nodes[2].client.PutShard(ctx, storage.ShardID{Stripe: st.ID, Index: 2}, pr, st.ShardSize)
		_ = pr.CloseWithError(err)
		putErr <- err
	}()
	_, err := erasure.Encode(ctx, 2, 1, data, []int64{seg0.Bytes, seg1.Bytes}, []io.Writer{pw}, 0)
	_ = pw.CloseWithError(err)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-putErr; err != nil {
		t.Fatal(err)
	}
	par, err := nodes[2].store.OpenShard(storage.ShardID{Stripe: st.ID, Index: 2})
	if err != nil {
		t.Fatal(err)
	}
	st.Shards[2] = storage.StripeShard{Node: "n2", Bytes: par.Size(), Checksum: par.Checksum()}
	_ = par.Close()

	nodes[1].srv.Stop() // n1 dies
	var failures []string
	r, err := storage.NewDegradedReader(st, 1, f0, storage.DegradedReaderOptions{
		OnShardError: func(i int, n model.NodeID, err error) {
			failures = append(failures, fmt.Sprintf("%d@%s: %v", i, n, err))
		}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := storage.NewSegmentView(r, infos1)
	if err != nil {
		t.Fatal(err)
	}
	for i, fi := range v.Fragments() {
		b, err := v.ReadFragment(fi, nil)
		if err != nil || !bytes.Equal(b, frags1[i]) {
			t.Fatalf("fragment %d of the lost segment: %v or bytes differ", i, err)
		}
	}
	if len(failures) != 1 || !strings.Contains(failures[0], "1@n1") {
		t.Errorf("shard failures reported: %v, want one for shard 1 on n1", failures)
	}
	if r.ReconstructedBytes() == 0 {
		t.Error("nothing was reconstructed")
	}
}

// fetchReader reads shard i of st through a fetcher (an io.ReaderAt for erasure.Encode).
type fetchReader struct {
	f  storage.ShardFetcher
	st storage.Stripe
	i  int
}

func (r fetchReader) ReadAt(p []byte, off int64) (int, error) {
	if err := r.f.ReadShard(context.Background(), r.st.Shards[r.i].Node, r.st.Ref(r.i), p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}
