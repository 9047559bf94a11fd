package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage/erasure"
)

// testCluster is k+m stores in one process, one per node, holding one stripe: data shard i
// is a segment recorded on node i, parity shard j is stored on node k+j.
type testCluster struct {
	stores LocalFetcher
	stripe Stripe
	data   [][]byte // each segment's bytes
	frags  [][]model.FragmentInfo
}

// testClusterBlockSize is the block size of newTestCluster's stores (benchmarks use 1 MiB).
var testClusterBlockSize = MinBlockSize

func nodeName(i int) model.NodeID { return model.NodeID(fmt.Sprintf("n%d", i)) }

func newTestCluster(t testing.TB, k, m int, fragments []int) *testCluster {
	t.Helper()
	c := &testCluster{stores: LocalFetcher{}}
	for i := range k + m {
		cfg := testConfig(t, t.TempDir())
		cfg.NodeID = nodeName(i)
		cfg.NoSync = true
		cfg.BlockSize = testClusterBlockSize
		s, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		c.stores[cfg.NodeID] = s
	}
	st := Stripe{ID: "stripe-1", K: k, M: m, Shards: make([]StripeShard, k+m)}
	readers := make([]io.ReaderAt, k)
	sizes := make([]int64, k)
	for i := range k {
		s := c.stores[nodeName(i)]
		w, _ := record(t, s, model.CameraID(fmt.Sprintf("cam-%d", i)), 1, t0.Add(time.Duration(i)*time.Hour), fragments[i])
		seg, err := w.Seal()
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.OpenSegmentShard(seg.ID)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		b := make([]byte, r.Size())
		if _, err := r.ReadAt(b, 0); err != nil {
			t.Fatal(err)
		}
		c.data = append(c.data, b)
		sr, err := s.OpenReader(seg.ID)
		if err != nil {
			t.Fatal(err)
		}
		c.frags = append(c.frags, sr.Fragments())
		_ = sr.Close()
		readers[i], sizes[i] = r, seg.Bytes
		st.Shards[i] = StripeShard{Node: nodeName(i), Segment: seg.ID, Bytes: seg.Bytes, Checksum: seg.Checksum}
	}
	st.ShardSize = erasure.ShardSize(sizes)

	// Parity streams straight into PutShard on the parity nodes (io.Pipe: back-pressure,
	// one row in memory).
	writers := make([]io.Writer, m)
	pipes := make([]*io.PipeWriter, m)
	errs := make([]error, m)
	var wg sync.WaitGroup
	for j := range m {
		pr, pw := io.Pipe()
		pipes[j], writers[j] = pw, pw
		id := ShardID{Stripe: st.ID, Index: k + j}
		s := c.stores[nodeName(k+j)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[j] = s.PutShard(context.Background(), id, pr, st.ShardSize)
			_ = pr.CloseWithError(errs[j])
		}()
	}
	_, err := erasure.Encode(context.Background(), k, m, readers, sizes, writers, 3*MinBlockSize)
	for _, pw := range pipes {
		_ = pw.CloseWithError(err)
	}
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	for j := range m {
		if errs[j] != nil {
			t.Fatal(errs[j])
		}
		r, err := c.stores[nodeName(k+j)].OpenShard(ShardID{Stripe: st.ID, Index: k + j})
		if err != nil {
			t.Fatal(err)
		}
		st.Shards[k+j] = StripeShard{Node: nodeName(k + j), Bytes: r.Size(), Checksum: r.Checksum()}
		_ = r.Close()
	}
	if err := st.Validate(); err != nil {
		t.Fatal(err)
	}
	c.stripe = st
	return c
}

// without returns a fetcher that cannot reach the given nodes.
func (c *testCluster) without(nodes ...int) LocalFetcher {
	f := LocalFetcher{}
	for n, s := range c.stores {
		f[n] = s
	}
	for _, i := range nodes {
		delete(f, nodeName(i))
	}
	return f
}

func readWhole(t testing.TB, r *DegradedReader) []byte {
	t.Helper()
	b := make([]byte, r.Size())
	n, err := r.ReadAt(b, 0)
	if err != nil || n != len(b) {
		t.Fatalf("ReadAt whole segment = %d, %v", n, err)
	}
	return b
}

func TestDegradedReadAnyMNodesDown(t *testing.T) {
	for _, code := range []struct{ k, m int }{{2, 1}, {4, 2}} {
		t.Run(fmt.Sprintf("%d+%d", code.k, code.m), func(t *testing.T) {
			frags := []int{9, 4, 12, 1}[:code.k]
			c := newTestCluster(t, code.k, code.m, frags)
			n := code.k + code.m
			var downs [][]int
			var rec func(start int, cur []int)
			rec = func(start int, cur []int) {
				if len(cur) == code.m {
					downs = append(downs, append([]int(nil), cur...))
					return
				}
				for i := start; i < n; i++ {
					rec(i+1, append(cur, i))
				}
			}
			rec(0, nil)
			for _, down := range downs {
				f := c.without(down...)
				for i := range code.k {
					r, err := NewDegradedReader(c.stripe, i, f, DegradedReaderOptions{RowSize: 5000})
					if err != nil {
						t.Fatal(err)
					}
					if got := readWhole(t, r); !bytes.Equal(got, c.data[i]) {
						t.Fatalf("nodes %v down: segment %d differs", down, i)
					}
					// The playback pattern over the reconstructed bytes.
					v, err := NewSegmentView(r, c.frags[i])
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(v.Init(), testInit) {
						t.Fatalf("nodes %v down: segment %d init differs", down, i)
					}
					for fi, info := range v.Fragments() {
						b, err := v.ReadFragment(info, nil)
						if err != nil || !bytes.Equal(b, testFragment(t0.Add(time.Duration(i)*time.Hour), fi).Data) {
							t.Fatalf("nodes %v down: segment %d fragment %d: %v or bytes differ", down, i, fi, err)
						}
					}
				}
			}
			// One more node down than m: too few shards, said so.
			r, _ := NewDegradedReader(c.stripe, 0, c.without(append([]int{0}, downs[len(downs)-1]...)...), DegradedReaderOptions{})
			if _, err := r.ReadAt(make([]byte, 10), 0); !errors.Is(err, erasure.ErrTooFewShards) {
				t.Errorf("m+1 nodes down: ReadAt = %v, want ErrTooFewShards", err)
			}
		})
	}
}

func TestCorruptSegmentReadScrubRepair(t *testing.T) {
	c := newTestCluster(t, 4, 2, []int{10, 7, 12, 3})
	s1 := c.stores[nodeName(1)]
	seg := c.stripe.Shards[1].Segment
	badOff := int64(2*MinBlockSize + 321)
	k, _ := parseSegmentID(seg)
	corruptByte(t, s1.segPath(k), badOff)

	// A read through the stripe still returns the recorded bytes, reconstructing the bad
	// block, and says which shard failed.
	var shardErrs []error
	var mu sync.Mutex
	r, err := NewDegradedReader(c.stripe, 1, c.stores, DegradedReaderOptions{
		OnShardError: func(i int, node model.NodeID, err error) {
			mu.Lock()
			shardErrs = append(shardErrs, fmt.Errorf("shard %d on %s: %w", i, node, err))
			mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 3000)
	if _, err := r.ReadAt(p, badOff-1000); err != nil || !bytes.Equal(p, c.data[1][badOff-1000:badOff+2000]) {
		t.Fatalf("read across the bad byte = %v or bytes differ", err)
	}
	if len(shardErrs) != 1 || !errors.Is(shardErrs[0], model.ErrCorrupt) {
		t.Errorf("OnShardError got %v, want one ErrCorrupt", shardErrs)
	}
	if got := readWhole(t, r); !bytes.Equal(got, c.data[1]) {
		t.Fatal("whole segment differs")
	}
	if r.ReconstructedBytes() == 0 {
		t.Error("no byte was reconstructed")
	}

	// The scrubber finds it, with the block's offset.
	var findings []Finding
	st, err := s1.Scrub(context.Background(), 0, func(f Finding) { findings = append(findings, f) })
	if err != nil {
		t.Fatal(err)
	}
	if len(findings) != 1 || findings[0].Segment != seg || findings[0].Offset != 2*MinBlockSize || !errors.Is(findings[0].Err, model.ErrCorrupt) {
		t.Fatalf("scrub findings = %+v, want segment %s at offset %d", findings, seg, 2*MinBlockSize)
	}
	if st.Segments != 1 || st.Findings != 1 {
		t.Errorf("scrub stats %+v", st)
	}

	// Repair: rebuild the data shard from the others and rewrite the segment file.
	pr, pw := io.Pipe()
	go func() { _ = pw.CloseWithError(Rebuild(context.Background(), c.stripe, 1, c.stores, pw, 5000)) }()
	if err := s1.RepairSegment(context.Background(), seg, pr); err != nil {
		t.Fatal(err)
	}
	if err := s1.Verify(seg); err != nil {
		t.Errorf("Verify after repair: %v", err)
	}
	findings = nil
	if _, err := s1.Scrub(context.Background(), 0, func(f Finding) { findings = append(findings, f) }); err != nil || len(findings) != 0 {
		t.Errorf("scrub after repair: %v, %+v", err, findings)
	}
	checkFragments(t, s1, seg, nil2frags(c, 1))
}

// nil2frags returns the fragments recorded into segment i of the test cluster.
func nil2frags(c *testCluster, i int) []model.Fragment {
	var out []model.Fragment
	for fi := range c.frags[i] {
		out = append(out, testFragment(t0.Add(time.Duration(i)*time.Hour), fi))
	}
	return out
}

func TestCorruptParityScrubRepair(t *testing.T) {
	c := newTestCluster(t, 2, 1, []int{6, 9})
	s := c.stores[nodeName(2)]
	id := ShardID{Stripe: c.stripe.ID, Index: 2}
	corruptByte(t, s.shardPath(id), 10)
	var findings []Finding
	if _, err := s.Scrub(context.Background(), 0, func(f Finding) { findings = append(findings, f) }); err != nil {
		t.Fatal(err)
	}
	if len(findings) != 1 || findings[0].Shard != id || findings[0].Offset != 0 {
		t.Fatalf("findings %+v, want shard %s at offset 0", findings, id)
	}
	pr, pw := io.Pipe()
	go func() { _ = pw.CloseWithError(Rebuild(context.Background(), c.stripe, 2, c.stores, pw, 0)) }()
	if err := s.RepairShard(context.Background(), id, pr, c.stripe.ShardSize, c.stripe.Shards[2].Checksum); err != nil {
		t.Fatal(err)
	}
	if err := s.VerifyShard(id); err != nil {
		t.Errorf("VerifyShard after repair: %v", err)
	}
}

func TestLostParityRebuiltOnAnotherNode(t *testing.T) {
	c := newTestCluster(t, 2, 1, []int{3, 8})
	// Node 2 is gone: rebuild its parity shard onto node 0 (a new placement).
	f := c.without(2)
	var buf bytes.Buffer
	if err := Rebuild(context.Background(), c.stripe, 2, f, &buf, 0); err != nil {
		t.Fatal(err)
	}
	want := readShard(t, c.stores[nodeName(2)], ShardID{Stripe: c.stripe.ID, Index: 2})
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatal("rebuilt parity differs from the lost one")
	}
	id := ShardID{Stripe: c.stripe.ID, Index: 2}
	if err := c.stores[nodeName(0)].PutShard(context.Background(), id, &buf, c.stripe.ShardSize, c.stripe.Shards[2].Checksum); err != nil {
		t.Fatal(err)
	}
}

func TestScrubRateAndCancel(t *testing.T) {
	c := newTestCluster(t, 2, 1, []int{12, 12})
	s := c.stores[nodeName(0)]
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Scrub(ctx, 1000, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled scrub = %v", err)
	}
}

func TestStripeValidate(t *testing.T) {
	c := newTestCluster(t, 2, 1, []int{2, 3})
	bad := c.stripe
	bad.Shards = bad.Shards[:2]
	if err := bad.Validate(); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("stripe with a missing shard: %v", err)
	}
	bad = c.stripe
	bad.ShardSize++
	if err := bad.Validate(); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("stripe with a wrong shard size: %v", err)
	}
	if _, err := NewDegradedReader(c.stripe, 2, c.stores, DegradedReaderOptions{}); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("degraded reader of a parity shard: %v", err)
	}
}

// countingFetcher counts the shard reads it passes on.
type countingFetcher struct {
	ShardFetcher
	mu    sync.Mutex
	reads int
}

func (c *countingFetcher) ReadShard(ctx context.Context, node model.NodeID, ref ShardRef, p []byte, off int64) error {
	c.mu.Lock()
	c.reads++
	c.mu.Unlock()
	return c.ShardFetcher.ReadShard(ctx, node, ref, p, off)
}

// TestDegradedReadFragmentByFragment: playback reads a segment a fragment at a time; with
// its node down, each row is rebuilt once (k shard reads), not once per fragment, and the
// bytes are the segment's.
func TestDegradedReadFragmentByFragment(t *testing.T) {
	c := newTestCluster(t, 2, 1, []int{40, 40})
	f := &countingFetcher{ShardFetcher: c.without(0)}
	const row = 256 << 10
	r, err := NewDegradedReader(c.stripe, 0, f, DegradedReaderOptions{RowSize: row})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 0, r.Size())
	buf := make([]byte, 20<<10) // a fragment
	for off := int64(0); off < r.Size(); {
		n, err := r.ReadAt(buf, off)
		got = append(got, buf[:n]...)
		off += int64(n)
		if err != nil && off < r.Size() {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, c.data[0]) {
		t.Fatalf("degraded read of %d bytes differs from the segment", len(got))
	}
	rows := int((r.Size() + row - 1) / row)
	// One failed read of the lost shard, then k reads per row.
	if max := 1 + 2*rows; f.reads > max {
		t.Errorf("%d shard reads for %d rows of a 2+1 stripe, want at most %d (each row rebuilt once)", f.reads, rows, max)
	}
	t.Logf("%d bytes in %d-byte reads: %d shard reads for %d rows", r.Size(), len(buf), f.reads, rows)
}
