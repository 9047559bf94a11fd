package simcam

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/pion/rtp"

	"github.com/vigie-vms/vigie/loadtest/sei"
	"github.com/vigie-vms/vigie/model"
)

// testLogger writes to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func startServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// frame is what a reader got for one access unit.
type frame struct {
	tags  []sei.Tag
	rtpTS uint32
	idr   bool
}

// readCamera plays url over RTSP/TCP for d and returns the access units received, as
// depacketized by gortsplib's own decoders.
func readCamera(t testing.TB, url string, d time.Duration) []frame {
	t.Helper()
	u, err := base.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	tcp := gortsplib.TransportTCP
	c := gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Transport: &tcp}
	if err := c.Start2(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	desc, _, err := c.Describe(u)
	if err != nil {
		t.Fatalf("DESCRIBE %s: %v", url, err)
	}
	var mu sync.Mutex
	var frames []frame
	var h264f *format.H264
	var h265f *format.H265
	if medi := desc.FindFormat(&h264f); medi != nil {
		dec, err := h264f.CreateDecoder()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Setup(desc.BaseURL, medi, 0, 0); err != nil {
			t.Fatal(err)
		}
		c.OnPacketRTP(medi, h264f, func(pkt *rtp.Packet) {
			au, err := dec.Decode(pkt)
			if err != nil {
				return // more packets needed, or joined mid-frame
			}
			f := frame{tags: sei.ScanAU(au, false), rtpTS: pkt.Timestamp}
			for _, n := range au {
				f.idr = f.idr || n[0]&0x1f == 5
			}
			mu.Lock()
			frames = append(frames, f)
			mu.Unlock()
		})
	} else if medi := desc.FindFormat(&h265f); medi != nil {
		dec, err := h265f.CreateDecoder()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Setup(desc.BaseURL, medi, 0, 0); err != nil {
			t.Fatal(err)
		}
		c.OnPacketRTP(medi, h265f, func(pkt *rtp.Packet) {
			au, err := dec.Decode(pkt)
			if err != nil {
				return
			}
			f := frame{tags: sei.ScanAU(au, true), rtpTS: pkt.Timestamp}
			for _, n := range au {
				typ := (n[0] >> 1) & 0x3f
				f.idr = f.idr || (typ >= 16 && typ <= 21)
			}
			mu.Lock()
			frames = append(frames, f)
			mu.Unlock()
		})
	} else {
		t.Fatalf("%s: no H.264 or H.265 media in %+v", url, desc)
	}
	if _, err := c.Play(nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(d)
	c.Close()
	mu.Lock()
	defer mu.Unlock()
	return frames
}

// checkConsecutive asserts every frame carries exactly one tag of camera, with
// consecutive frame numbers and RTP timestamps 3600 ticks (1/25 s) apart.
func checkConsecutive(t *testing.T, frames []frame, camera string) {
	t.Helper()
	if len(frames) < 20 {
		t.Fatalf("received %d frames in about 2 s, want about 50", len(frames))
	}
	for i, f := range frames {
		if len(f.tags) != 1 {
			t.Fatalf("frame %d carries %d tags, want 1", i, len(f.tags))
		}
		tag := f.tags[0]
		if tag.Camera != camera {
			t.Fatalf("frame %d tagged camera %q, want %q", i, tag.Camera, camera)
		}
		if tag.SentAt.IsZero() || time.Since(tag.SentAt) > time.Minute {
			t.Fatalf("frame %d: implausible send time %v", i, tag.SentAt)
		}
		if i == 0 {
			continue
		}
		prev := frames[i-1]
		if tag.Frame != prev.tags[0].Frame+1 {
			t.Fatalf("frame %d: number %d after %d: not consecutive", i, tag.Frame, prev.tags[0].Frame)
		}
		if d := f.rtpTS - prev.rtpTS; d != 3600 {
			t.Fatalf("frame %d: RTP timestamp advanced by %d, want 3600", i, d)
		}
		if tag.SentAt.Before(prev.tags[0].SentAt) {
			t.Fatalf("frame %d: sent at %v, before the previous frame (%v)", i, tag.SentAt, prev.tags[0].SentAt)
		}
	}
}

func TestStreamTaggedFrames(t *testing.T) {
	for _, codec := range []string{CodecH264, CodecH265} {
		t.Run(codec, func(t *testing.T) {
			clip, err := DefaultClip(codec)
			if err != nil {
				t.Fatal(err)
			}
			s := startServer(t, Config{Clip: clip, Cameras: []string{"cam-a", "cam-b", "cam-c"}})
			frames := readCamera(t, s.URL("cam-b"), 2*time.Second)
			t.Logf("%s: %d frames, numbers %d..%d", codec, len(frames), frames[0].tags[0].Frame, frames[len(frames)-1].tags[0].Frame)
			checkConsecutive(t, frames, "cam-b")
			// The frame number is the camera's frame index since Start: it cannot be
			// ahead of what the camera has sent.
			if last, sent := frames[len(frames)-1].tags[0].Frame, s.FramesSent("cam-b"); last >= sent {
				t.Errorf("last frame number %d, but the camera sent only %d frames", last, sent)
			}
			// Cameras nobody reads advance too: they are live cameras.
			if s.FramesSent("cam-a") == 0 || s.FramesSent("cam-c") == 0 {
				t.Errorf("unread cameras did not advance: a=%d c=%d", s.FramesSent("cam-a"), s.FramesSent("cam-c"))
			}
		})
	}
}

// A short clip loops several times during the read: numbers and RTP timestamps stay
// continuous across the loop point, and the IDR comes back every len(clip) frames.
func TestLoopIsContinuous(t *testing.T) {
	clip, _ := DefaultClip(CodecH264)
	clip.AccessUnits = clip.AccessUnits[:10] // one IDR + 9 P: loops every 0.4 s
	s := startServer(t, Config{Clip: clip, Cameras: []string{"loop"}, StartFrame: 1000})
	frames := readCamera(t, s.URL("loop"), 1500*time.Millisecond)
	checkConsecutive(t, frames, "loop")
	for i, f := range frames {
		n := f.tags[0].Frame - 1000
		if f.idr != (n%10 == 0) {
			t.Fatalf("frame %d (index %d): IDR %v, want IDR exactly at every loop start", i, n, f.idr)
		}
	}
	if frames[0].tags[0].Frame < 1000 {
		t.Errorf("first frame %d, want numbering from StartFrame 1000", frames[0].tags[0].Frame)
	}
}

func TestStalledCameraSkipsNumbers(t *testing.T) {
	s := startServer(t, Config{Cameras: []string{"frozen"}})
	done := make(chan []frame)
	go func() { done <- readCamera(t, s.URL("frozen"), 2*time.Second) }()
	time.Sleep(700 * time.Millisecond)
	if !s.SetStalled("frozen", true) {
		t.Fatal("SetStalled: camera not found")
	}
	sentAtStall := s.FramesSent("frozen")
	time.Sleep(500 * time.Millisecond)
	if got := s.FramesSent("frozen"); got != sentAtStall {
		t.Errorf("stalled camera sent %d frames", got-sentAtStall)
	}
	s.SetStalled("frozen", false)
	frames := <-done
	var gaps []uint64
	for i := 1; i < len(frames); i++ {
		if d := frames[i].tags[0].Frame - frames[i-1].tags[0].Frame; d != 1 {
			gaps = append(gaps, d-1)
		}
	}
	// one gap of about 12 frames (500 ms at 25 fps), nothing else
	if len(gaps) != 1 || gaps[0] < 5 || gaps[0] > 25 {
		t.Fatalf("gaps in frame numbers: %v, want one gap of about 12 frames", gaps)
	}
	if s.SetStalled("nope", true) {
		t.Error("SetStalled on an unknown camera reported success")
	}
}

func TestUnknownCameraIs404(t *testing.T) {
	s := startServer(t, Config{Cameras: []string{"cam1"}})
	u, _ := base.ParseURL(s.URL("cam2"))
	c := gortsplib.Client{Scheme: u.Scheme, Host: u.Host}
	if err := c.Start2(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _, err := c.Describe(u)
	var bad liberrors.ErrClientBadStatusCode
	if !errors.As(err, &bad) || bad.Code != base.StatusNotFound {
		t.Fatalf("DESCRIBE unknown camera: %v, want 404", err)
	}
}

func TestConfigValidate(t *testing.T) {
	bad := DefaultConfig()
	bad.Addr = "nowhere"
	bad.Cameras = []string{"ok", "Bad Id", "ok"}
	bad.Phases = 0
	bad.Workers = 0
	bad.FlushInterval = 0
	bad.WriteQueueSize = 100
	bad.Clip = &Clip{Codec: "VP8", FPS: 0}
	err := bad.Validate()
	if !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("Validate: %v, want model.ErrInvalid", err)
	}
	for _, want := range []string{
		`Addr: "nowhere" is not host:port`,
		`Cameras[1]: "Bad Id" must be 1-63 characters`,
		`Cameras[2]: "ok" is already Cameras[0]`,
		"Clip.FPS: 0, want 1 to 1000",
		"Clip.AccessUnits: is empty",
		`Clip.Codec: "VP8"`,
		"Phases: 0, want 1 to 1000",
		"Workers: 0, want at least 1",
		"FlushInterval: 0s",
		"WriteQueueSize: 100, want a power of two",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error lacks %q; got:\n%v", want, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
	if _, err := New(Config{Addr: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "Cameras: at least one camera id is required") {
		t.Errorf("New without cameras: %v", err)
	}
}

// ffprobe, a real RTSP client and decoder, reads a camera and decodes its frames.
func TestFFprobeDecodes(t *testing.T) {
	ffprobe, err := exec.LookPath("ffprobe")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("ffprobe not found and CI=true")
		}
		t.Skip("ffprobe not found in PATH; install ffmpeg to run this test")
	}
	for _, codec := range []string{CodecH264, CodecH265} {
		t.Run(codec, func(t *testing.T) {
			clip, _ := DefaultClip(codec)
			s := startServer(t, Config{Clip: clip, Cameras: []string{"probe"}})
			out, err := exec.Command(ffprobe, "-v", "error", "-rtsp_transport", "tcp",
				"-read_intervals", "%+3", "-count_frames",
				"-select_streams", "v:0",
				"-show_entries", "stream=codec_name,width,height,nb_read_frames",
				"-of", "default=noprint_wrappers=1", s.URL("probe")).CombinedOutput()
			if err != nil {
				t.Fatalf("ffprobe: %v\n%s", err, out)
			}
			got := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					got[k] = v
				}
			}
			wantCodec := map[string]string{CodecH264: "h264", CodecH265: "hevc"}[codec]
			if got["codec_name"] != wantCodec || got["width"] != "640" || got["height"] != "360" {
				t.Errorf("ffprobe sees %v, want %s 640x360", got, wantCodec)
			}
			// Decoding starts at the first IDR (up to 2 s in), so 3 s of reading yields at
			// least a second of decoded frames.
			if n, _ := strconv.Atoi(got["nb_read_frames"]); n < 20 {
				t.Errorf("ffprobe decoded %d frames, want at least 20\n%s", n, out)
			}
			t.Logf("ffprobe: %v\n%s", got, out)
		})
	}
}

func ExampleServer() {
	s, err := New(Config{Addr: "127.0.0.1:0", Cameras: []string{"cam1", "cam2"}})
	if err != nil {
		panic(err)
	}
	if err := s.Start(); err != nil {
		panic(err)
	}
	defer s.Close()
	fmt.Println(strings.HasPrefix(s.URL("cam2"), "rtsp://127.0.0.1:"))
	// Output: true
}
