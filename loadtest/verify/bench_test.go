package verify

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkCollectAll verifies 8 cameras × 2 min at 25 fps and ~2 Mbit/s (16 camera-minutes,
// 1-minute segments, catalog check on) through the HTTP API of a fake node serving real
// MP4 exports. Report: camera-minutes verified per second of wall time and bytes fetched
// per camera-minute.
func BenchmarkCollectAll(b *testing.B) {
	const cams, frames = 8, 3000
	f := newAPIFake(b, frames, 1500, 10_000)
	api := f.serve(b)
	ids := make([]string, cams)
	for i := range ids {
		ids[i] = fmt.Sprintf("cam-%04d", i)
	}
	window := Interval{f.at(250), f.at(frames - 75)}
	// Warm the fake's cache: the server's own cost is not the verifier's.
	collectAllForBench(context.Background(), api, ids, window)
	f.mu.Lock()
	f.exports, f.bytesOut = 0, 0
	f.mu.Unlock()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		collectAllForBench(context.Background(), api, ids, window)
	}
	el := time.Since(start)
	camMin := float64(cams) * window.End.Sub(window.Start).Minutes() * float64(b.N)
	b.ReportMetric(camMin/el.Seconds(), "cam-min/s")
	b.ReportMetric(float64(f.bytesOut)/camMin/1e6, "MB-fetched/cam-min")
	b.ReportMetric(float64(f.exports)/float64(b.N*cams), "exports/cam")
}

func collectAllForBench(ctx context.Context, api *API, ids []string, window Interval) {
	in := CollectAll(ctx, api, ids, window, CollectOptions{CheckSegments: true}, 0)
	for _, x := range in {
		if len(x.FetchErrors) > 0 {
			panic(x.FetchErrors[0])
		}
	}
}
