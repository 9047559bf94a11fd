package ingest

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/pion/rtp"

	"github.com/vigie-vms/vigie/model"
)

// loadAUs reads an Annex-B file and groups its NAL units into access units (one picture
// each: the encoders used for testdata write one slice per picture).
func loadAUs(t testing.TB, path string, codec videoCodec) [][][]byte {
	t.Helper()
	buf, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var nalus h264.AnnexB
	if err := nalus.Unmarshal(buf); err != nil {
		t.Fatal(err)
	}
	var aus [][][]byte
	var cur [][]byte
	vp := videoParams{codec: codec}
	for _, n := range nalus {
		cur = append(cur, n)
		if _, info, _ := vp.scanAU([][]byte{n}); info.hasPicture {
			aus = append(aus, cur)
			cur = nil
		}
	}
	return aus
}

// seiUUID marks the SEI NAL units the tests add to count frames end to end.
var seiUUID = []byte("vigie-frame-ctr!")

// withSEI prepends an SEI (user data unregistered) carrying n to au.
func withSEI(codec videoCodec, au [][]byte, n uint32) [][]byte {
	payload := append(append([]byte{}, seiUUID...), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	var sei []byte
	if codec == codecH265 {
		sei = []byte{39 << 1, 1, 5, byte(len(payload))} // PREFIX_SEI_NUT
	} else {
		sei = []byte{6, 5, byte(len(payload))}
	}
	sei = append(append(sei, payload...), 0x80)
	return append([][]byte{sei}, au...)
}

type recordedInit struct {
	data   []byte
	codecs string
	frags  []model.Fragment
}

// memSink keeps everything in memory.
type memSink struct {
	mu    sync.Mutex
	inits []*recordedInit
	fail  error
}

func (s *memSink) WriteInit(init []byte, codecs string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inits = append(s.inits, &recordedInit{data: bytes.Clone(init), codecs: codecs})
	return s.fail
}

func (s *memSink) WriteFragment(f model.Fragment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.inits) == 0 {
		panic("fragment before init")
	}
	f.Data = bytes.Clone(f.Data)
	in := s.inits[len(s.inits)-1]
	in.frags = append(in.frags, f)
	return s.fail
}

func (s *memSink) snapshot() []*recordedInit {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*recordedInit, len(s.inits))
	for i, in := range s.inits {
		c := *in
		c.frags = append([]model.Fragment(nil), in.frags...)
		out[i] = &c
	}
	return out
}

// checked is what verify learned from a recording.
type checked struct {
	inits        int
	videoSamples int
	audioSamples int
	seiFrames    []uint32
	fragments    int
	widths       []int
}

// verify parses every init and fragment back with mediacommon and checks the invariants a
// player and the storage rely on: tfdt continuous per track within an init, keyframe
// fragments start with a random access sample, fragments no longer than fragMax (+1 frame).
func verify(t *testing.T, inits []*recordedInit, codec videoCodec, fragMax time.Duration) checked {
	t.Helper()
	var c checked
	for ii, in := range inits {
		var init fmp4.Init
		if err := init.Unmarshal(bytes.NewReader(in.data)); err != nil {
			t.Fatalf("init %d does not parse: %v", ii, err)
		}
		c.inits++
		next := map[int]uint64{}
		videoID := 0
		for _, tr := range init.Tracks {
			if tr.Codec.IsVideo() {
				videoID = tr.ID
				vp := videoParams{codec: codec}
				switch cc := tr.Codec.(type) {
				case *fmp4.CodecH264:
					if err := vp.setSPS(cc.SPS); err != nil {
						t.Fatal(err)
					}
				case *fmp4.CodecH265:
					if err := vp.setSPS(cc.SPS); err != nil {
						t.Fatal(err)
					}
				}
				c.widths = append(c.widths, vp.width)
			}
		}
		if videoID == 0 {
			t.Fatalf("init %d has no video track", ii)
		}
		for fi, f := range in.frags {
			var parts fmp4.Parts
			if err := parts.Unmarshal(f.Data); err != nil {
				t.Fatalf("init %d fragment %d does not parse: %v", ii, fi, err)
			}
			if len(parts) != 1 {
				t.Fatalf("fragment holds %d moofs", len(parts))
			}
			c.fragments++
			if f.Duration > fragMax+50*time.Millisecond {
				t.Errorf("fragment %d lasts %v, more than %v", fi, f.Duration, fragMax)
			}
			if f.Start.IsZero() {
				t.Errorf("fragment %d has no start time", fi)
			}
			for _, pt := range parts[0].Tracks {
				if want, ok := next[pt.ID]; ok && pt.BaseTime != want {
					t.Errorf("init %d fragment %d track %d: tfdt %d, want %d (discontinuity)", ii, fi, pt.ID, pt.BaseTime, want)
				}
				if pt.ID == videoID {
					if fi == 0 && pt.BaseTime != 0 {
						t.Errorf("first fragment of init %d starts at tfdt %d", ii, pt.BaseTime)
					}
				}
				sum := pt.BaseTime
				for si, s := range pt.Samples {
					sum += uint64(s.Duration)
					if pt.ID != videoID {
						c.audioSamples++
						continue
					}
					c.videoSamples++
					au, err := s.GetH264()
					if err != nil {
						t.Fatalf("sample is not length-prefixed NAL units: %v", err)
					}
					vp := videoParams{codec: codec}
					_, info, _ := vp.scanAU(au)
					if si == 0 && f.Keyframe != info.randomAccess {
						t.Errorf("fragment %d: Keyframe=%v but first sample random access=%v", fi, f.Keyframe, info.randomAccess)
					}
					if s.IsNonSyncSample == info.randomAccess {
						t.Errorf("fragment %d sample %d: sync flag disagrees with content", fi, si)
					}
					for _, n := range au {
						if i := bytes.Index(n, seiUUID); i >= 0 && len(n) >= i+20 {
							c.seiFrames = append(c.seiFrames, binary.BigEndian.Uint32(n[i+16:]))
						}
					}
				}
				next[pt.ID] = sum
			}
		}
	}
	return c
}

// rtpEncode packetizes access units at 25 fps.
func rtpEncode(t testing.TB, forma format.Format, aus [][][]byte) []*rtp.Packet {
	t.Helper()
	var out []*rtp.Packet
	switch f := forma.(type) {
	case *format.H264:
		enc, err := f.CreateEncoder()
		if err != nil {
			t.Fatal(err)
		}
		for i, au := range aus {
			pkts, err := enc.Encode(au)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pkts {
				p.Timestamp = 1000 + uint32(i)*3600
			}
			out = append(out, pkts...)
		}
	case *format.H265:
		enc, err := f.CreateEncoder()
		if err != nil {
			t.Fatal(err)
		}
		for i, au := range aus {
			pkts, err := enc.Encode(au)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pkts {
				p.Timestamp = 1000 + uint32(i)*3600
			}
			out = append(out, pkts...)
		}
	}
	return out
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(p)))
	return len(p), nil
}

func h264Desc() (*description.Session, *format.H264) {
	f := &format.H264{PayloadTyp: 96, PacketizationMode: 1}
	return &description.Session{Medias: []*description.Media{{Type: description.MediaTypeVideo, Formats: []format.Format{f}}}}, f
}

// needTool skips (or, in CI, fails) when a tool is missing.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI: %v", name, err)
		}
		t.Skipf("%s not found (%v); skipping", name, err)
	}
	return p
}
