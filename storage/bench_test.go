package storage

import (
	"log/slog"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// BenchmarkAppend appends 250 KB fragments (≈ a one-second fragment of a 2 Mbit/s camera)
// to one segment: fsync of the file plus a synced Pebble batch per fragment ("sync"), and
// without any fsync ("nosync") to show the cost of the rest.
func BenchmarkAppend(b *testing.B) {
	for _, noSync := range []bool{false, true} {
		name := "sync"
		if noSync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) {
			cfg := testConfig(b, b.TempDir())
			cfg.Logger = slog.New(slog.DiscardHandler)
			cfg.BlockSize = DefaultBlockSize
			cfg.NoSync = noSync
			s, err := Open(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			data := randBytes(1, 250_000)
			w, err := s.Create("cam-1", 1, testInit, t0)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if i > 0 && i%128 == 0 { // a new segment every 32 MB, as the recorder does
					b.StopTimer()
					if _, err := w.Seal(); err != nil {
						b.Fatal(err)
					}
					if w, err = s.Create("cam-1", 1, testInit, t0.Add(time.Duration(i)*time.Second)); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				if err := w.Append(modelFragment(t0.Add(time.Duration(i)*time.Second), data)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadSegment reads every fragment of a sealed 32 MB segment (128 fragments of
// 250 KB), verifying each checksum, from the page cache.
func BenchmarkReadSegment(b *testing.B) {
	cfg := testConfig(b, b.TempDir())
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.BlockSize = DefaultBlockSize
	cfg.NoSync = true
	s, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	w, err := s.Create("cam-1", 1, testInit, t0)
	if err != nil {
		b.Fatal(err)
	}
	data := randBytes(1, 250_000)
	for i := range 128 {
		if err := w.Append(modelFragment(t0.Add(time.Duration(i)*time.Second), data)); err != nil {
			b.Fatal(err)
		}
	}
	seg, err := w.Seal()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(seg.Bytes)
	var buf []byte
	for b.Loop() {
		r, err := s.OpenReader(seg.ID)
		if err != nil {
			b.Fatal(err)
		}
		for _, fi := range r.Fragments() {
			if buf, err = r.ReadFragment(fi, buf); err != nil {
				b.Fatal(err)
			}
		}
		if err := r.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(seg.Fragments), "fragments/op")
}

func modelFragment(start time.Time, data []byte) model.Fragment {
	return model.Fragment{Start: start, Duration: time.Second, Keyframe: true, Data: data}
}
