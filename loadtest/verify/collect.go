package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"

	"github.com/vigie-vms/vigie/loadtest/sei"
)

// Errors of a Source, wrapped with the request.
var (
	ErrNothingRecorded = errors.New("nothing recorded in the range")  // 404 of an export
	ErrCodecChange     = errors.New("codec changes within the range") // 409 of an export
)

// Source is the public API the verifier reads: any node's REST and media endpoints.
type Source interface {
	Timeline(ctx context.Context, camera string, from, to time.Time) (Timeline, error)
	Segments(ctx context.Context, camera string, from, to time.Time) ([]Segment, error)
	// Export returns a progressive MP4 of [from, to) and the wall-clock time of its first
	// sample (X-Vigie-Start). The caller closes it.
	Export(ctx context.Context, camera string, from, to time.Time) (*Export, error)
}

// Export is one downloaded export: its bytes, held in memory or in an unlinked temporary
// file, and the wall-clock time of its first sample. Open may be called any number of
// times, also concurrently; Close releases the bytes.
type Export struct {
	Origin time.Time
	Size   int64
	ra     io.ReaderAt
	f      *os.File
}

// NewExport wraps bytes already in memory.
func NewExport(b []byte, origin time.Time) *Export {
	return &Export{Origin: origin, Size: int64(len(b)), ra: bytes.NewReader(b)}
}

// Open returns a reader over the export's bytes.
func (e *Export) Open() io.ReadSeeker { return io.NewSectionReader(e.ra, 0, e.Size) }

// Close releases the bytes (the temporary file, if any).
func (e *Export) Close() error {
	if e == nil || e.f == nil {
		return nil
	}
	return e.f.Close()
}

// SaveTo writes the export's bytes to path.
func (e *Export) SaveTo(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, e.Open()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// API is a Source over HTTP.
type API struct {
	Base string // http://host:port of any node
	HTTP *http.Client
	// MemLimit: an export up to this size (its Content-Length) is read into one buffer of
	// exactly that size; a larger one, or one without a length, is streamed into an unlinked
	// temporary file in TempDir ("" = os.TempDir()). Default 128 MiB (a 5-minute chunk at 3 Mbit/s).
	MemLimit int64
	TempDir  string
}

func (a *API) get(ctx context.Context, path string) (*http.Response, error) {
	hc := a.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Minute}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(a.Base, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	return hc.Do(req)
}

func (a *API) getJSON(ctx context.Context, path string, out any) error {
	resp, err := a.get(ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, out)
}

func rangeQuery(from, to time.Time) url.Values {
	return url.Values{"start": {from.UTC().Format(time.RFC3339Nano)}, "end": {to.UTC().Format(time.RFC3339Nano)}}
}

// int64s decodes protojson's int64 (a string) or a plain number.
type int64s int64

func (n *int64s) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*n = 0
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	*n = int64s(v)
	return err
}

// Timeline implements Source.
func (a *API) Timeline(ctx context.Context, camera string, from, to time.Time) (Timeline, error) {
	var raw struct {
		Spans []struct {
			Start, End time.Time
			Bytes      int64s
		} `json:"spans"`
		Gaps []Gap `json:"gaps"`
	}
	if err := a.getJSON(ctx, "/v1/cameras/"+url.PathEscape(camera)+"/timeline?"+rangeQuery(from, to).Encode(), &raw); err != nil {
		return Timeline{}, err
	}
	tl := Timeline{Gaps: raw.Gaps}
	for _, s := range raw.Spans {
		tl.Spans = append(tl.Spans, Span{Start: s.Start, End: s.End, Bytes: int64(s.Bytes)})
	}
	return tl, nil
}

// Segments implements Source (every page).
func (a *API) Segments(ctx context.Context, camera string, from, to time.Time) ([]Segment, error) {
	var out []Segment
	tok := ""
	for range 1000 {
		q := rangeQuery(from, to)
		q.Set("page_size", "500")
		if tok != "" {
			q.Set("page_token", tok)
		}
		var page struct {
			Segments []struct {
				ID, Node   string
				Start, End time.Time
				Bytes      int64s
				Sealed     bool
			} `json:"segments"`
			Next string `json:"next_page_token"`
		}
		if err := a.getJSON(ctx, "/v1/cameras/"+url.PathEscape(camera)+"/segments?"+q.Encode(), &page); err != nil {
			return out, err
		}
		for _, s := range page.Segments {
			out = append(out, Segment{ID: s.ID, Node: s.Node, Start: s.Start, End: s.End, Bytes: int64(s.Bytes), Sealed: s.Sealed})
		}
		if page.Next == "" {
			return out, nil
		}
		tok = page.Next
	}
	return out, fmt.Errorf("segments of %s: more than 1000 pages", camera)
}

// Export implements Source. The body is streamed: into one exactly sized buffer when its
// length is known and small, else into an unlinked temporary file.
func (a *API) Export(ctx context.Context, camera string, from, to time.Time) (*Export, error) {
	path := "/media/v1/cameras/" + url.PathEscape(camera) + "/export.mp4?" + rangeQuery(from, to).Encode()
	resp, err := a.get(ctx, path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, fmt.Errorf("export %s [%s, %s): %w", camera, from.Format(time.RFC3339), to.Format(time.RFC3339), ErrNothingRecorded)
	case http.StatusConflict:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("export %s: %w: %s", camera, ErrCodecChange, strings.TrimSpace(string(b)))
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return nil, fmt.Errorf("export %s: %s: %s", camera, resp.Status, strings.TrimSpace(string(b)))
	}
	origin, err := time.Parse(time.RFC3339Nano, resp.Header.Get("X-Vigie-Start"))
	if err != nil {
		return nil, fmt.Errorf("export %s: X-Vigie-Start %q: %w", camera, resp.Header.Get("X-Vigie-Start"), err)
	}
	limit := a.MemLimit
	if limit == 0 {
		limit = 128 << 20
	}
	if n := resp.ContentLength; n >= 0 && n <= limit {
		b := make([]byte, n)
		if _, err := io.ReadFull(resp.Body, b); err != nil {
			return nil, fmt.Errorf("export %s: read %d bytes: %w", camera, n, err)
		}
		return NewExport(b, origin), nil
	}
	f, err := os.CreateTemp(a.TempDir, "vigie-verify-*.mp4")
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", camera, err)
	}
	_ = os.Remove(f.Name()) // unlinked: gone with the last descriptor, whatever happens
	n, err := io.Copy(f, io.LimitReader(resp.Body, 4<<30))
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("%d bytes of %d", n, resp.ContentLength)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("export %s: %w", camera, err)
	}
	return &Export{Origin: origin, Size: n, ra: f, f: f}, nil
}

// ParseExport reads the video samples of a progressive MP4 and the tags in each. A
// sample's time is origin plus its decode time (the track's time offset included).
func ParseExport(r io.ReadSeeker, origin time.Time) ([]Sample, error) {
	var p pmp4.Presentation
	if err := p.Unmarshal(r); err != nil {
		return nil, fmt.Errorf("parse MP4: %w", err)
	}
	for _, tr := range p.Tracks {
		h265 := false
		switch tr.Codec.(type) {
		case *mp4.CodecH264:
		case *mp4.CodecH265:
			h265 = true
		default:
			continue
		}
		if tr.TimeScale == 0 {
			return nil, fmt.Errorf("video track %d: time scale 0", tr.ID)
		}
		out := make([]Sample, 0, len(tr.Samples))
		dts := int64(tr.TimeOffset)
		for i, s := range tr.Samples {
			payload, err := s.GetPayload()
			if err != nil {
				return out, fmt.Errorf("sample %d: %w", i, err)
			}
			at := origin.Add(time.Duration(dts * int64(time.Second) / int64(tr.TimeScale)))
			out = append(out, Sample{At: at, Key: !s.IsNonSyncSample, Tags: sei.ScanAVCC(payload, h265)})
			dts += int64(s.Duration)
		}
		return out, nil
	}
	return nil, fmt.Errorf("no H.264 or H.265 track among %d tracks", len(p.Tracks))
}

// CollectOptions tune Collect.
type CollectOptions struct {
	// Lead is added before the window's start in the export (an export starts at the
	// keyframe at or before its start; frames before the window are ignored). Default 4s.
	Lead time.Duration
	// Chunk is the longest single export. Default 5m.
	Chunk time.Duration
	// CheckSegments checks every listed segment against the data (catalog against data).
	// A segment overlapping the range already exported is checked on the samples
	// downloaded (no second download); one that holds none there is exported on its own.
	CheckSegments bool
	// ExportSegments exports every listed segment on its own (the thorough and costly
	// catalog check: it downloads the footage twice, and also catches a sample served by a
	// segment's export outside its range). Implies CheckSegments.
	ExportSegments bool
	// Tolerance for samples outside a segment's range. Default 1s.
	Tolerance time.Duration
	// Keep: the window's exports of the cameras it accepts are saved in KeepDir (for the
	// independent ffprobe check, on the very bytes the verifier parsed) and listed in
	// Input.Files.
	Keep    func(camera string) bool
	KeepDir string
}

// ExportFile is a window export saved for a later check.
type ExportFile struct {
	Path    string    `json:"path"`
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	Bytes   int64     `json:"bytes"`
	Samples int       `json:"samples"` // video samples the verifier parsed in it
}

// Collect reads one camera's timeline, segments and exports of window through src and
// returns the Input for Analyze (Camera, Window, Timeline, Samples, Segments, Files and
// FetchErrors filled; the caller adds Sent and Faults).
func Collect(ctx context.Context, src Source, camera string, window Interval, o CollectOptions) Input {
	if o.Lead == 0 {
		o.Lead = 4 * time.Second
	}
	if o.Chunk == 0 {
		o.Chunk = 5 * time.Minute
	}
	if o.Tolerance == 0 {
		o.Tolerance = time.Second
	}
	in := Input{Camera: camera, Window: window}
	from, to := window.Start.Add(-o.Lead), window.End.Add(o.Lead)
	// Segments and exports first, the timeline last: while a node still records, the
	// timeline only grows, so it covers everything the exports served.
	segs, err := src.Segments(ctx, camera, from, to)
	if err != nil {
		in.FetchErrors = append(in.FetchErrors, "segments: "+err.Error())
	}
	keep := o.Keep != nil && o.KeepDir != "" && o.Keep(camera)
	var kept *[]ExportFile
	if keep {
		kept = &in.Files
	}
	for c := from; c.Before(to); c = c.Add(o.Chunk) {
		end := minTime(c.Add(o.Chunk), to)
		ss, err := exportRange(ctx, src, camera, c, end, segs, c.Equal(from), kept, o.KeepDir)
		in.Samples = append(in.Samples, ss...)
		if err != nil {
			in.FetchErrors = append(in.FetchErrors, err.Error())
		}
	}
	tl, err := src.Timeline(ctx, camera, from, to)
	if err != nil {
		in.FetchErrors = append(in.FetchErrors, "timeline: "+err.Error())
	}
	in.Timeline = tl
	if o.CheckSegments || o.ExportSegments {
		for _, sg := range segs {
			if !o.ExportSegments && sg.End.After(from) && sg.Start.Before(to) {
				if sc, ok := deriveSegment(camera, sg, in.Samples, !sg.Start.Before(from)); ok {
					in.Segments = append(in.Segments, sc)
					continue
				}
			}
			in.Segments = append(in.Segments, checkSegment(ctx, src, camera, sg, o.Tolerance))
		}
	}
	return in
}

// deriveSegment checks a listed segment on the samples of the window's exports (sorted by
// time): the samples in [Start, End) (the part of the segment inside the exported range).
// ok is false when there is none (the caller exports the segment on its own to say why).
// whole says the segment's start is inside the exported range (its keyframe is known).
func deriveSegment(camera string, sg Segment, samples []Sample, whole bool) (SegmentCheck, bool) {
	sc := SegmentCheck{Segment: sg}
	i := sort.Search(len(samples), func(i int) bool { return !samples[i].At.Before(sg.Start) })
	for j := i; j < len(samples) && samples[j].At.Before(sg.End); j++ {
		s := samples[j]
		if j == i && whole && !s.Key {
			// Not starting with a keyframe: its own export would start at the previous
			// keyframe (see SegmentCheck.LeadIn).
			for k := i - 1; k >= 0; k-- {
				sc.LeadIn++
				if samples[k].Key {
					break
				}
			}
		}
		sc.Samples++
		if len(s.Tags) > 0 {
			sc.Tagged++
		}
		for _, t := range s.Tags {
			if t.Camera != camera {
				sc.Foreign++
			}
		}
	}
	return sc, sc.Samples > 0
}

// exportRange exports [from, to); samples before from are dropped unless first (they belong
// to the previous chunk). A codec change splits the range at the listed segments. kept,
// when not nil, receives the export saved in dir.
func exportRange(ctx context.Context, src Source, camera string, from, to time.Time, segs []Segment, first bool, kept *[]ExportFile, dir string) ([]Sample, error) {
	ex, err := src.Export(ctx, camera, from, to)
	if errors.Is(err, ErrNothingRecorded) {
		return nil, nil
	}
	if errors.Is(err, ErrCodecChange) {
		var out []Sample
		var errs []error
		for _, sg := range segs {
			s, e := maxTime(sg.Start, from), minTime(sg.End, to)
			if !s.Before(e) {
				continue
			}
			ss, err := exportRange(ctx, src, camera, s, e, nil, first && s.Equal(from), kept, dir)
			out = append(out, ss...)
			if err != nil {
				errs = append(errs, err)
			}
		}
		sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
		return out, errors.Join(errs...)
	}
	if err != nil {
		return nil, err
	}
	defer ex.Close()
	ss, err := ParseExport(ex.Open(), ex.Origin)
	if err != nil {
		return nil, fmt.Errorf("export %s [%s, %s): %w", camera, from.Format(time.RFC3339), to.Format(time.RFC3339), err)
	}
	if kept != nil {
		path := filepath.Join(dir, fmt.Sprintf("%s_%s_%d.mp4", safeName(camera), from.UTC().Format("20060102T150405.000Z"), len(*kept)))
		if err := ex.SaveTo(path); err != nil {
			return nil, fmt.Errorf("export %s: keep for the ffprobe check: %w", camera, err)
		}
		*kept = append(*kept, ExportFile{Path: path, From: from, To: to, Bytes: ex.Size, Samples: len(ss)})
	}
	if !first {
		cut := from.Add(-time.Millisecond)
		k := 0
		for _, s := range ss {
			if !s.At.Before(cut) {
				ss[k] = s
				k++
			}
		}
		ss = ss[:k]
	}
	return ss, nil
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == 0 {
			return '_'
		}
		return r
	}, s)
}

func checkSegment(ctx context.Context, src Source, camera string, sg Segment, tol time.Duration) SegmentCheck {
	sc := SegmentCheck{Segment: sg}
	end := sg.End
	if !end.After(sg.Start) {
		end = sg.Start.Add(time.Millisecond)
	}
	ex, err := src.Export(ctx, camera, sg.Start, end)
	if err != nil {
		sc.Err = err.Error()
		return sc
	}
	defer ex.Close()
	ss, err := ParseExport(ex.Open(), ex.Origin)
	if err != nil {
		sc.Err = err.Error()
	}
	for _, s := range ss {
		if s.At.Before(sg.Start.Add(-tol)) {
			// The export starts at the keyframe at or before the segment's start: a segment
			// that does not begin with a keyframe borrows its lead-in from the previous one.
			sc.LeadIn++
			continue
		}
		sc.Samples++
		if len(s.Tags) > 0 {
			sc.Tagged++
		}
		for _, t := range s.Tags {
			if t.Camera != camera {
				sc.Foreign++
			}
		}
		if !s.At.Before(end.Add(tol)) {
			sc.Outside++
		}
	}
	return sc
}

// DefaultParallel is the default number of cameras verified at once: twice GOMAXPROCS
// (each worker alternates between waiting for the node's export and parsing it).
func DefaultParallel() int { return 2 * runtime.GOMAXPROCS(0) }

// CollectEach runs Collect for every camera with parallel workers (≤ 0: DefaultParallel)
// and hands each Input to each as soon as it is complete, from the worker's goroutine
// (each must be safe for concurrent use). Only parallel Inputs are alive at once, so a
// large run is verified in bounded memory when each keeps only its verdict.
func CollectEach(ctx context.Context, src Source, cameras []string, window Interval, o CollectOptions, parallel int, each func(i int, in Input)) {
	if parallel <= 0 {
		parallel = DefaultParallel()
	}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, c := range cameras {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			each(i, Collect(ctx, src, c, window, o))
		}()
	}
	wg.Wait()
}

// CollectAll runs Collect for every camera with parallel workers and returns every Input.
func CollectAll(ctx context.Context, src Source, cameras []string, window Interval, o CollectOptions, parallel int) []Input {
	out := make([]Input, len(cameras))
	CollectEach(ctx, src, cameras, window, o, parallel, func(i int, in Input) { out[i] = in })
	return out
}
