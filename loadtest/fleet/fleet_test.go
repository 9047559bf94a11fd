package fleet

import (
	"context"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/loadtest/simcam"
)

func startFleet(t *testing.T, cams []Camera) *Fleet {
	t.Helper()
	f, err := New(context.Background(), Config{Host: "127.0.0.1", Cameras: cams})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

func TestCodecMixAndControl(t *testing.T) {
	f := startFleet(t, []Camera{{ID: "a", Codec: simcam.CodecH264}, {ID: "b", Codec: simcam.CodecH265}, {ID: "c"}})
	if got := len(f.Addrs()); got != 2 {
		t.Fatalf("%d RTSP servers, want 2 (one per codec)", got)
	}
	if a, b := f.URL("a"), f.URL("b"); !strings.HasPrefix(a, "rtsp://127.0.0.1:") || a[:strings.LastIndex(a, "/")] == b[:strings.LastIndex(b, "/")] {
		t.Errorf("URLs %q and %q: want two servers on 127.0.0.1", a, b)
	}
	srv := httptest.NewServer(f.Handler())
	defer srv.Close()
	c := &Client{Base: srv.URL}
	ctx := context.Background()

	if err := c.Apply(ctx, "a", ActionStall, url.Values{"on": {"true"}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := c.Apply(ctx, "a", ActionStall, url.Values{"on": {"false"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, AllCameras, ActionGarbage, url.Values{"packets": {"2"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, "b", ActionDrop, nil); err != nil {
		t.Fatal(err)
	}
	err := c.Apply(ctx, "b", ActionResolution, nil)
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "alternate resolution") {
		t.Errorf("resolution without AltSize: %v, want a 400 naming the alternate resolution", err)
	}
	if err := c.Apply(ctx, "zz", ActionDrop, nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("unknown camera: %v, want 404", err)
	}
	if err := c.Apply(ctx, "a", "explode", nil); err == nil || !strings.Contains(err.Error(), "action") {
		t.Errorf("unknown action: %v, want an error naming action", err)
	}

	cams, err := c.Cameras(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cams) != 3 || cams[0].ID != "a" || len(cams[0].Stalls) != 1 || cams[0].Stalls[0].End.IsZero() {
		t.Fatalf("cameras %+v: want a, b, c with one closed stall on a", cams)
	}
	if cams[1].Codec != simcam.CodecH265 || cams[1].FPS != 25 || cams[1].Frame0.IsZero() {
		t.Errorf("camera b: %+v", cams[1])
	}
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Cameras != 3 || st.FramesSent == 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestConfigValidate(t *testing.T) {
	err := Config{Port: -1, Bitrate: -5, Cameras: []Camera{{ID: "a", Codec: "VP8"}}}.Validate()
	for _, want := range []string{"Host", "Port", "Bitrate", "Cameras[0].Codec"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want it to name %s", err, want)
		}
	}
	if err := (Config{Host: "127.0.0.1"}).Validate(); err == nil || !strings.Contains(err.Error(), "Cameras") {
		t.Errorf("no cameras: %v", err)
	}
}

func TestClipSpec(t *testing.T) {
	if !(ClipSpec{Bitrate: 1_000_000}).embedded() || (ClipSpec{Bitrate: 2_000_000}).embedded() {
		t.Error("1 Mbit/s should use the embedded clip, 2 Mbit/s should not")
	}
	args := strings.Join(ClipArgs(ClipSpec{Codec: simcam.CodecH265, Bitrate: 2_000_000}, "out.h265"), " ")
	for _, want := range []string{"libx265", "size=1280x720", "-b:v 2000000", "repeat-headers=1", "out.h265"} {
		if !strings.Contains(args, want) {
			t.Errorf("ffmpeg args %q lack %q", args, want)
		}
	}
}
