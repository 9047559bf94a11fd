package erasure

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/vigie-vms/vigie/model"
)

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// stripe encodes k random segments of different sizes and returns every shard's stored
// bytes (data unpadded, parity full) and sizes.
func stripe(t testing.TB, k, m int, sizes []int64, rowSize int) ([][]byte, []int64) {
	t.Helper()
	shards := make([][]byte, k+m)
	readers := make([]io.ReaderAt, k)
	for i := range k {
		shards[i] = randBytes(uint64(100*k+i), int(sizes[i]))
		readers[i] = bytes.NewReader(shards[i])
	}
	bufs := make([]*bytes.Buffer, m)
	writers := make([]io.Writer, m)
	for j := range m {
		bufs[j] = new(bytes.Buffer)
		writers[j] = bufs[j]
	}
	res, err := Encode(context.Background(), k, m, readers, sizes[:k], writers, rowSize)
	if err != nil {
		t.Fatalf("Encode %d+%d: %v", k, m, err)
	}
	all := append([]int64(nil), sizes[:k]...)
	for j := range m {
		if int64(bufs[j].Len()) != res.ShardSize {
			t.Fatalf("parity %d is %d bytes, want shard size %d", j, bufs[j].Len(), res.ShardSize)
		}
		shards[k+j] = bufs[j].Bytes()
		all = append(all, res.ShardSize)
	}
	return shards, all
}

// combinations returns every subset of size r of [0, n).
func combinations(n, r int) [][]int {
	var out [][]int
	var rec func(start int, cur []int)
	rec = func(start int, cur []int) {
		if len(cur) == r {
			out = append(out, append([]int(nil), cur...))
			return
		}
		for i := start; i < n; i++ {
			rec(i+1, append(cur, i))
		}
	}
	rec(0, nil)
	return out
}

func TestReconstructAnyMLostShards(t *testing.T) {
	for _, tc := range []struct {
		k, m  int
		sizes []int64
		row   int
	}{
		{1, 1, []int64{70001}, 4096},
		{2, 1, []int64{100_000, 63_211}, 4096},
		{4, 2, []int64{50_000, 81_920, 1, 77_777}, 8192},
		{4, 2, []int64{12_345, 12_345, 12_345, 12_345}, 0},
		{6, 3, []int64{9000, 100, 8999, 3, 0, 9001}, 1000},
	} {
		t.Run(fmt.Sprintf("%d+%d", tc.k, tc.m), func(t *testing.T) {
			shards, sizes := stripe(t, tc.k, tc.m, tc.sizes, tc.row)
			n := tc.k + tc.m
			for _, lost := range combinations(n, tc.m) {
				avail := make([]io.ReaderAt, n)
				for i := range n {
					avail[i] = bytes.NewReader(shards[i])
				}
				for _, i := range lost {
					avail[i] = nil
				}
				for _, want := range lost {
					var got bytes.Buffer
					if err := Reconstruct(context.Background(), tc.k, tc.m, avail, sizes, want, &got, tc.row); err != nil {
						t.Fatalf("lost %v: rebuild %d: %v", lost, want, err)
					}
					if !bytes.Equal(got.Bytes(), shards[want]) {
						t.Fatalf("lost %v: shard %d rebuilt differs (%d bytes, want %d)", lost, want, got.Len(), len(shards[want]))
					}
				}
			}
		})
	}
}

func TestMirrorParityIsACopy(t *testing.T) {
	shards, _ := stripe(t, 1, 1, []int64{5000}, 1024)
	if !bytes.Equal(shards[0], shards[1]) {
		t.Fatal("1+1 parity differs from the data: a mirror must be a plain copy")
	}
}

func TestReconstructRangeUnaligned(t *testing.T) {
	shards, sizes := stripe(t, 4, 2, []int64{40_000, 30_000, 20_000, 39_999}, 4096)
	avail := []io.ReaderAt{bytes.NewReader(shards[0]), nil, nil, bytes.NewReader(shards[3]), bytes.NewReader(shards[4]), bytes.NewReader(shards[5])}
	for _, r := range [][2]int64{{0, 1}, {17, 4000}, {29_990, 10}, {12_345, 17_655}} {
		p := make([]byte, r[1])
		if err := ReconstructRange(4, 2, avail, sizes, 1, p, r[0]); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, shards[1][r[0]:r[0]+r[1]]) {
			t.Errorf("range %v differs", r)
		}
	}
}

func TestTooFewShards(t *testing.T) {
	shards, sizes := stripe(t, 2, 1, []int64{1000, 900}, 0)
	avail := []io.ReaderAt{nil, nil, bytes.NewReader(shards[2])}
	err := Reconstruct(context.Background(), 2, 1, avail, sizes, 0, io.Discard, 0)
	if !errors.Is(err, ErrTooFewShards) {
		t.Fatalf("rebuild with 1 of 2 needed shards = %v, want ErrTooFewShards", err)
	}
}

func TestEncodeStopsOnReadError(t *testing.T) {
	boom := errors.New("block 3 fails its checksum")
	_, err := Encode(context.Background(), 2, 1, []io.ReaderAt{bytes.NewReader(make([]byte, 100)), failing{boom}},
		[]int64{100, 100}, []io.Writer{io.Discard}, 0)
	if !errors.Is(err, boom) {
		t.Fatalf("Encode = %v, want the reader's error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = Encode(ctx, 2, 1, []io.ReaderAt{bytes.NewReader(make([]byte, 100)), bytes.NewReader(make([]byte, 100))},
		[]int64{100, 100}, []io.Writer{io.Discard}, 0)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Encode with a cancelled context = %v", err)
	}
}

type failing struct{ err error }

func (f failing) ReadAt([]byte, int64) (int, error) { return 0, f.err }

func TestCodeFor(t *testing.T) {
	for _, tc := range []struct {
		nodes int
		class model.RedundancyClass
		over  Overrides
		k, m  int
	}{
		{0, model.RedundancyStandard, nil, 1, 0},
		{1, model.RedundancyStandard, nil, 1, 0},
		{2, model.RedundancyStandard, nil, 1, 1},
		{3, model.RedundancyStandard, nil, 2, 1},
		{5, model.RedundancyCritical, nil, 2, 1},
		{6, model.RedundancyStandard, nil, 4, 2},
		{8, model.RedundancyStandard, nil, 4, 2},
		{9, model.RedundancyStandard, nil, 6, 3},
		{40, model.RedundancyStandard, nil, 6, 3},
		{7, model.RedundancyCritical, Overrides{model.RedundancyCritical: {K: 4, M: 3}}, 4, 3},
		{7, model.RedundancyStandard, Overrides{model.RedundancyCritical: {K: 4, M: 3}}, 4, 2},
		// The override needs 7 nodes: with 5 the ladder applies.
		{5, model.RedundancyCritical, Overrides{model.RedundancyCritical: {K: 4, M: 3}}, 2, 1},
	} {
		if k, m := CodeFor(tc.nodes, tc.class, tc.over); k != tc.k || m != tc.m {
			t.Errorf("CodeFor(%d, %s, %v) = %d+%d, want %d+%d", tc.nodes, tc.class, tc.over, k, m, tc.k, tc.m)
		}
	}
}
