package replica

import (
	"context"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// BenchmarkAppend measures the latency replication adds to each fragment: Stream.Append
// of a 250 KB fragment (≈ one second of a 2 Mbit/s camera) to one replica over HTTP on
// loopback, acknowledged once durable there ("sync": fsync of the file and a synced Pebble
// batch on the replica; "nosync": the same without fsync, i.e. network + HTTP + CRC +
// copy). The owner's own append is not included. ns/op is the added latency per fragment.
func BenchmarkAppend(b *testing.B) {
	for _, noSync := range []bool{false, true} {
		name := "sync"
		if noSync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) {
			n := newReplicaNode(b, "node-2")
			if !noSync {
				_ = n.r.Close()
				cfg := DefaultConfig()
				cfg.Dir, cfg.NodeID, cfg.Logger = b.TempDir(), n.id, testLogger(b)
				r, err := Open(cfg)
				if err != nil {
					b.Fatal(err)
				}
				n.r = r
				n.mux.Store(newMux(r))
			}
			o := newOwner(b, n)
			data := randBytes(7, 250_000)
			open := func(i int) *Stream {
				st, err := o.sender.Open(context.Background(), "cam-1", 1, t0.Add(time.Duration(i)*time.Second), testInit, []model.NodeID{n.id})
				if err != nil {
					b.Fatal(err)
				}
				return st
			}
			st := open(0)
			seq := 0
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if seq == 128 { // a new segment every 32 MB, as the recorder does
					b.StopTimer()
					if err := st.Seal(context.Background()); err != nil {
						b.Fatal(err)
					}
					st, seq = open(i), 0
					b.StartTimer()
				}
				f := model.Fragment{Start: t0.Add(time.Duration(i) * time.Second), Duration: time.Second, Keyframe: true, Data: data}
				if err := st.Append(context.Background(), f); err != nil {
					b.Fatal(err)
				}
				seq++
			}
			b.StopTimer()
			if a, _ := st.Replicated(); a != 1 {
				b.Fatalf("replica dropped during the benchmark (%+v)", o.sender.Metrics())
			}
			st.Close()
		})
	}
}
