package verify

import (
	"sort"
	"time"
)

// Summary adds up the camera reports of a run.
type Summary struct {
	Cameras            int            `json:"cameras"`
	CamerasOK          int            `json:"cameras_ok"`
	FramesSent         uint64         `json:"frames_sent"`
	Expected           int            `json:"expected"`
	NotSent            int            `json:"not_sent"`
	Recorded           int            `json:"recorded"`
	Lost               int            `json:"lost"`
	Duplicated         int            `json:"duplicated"`
	Foreign            int            `json:"foreign"`
	Dropped            int            `json:"dropped"`
	HiddenGaps         int            `json:"hidden_gaps"`
	Gaps               int            `json:"gaps"`
	GapCauses          map[string]int `json:"gap_causes,omitempty"`
	Outside            int            `json:"outside_spans"`
	Segments           int            `json:"segments"`
	SegmentsNoKeyframe int            `json:"segments_no_keyframe"`
	SegmentProblems    int            `json:"problems"`
	// Failover interruptions over every (camera, fault) pair that lost frames.
	Failovers    int           `json:"failovers"`
	NotRecovered int           `json:"not_recovered"`
	FailoverP50  time.Duration `json:"failover_p50"`
	FailoverP95  time.Duration `json:"failover_p95"`
	FailoverMax  time.Duration `json:"failover_max"`
	LatencyP50   time.Duration `json:"latency_p50"`
	LatencyMax   time.Duration `json:"latency_max"`
}

// Summarize adds up reports.
func Summarize(reports []CameraReport) Summary {
	s := Summary{Cameras: len(reports), GapCauses: map[string]int{}}
	var fo, lat []time.Duration
	for _, r := range reports {
		if r.OK() {
			s.CamerasOK++
		}
		s.FramesSent += r.FramesSent
		s.Expected += r.Expected
		s.NotSent += r.NotSent
		s.Recorded += r.Recorded
		s.Lost += r.Lost
		s.Duplicated += r.Duplicated
		s.Foreign += r.Foreign
		s.Dropped += r.Dropped
		s.HiddenGaps += r.HiddenGaps
		s.Gaps += len(r.Gaps)
		for _, g := range r.Gaps {
			s.GapCauses[g.Cause]++
		}
		s.Outside += r.Outside
		s.Segments += r.Segments
		s.SegmentsNoKeyframe += r.SegmentsNoKeyframe
		s.SegmentProblems += len(r.Problems)
		for _, f := range r.Failovers {
			if f.Interruption > 0 {
				fo = append(fo, f.Interruption)
			}
			if !f.Recovered {
				s.NotRecovered++
			}
		}
		if r.LatencyP50 > 0 {
			lat = append(lat, r.LatencyP50)
		}
		s.LatencyMax = max(s.LatencyMax, r.LatencyMax)
	}
	s.Failovers = len(fo)
	s.FailoverP50, s.FailoverP95, s.FailoverMax = Percentile(fo, 50), Percentile(fo, 95), Percentile(fo, 100)
	s.LatencyP50 = Percentile(lat, 50)
	return s
}

// Percentile returns the p-th percentile (nearest rank) of ds, 0 for none.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(p/100*float64(len(s))+0.999999) - 1
	return s[max(0, min(rank, len(s)-1))]
}
