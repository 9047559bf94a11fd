package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigie-vms/vigie/gateway/media"
	"github.com/vigie-vms/vigie/model"
)

// Media endpoint methods, as the Authorizer and the Auditor see them.
const (
	MethodMediaStream = "/media/v1/stream"
	MethodMediaExport = "/media/v1/export"
)

// httpError is an error with the HTTP status the media endpoints answer.
type httpError struct {
	code int
	err  error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

func statusOf(err error) int {
	var he *httpError
	if errors.As(err, &he) {
		return he.code
	}
	return httpStatusOf(err)
}

// mediaCall runs the common part of a media request: parse, authenticate, authorize, then
// serve; it answers errors as {"error": "..."} and audits the call.
func (g *Gateway) mediaCall(w http.ResponseWriter, r *http.Request, method string, parse func() (MediaRequest, error), serve func(context.Context, MediaRequest) error) {
	start := g.now()
	ctx := r.Context()
	var mr MediaRequest
	caller, err := g.authenticate(ctx, r.Header.Get("Authorization"))
	if err == nil {
		ctx = WithCaller(ctx, caller)
		mr, err = parse()
		if err == nil {
			err = g.authorize(ctx, caller, method, mr)
		}
		if err == nil {
			err = serve(ctx, mr)
		}
	}
	var auditErr error
	if err != nil {
		auditErr = status.Error(codeOf(err), err.Error())
		var he *httpError
		if errors.As(err, &he) && he.code == http.StatusNotFound {
			auditErr = status.Error(codes.NotFound, err.Error())
		}
	}
	g.audit(ctx, start, caller, r.RemoteAddr, method, mr, auditErr)
	if err == nil {
		return
	}
	var sent *streamError
	if errors.As(err, &sent) {
		// Headers and part of the body are out: all we can do is cut the response so the
		// client sees a truncated body rather than a complete-looking one.
		g.log.Warn("media response cut", slog.String("method", method), slog.String("camera", string(mr.Camera)), slog.Any("error", err))
		panic(http.ErrAbortHandler)
	}
	msg := err.Error()
	var fe *model.FieldError
	if errors.As(err, &fe) {
		msg = fe.Error()
	}
	writeJSONError(w, statusOf(err), msg)
}

// streamError marks an error after the response started.
type streamError struct{ err error }

func (e *streamError) Error() string { return e.err.Error() }
func (e *streamError) Unwrap() error { return e.err }

// plan is where a stream or export begins: the segment and the fragment with the keyframe
// at or before the requested start.
type plan struct {
	segs    []model.Segment // from the first served segment on, sorted by Start
	reader  SegmentReader   // open reader of segs[0]
	frags   []model.FragmentInfo
	first   int // index in frags of the first fragment served
	codecAt time.Time
}

// findStart locates the first fragment to serve for [start, end): the fragment with a
// keyframe at or before start in the segment that holds start, or the first keyframe after
// start. Segments come from the catalog's range query and fragments are searched with a
// binary search: the cost does not grow with the length of the recording.
func (g *Gateway) findStart(ctx context.Context, cam model.CameraID, start, end time.Time) (*plan, error) {
	segs, err := g.cfg.Recordings.Segments(cam, start, end)
	if err != nil {
		return nil, fmt.Errorf("camera %q: segments: %w", cam, err)
	}
	for i, sg := range segs {
		if !sg.Overlaps(start, end) {
			continue
		}
		rd, err := g.cfg.Recordings.OpenSegment(ctx, sg)
		if err != nil {
			return nil, fmt.Errorf("camera %q: open segment %s: %w", cam, sg.ID, err)
		}
		frags := rd.Fragments()
		// First fragment that ends after start.
		k := sort.Search(len(frags), func(j int) bool { return frags[j].End().After(start) })
		j := k
		for j >= 0 && (j >= len(frags) || !frags[j].Keyframe) {
			j--
		}
		if j < 0 { // no keyframe at or before start in this segment: the first one after
			for j = k; j < len(frags) && !frags[j].Keyframe; j++ {
			}
		}
		if j >= len(frags) || !frags[j].Start.Before(end) {
			rd.Close()
			continue
		}
		return &plan{segs: segs[i:], reader: rd, frags: frags, first: j}, nil
	}
	return nil, &httpError{http.StatusNotFound, fmt.Errorf("camera %q: nothing recorded between %s and %s", cam, start.Format(time.RFC3339), end.Format(time.RFC3339))}
}

// each calls fn for every fragment from the plan's first one until end, segment after
// segment. Overlapping segments (a critical camera recorded by two nodes, footage
// reconciled after a partition) are served once: a fragment that starts before the end of
// what was already served is skipped, and after a skip, or in a new segment, serving
// resumes at a keyframe. each stops at the first segment whose CodecHash differs from the
// first one and returns that segment's start (see the package doc). newSeg is called
// before the first fragment of each segment.
func (g *Gateway) each(ctx context.Context, p *plan, end time.Time, newSeg func(model.Segment), fn func(model.Segment, SegmentReader, model.FragmentInfo) error) (codecChange time.Time, err error) {
	const tolerance = 100 * time.Millisecond
	rd, frags, from := p.reader, p.frags, p.first
	p.reader = nil
	defer func() {
		if rd != nil {
			rd.Close()
		}
	}()
	codec := p.segs[0].CodecHash
	var covered time.Time
	for si := 0; ; {
		seg := p.segs[si]
		newSeg(seg)
		// When the next segment overlaps this one and goes on after it (a handover: the
		// incoming owner started recording before the old one stopped), switch to it where
		// it starts, on its first keyframe, rather than serving this one to its end and
		// resuming the next at a later keyframe, which would skip the frames in between.
		// The segment switched to is the first later one that starts inside this one and
		// goes on after it — not necessarily the next by start: after a restart the
		// incoming owner records a short segment under the old epoch, then one under its
		// new epoch, both inside the outgoing owner's last segment; resuming after the
		// outgoing segment's end would wait for a keyframe and skip the frames before it.
		var switchAt time.Time
		switchTo := -1
		for k := si + 1; k < len(p.segs) && p.segs[k].Start.Before(seg.End); k++ {
			if next := p.segs[k]; next.End.After(seg.End) && next.Start.After(covered) && next.CodecHash == codec {
				switchAt, switchTo = next.Start, k
				break
			}
		}
		cut := len(frags) // the fragment where the switch happens, if any
		if switchTo >= 0 {
			cut = seam(frags, from, switchAt, tolerance)
		}
		needKey := true
		switched := false
		servedHere := false
		for i := from; i < len(frags); i++ {
			fi := frags[i]
			if !fi.Start.Before(end) {
				return time.Time{}, nil
			}
			if i >= cut {
				switched = true
				break // the rest is served from the segment switched to
			}
			// Only footage of other segments can be served twice: the fragments of one
			// segment follow each other even when their times overlap (the recorder's
			// clock mapping moves when the camera's first RTCP sender report arrives: a
			// fragment can start 150 ms before the previous one ends).
			if !servedHere && !covered.IsZero() && fi.Start.Before(covered.Add(-tolerance)) {
				needKey = true
				continue
			}
			if needKey && !fi.Keyframe {
				continue
			}
			needKey = false
			if err := ctx.Err(); err != nil {
				return time.Time{}, err
			}
			if err := fn(seg, rd, fi); err != nil {
				return time.Time{}, err
			}
			servedHere = true
			if fi.End().After(covered) {
				covered = fi.End()
			}
		}
		rd.Close()
		rd = nil
		if switched {
			si = switchTo
			// The seam is chosen: the new segment is served from its first fragment,
			// whatever the two nodes' clocks say of the fragment served last.
			if covered.After(p.segs[si].Start) {
				covered = p.segs[si].Start
			}
		} else {
			for si++; si < len(p.segs) && !p.segs[si].End.After(covered); si++ {
			}
			// A segment the catalog starts exactly where this one ends (a handover cut
			// there) follows it, even when this one's last fragment, timed by another
			// node's clock mapping, runs 100+ ms past that point.
			if si < len(p.segs) && p.segs[si].Start.Equal(seg.End) && covered.After(seg.End) {
				covered = seg.End
			}
		}
		if si >= len(p.segs) || !p.segs[si].Start.Before(end) {
			return time.Time{}, nil
		}
		if p.segs[si].CodecHash != codec {
			return p.segs[si].Start, nil
		}
		var err error
		rd, err = g.cfg.Recordings.OpenSegment(ctx, p.segs[si])
		if err != nil {
			return time.Time{}, fmt.Errorf("open segment %s: %w", p.segs[si].ID, err)
		}
		frags, from = rd.Fragments(), 0
	}
}

// seamWindow bounds how far apart two nodes' clock mappings of one camera are taken to be
// at a handover (receive-time mappings under load were seen 100–150 ms apart).
const seamWindow = 500 * time.Millisecond

// seam returns the index of the first fragment of frags (from index from on) not to serve
// when switching to a segment that starts at switchAt. The incoming owner's segment
// starts on a keyframe, and the outgoing recorder starts a fragment at every keyframe, so
// that keyframe is the fragment of frags that starts with a keyframe nearest to switchAt
// — the two nodes' clocks may disagree by a few hundred ms, a fragment is one second:
// cutting by time alone lost or repeated a fragment. Without such a fragment within
// seamWindow the cut is by time: the first fragment ending after switchAt (+ tolerance).
func seam(frags []model.FragmentInfo, from int, switchAt time.Time, tolerance time.Duration) int {
	best, bestDist := -1, seamWindow+1
	lo := from + sort.Search(len(frags)-from, func(j int) bool { return !frags[from+j].Start.Before(switchAt.Add(-seamWindow)) })
	for i := lo; i < len(frags) && frags[i].Start.Before(switchAt.Add(seamWindow+1)); i++ {
		if !frags[i].Keyframe {
			continue
		}
		d := frags[i].Start.Sub(switchAt)
		if d < 0 {
			d = -d
		}
		if d < bestDist {
			best, bestDist = i, d
		}
	}
	if best >= 0 {
		return best
	}
	for i := from; i < len(frags); i++ {
		if !frags[i].End().Before(switchAt.Add(tolerance)) {
			return i
		}
	}
	return len(frags)
}

func parseMediaID(r *http.Request) (model.CameraID, error) {
	id := r.PathValue("id")
	if err := model.ValidateID("id", id); err != nil {
		return "", err
	}
	return model.CameraID(id), nil
}

// serveStream answers GET /media/v1/cameras/{id}/stream.mp4?start=&duration=: a
// fragmented MP4 written as it is read (init, then each fragment, flushed).
func (g *Gateway) serveStream(w http.ResponseWriter, r *http.Request) {
	g.mediaCall(w, r, MethodMediaStream, func() (MediaRequest, error) {
		id, err := parseMediaID(r)
		if err != nil {
			return MediaRequest{}, err
		}
		if err := onlyParams(r, "start", "duration"); err != nil {
			return MediaRequest{}, err
		}
		start, err := parseTimeParam("start", r.URL.Query().Get("start"))
		if err != nil {
			return MediaRequest{}, err
		}
		ds := r.URL.Query().Get("duration")
		if ds == "" {
			return MediaRequest{}, model.Invalid("duration", "is required (a Go duration such as 60s or 10m)")
		}
		d, err := time.ParseDuration(ds)
		if err != nil {
			return MediaRequest{}, model.Invalid("duration", "%q is not a duration such as 60s or 10m", ds)
		}
		if d <= 0 {
			return MediaRequest{}, model.Invalid("duration", "must be positive, got %s", d)
		}
		if err := checkRange(start, start.Add(d), "duration"); err != nil {
			return MediaRequest{}, err
		}
		return MediaRequest{Camera: id, Start: start, End: start.Add(d)}, nil
	}, func(ctx context.Context, mr MediaRequest) error {
		return g.stream(ctx, w, mr)
	})
}

func (g *Gateway) stream(ctx context.Context, w http.ResponseWriter, mr MediaRequest) error {
	if _, err := g.camera("id", string(mr.Camera)); err != nil {
		return err
	}
	p, err := g.findStart(ctx, mr.Camera, mr.Start, mr.End)
	if err != nil {
		return err
	}
	initBytes := p.reader.Init()
	init, err := media.ParseInit(initBytes)
	if err != nil {
		p.reader.Close()
		return fmt.Errorf("camera %q: segment %s: %w", mr.Camera, p.segs[0].ID, err)
	}
	origin := p.frags[p.first].Start
	rb := media.NewRebaser(init, origin)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "video/mp4")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Vigie-Start", origin.UTC().Format(time.RFC3339Nano))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(initBytes); err != nil {
		p.reader.Close()
		return &streamError{err}
	}
	rc.Flush()
	var buf []byte
	change, err := g.each(ctx, p, mr.End, func(model.Segment) { rb.StartSegment() },
		func(_ model.Segment, rd SegmentReader, fi model.FragmentInfo) error {
			var err error
			buf, err = rd.ReadFragment(fi, buf)
			if err != nil {
				return fmt.Errorf("read fragment at %s: %w", fi.Start.Format(time.RFC3339Nano), err)
			}
			out, err := rb.Rebase(buf, fi.Start)
			if err != nil {
				return fmt.Errorf("fragment at %s: %w", fi.Start.Format(time.RFC3339Nano), err)
			}
			if _, err := w.Write(out); err != nil {
				return err
			}
			return rc.Flush()
		})
	if err != nil {
		if ctx.Err() != nil {
			return nil // the client went away
		}
		return &streamError{fmt.Errorf("camera %q: %w", mr.Camera, err)}
	}
	if !change.IsZero() {
		g.log.Info("stream stopped at a codec change", slog.String("camera", string(mr.Camera)), slog.Time("at", change))
	}
	return nil
}

// serveExport answers GET /media/v1/cameras/{id}/export.mp4?start=&end=: a progressive MP4
// of the range, with its exact Content-Length.
func (g *Gateway) serveExport(w http.ResponseWriter, r *http.Request) {
	g.mediaCall(w, r, MethodMediaExport, func() (MediaRequest, error) {
		id, err := parseMediaID(r)
		if err != nil {
			return MediaRequest{}, err
		}
		if err := onlyParams(r, "start", "end"); err != nil {
			return MediaRequest{}, err
		}
		start, err := parseTimeParam("start", r.URL.Query().Get("start"))
		if err != nil {
			return MediaRequest{}, err
		}
		end, err := parseTimeParam("end", r.URL.Query().Get("end"))
		if err != nil {
			return MediaRequest{}, err
		}
		if err := checkRange(start, end, "end"); err != nil {
			return MediaRequest{}, err
		}
		return MediaRequest{Camera: id, Start: start, End: end}, nil
	}, func(ctx context.Context, mr MediaRequest) error {
		return g.export(ctx, w, mr)
	})
}

// segmentFetcher re-reads fragments for the second pass of an export, keeping one segment
// open at a time.
type segmentFetcher struct {
	g   *Gateway
	ctx context.Context
	seg model.Segment
	rd  SegmentReader
}

func (f *segmentFetcher) read(seg model.Segment, fi model.FragmentInfo) ([]byte, error) {
	if f.rd == nil || f.seg.ID != seg.ID {
		if f.rd != nil {
			f.rd.Close()
			f.rd = nil
		}
		rd, err := f.g.cfg.Recordings.OpenSegment(f.ctx, seg)
		if err != nil {
			return nil, fmt.Errorf("open segment %s: %w", seg.ID, err)
		}
		f.rd, f.seg = rd, seg
	}
	return f.rd.ReadFragment(fi, nil)
}

func (f *segmentFetcher) close() {
	if f.rd != nil {
		f.rd.Close()
		f.rd = nil
	}
}

func (g *Gateway) export(ctx context.Context, w http.ResponseWriter, mr MediaRequest) error {
	if _, err := g.camera("id", string(mr.Camera)); err != nil {
		return err
	}
	p, err := g.findStart(ctx, mr.Camera, mr.Start, mr.End)
	if err != nil {
		return err
	}
	init, err := media.ParseInit(p.reader.Init())
	if err != nil {
		p.reader.Close()
		return fmt.Errorf("camera %q: segment %s: %w", mr.Camera, p.segs[0].ID, err)
	}
	origin := p.frags[p.first].Start
	exp := media.NewExport(init, origin, mr.End)
	fetch := &segmentFetcher{g: g, ctx: ctx}
	defer fetch.close()
	var buf []byte
	change, err := g.each(ctx, p, mr.End, func(model.Segment) { exp.StartSegment() },
		func(seg model.Segment, rd SegmentReader, fi model.FragmentInfo) error {
			var err error
			buf, err = rd.ReadFragment(fi, buf)
			if err != nil {
				return fmt.Errorf("read fragment at %s: %w", fi.Start.Format(time.RFC3339Nano), err)
			}
			_, err = exp.Add(buf, fi.Start, func() ([]byte, error) { return fetch.read(seg, fi) })
			if errors.Is(err, media.ErrTooLarge) {
				return &httpError{http.StatusRequestEntityTooLarge, fmt.Errorf("camera %q: %w", mr.Camera, err)}
			}
			return err
		})
	if err != nil {
		return err
	}
	if !change.IsZero() {
		return &httpError{http.StatusConflict, fmt.Errorf("camera %q: the codec changes at %s: export [%s, %s) and [%s, %s) separately",
			mr.Camera, change.Format(time.RFC3339Nano), mr.Start.Format(time.RFC3339Nano), change.Format(time.RFC3339Nano),
			change.Format(time.RFC3339Nano), mr.End.Format(time.RFC3339Nano))}
	}
	size, err := exp.Size()
	if errors.Is(err, media.ErrTooLarge) {
		return &httpError{http.StatusRequestEntityTooLarge, fmt.Errorf("camera %q: %w", mr.Camera, err)}
	}
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "video/mp4")
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s_%s_%s.mp4"`, mr.Camera,
		mr.Start.UTC().Format("20060102T150405Z"), mr.End.UTC().Format("20060102T150405Z")))
	h.Set("X-Vigie-Start", origin.UTC().Format(time.RFC3339Nano))
	w.WriteHeader(http.StatusOK)
	if _, err := exp.WriteTo(w); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return &streamError{fmt.Errorf("camera %q: export: %w", mr.Camera, err)}
	}
	return nil
}

// onlyParams rejects query parameters other than names.
func onlyParams(r *http.Request, names ...string) error {
	for k := range r.URL.Query() {
		if !containsString(names, k) {
			return model.Invalid(k, "unknown parameter (this request takes %v)", names)
		}
	}
	return nil
}
