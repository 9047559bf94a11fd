package simcam

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// A camera switched to the alternate clip sends it from an IDR on, with its own SPS, and
// frame numbers run on without a hole.
func TestAltClipSwitchesAtIDR(t *testing.T) {
	main, _ := DefaultClip(CodecH264)
	main.AccessUnits = main.AccessUnits[:10] // IDR every 10 frames (0.4 s)
	alt, _ := DefaultClip(CodecH264)
	alt.AccessUnits = alt.AccessUnits[:5]
	s := startServer(t, Config{Clip: main, AltClip: alt, Cameras: []string{"res"}})

	var frames []frame
	var wg sync.WaitGroup
	wg.Go(func() { frames = readCamera(t, s.URL("res"), 1500*time.Millisecond) })
	time.Sleep(600 * time.Millisecond)
	if err := s.SetAltClip("res", true); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	checkConsecutive(t, frames, "res")
	// Before the switch an IDR every 10 frames, after it every 5: find the switch.
	var idrs []uint64
	for _, f := range frames {
		if f.idr {
			idrs = append(idrs, f.tags[0].Frame)
		}
	}
	if len(idrs) < 4 {
		t.Fatalf("IDRs at %v, want several", idrs)
	}
	last := idrs[len(idrs)-1]
	prev := idrs[len(idrs)-2]
	if last-prev != 5 {
		t.Errorf("IDRs at frames %v: after the switch, want one every 5 frames (the alternate clip)", idrs)
	}
	if idrs[0]%10 != 0 {
		t.Errorf("first IDR at frame %d, want a multiple of 10 (the main clip)", idrs[0])
	}

	if err := s.SetAltClip("nope", true); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("SetAltClip(unknown) = %v, want ErrNotFound", err)
	}
	s2 := startServer(t, Config{Cameras: []string{"x"}})
	if err := s2.SetAltClip("x", true); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("SetAltClip without AltClip = %v, want ErrInvalid", err)
	}
}

func TestAltClipMustMatch(t *testing.T) {
	h264, _ := DefaultClip(CodecH264)
	h265, _ := DefaultClip(CodecH265)
	h265.FPS = 30
	_, err := New(Config{Addr: "127.0.0.1:0", Clip: h264, AltClip: h265, Cameras: []string{"a"}})
	for _, want := range []string{"AltClip.Codec", "AltClip.FPS"} {
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error %v, want it to name %s", err, want)
		}
	}
}

// Dropped sessions end the reader's session; garbage is counted and the frames around it
// still arrive intact and consecutive.
func TestDropSessionsAndGarbage(t *testing.T) {
	s := startServer(t, Config{Cameras: []string{"flaky"}})
	var frames []frame
	var wg sync.WaitGroup
	wg.Go(func() { frames = readCamera(t, s.URL("flaky"), 1200*time.Millisecond) })
	for s.Stats().Readers == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if !s.InjectGarbage("flaky", 3) {
		t.Fatal("InjectGarbage: camera not found")
	}
	time.Sleep(300 * time.Millisecond)
	if n := s.DropSessions("flaky"); n != 1 {
		t.Errorf("DropSessions closed %d sessions, want 1", n)
	}
	wg.Wait()
	st := s.Stats()
	if st.GarbagePackets != 3 || st.SessionsDropped != 1 {
		t.Errorf("stats: garbage %d, sessions dropped %d; want 3 and 1", st.GarbagePackets, st.SessionsDropped)
	}
	if st.Readers != 0 {
		t.Errorf("%d readers after the drop, want 0", st.Readers)
	}
	// the reader got about 0.6 s of frames, then nothing: its session was closed
	if len(frames) < 8 || len(frames) > 22 {
		t.Errorf("reader got %d frames, want about 15 (0.6 s) before its session was dropped", len(frames))
	}
	for i := 1; i < len(frames); i++ {
		if frames[i].tags[0].Frame != frames[i-1].tags[0].Frame+1 {
			t.Fatalf("frames %d→%d not consecutive around the garbage", frames[i-1].tags[0].Frame, frames[i].tags[0].Frame)
		}
	}
	if s.DropSessions("nope") != 0 || s.InjectGarbage("nope", 1) {
		t.Error("unknown camera: DropSessions/InjectGarbage reported success")
	}
}

func TestFrameTimeAndLateness(t *testing.T) {
	s := startServer(t, Config{Cameras: []string{"a", "b"}, Phases: 2})
	ta, ok := s.FrameTime("a", 25)
	tb, _ := s.FrameTime("b", 25)
	if !ok || tb.Sub(ta) != 20*time.Millisecond {
		t.Errorf("frame 25: a at %v, b at %v: want b 20 ms (half a frame) after a", ta, tb)
	}
	if _, ok := s.FrameTime("zzz", 1); ok {
		t.Error("FrameTime of an unknown camera reported ok")
	}
	time.Sleep(200 * time.Millisecond)
	l := s.Stats().Lateness
	if l.Total() == 0 || l.Total() > s.Stats().FramesSent {
		t.Errorf("lateness histogram holds %d frames, %d sent", l.Total(), s.Stats().FramesSent)
	}
	h := Lateness{Counts: []uint64{5, 0, 0, 0, 0, 0, 2, 0, 0, 1}, Max: 3 * time.Second}
	if h.Over(40*time.Millisecond) != 3 || h.Over(time.Second) != 1 || h.Quantile(0.5) != time.Millisecond || h.Quantile(1) != 3*time.Second {
		t.Errorf("Over/Quantile wrong: %d %d %v %v", h.Over(40*time.Millisecond), h.Over(time.Second), h.Quantile(0.5), h.Quantile(1))
	}
}
