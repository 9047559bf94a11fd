package erasure

import (
	"bytes"
	"context"
	"io"
	"testing"
)

// BenchmarkEncode: 4+2 over four 8 MiB segments, 1 MiB rows; bytes/s counts data read.
func BenchmarkEncode(b *testing.B) {
	const k, m, size = 4, 2, 8 << 20
	readers := make([]io.ReaderAt, k)
	sizes := make([]int64, k)
	for i := range k {
		readers[i] = bytes.NewReader(randBytes(uint64(i), size))
		sizes[i] = size
	}
	parity := []io.Writer{io.Discard, io.Discard}
	b.SetBytes(k * size)
	for b.Loop() {
		if _, err := Encode(context.Background(), k, m, readers, sizes, parity, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReconstruct: rebuild one lost 8 MiB data shard of a 4+2 stripe; bytes/s counts
// the rebuilt bytes (ns/op × 128 = CPU per GiB rebuilt).
func BenchmarkReconstruct(b *testing.B) {
	shards, sizes := stripe(b, 4, 2, []int64{8 << 20, 8 << 20, 8 << 20, 8 << 20}, 0)
	avail := make([]io.ReaderAt, 6)
	for i := range avail {
		avail[i] = bytes.NewReader(shards[i])
	}
	avail[1] = nil
	b.SetBytes(8 << 20)
	for b.Loop() {
		if err := Reconstruct(context.Background(), 4, 2, avail, sizes, 1, io.Discard, 0); err != nil {
			b.Fatal(err)
		}
	}
}
