package media

import (
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
)

// tiny SPS/PPS of a 64x64 H.264 stream.
var (
	testSPS = []byte{0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x1e, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x48, 0x99, 0x20}
	testPPS = []byte{0x68, 0xcb, 0x83, 0xcb, 0x20}
)

func testInit(t testing.TB) *fmp4.Init {
	return &fmp4.Init{Tracks: []*fmp4.InitTrack{
		{ID: 1, TimeScale: 90000, Codec: &fmp4.CodecH264{SPS: testSPS, PPS: testPPS}},
		{ID: 2, TimeScale: 48000, Codec: &fmp4.CodecOpus{ChannelCount: 2}},
	}}
}

func testFragment(t testing.TB, videoBase, audioBase uint64) []byte {
	p := fmp4.Part{SequenceNumber: 7, Tracks: []*fmp4.PartTrack{
		{ID: 1, BaseTime: videoBase, Samples: []*fmp4.Sample{{Duration: 3600, Payload: []byte{0, 0, 0, 1, 0x65}}, {Duration: 3600, IsNonSyncSample: true, Payload: []byte{0, 0, 0, 1, 0x41}}}},
		{ID: 2, BaseTime: audioBase, Samples: []*fmp4.Sample{{Duration: 960, Payload: []byte{1, 2, 3}}}},
	}}
	var b seekablebuffer.Buffer
	if err := p.Marshal(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestRebaserPlacesFragmentsByWallClock(t *testing.T) {
	origin := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	rb := NewRebaser(testInit(t), origin)
	// Segment 1: camera clock at 9,000,000 (100 s); audio 10 ms (480 ticks) after video.
	rb.StartSegment()
	p1, err := rb.Place(testFragment(t, 9_000_000, 4_800_000+480), origin)
	if err != nil {
		t.Fatal(err)
	}
	if v, a := p1[0].Tracks[0].BaseTime, p1[0].Tracks[1].BaseTime; v != 0 || a != 480 {
		t.Errorf("first fragment: video %d audio %d, want 0 and 480", v, a)
	}
	// Next fragment of the same segment keeps the camera's spacing exactly.
	p2, _ := rb.Place(testFragment(t, 9_000_000+7200, 4_800_000+480+1920), origin.Add(80*time.Millisecond+time.Microsecond))
	if v := p2[0].Tracks[0].BaseTime; v != 7200 {
		t.Errorf("second fragment video at %d, want 7200", v)
	}
	// A new segment after a 10 s gap, with another clock, lands at its wall-clock time.
	rb.StartSegment()
	p3, _ := rb.Place(testFragment(t, 42, 42), origin.Add(10*time.Second))
	// audio keeps its offset from video (42/48000 - 42/90000 s = 20 ticks at 48 kHz)
	if v, a := p3[0].Tracks[0].BaseTime, p3[0].Tracks[1].BaseTime; v != 900000 || a != 480020 {
		t.Errorf("new segment: video %d audio %d, want 900000 and 480020", v, a)
	}
	if p3[0].SequenceNumber != 3 {
		t.Errorf("sequence number %d, want 3", p3[0].SequenceNumber)
	}
}

func FuzzParseInit(f *testing.F) {
	var b seekablebuffer.Buffer
	if err := testInit(f).Marshal(&b); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	f.Add([]byte{0, 0, 0, 8, 'm', 'o', 'o', 'v'})
	f.Fuzz(func(t *testing.T, data []byte) {
		ParseInit(data) // must not panic
	})
}

func FuzzRebase(f *testing.F) {
	f.Add(testFragment(f, 9_000_000, 4_800_000))
	f.Add([]byte{0, 0, 0, 8, 'm', 'o', 'o', 'f'})
	init := testInit(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		rb := NewRebaser(init, time.Unix(0, 0))
		out, err := rb.Rebase(data, time.Unix(1, 0))
		if err == nil {
			if _, err := ParseFragment(out); err != nil {
				t.Errorf("rebased fragment does not parse: %v", err)
			}
		}
	})
}

// TestExportSegmentStartingEarlyIsPushedLater: at a handover the new owner's first
// fragment can start a few milliseconds before the old owner's last frame ends (two
// nodes' receive clocks). The export keeps every frame at least half a frame long (a
// 1-tick frame gives two frames one decode time once remuxed) and the stretch absorbs
// a real gap as before.
func TestExportSegmentStartingEarlyIsPushedLater(t *testing.T) {
	origin := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	e := NewExport(testInit(t), origin, origin.Add(time.Minute))
	add := func(frag []byte, at time.Time) {
		t.Helper()
		if _, err := e.Add(frag, at, func() ([]byte, error) { return frag, nil }); err != nil {
			t.Fatal(err)
		}
	}
	e.StartSegment()
	add(testFragment(t, 9_000_000, 4_800_000), origin) // video frames of 40 ms end at 80 ms
	e.StartSegment()
	add(testFragment(t, 1_000, 1_000), origin.Add(20*time.Millisecond)) // 60 ms early
	e.StartSegment()
	add(testFragment(t, 5_000, 5_000), origin.Add(time.Second)) // after a gap
	video := e.tracks[1].t.Samples
	if len(video) != 6 {
		t.Fatalf("%d video samples, want 6", len(video))
	}
	if d := video[1].Duration; d != 1800 {
		t.Errorf("last frame before the early segment lasts %d ticks, want 1800 (half a frame; the early segment pushed 40 ms later)", d)
	}
	// The gap absorbs the push: the frame before it ends at exactly 1 s (90,000 ticks).
	if d := video[3].Duration; d != 90000-9000 {
		t.Errorf("frame before the gap lasts %d ticks, want %d (the next segment at its wall-clock time)", d, 90000-9000)
	}
	for i, s := range video {
		if s.Duration < 1800 {
			t.Errorf("video sample %d lasts %d ticks (< half a frame)", i, s.Duration)
		}
	}
}
