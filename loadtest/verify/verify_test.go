package verify

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"

	"github.com/vigie-vms/vigie/loadtest/sei"
	"github.com/vigie-vms/vigie/loadtest/simcam"
)

// recFrame is one sample of the synthetic recording.
type recFrame struct {
	at    time.Time
	frame uint64
	cam   string
}

// fakeSource serves a synthetic recording: a timeline, segments, and exports built as real
// progressive MP4s (pmp4) from the frames that fall in the asked range.
type fakeSource struct {
	t        *testing.T
	timeline Timeline
	segments []Segment
	frames   []recFrame
	exports  int
}

func (f *fakeSource) Timeline(context.Context, string, time.Time, time.Time) (Timeline, error) {
	return f.timeline, nil
}

func (f *fakeSource) Segments(context.Context, string, time.Time, time.Time) ([]Segment, error) {
	return f.segments, nil
}

func (f *fakeSource) Export(_ context.Context, cam string, from, to time.Time) (*Export, error) {
	f.exports++
	var in []recFrame
	for _, fr := range f.frames {
		if !fr.at.Before(from) && fr.at.Before(to) {
			in = append(in, fr)
		}
	}
	if len(in) == 0 {
		return nil, ErrNothingRecorded
	}
	return NewExport(buildMP4(f.t, in), in[0].at), nil
}

// buildMP4 writes frames as H.264 samples (an SEI tag and a dummy IDR slice, AVCC) at
// 90 kHz, each sample lasting until the next one (so time gaps stay gaps).
func buildMP4(t *testing.T, frames []recFrame) []byte {
	clip, err := simcam.DefaultClip(simcam.CodecH264)
	if err != nil {
		t.Fatal(err)
	}
	tr := &pmp4.Track{ID: 1, TimeScale: 90000, Codec: &mp4.CodecH264{SPS: clip.SPS, PPS: clip.PPS}}
	for i, fr := range frames {
		var payload []byte
		for _, nal := range [][]byte{sei.EncodeH264(sei.Tag{Camera: fr.cam, Frame: fr.frame, SentAt: fr.at.Add(-30 * time.Millisecond)}), {0x65, 0x88, 0x84, 0x00}} {
			payload = binary.BigEndian.AppendUint32(payload, uint32(len(nal)))
			payload = append(payload, nal...)
		}
		d := uint32(3600)
		if i+1 < len(frames) {
			d = uint32(frames[i+1].at.Sub(fr.at) * 90000 / time.Second)
		}
		if d == 0 {
			d = 1
		}
		tr.Samples = append(tr.Samples, &pmp4.Sample{Duration: d, PayloadSize: uint32(len(payload)),
			GetPayload: func() ([]byte, error) { return payload, nil }})
	}
	var buf bytes.Buffer
	p := pmp4.Presentation{Tracks: []*pmp4.Track{tr}}
	if err := p.Marshal(&seekBuffer{b: &buf}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// seekBuffer is an io.WriteSeeker over a bytes.Buffer (pmp4 seeks back to patch sizes).
type seekBuffer struct {
	b   *bytes.Buffer
	pos int
}

func (s *seekBuffer) Write(p []byte) (int, error) {
	buf := s.b.Bytes()
	if s.pos+len(p) > len(buf) {
		s.b.Write(make([]byte, s.pos+len(p)-len(buf)))
		buf = s.b.Bytes()
	}
	copy(buf[s.pos:], p)
	s.pos += len(p)
	return len(p), nil
}

func (s *seekBuffer) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case 0:
		s.pos = int(off)
	case 1:
		s.pos += int(off)
	case 2:
		s.pos = s.b.Len() + int(off)
	}
	return int64(s.pos), nil
}

// The synthetic recording of camera cam-1 at 25 fps over a 20 s window (frames 0..499):
//   - frames 100..102 dropped (120 ms: dropped frames);
//   - the fragment of frames 200..224 stored twice (25 duplicates);
//   - frames 300..349 missing while the timeline shows one continuous span (a hidden gap
//     of 2 s);
//   - frames 400..424 missing under a timeline gap "camera_unreachable" [16 s, 17 s), with
//     a node killed at 16 s (a failover of 1 s);
//   - frames 450..459 never sent (the camera was stalled 18.0–18.4 s);
//   - frames 500..520 recorded after the window (ignored).
func TestVerifierReportsEachDefectExactly(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	fps := 25
	sent := Sent{Frame0: t0, FPS: fps, FramesSent: 521, Stalls: []Interval{{t0.Add(18 * time.Second), t0.Add(18400 * time.Millisecond)}}}
	at := func(k int) time.Time { return sent.FrameTime(uint64(k)) }
	var frames []recFrame
	for k := 0; k <= 520; k++ {
		switch {
		case k >= 100 && k <= 102, k >= 300 && k <= 349, k >= 400 && k <= 424, k >= 450 && k <= 459:
			continue
		}
		frames = append(frames, recFrame{at: at(k), frame: uint64(k), cam: "cam-1"})
		if k >= 200 && k <= 224 {
			frames = append(frames, recFrame{at: at(k), frame: uint64(k), cam: "cam-1"})
		}
	}
	src := &fakeSource{t: t, frames: frames,
		timeline: Timeline{
			Spans: []Span{{Start: t0, End: t0.Add(16 * time.Second)}, {Start: t0.Add(17 * time.Second), End: t0.Add(21 * time.Second)}},
			Gaps:  []Gap{{Start: t0.Add(16 * time.Second), End: t0.Add(17 * time.Second), Cause: "camera_unreachable", Detail: "connection refused"}},
		},
		segments: []Segment{
			{ID: "s1", Start: t0, End: t0.Add(16 * time.Second), Sealed: true},
			{ID: "s2", Start: t0.Add(17 * time.Second), End: t0.Add(21 * time.Second)},
		},
	}
	window := Interval{t0, t0.Add(20 * time.Second)}
	in := Collect(context.Background(), src, "cam-1", window, CollectOptions{CheckSegments: true})
	in.Sent = sent
	in.Faults = []Fault{{At: t0.Add(16 * time.Second), Kind: "kill", Node: 1}}
	r := Analyze(in, DefaultOptions())

	check := func(name string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	check("expected", r.Expected, 490)
	check("not sent (stalled)", r.NotSent, 10)
	check("lost", r.Lost, 3+50+25)
	check("recorded", r.Recorded, 490-78)
	check("duplicated", r.Duplicated, 25)
	check("duplicate runs", r.Duplicates, []DupRun{{FirstFrame: 200, Frames: 25, Extra: 25}})
	check("loss runs", r.LossRuns, []LossRun{
		{FirstFrame: 100, Frames: 3, Start: at(100), Duration: 120 * time.Millisecond, Kind: LossDropped},
		{FirstFrame: 300, Frames: 50, Start: at(300), Duration: 2 * time.Second, Kind: LossHiddenGap},
		{FirstFrame: 400, Frames: 25, Start: at(400), Duration: time.Second, Kind: LossGap, Cause: "camera_unreachable"},
	})
	check("hidden gaps", r.HiddenGaps, 1)
	check("dropped", r.Dropped, 3)
	check("gaps", r.Gaps, []GapReport{{Start: t0.Add(16 * time.Second), Length: time.Second, Cause: "camera_unreachable", Detail: "connection refused"}})
	check("failovers", r.Failovers, []Failover{{Fault: in.Faults[0], Interruption: time.Second, Recovered: true}})
	check("foreign", r.Foreign, 0)
	check("outside spans", r.Outside, 0)
	check("segments checked", r.Segments, 2)
	if d := r.LatencyP50 - 30*time.Millisecond; d < 0 || d > time.Millisecond { // MP4 ticks round
		t.Errorf("latency p50 %v, want 30ms", r.LatencyP50)
	}
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "hidden gap: 50 frames (2s) from frame 300") {
		t.Errorf("problems %q, want exactly the hidden gap", r.Problems)
	}
	if r.OK() {
		t.Error("OK() = true for a camera with losses")
	}
	for _, sc := range in.Segments {
		if sc.Err != "" || sc.Samples == 0 || sc.Outside != 0 || sc.Samples != sc.Tagged {
			t.Errorf("segment check %+v: want every sample tagged and inside", sc)
		}
	}

	s := Summarize([]CameraReport{r})
	if s.Lost != 78 || s.HiddenGaps != 1 || s.Failovers != 1 || s.FailoverMax != time.Second || s.GapCauses["camera_unreachable"] != 1 {
		t.Errorf("summary %+v", s)
	}
}

// Data served where the catalog lists nothing, a listed segment with nothing behind it,
// and frames of another camera are each reported.
func TestVerifierCatalogAgainstData(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	sent := Sent{Frame0: t0, FPS: 25, FramesSent: 100}
	var frames []recFrame
	for k := range 100 {
		cam := "cam-1"
		if k == 10 {
			cam = "cam-2"
		}
		frames = append(frames, recFrame{at: sent.FrameTime(uint64(k)), frame: uint64(k), cam: cam})
	}
	src := &fakeSource{t: t, frames: frames,
		// the span ends at 2 s, but 4 s are served
		timeline: Timeline{Spans: []Span{{Start: t0, End: t0.Add(2 * time.Second)}}},
		segments: []Segment{{ID: "s1", Start: t0, End: t0.Add(4 * time.Second)}, {ID: "ghost", Start: t0.Add(10 * time.Second), End: t0.Add(11 * time.Second)}},
	}
	in := Collect(context.Background(), src, "cam-1", Interval{t0, t0.Add(4 * time.Second)}, CollectOptions{CheckSegments: true})
	in.Sent = sent
	r := Analyze(in, Options{Tolerance: 100 * time.Millisecond})
	if r.Foreign != 1 || r.Lost != 1 {
		t.Errorf("foreign %d, lost %d: want 1 and 1 (frame 10 carries cam-2's tag)", r.Foreign, r.Lost)
	}
	if want := 50 - 3; r.Outside < want || r.Outside > 50 {
		t.Errorf("outside spans %d, want about %d (every sample after 2.1 s)", r.Outside, want)
	}
	all := strings.Join(r.Problems, "\n")
	for _, want := range []string{"outside every listed span", "segment ghost", "export failed", "tagged with another camera"} {
		if !strings.Contains(all, want) {
			t.Errorf("problems %q lack %q", all, want)
		}
	}
}

func TestParseExportRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, []byte("not an mp4"), bytes.Repeat([]byte{0, 0, 0, 8, 'f', 'r', 'e', 'e'}, 3)} {
		if _, err := ParseExport(bytes.NewReader(b), time.Now()); err == nil {
			t.Errorf("ParseExport(%q) succeeded", b)
		}
	}
}

func FuzzParseExport(f *testing.F) {
	t0 := time.Unix(1_700_000_000, 0)
	f.Add([]byte("not an mp4"))
	f.Add(buildMP4(&testing.T{}, []recFrame{{at: t0, frame: 1, cam: "a"}, {at: t0.Add(40 * time.Millisecond), frame: 2, cam: "a"}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		ss, err := ParseExport(bytes.NewReader(b), t0)
		if err == nil && len(ss) > len(b) {
			t.Fatalf("%d samples from %d bytes", len(ss), len(b))
		}
		_ = fmt.Sprint(ss)
	})
}
