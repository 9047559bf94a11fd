package verify

import (
	"fmt"
	"sort"
	"time"

	"github.com/vigie-vms/vigie/loadtest/sei"
)

// Interval is a time range [Start, End).
type Interval struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Overlaps reports whether i and o share an instant.
func (i Interval) Overlaps(o Interval) bool { return i.Start.Before(o.End) && o.Start.Before(i.End) }

// Span is a recorded range of the timeline.
type Span struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Bytes int64     `json:"bytes"`
}

// Gap is a hole of the timeline with its cause, as the API lists it.
type Gap struct {
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Cause  string    `json:"cause"`
	Detail string    `json:"detail,omitempty"`
}

// Timeline is what GET /v1/cameras/{id}/timeline answers.
type Timeline struct {
	Spans []Span `json:"spans"`
	Gaps  []Gap  `json:"gaps"`
}

// Segment is one catalog entry of GET /v1/cameras/{id}/segments.
type Segment struct {
	ID     string    `json:"id"`
	Node   string    `json:"node,omitempty"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Bytes  int64     `json:"bytes"`
	Sealed bool      `json:"sealed"`
}

// Sample is one video sample of an export: its wall-clock time (the export's start plus
// its decode time) and the tags found in it.
type Sample struct {
	At   time.Time
	Key  bool
	Tags []sei.Tag
}

// Sent is what the fleet says of a camera: frame k was due at Frame0 + k/FPS, except while
// stalled (Stalls), when nothing was sent.
type Sent struct {
	Frame0     time.Time  `json:"frame0"`
	FPS        int        `json:"fps"`
	FramesSent uint64     `json:"frames_sent"`
	Stalls     []Interval `json:"stalls,omitempty"`
}

// FrameTime returns when frame k was due.
func (s Sent) FrameTime(k uint64) time.Time {
	return s.Frame0.Add(time.Duration(k * uint64(time.Second) / uint64(s.FPS)))
}

// firstFrameAtOrAfter returns the smallest k whose FrameTime is not before t.
func (s Sent) firstFrameAtOrAfter(t time.Time) uint64 {
	if !t.After(s.Frame0) {
		return 0
	}
	d := uint64(t.Sub(s.Frame0))
	k := d * uint64(s.FPS) / uint64(time.Second)
	for s.FrameTime(k).Before(t) {
		k++
	}
	for k > 0 && !s.FrameTime(k-1).Before(t) {
		k--
	}
	return k
}

func (s Sent) stalled(t time.Time) bool {
	for _, st := range s.Stalls {
		if !t.Before(st.Start) && (st.End.IsZero() || t.Before(st.End)) {
			return true
		}
	}
	return false
}

// SegmentCheck is the result of exporting one listed segment on its own.
type SegmentCheck struct {
	Segment Segment `json:"segment"`
	Samples int     `json:"samples"`
	Tagged  int     `json:"tagged"`
	// Foreign counts tags naming another camera.
	Foreign int `json:"foreign"`
	// Outside counts samples after the segment's End by more than the tolerance.
	Outside int `json:"outside"`
	// LeadIn counts samples before the segment's Start: the segment does not begin with a
	// keyframe, so its export starts in the previous segment (it cannot be decoded alone).
	LeadIn int    `json:"lead_in,omitempty"`
	Err    string `json:"error,omitempty"`
}

// Fault is an injected fault, for failover times.
type Fault struct {
	At   time.Time `json:"at"`
	Kind string    `json:"kind"`
	Node int       `json:"node"`
}

// Input is everything known of one camera after a run.
type Input struct {
	Camera   string
	Window   Interval // the frames due in this window are expected
	Sent     Sent
	Timeline Timeline
	Samples  []Sample // from the export(s) of the window
	Segments []SegmentCheck
	Faults   []Fault
	// FetchErrors are failures to read the API (timeline, export): reported as problems.
	FetchErrors []string
	// Files are the window's exports saved for the ffprobe check (CollectOptions.Keep).
	Files []ExportFile
}

// Options tune the analysis.
type Options struct {
	// HiddenGapMin: an unexplained run of lost frames at least this long is a hidden gap
	// (a hole the timeline does not show); shorter ones are dropped frames. Default 500ms.
	HiddenGapMin time.Duration
	// Tolerance for samples outside the listed spans or segments. Default 1s.
	Tolerance time.Duration
	// FailoverWindow: the first loss run overlapping [fault-FailoverBefore,
	// fault+FailoverWindow] is attributed to the fault. Defaults 30s and 3s.
	FailoverWindow, FailoverBefore time.Duration
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{HiddenGapMin: 500 * time.Millisecond, Tolerance: time.Second, FailoverWindow: 30 * time.Second, FailoverBefore: 3 * time.Second}
}

// Kinds of loss runs.
const (
	LossGap       = "gap"        // explained by a gap of the timeline (Cause says which)
	LossHiddenGap = "hidden-gap" // unexplained and at least HiddenGapMin long
	LossDropped   = "dropped"    // unexplained and shorter
)

// LossRun is a run of consecutive frames that were sent but not recorded.
type LossRun struct {
	FirstFrame uint64        `json:"first_frame"`
	Frames     int           `json:"frames"`
	Start      time.Time     `json:"start"`
	Duration   time.Duration `json:"duration"`
	Kind       string        `json:"kind"`
	Cause      string        `json:"cause,omitempty"` // the timeline gap's cause (kind gap)
}

// DupRun is a run of consecutive frames recorded more than once.
type DupRun struct {
	FirstFrame uint64 `json:"first_frame"`
	Frames     int    `json:"frames"`
	Extra      int    `json:"extra"` // copies beyond the first, over the run
}

// GapReport is a gap of the timeline within the window.
type GapReport struct {
	Start  time.Time     `json:"start"`
	Length time.Duration `json:"length"`
	Cause  string        `json:"cause"`
	Detail string        `json:"detail,omitempty"`
}

// Failover is how one camera lived through one fault.
type Failover struct {
	Fault Fault `json:"fault"`
	// Interruption is the length of the loss run attributed to the fault (0: no frame lost).
	Interruption time.Duration `json:"interruption"`
	// Recovered is false when the camera recorded nothing again until the window's end.
	Recovered bool `json:"recovered"`
}

// CameraReport is the verdict on one camera.
type CameraReport struct {
	Camera     string      `json:"camera"`
	Window     Interval    `json:"window"`
	FramesSent uint64      `json:"frames_sent"` // by the fleet, whole run
	Expected   int         `json:"expected"`    // due in the window, not stalled
	NotSent    int         `json:"not_sent"`    // due in the window while stalled
	Recorded   int         `json:"recorded"`    // distinct expected frames found
	Lost       int         `json:"lost"`
	Duplicated int         `json:"duplicated"`
	Foreign    int         `json:"foreign"`  // tags of another camera
	Untagged   int         `json:"untagged"` // samples without our tag
	LossRuns   []LossRun   `json:"loss_runs,omitempty"`
	Duplicates []DupRun    `json:"duplicates,omitempty"`
	Gaps       []GapReport `json:"gaps,omitempty"`
	HiddenGaps int         `json:"hidden_gaps"`
	Dropped    int         `json:"dropped"` // frames in dropped runs
	Failovers  []Failover  `json:"failovers,omitempty"`
	Outside    int         `json:"outside_spans"` // samples served outside every listed span
	Segments   int         `json:"segments"`
	// SegmentsNoKeyframe counts listed segments that do not start with a keyframe (see
	// SegmentCheck.LeadIn): a note, not a loss.
	SegmentsNoKeyframe int `json:"segments_no_keyframe,omitempty"`
	// LatencyP50 and LatencyMax are of (recorded wall time − send time) over the frames:
	// the end-to-end delay when the recorder stamps receive time, about zero or negative
	// when it uses RTCP sender reports (which carry the frame's scheduled time).
	LatencyP50 time.Duration `json:"latency_p50"`
	LatencyMax time.Duration `json:"latency_max"`
	Problems   []string      `json:"problems,omitempty"`
}

// OK reports whether nothing is wrong with the camera: no loss, duplicate, foreign frame,
// hidden gap, sample outside spans, or catalog problem.
func (r CameraReport) OK() bool {
	return r.Lost == 0 && r.Duplicated == 0 && r.Foreign == 0 && r.Outside == 0 && len(r.Problems) == 0
}

// Analyze compares what was sent with what the API serves for one camera.
func Analyze(in Input, o Options) CameraReport {
	d := DefaultOptions()
	if o.HiddenGapMin == 0 {
		o.HiddenGapMin = d.HiddenGapMin
	}
	if o.Tolerance == 0 {
		o.Tolerance = d.Tolerance
	}
	if o.FailoverWindow == 0 {
		o.FailoverWindow = d.FailoverWindow
	}
	if o.FailoverBefore == 0 {
		o.FailoverBefore = d.FailoverBefore
	}
	r := CameraReport{Camera: in.Camera, Window: in.Window, FramesSent: in.Sent.FramesSent, Segments: len(in.Segments)}
	r.Problems = append(r.Problems, in.FetchErrors...)
	if in.Sent.FPS <= 0 {
		r.Problems = append(r.Problems, "the fleet gave no frame rate for this camera: frames not counted")
		return r
	}
	s := in.Sent
	kmin := s.firstFrameAtOrAfter(in.Window.Start)
	kend := s.firstFrameAtOrAfter(in.Window.End) // exclusive
	interval := time.Second / time.Duration(s.FPS)

	// What was recorded.
	count := map[uint64]int{}
	var lat []time.Duration
	for _, sm := range in.Samples {
		for _, t := range sm.Tags {
			if t.Camera != in.Camera {
				r.Foreign++
				continue
			}
			count[t.Frame]++
			if !sm.At.IsZero() && !t.SentAt.IsZero() {
				lat = append(lat, sm.At.Sub(t.SentAt))
			}
		}
		if len(sm.Tags) == 0 {
			r.Untagged++
		}
		inWindow := !sm.At.Before(in.Window.Start) && sm.At.Before(in.Window.End)
		if inWindow && !insideSpans(sm.At, in.Timeline.Spans, o.Tolerance) {
			r.Outside++
		}
	}
	if r.Outside > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d samples served at times outside every listed span (± %v)", r.Outside, o.Tolerance))
	}
	if len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		r.LatencyP50, r.LatencyMax = lat[len(lat)/2], lat[len(lat)-1]
	}

	// Expected frames, losses and duplicates.
	var run *LossRun
	var dup *DupRun
	flush := func() {
		if run != nil {
			run.Duration = time.Duration(run.Frames) * interval
			r.LossRuns = append(r.LossRuns, *run)
			run = nil
		}
	}
	for k := kmin; k < kend; k++ {
		at := s.FrameTime(k)
		if s.stalled(at) {
			r.NotSent++
			flush()
			continue
		}
		r.Expected++
		n := count[k]
		if n == 0 {
			r.Lost++
			if run == nil {
				run = &LossRun{FirstFrame: k, Start: at}
			}
			run.Frames++
		} else {
			r.Recorded++
			flush()
		}
		if n > 1 {
			r.Duplicated += n - 1
			if dup != nil && dup.FirstFrame+uint64(dup.Frames) == k {
				dup.Frames++
				dup.Extra += n - 1
			} else {
				if dup != nil {
					r.Duplicates = append(r.Duplicates, *dup)
				}
				dup = &DupRun{FirstFrame: k, Frames: 1, Extra: n - 1}
			}
		}
	}
	flush()
	if dup != nil {
		r.Duplicates = append(r.Duplicates, *dup)
	}

	// Gaps of the timeline within the window, and what explains each loss run.
	for _, g := range in.Timeline.Gaps {
		gi := Interval{g.Start, g.End}
		if !gi.Overlaps(in.Window) {
			continue
		}
		st, en := maxTime(g.Start, in.Window.Start), minTime(g.End, in.Window.End)
		r.Gaps = append(r.Gaps, GapReport{Start: st, Length: en.Sub(st), Cause: g.Cause, Detail: g.Detail})
	}
	for i := range r.LossRuns {
		lr := &r.LossRuns[i]
		li := Interval{lr.Start, lr.Start.Add(lr.Duration)}
		for _, g := range in.Timeline.Gaps {
			if li.Overlaps(Interval{g.Start, g.End}) {
				lr.Kind, lr.Cause = LossGap, g.Cause
				break
			}
		}
		if lr.Kind == "" {
			if lr.Duration >= o.HiddenGapMin {
				lr.Kind = LossHiddenGap
				r.HiddenGaps++
				r.Problems = append(r.Problems, fmt.Sprintf("hidden gap: %d frames (%v) from frame %d at %s are missing but the timeline shows no gap",
					lr.Frames, lr.Duration, lr.FirstFrame, lr.Start.UTC().Format("15:04:05.000")))
			} else {
				lr.Kind = LossDropped
				r.Dropped += lr.Frames
			}
		}
	}

	// Failovers: the loss run each fault caused, if any.
	for _, f := range in.Faults {
		fo := Failover{Fault: f, Recovered: true}
		best := time.Duration(-1)
		for _, lr := range r.LossRuns {
			// The run overlaps [fault − FailoverBefore, fault + FailoverWindow] (a crash may
			// also lose what was recorded but not yet durable before it); the run closest
			// to the fault (containing it: distance 0) is the fault's.
			end := lr.Start.Add(lr.Duration)
			if end.Before(f.At.Add(-o.FailoverBefore)) || lr.Start.After(f.At.Add(o.FailoverWindow)) {
				continue
			}
			var dist time.Duration
			switch {
			case f.At.Before(lr.Start):
				dist = lr.Start.Sub(f.At)
			case !f.At.Before(end):
				dist = f.At.Sub(end)
			}
			if best >= 0 && dist >= best {
				continue
			}
			best = dist
			fo.Interruption = lr.Duration
			fo.Recovered = lr.FirstFrame+uint64(lr.Frames) < kend
		}
		r.Failovers = append(r.Failovers, fo)
	}

	// Catalog against data.
	for _, sc := range in.Segments {
		name := fmt.Sprintf("segment %s [%s, %s)", sc.Segment.ID, sc.Segment.Start.UTC().Format("15:04:05.000"), sc.Segment.End.UTC().Format("15:04:05.000"))
		switch {
		case sc.Err != "":
			r.Problems = append(r.Problems, name+": listed but its export failed: "+sc.Err)
		case sc.Samples == 0:
			r.Problems = append(r.Problems, name+": listed but its export holds no sample")
		}
		if sc.LeadIn > 0 {
			r.SegmentsNoKeyframe++
		}
		if sc.Foreign > 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("%s: %d frames tagged with another camera", name, sc.Foreign))
		}
		if sc.Outside > 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("%s: %d samples outside the segment's time range", name, sc.Outside))
		}
	}
	if r.Foreign > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d frames tagged with another camera", r.Foreign))
	}
	return r
}

func insideSpans(t time.Time, spans []Span, tol time.Duration) bool {
	for _, s := range spans {
		if !t.Before(s.Start.Add(-tol)) && t.Before(s.End.Add(tol)) {
			return true
		}
	}
	return false
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
