package gateway

import (
	"fmt"
	"sort"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// SpanMergeGap is the largest hole between two pieces of footage that still counts as one
// span. Within one recording session consecutive segments follow each other exactly (the
// recorder times frames continuously), and two nodes' footage overlaps across a handover,
// so a hole longer than a few frames is footage that is really missing — a camera that
// reconnected, a node that failed over — and the operator must see it.
const SpanMergeGap = 250 * time.Millisecond

// LiveEdge is how far behind now the footage of a camera that is recording may end
// without a gap being shown: the fragment being written (up to about 1 s, plus its
// durable write) is not in the timeline yet.
const LiveEdge = 2500 * time.Millisecond

// DeletionRetention is the model.Deletion reason of segments removed by retention.
const DeletionRetention = "retention"

// Span is a stretch of recorded footage.
type Span struct {
	Start, End time.Time
	// Bytes is the footage in the span; a segment partly inside counts pro rata.
	Bytes int64
	// first and last are the segments at the span's edges: a gap between footage of two
	// nodes under two epochs is a failover.
	first, last model.Segment
}

// Gap is a stretch without footage, with the reason.
type Gap struct {
	Start, End time.Time
	Cause      model.GapCause
	Detail     string
}

// Timeline is what was recorded of a camera in [Start, End), and why the rest was not.
type Timeline struct {
	Start, End time.Time
	Spans      []Span
	Gaps       []Gap
}

// TimelineInput is everything BuildTimeline needs; the gateway fills it from Recordings.
type TimelineInput struct {
	Camera     model.Camera
	Start, End time.Time
	// Now stops the timeline: when End is later, the timeline (and its trailing gap) ends
	// at Now. Zero means no limit.
	Now       time.Time
	Segments  []model.Segment
	Outages   []model.Outage
	Deletions []model.Deletion
}

// BuildTimeline merges segments into spans and explains the gaps between them. It is a
// pure function of its input.
//
// Spans: overlapping segments (a critical camera recorded twice, footage reconciled after
// a partition) are counted once; pieces less than SpanMergeGap apart are one span. Spans
// are clipped to [Start, End).
//
// Gaps, in order of precedence for each instant: an Outage covering it gives its cause
// and detail; a Deletion with reason "retention" gives GapRetention (another reason gives
// GapUnknown with the reason as detail); before the camera was created, or when its
// recording policy is off, GapNoRecordingPolicy; else GapUnknown. Adjacent pieces with the
// same cause and detail are one gap.
func BuildTimeline(in TimelineInput) Timeline {
	end := in.End
	if !in.Now.IsZero() && in.Now.Before(end) {
		end = in.Now
	}
	tl := Timeline{Start: in.Start, End: end}
	if !in.Start.Before(end) {
		tl.End = in.Start
		return tl
	}

	segs := append([]model.Segment(nil), in.Segments...)
	sort.SliceStable(segs, func(i, j int) bool { return segs[i].Start.Before(segs[j].Start) })
	for _, sg := range segs {
		s, e := maxTime(sg.Start, in.Start), minTime(sg.End, end)
		if !s.Before(e) {
			continue
		}
		dur := sg.End.Sub(sg.Start)
		share := func(d time.Duration) int64 {
			if d <= 0 || dur <= 0 {
				return 0
			}
			return int64(float64(sg.Bytes) * float64(d) / float64(dur))
		}
		if n := len(tl.Spans); n > 0 && s.Sub(tl.Spans[n-1].End) < SpanMergeGap {
			last := &tl.Spans[n-1]
			if e.After(last.End) {
				last.Bytes += share(e.Sub(maxTime(s, last.End)))
				last.End = e
				last.last = sg
			}
			continue
		}
		tl.Spans = append(tl.Spans, Span{Start: s, End: e, Bytes: share(e.Sub(s)), first: sg, last: sg})
	}

	cursor := in.Start
	for i, sp := range tl.Spans {
		if sp.Start.After(cursor) {
			var fallback *gapLabel
			if i > 0 {
				fallback = failover(tl.Spans[i-1].last, sp.first, cursor, sp.Start)
			}
			tl.Gaps = append(tl.Gaps, explainGap(in, end, cursor, sp.Start, fallback)...)
		}
		cursor = sp.End
	}
	if cursor.Before(end) && !(len(tl.Spans) > 0 && !in.Now.IsZero() && !end.Before(in.Now) && end.Sub(cursor) < LiveEdge) {
		tl.Gaps = append(tl.Gaps, explainGap(in, end, cursor, end, nil)...)
	}
	tl.Gaps = dropJitter(tl.Gaps)
	return tl
}

// dropJitter removes gaps of unknown cause (or before registration) shorter than
// SpanMergeGap: a cut at a registration instant, rounding at segment edges. They are not
// footage an operator misses.
func dropJitter(gaps []Gap) []Gap {
	out := gaps[:0]
	for _, g := range gaps {
		if g.End.Sub(g.Start) < SpanMergeGap && (g.Cause == model.GapUnknown || g.Cause == model.GapNoRecordingPolicy) {
			continue
		}
		out = append(out, g)
	}
	return out
}

type gapLabel struct {
	start, end time.Time
	cause      model.GapCause
	detail     string
}

// failover labels a gap between footage recorded under two epochs: the camera changed
// owner there (its owner died, or the move was planned). Nil otherwise.
//
// The catalog records which node holds a segment's bytes, not which node recorded it: a
// dead owner's last segment, adopted from its hot replica, is held by the replica node.
// So the detail names the holders on each side and never claims which node failed; the
// same holder on both sides (the replica node became the owner) is still a failover.
func failover(before, after model.Segment, a, b time.Time) *gapLabel {
	if before.Node == "" || after.Node == "" || before.Epoch == after.Epoch {
		return nil
	}
	detail := fmt.Sprintf("camera changed owner (epoch %d to %d): footage before the gap is on node %s, after it on node %s",
		before.Epoch, after.Epoch, before.Node, after.Node)
	if before.Node == after.Node {
		detail = fmt.Sprintf("camera changed owner (epoch %d to %d): node %s holds the footage on both sides",
			before.Epoch, after.Epoch, after.Node)
	}
	return &gapLabel{a, b, model.GapNodeFailover, detail}
}

// explainGap splits [a, b) into gaps by cause; what no outage, deletion or registration
// explains gets the fallback (GapUnknown when nil).
func explainGap(in TimelineInput, end, a, b time.Time, fallbackLabel *gapLabel) []Gap {
	var labels []gapLabel
	for _, o := range in.Outages {
		oe := o.End
		if oe.IsZero() {
			oe = end
		}
		cause := o.Cause
		if cause == "" {
			cause = model.GapUnknown
		}
		labels = append(labels, gapLabel{o.Start, oe, cause, o.Detail})
	}
	for _, d := range in.Deletions {
		if d.Reason == DeletionRetention {
			labels = append(labels, gapLabel{d.Start, d.End, model.GapRetention, "deleted at the end of the retention period"})
		} else {
			labels = append(labels, gapLabel{d.Start, d.End, model.GapUnknown, "deleted: " + d.Reason})
		}
	}
	if c := in.Camera.CreatedAt; !c.IsZero() {
		labels = append(labels, gapLabel{a, c, model.GapNoRecordingPolicy, "camera not registered yet"})
	}
	fallback := gapLabel{a, b, model.GapUnknown, ""}
	if fallbackLabel != nil {
		fallback = *fallbackLabel
	}
	if in.Camera.Recording == model.RecordOff {
		fallback = gapLabel{a, b, model.GapNoRecordingPolicy, "recording is off"}
	}

	cuts := []time.Time{a, b}
	for _, l := range labels {
		for _, t := range []time.Time{l.start, l.end} {
			if t.After(a) && t.Before(b) {
				cuts = append(cuts, t)
			}
		}
	}
	sort.Slice(cuts, func(i, j int) bool { return cuts[i].Before(cuts[j]) })

	var gaps []Gap
	for i := 0; i+1 < len(cuts); i++ {
		p, q := cuts[i], cuts[i+1]
		if !p.Before(q) {
			continue
		}
		l := fallback
		for _, c := range labels {
			if !c.start.After(p) && !c.end.Before(q) {
				l = c
				break
			}
		}
		if n := len(gaps); n > 0 && gaps[n-1].Cause == l.cause && gaps[n-1].Detail == l.detail && gaps[n-1].End.Equal(p) {
			gaps[n-1].End = q
			continue
		}
		gaps = append(gaps, Gap{Start: p, End: q, Cause: l.cause, Detail: l.detail})
	}
	return gaps
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
