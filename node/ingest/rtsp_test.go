package ingest

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"

	"github.com/vigie-vms/vigie/model"
)

// cameraServer is a gortsplib server standing in for a camera: it serves one stream and
// signals when a reader plays it.
type cameraServer struct {
	srv    *gortsplib.Server
	stream *gortsplib.ServerStream
	played chan struct{}
	once   sync.Once
	closed sync.Once
}

func (c *cameraServer) close() { c.closed.Do(func() { c.stream.Close(); c.srv.Close() }) }

func (c *cameraServer) OnDescribe(*gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	return &base.Response{StatusCode: base.StatusOK}, c.stream, nil
}

func (c *cameraServer) OnSetup(*gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	return &base.Response{StatusCode: base.StatusOK}, c.stream, nil
}

func (c *cameraServer) OnPlay(*gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	c.once.Do(func() { close(c.played) })
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startCamera(t *testing.T, desc *description.Session) (*cameraServer, string) {
	t.Helper()
	addr := freeAddr(t)
	c := &cameraServer{played: make(chan struct{})}
	c.srv = &gortsplib.Server{Handler: c, RTSPAddress: addr}
	if err := c.srv.Start(); err != nil {
		t.Fatal(err)
	}
	c.stream = &gortsplib.ServerStream{Server: c.srv, Desc: desc}
	if err := c.stream.Initialize(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	return c, "rtsp://" + addr + "/cam"
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPullerRecordsCamera: a real RTSP session over loopback (TCP) → every frame sent is a
// sample, the SEI counters come through in order, health reports recording.
func TestPullerRecordsCamera(t *testing.T) {
	aus := loadAUs(t, "testdata/h264_160x120.h264", codecH264)
	for i := range aus {
		aus[i] = withSEI(codecH264, aus[i], uint32(i))
	}
	desc, f := h264Desc()
	cam, url := startCamera(t, desc)
	sink := &memSink{}
	p, err := NewPuller(PullerConfig{
		Source: Source{Camera: "cam-1", URL: url}, Sink: sink, Logger: testLogger(t),
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	select {
	case <-cam.played:
	case <-time.After(10 * time.Second):
		t.Fatal("the puller never played the stream")
	}
	time.Sleep(100 * time.Millisecond) // PLAY response on its way
	for _, pkt := range rtpEncode(t, f, aus) {
		if err := cam.stream.WritePacketRTP(desc.Medias[0], pkt); err != nil {
			t.Fatal(err)
		}
		if pkt.Marker {
			time.Sleep(2 * time.Millisecond)
		}
	}
	waitFor(t, "recording state", 5*time.Second, func() bool { return p.Health().State == model.CameraRecording })
	cam.close() // the camera goes away: the session ends, the last fragment is flushed
	waitFor(t, "all frames", 10*time.Second, func() bool {
		n := 0
		for _, in := range sink.snapshot() {
			for _, fr := range in.frags {
				n += bytes.Count(fr.Data, seiUUID)
			}
		}
		return n == len(aus)
	})
	c := verify(t, sink.snapshot(), codecH264, time.Second)
	if c.videoSamples != len(aus) {
		t.Errorf("%d samples, want %d", c.videoSamples, len(aus))
	}
	for i, n := range c.seiFrames {
		if n != uint32(i) {
			t.Fatalf("frame %d carries counter %d: frames lost or reordered", i, n)
		}
	}
	waitFor(t, "down state", 5*time.Second, func() bool { return p.Health().State != model.CameraRecording })
	h := p.Health()
	if h.PacketsReceived < uint64(len(aus)) || h.Codec != "H264 160x120" || h.LastFrame.IsZero() || h.KeyframeInterval != time.Second {
		t.Errorf("health = %+v", h)
	}
}

// TestPullerNoVideoTrack: the error names the problem in health, and the puller keeps trying.
func TestPullerNoVideoTrack(t *testing.T) {
	desc := &description.Session{Medias: []*description.Media{{
		Type: description.MediaTypeAudio, Formats: []format.Format{&format.G711{PayloadTyp: 0, MULaw: true, SampleRate: 8000, ChannelCount: 1}},
	}}}
	_, url := startCamera(t, desc)
	p, err := NewPuller(PullerConfig{Source: Source{Camera: "cam-2", URL: url}, Sink: &memSink{},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, "two attempts", 10*time.Second, func() bool { return p.Health().Reconnects >= 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v after cancel", err)
	}
	h := p.Health()
	if !strings.Contains(h.LastError, "no supported video track") || !strings.Contains(h.LastError, "G711") {
		t.Errorf("LastError = %q", h.LastError)
	}
	if h.State != model.CameraDown {
		t.Errorf("state = %s", h.State)
	}
}

func TestPullerConfigValidate(t *testing.T) {
	_, err := NewPuller(PullerConfig{Source: Source{Camera: "Bad ID", URL: "http://x", Transport: "sctp"}, MinBackoff: time.Minute, MaxBackoff: time.Second})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"source.camera", "source.url", "source.transport", "sink", "min_backoff"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

// TestServerPushFFmpeg: ffmpeg publishes with ANNOUNCE/RECORD; the server records every
// frame; ffprobe plays the result back.
func TestServerPushFFmpeg(t *testing.T) {
	ffmpeg := needTool(t, "ffmpeg")
	for _, tc := range []struct {
		name  string
		codec videoCodec
		args  []string
	}{
		{"h264", codecH264, []string{"-c:v", "libx264", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p"}},
		{"h265", codecH265, []string{"-c:v", "libx265", "-x265-params", "log-level=error:keyint=25:bframes=0", "-pix_fmt", "yuv420p"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &memSink{}
			srv, err := NewServer(ServerConfig{
				Addr: "127.0.0.1:0", Logger: testLogger(t),
				Publisher: func(path string) (model.CameraID, Sink, bool) {
					if path != "cam1" {
						return "", nil, false
					}
					return "cam1", sink, true
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			if _, ok := srv.Health("cam1"); ok {
				t.Error("health exists before any publisher")
			}
			args := append([]string{"-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "3"}, tc.args...)
			args = append(args, "-f", "rtsp", "-rtsp_transport", "tcp", "rtsp://"+srv.Addr()+"/cam1")
			var out bytes.Buffer
			cmd := exec.Command(ffmpeg, args...)
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var live model.CameraHealth // health seen while recording
			waitFor(t, "recording health", 5*time.Second, func() bool {
				live, _ = srv.Health("cam1")
				return live.State == model.CameraRecording && live.FPS > 0
			})
			if err := cmd.Wait(); err != nil {
				t.Fatalf("ffmpeg: %v\n%s", err, out.String())
			}
			waitFor(t, "session end", 5*time.Second, func() bool {
				h, ok := srv.Health("cam1")
				return ok && h.State == model.CameraWaiting
			})
			inits := sink.snapshot()
			c := verify(t, inits, tc.codec, time.Second)
			if c.videoSamples != 75 {
				t.Errorf("%d samples, want the 75 frames ffmpeg sent", c.videoSamples)
			}
			if c.inits != 1 || c.widths[0] != 320 {
				t.Errorf("inits=%d widths=%v", c.inits, c.widths)
			}
			if live.FPS < 20 || live.FPS > 30 || live.BitrateBps <= 0 || live.PacketsReceived == 0 {
				t.Errorf("health while recording = %+v", live)
			}
			if h, _ := srv.Health("cam1"); h.LastError != "" || h.KeyframeInterval != time.Second {
				t.Errorf("health after a clean TEARDOWN = %+v", h)
			}
			// a player reads the recording back
			ffprobe := needTool(t, "ffprobe")
			var file bytes.Buffer
			file.Write(inits[0].data)
			for _, f := range inits[0].frags {
				file.Write(f.Data)
			}
			path := filepath.Join(t.TempDir(), "rec.mp4")
			if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			probe, err := exec.Command(ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0",
				"-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", path).CombinedOutput()
			if err != nil {
				t.Fatalf("ffprobe: %v\n%s", err, probe)
			}
			if n, _ := strconv.Atoi(strings.TrimSpace(string(probe))); n != 75 {
				t.Errorf("ffprobe decodes %q frames, want 75", probe)
			}
		})
	}
}

// TestServerRejectsUnknownPath: the publisher gets a 404 with the reason.
func TestServerRejectsUnknownPath(t *testing.T) {
	srv, err := NewServer(ServerConfig{Addr: "127.0.0.1:0", Publisher: func(string) (model.CameraID, Sink, bool) { return "", nil, false }})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	desc, _ := h264Desc()
	c := gortsplib.Client{}
	err = c.StartRecording("rtsp://"+srv.Addr()+"/nope", desc)
	if err == nil {
		c.Close()
		t.Fatal("publishing to an unknown path succeeded")
	}
	if !strings.Contains(err.Error(), "404") {
		t.Errorf("err = %v, want a 404", err)
	}

}
