package gateway

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
)

func TestBuildTimeline(t *testing.T) {
	base := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	at := func(sec float64) time.Time { return base.Add(time.Duration(sec * float64(time.Second))) }
	seg := func(from, to float64, bytes int64) model.Segment {
		return model.Segment{Start: at(from), End: at(to), Bytes: bytes}
	}
	cam := model.Camera{ID: "c", Recording: model.RecordContinuous}
	cases := []struct {
		name string
		in   TimelineInput
		want string // spans then gaps, in seconds from base
	}{
		{
			name: "nothing recorded",
			in:   TimelineInput{Camera: cam, Start: at(0), End: at(100)},
			want: "gap 0-100 unknown",
		},
		{
			name: "pieces less than 250 ms apart are one span; a longer hole is a gap",
			in: TimelineInput{Camera: cam, Start: at(0), End: at(100),
				Segments: []model.Segment{seg(10, 20, 100), seg(20.1, 30, 90), seg(32, 40, 80)}},
			want: "span 10-30 190; span 32-40 80; gap 0-10 unknown; gap 30-32 unknown; gap 40-100 unknown",
		},
		{
			name: "a gap between two nodes' footage under two epochs is a failover",
			in: TimelineInput{Camera: cam, Start: at(0), End: at(40),
				Segments: []model.Segment{
					{Start: at(0), End: at(20), Bytes: 200, Node: "n1", Epoch: 1},
					{Start: at(24), End: at(40), Bytes: 160, Node: "n2", Epoch: 2},
				}},
			want: "span 0-20 200; span 24-40 160; gap 20-24 node_failover camera changed owner (epoch 1 to 2): footage before the gap is on node n1, after it on node n2",
		},
		{
			// The dead owner's last segment was adopted from the hot replica on n2, which
			// then took the camera: the catalog names n2 on both sides.
			name: "a gap across an epoch change is a failover even when one node holds both sides",
			in: TimelineInput{Camera: cam, Start: at(0), End: at(40),
				Segments: []model.Segment{
					{Start: at(0), End: at(20), Bytes: 200, Node: "n2", Epoch: 1},
					{Start: at(24), End: at(40), Bytes: 160, Node: "n2", Epoch: 2},
				}},
			want: "span 0-20 200; span 24-40 160; gap 20-24 node_failover camera changed owner (epoch 1 to 2): node n2 holds the footage on both sides",
		},
		{
			name: "a hole within one epoch is not a failover",
			in: TimelineInput{Camera: cam, Start: at(0), End: at(40),
				Segments: []model.Segment{
					{Start: at(0), End: at(20), Bytes: 200, Node: "n1", Epoch: 1},
					{Start: at(24), End: at(40), Bytes: 160, Node: "n1", Epoch: 1},
				}},
			want: "span 0-20 200; span 24-40 160; gap 20-24 unknown",
		},
		{
			name: "the fragment being written at the live edge is not a gap",
			in: TimelineInput{Camera: cam, Start: at(0), End: at(100), Now: at(41.5),
				Segments: []model.Segment{seg(0, 40, 400)}},
			want: "span 0-40 400",
		},
		{
			name: "overlapping segments counted once",
			in: TimelineInput{Camera: cam, Start: at(0), End: at(50),
				Segments: []model.Segment{seg(0, 40, 400), seg(0, 40, 400), seg(20, 50, 300)}},
			want: "span 0-50 500",
		},
		{
			name: "unsorted input, clipped to the range",
			in: TimelineInput{Camera: cam, Start: at(10), End: at(30),
				Segments: []model.Segment{seg(25, 40, 150), seg(0, 15, 150)}},
			want: "span 10-15 50; span 25-30 50; gap 15-25 unknown",
		},
		{
			name: "outage gives its cause and detail, the rest is unknown",
			in: TimelineInput{Camera: cam, Start: at(0), End: at(100),
				Segments: []model.Segment{seg(0, 10, 1), seg(90, 100, 1)},
				Outages:  []model.Outage{{Start: at(20), End: at(50), Cause: model.GapCameraUnreachable, Detail: "timeout"}}},
			want: "span 0-10 1; span 90-100 1; gap 10-20 unknown; gap 20-50 camera_unreachable timeout; gap 50-90 unknown",
		},
		{
			name: "ongoing outage lasts until now; future end stops at now",
			in: TimelineInput{Camera: cam, Start: at(0), End: at(1000), Now: at(100),
				Segments: []model.Segment{seg(0, 10, 1)},
				Outages:  []model.Outage{{Start: at(10), Cause: model.GapNodeDown}}},
			want: "span 0-10 1; gap 10-100 node_down",
		},
		{
			name: "retention deletion",
			in: TimelineInput{Camera: cam, Start: at(0), End: at(100),
				Segments:  []model.Segment{seg(60, 100, 1)},
				Deletions: []model.Deletion{{Start: at(0), End: at(30), Reason: "retention"}, {Start: at(30), End: at(40), Reason: "operator"}}},
			want: "span 60-100 1; gap 0-30 retention deleted at the end of the retention period; gap 30-40 unknown deleted: operator; gap 40-60 unknown",
		},
		{
			name: "before the camera existed",
			in: TimelineInput{Camera: model.Camera{CreatedAt: at(50), Recording: model.RecordContinuous}, Start: at(0), End: at(100),
				Segments: []model.Segment{seg(60, 100, 1)}},
			want: "span 60-100 1; gap 0-50 no_recording_policy camera not registered yet; gap 50-60 unknown",
		},
		{
			name: "recording off",
			in:   TimelineInput{Camera: model.Camera{Recording: model.RecordOff}, Start: at(0), End: at(100)},
			want: "gap 0-100 no_recording_policy recording is off",
		},
		{
			name: "outage wins over deletion",
			in: TimelineInput{Camera: cam, Start: at(0), End: at(100),
				Outages:   []model.Outage{{Start: at(0), End: at(50), Cause: model.GapNodeFailover}},
				Deletions: []model.Deletion{{Start: at(40), End: at(100), Reason: "retention"}}},
			want: "gap 0-50 node_failover; gap 50-100 retention deleted at the end of the retention period",
		},
		{
			name: "start in the future",
			in:   TimelineInput{Camera: cam, Start: at(200), End: at(300), Now: at(100)},
			want: "",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tl := BuildTimeline(tc.in)
			var got []string
			sec := func(x time.Time) string { return fmt.Sprint(x.Sub(base).Seconds()) }
			for _, s := range tl.Spans {
				got = append(got, fmt.Sprintf("span %s-%s %d", sec(s.Start), sec(s.End), s.Bytes))
			}
			for _, g := range tl.Gaps {
				got = append(got, strings.TrimSpace(fmt.Sprintf("gap %s-%s %s %s", sec(g.Start), sec(g.End), g.Cause, g.Detail)))
			}
			if s := strings.Join(got, "; "); s != tc.want {
				t.Errorf("got  %s\nwant %s", s, tc.want)
			}
		})
	}
}
