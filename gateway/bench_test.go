package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// firstByteWriter records when the first body byte is written.
type firstByteWriter struct {
	h     http.Header
	code  int
	first time.Time
	n     int
}

func (w *firstByteWriter) Header() http.Header { return w.h }
func (w *firstByteWriter) WriteHeader(c int)   { w.code = c }
func (w *firstByteWriter) Flush()              {}
func (w *firstByteWriter) Write(p []byte) (int, error) {
	if w.first.IsZero() {
		w.first = time.Now()
	}
	w.n += len(p)
	return len(p), nil
}

// BenchmarkStreamTimeToFirstByte: a camera with a full day of 2 s segments (43,200, each
// of two 1 s fragments) in the catalog; a 10 s stream from the middle of the day. Reports
// the time to the first byte and to the whole response. The first fragment is found by
// binary search, so neither grows with the length of the recording.
func BenchmarkStreamTimeToFirstByte(b *testing.B) {
	c := loadClip(b)
	// One real 2 s segment (frames 0-49: a keyframe fragment and a non-keyframe one),
	// reused for every segment of the day.
	tmpl := buildSegments(b, c, "cam1", []segSpec{{id: "t", from: 0, to: 50, start: t0}})[0]
	day := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	rec := &fakeRecordings{}
	for i := 0; i < 43200; i++ {
		start := day.Add(time.Duration(i) * 2 * time.Second)
		fs := &fakeSegment{init: tmpl.init, data: tmpl.data}
		for _, fi := range tmpl.frags {
			fi.Start = start.Add(fi.Start.Sub(t0))
			fs.frags = append(fs.frags, fi)
		}
		fs.seg = tmpl.seg
		fs.seg.ID = model.SegmentID(start.Format("150405"))
		fs.seg.Start, fs.seg.End = start, start.Add(2*time.Second)
		rec.segs = append(rec.segs, fs)
	}
	// OpenSegment by id would scan: index them like a store would.
	idx := map[model.SegmentID]*fakeSegment{}
	for _, s := range rec.segs {
		idx[s.seg.ID] = s
	}
	cat := newFakeCatalog()
	cat.cams["cam1"] = model.Camera{ID: "cam1", Tenant: "t"}
	cfg := DefaultConfig()
	cfg.Catalog, cfg.Recordings, cfg.Logger = cat, indexedRecordings{rec, idx}, testLogger(b)
	cfg.Auditor = nopAuditor{}
	g, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	url := "/media/v1/cameras/cam1/stream.mp4?start=" + day.Add(12*time.Hour+500*time.Millisecond).Format(time.RFC3339Nano) + "&duration=10s"
	var ttfb, total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest("GET", url, nil)
		req.SetPathValue("id", "cam1")
		w := &firstByteWriter{h: http.Header{}}
		start := time.Now()
		g.serveStream(w, req)
		total += time.Since(start)
		if w.code != 200 || w.first.IsZero() {
			b.Fatalf("status %d, %d bytes", w.code, w.n)
		}
		ttfb += w.first.Sub(start)
	}
	b.ReportMetric(float64(ttfb.Nanoseconds())/float64(b.N), "ns-to-first-byte")
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns-whole-10s")
}

type indexedRecordings struct {
	*fakeRecordings
	idx map[model.SegmentID]*fakeSegment
}

func (r indexedRecordings) OpenSegment(ctx context.Context, seg model.Segment) (SegmentReader, error) {
	return &fakeReader{r.idx[seg.ID]}, nil
}

type nopAuditor struct{}

func (nopAuditor) Audit(context.Context, AuditRecord) {}
