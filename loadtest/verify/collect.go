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
	// sample (X-Vigie-Start).
	Export(ctx context.Context, camera string, from, to time.Time) ([]byte, time.Time, error)
}

// API is a Source over HTTP.
type API struct {
	Base string // http://host:port of any node
	HTTP *http.Client
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

// Export implements Source.
func (a *API) Export(ctx context.Context, camera string, from, to time.Time) ([]byte, time.Time, error) {
	path := "/media/v1/cameras/" + url.PathEscape(camera) + "/export.mp4?" + rangeQuery(from, to).Encode()
	resp, err := a.get(ctx, path)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<30))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("export %s: %w", camera, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, time.Time{}, fmt.Errorf("export %s [%s, %s): %w", camera, from.Format(time.RFC3339), to.Format(time.RFC3339), ErrNothingRecorded)
	case http.StatusConflict:
		return nil, time.Time{}, fmt.Errorf("export %s: %w: %s", camera, ErrCodecChange, strings.TrimSpace(string(b)))
	default:
		return nil, time.Time{}, fmt.Errorf("export %s: %s: %s", camera, resp.Status, strings.TrimSpace(string(b[:min(len(b), 300)])))
	}
	origin, err := time.Parse(time.RFC3339Nano, resp.Header.Get("X-Vigie-Start"))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("export %s: X-Vigie-Start %q: %w", camera, resp.Header.Get("X-Vigie-Start"), err)
	}
	return b, origin, nil
}

// ParseExport reads the video samples of a progressive MP4 and the tags in each. A
// sample's time is origin plus its decode time (the track's time offset included).
func ParseExport(data []byte, origin time.Time) ([]Sample, error) {
	var p pmp4.Presentation
	if err := p.Unmarshal(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("parse MP4 (%d bytes): %w", len(data), err)
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
	// CheckSegments exports every listed segment on its own (catalog against data).
	CheckSegments bool
	// Tolerance for samples outside a segment's range. Default 1s.
	Tolerance time.Duration
}

// Collect reads one camera's timeline, segments and exports of window through src and
// returns the Input for Analyze (Camera, Window, Timeline, Samples, Segments and
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
	for c := from; c.Before(to); c = c.Add(o.Chunk) {
		end := minTime(c.Add(o.Chunk), to)
		ss, err := exportRange(ctx, src, camera, c, end, segs, c.Equal(from))
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
	if o.CheckSegments {
		for _, sg := range segs {
			in.Segments = append(in.Segments, checkSegment(ctx, src, camera, sg, o.Tolerance))
		}
	}
	return in
}

// exportRange exports [from, to); samples before from are dropped unless first (they belong
// to the previous chunk). A codec change splits the range at the listed segments.
func exportRange(ctx context.Context, src Source, camera string, from, to time.Time, segs []Segment, first bool) ([]Sample, error) {
	data, origin, err := src.Export(ctx, camera, from, to)
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
			ss, err := exportRange(ctx, src, camera, s, e, nil, first && s.Equal(from))
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
	ss, err := ParseExport(data, origin)
	if err != nil {
		return nil, fmt.Errorf("export %s [%s, %s): %w", camera, from.Format(time.RFC3339), to.Format(time.RFC3339), err)
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

func checkSegment(ctx context.Context, src Source, camera string, sg Segment, tol time.Duration) SegmentCheck {
	sc := SegmentCheck{Segment: sg}
	end := sg.End
	if !end.After(sg.Start) {
		end = sg.Start.Add(time.Millisecond)
	}
	data, origin, err := src.Export(ctx, camera, sg.Start, end)
	if err != nil {
		sc.Err = err.Error()
		return sc
	}
	ss, err := ParseExport(data, origin)
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

// CollectAll runs Collect for every camera with parallel workers.
func CollectAll(ctx context.Context, src Source, cameras []string, window Interval, o CollectOptions, parallel int) []Input {
	out := make([]Input, len(cameras))
	sem := make(chan struct{}, max(parallel, 1))
	var wg sync.WaitGroup
	for i, c := range cameras {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = Collect(ctx, src, c, window, o)
		}()
	}
	wg.Wait()
	return out
}
