package protect

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkSegmentRead reads a whole striped segment (2+1, ~6 MiB) through OpenSegment
// from another node: healthy (its holder serves it over transfer) and degraded (the
// holder is down: every byte rebuilt from the other data shard and the parity). It
// reports the storage overhead and east-west bytes per recorded byte of the striping.
func BenchmarkSegmentRead(b *testing.B) {
	c := newTestCluster(b, 4)
	n1 := c.node("n1")
	rng := rand.New(rand.NewPCG(9, 9))
	var recs []recording
	var recorded int64
	for i := range 2 {
		r := record(b, c, n1.store, "n1", "cam-a", t0.Add(time.Duration(i)*time.Hour), 30, 200<<10, rng)
		recs = append(recs, r)
		recorded += r.seg.Bytes
	}
	if made, err := n1.prot.StripeOnce(context.Background()); made != 1 || err != nil {
		b.Fatalf("StripeOnce = %d, %v", made, err)
	}
	var onDisk int64
	for _, nd := range c.nodes {
		s, _ := nd.store.Usage()
		sh, _ := nd.store.ShardUsage()
		onDisk += s + sh
	}
	st, _, _ := c.cat.StripeOf(recs[0].seg.ID)
	var rec recording
	for _, r := range recs {
		if dataIndex(st, r.seg.ID) == 1 {
			rec = r
		}
	}
	reader := c.node("n4").prot
	read := func(b *testing.B) {
		b.SetBytes(rec.seg.Bytes)
		for b.Loop() {
			r, err := reader.OpenSegment(context.Background(), rec.seg)
			if err != nil {
				b.Fatal(err)
			}
			var buf []byte
			for _, fi := range r.Fragments() {
				if buf, err = r.ReadFragment(fi, buf); err != nil {
					b.Fatal(err)
				}
			}
			r.Close()
		}
	}
	b.Run("healthy", read)
	c.kill(st.Shards[1].Node)
	b.Run("degraded", read)
	ship := n1.prot.Stats().ShippedBytes
	b.ReportMetric(float64(onDisk)/float64(recorded), "disk/recorded")
	b.ReportMetric(float64(ship)/float64(recorded), "eastwest/recorded")
	b.Logf("2+1: storage overhead %.3f (ideal %.3f), east-west %.3f bytes per recorded byte",
		float64(onDisk)/float64(recorded), 1.5, float64(ship)/float64(recorded))
}
