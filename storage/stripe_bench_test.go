package storage

import (
	"fmt"
	"testing"
)

// BenchmarkStripeRead reads a whole data segment (~3.4 MB, 1 MiB checksum blocks, page
// cache) of a stripe in 1 MiB reads: healthy (its own shard) and degraded (its node down:
// k other shards fetched in parallel and decoded). Bytes/s counts segment bytes served.
func BenchmarkStripeRead(b *testing.B) {
	testClusterBlockSize = DefaultBlockSize
	defer func() { testClusterBlockSize = MinBlockSize }()
	for _, code := range []struct{ k, m int }{{2, 1}, {4, 2}} {
		c := newTestCluster(b, code.k, code.m, []int{60, 60, 60, 60}[:code.k])
		for _, mode := range []string{"healthy", "degraded"} {
			b.Run(fmt.Sprintf("%d+%d/%s", code.k, code.m, mode), func(b *testing.B) {
				f := c.stores
				if mode == "degraded" {
					f = c.without(0)
				}
				r, err := NewDegradedReader(c.stripe, 0, f, DegradedReaderOptions{})
				if err != nil {
					b.Fatal(err)
				}
				buf := make([]byte, 1<<20)
				b.SetBytes(r.Size())
				for b.Loop() {
					for off := int64(0); off < r.Size(); off += int64(len(buf)) {
						if _, err := r.ReadAt(buf, off); err != nil && off+int64(len(buf)) < r.Size() {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}
