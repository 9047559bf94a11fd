package storage

import (
	"math/rand/v2"
	"testing"
)

// Combining two CRCs gives the CRC of the concatenation, for every split of random data.
func TestCRC32CCombine(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	for i := 0; i < 200; i++ {
		n := rng.IntN(len(data))
		split := rng.IntN(n + 1)
		a, b := data[:split], data[split:n]
		if got, want := crc32cCombine(crc32c(a), crc32c(b), int64(len(b))), crc32c(data[:n]); got != want {
			t.Fatalf("split %d of %d bytes: combined %08x, want %08x", split, n, got, want)
		}
	}
}

// The sums kept while appending are the ones the seal used to compute by reading the file
// back: per block, the last partial block, and the whole file, whatever the sizes.
func TestRunningSumsMatchReadBack(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, blockSize := range []int64{MinBlockSize, 64 << 10, DefaultBlockSize} {
		r := runningSums{blockSize: blockSize}
		var file []byte
		for i := 0; i < 60; i++ {
			chunk := make([]byte, rng.IntN(int(3*blockSize)))
			for j := range chunk {
				chunk[j] = byte(rng.Uint32())
			}
			var crc uint32
			r, crc = r.add(chunk)
			if crc != crc32c(chunk) {
				t.Fatalf("block size %d, append %d: data CRC %08x, want %08x", blockSize, i, crc, crc32c(chunk))
			}
			file = append(file, chunk...)
		}
		blocks, whole := r.final()
		if whole != crc32c(file) || r.size != int64(len(file)) {
			t.Fatalf("block size %d: whole-file CRC %08x over %d bytes, want %08x over %d", blockSize, whole, r.size, crc32c(file), len(file))
		}
		if int64(len(blocks)) != numBlocks(int64(len(file)), blockSize) {
			t.Fatalf("block size %d: %d block sums for %d bytes", blockSize, len(blocks), len(file))
		}
		for b := range blocks {
			end := min(int64(b+1)*blockSize, int64(len(file)))
			if want := crc32c(file[int64(b)*blockSize : end]); blocks[b] != want {
				t.Fatalf("block size %d: block %d sum %08x, want %08x", blockSize, b, blocks[b], want)
			}
		}
	}
}

func BenchmarkRunningSumsAdd(b *testing.B) {
	r := runningSums{blockSize: DefaultBlockSize}
	frag := make([]byte, 250<<10) // a 1 s fragment at 2 Mbit/s
	b.SetBytes(int64(len(frag)))
	for b.Loop() {
		r, _ = r.add(frag)
		if len(r.blocks) > 1000 {
			r = runningSums{blockSize: DefaultBlockSize}
		}
	}
}
