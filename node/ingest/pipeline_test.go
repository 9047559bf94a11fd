package ingest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/pion/rtp"

	"github.com/vigie-vms/vigie/model"
)

func feed(p *pipeline, medi *description.Media, forma format.Format, pkts []*rtp.Packet) {
	for _, pkt := range pkts {
		c := *pkt
		p.handle(medi, forma, &c)
	}
}

func TestPipelineH264InBandParams(t *testing.T) {
	aus := loadAUs(t, "testdata/h264_160x120.h264", codecH264)
	if len(aus) != 50 {
		t.Fatalf("testdata holds %d frames, want 50", len(aus))
	}
	for i := range aus {
		aus[i] = withSEI(codecH264, aus[i], uint32(i))
	}
	desc, f := h264Desc() // no sprop-parameter-sets: SPS/PPS arrive in-band only
	sink := &memSink{}
	p, _, err := newPipeline(desc, pipelineConfig{Sink: sink, FragmentMax: time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	// start mid-GOP: frames 0..4 belong to a GOP whose IDR was never seen
	feed(p, desc.Medias[0], f, rtpEncode(t, f, aus)[0:0])
	feed(p, desc.Medias[0], f, rtpEncode(t, f, aus[5:]))
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
	c := verify(t, sink.snapshot(), codecH264, time.Second)
	// frames 5..24 precede the IDR of frame 25: dropped (no parameter sets / keyframe yet)
	if c.videoSamples != 25 {
		t.Errorf("recorded %d frames, want the 25 from the first keyframe on", c.videoSamples)
	}
	if len(c.seiFrames) != 25 || c.seiFrames[0] != 25 || c.seiFrames[24] != 49 {
		t.Errorf("SEI frame counters = %v, want 25..49", c.seiFrames)
	}
	if c.inits != 1 || c.widths[0] != 160 {
		t.Errorf("inits=%d widths=%v", c.inits, c.widths)
	}
	if got := sink.snapshot()[0].codecs; got != "H264 160x120" {
		t.Errorf("codecs = %q", got)
	}
}

func TestPipelineFragmentsPerGOPOrSecond(t *testing.T) {
	aus := loadAUs(t, "testdata/h264_320x240.h264", codecH264)
	for _, max := range []time.Duration{time.Second, 400 * time.Millisecond} {
		desc, f := h264Desc()
		sink := &memSink{}
		p, _, err := newPipeline(desc, pipelineConfig{Sink: sink, FragmentMax: max})
		if err != nil {
			t.Fatal(err)
		}
		feed(p, desc.Medias[0], f, rtpEncode(t, f, aus))
		if err := p.close(); err != nil {
			t.Fatal(err)
		}
		inits := sink.snapshot()
		c := verify(t, inits, codecH264, max)
		if c.videoSamples != len(aus) {
			t.Errorf("max %v: %d samples, want %d", max, c.videoSamples, len(aus))
		}
		keys := 0
		var total time.Duration
		for _, fr := range inits[0].frags {
			if fr.Keyframe {
				keys++
			}
			total += fr.Duration
		}
		if keys != 2 { // 50 frames, GOP 25
			t.Errorf("max %v: %d keyframe fragments, want 2", max, keys)
		}
		if total != 2*time.Second {
			t.Errorf("max %v: fragments cover %v, want 2s", max, total)
		}
		if max == time.Second && c.fragments != 2 {
			t.Errorf("GOP of 1s: %d fragments, want 2", c.fragments)
		}
		if max < time.Second && c.fragments < 6 {
			t.Errorf("max %v: %d fragments, want >= 6", max, c.fragments)
		}
	}
}

func TestPipelineSPSChangeEmitsNewInit(t *testing.T) {
	small := loadAUs(t, "testdata/h264_160x120.h264", codecH264)
	big := loadAUs(t, "testdata/h264_320x240.h264", codecH264)
	all := append(append([][][]byte{}, small...), big...)
	desc, f := h264Desc()
	sink := &memSink{}
	p, _, err := newPipeline(desc, pipelineConfig{Sink: sink, FragmentMax: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	feed(p, desc.Medias[0], f, rtpEncode(t, f, all))
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
	inits := sink.snapshot()
	c := verify(t, inits, codecH264, time.Second)
	if c.inits != 2 || c.widths[0] != 160 || c.widths[1] != 320 {
		t.Fatalf("inits=%d widths=%v, want a 160 then a 320 wide init", c.inits, c.widths)
	}
	if c.videoSamples != len(all) {
		t.Errorf("%d samples, want %d (no frame lost across the change)", c.videoSamples, len(all))
	}
	if !strings.Contains(inits[1].codecs, "320x240") {
		t.Errorf("second init codecs %q", inits[1].codecs)
	}
	if !inits[1].frags[0].Keyframe {
		t.Error("first fragment after the change does not start with a keyframe")
	}
}

func TestPipelineH265(t *testing.T) {
	aus := loadAUs(t, "testdata/h265_160x120.h265", codecH265)
	f := &format.H265{PayloadTyp: 96}
	desc := &description.Session{Medias: []*description.Media{{Type: description.MediaTypeVideo, Formats: []format.Format{f}}}}
	sink := &memSink{}
	p, _, err := newPipeline(desc, pipelineConfig{Sink: sink, FragmentMax: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	feed(p, desc.Medias[0], f, rtpEncode(t, f, aus))
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
	c := verify(t, sink.snapshot(), codecH265, time.Second)
	if c.videoSamples != len(aus) || c.inits != 1 || c.widths[0] != 160 {
		t.Errorf("samples=%d/%d inits=%d widths=%v", c.videoSamples, len(aus), c.inits, c.widths)
	}
}

func TestPipelineAudioTracks(t *testing.T) {
	aus := loadAUs(t, "testdata/h264_160x120.h264", codecH264)
	vf := &format.H264{PayloadTyp: 96, PacketizationMode: 1}
	af := &format.MPEG4Audio{PayloadTyp: 97, Config: &mpeg4audio.AudioSpecificConfig{Type: 2, SampleRate: 16000, ChannelCount: 1},
		SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
	gf := &format.G711{PayloadTyp: 0, MULaw: true, SampleRate: 8000, ChannelCount: 1}
	xf := &format.Vorbis{PayloadTyp: 98, SampleRate: 48000, ChannelCount: 2, Configuration: []byte{1}}
	desc := &description.Session{Medias: []*description.Media{
		{Type: description.MediaTypeVideo, Formats: []format.Format{vf}},
		{Type: description.MediaTypeAudio, Formats: []format.Format{af}},
		{Type: description.MediaTypeAudio, Formats: []format.Format{gf}},
		{Type: description.MediaTypeAudio, Formats: []format.Format{xf}},
	}}
	sink := &memSink{}
	p, sel, err := newPipeline(desc, pipelineConfig{Sink: sink, FragmentMax: time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if len(sel.medias()) != 3 || len(sel.skipped) != 1 || !strings.Contains(sel.skipped[0], "Vorbis") {
		t.Fatalf("selected %d medias, skipped %v", len(sel.medias()), sel.skipped)
	}
	aenc, _ := af.CreateEncoder()
	genc, _ := gf.CreateEncoder()
	vpkts := rtpEncode(t, vf, aus)
	// interleave: per video frame (40 ms), ~0.64 AAC frames at 16 kHz and one 320-sample G.711 packet
	aacN, aacTS := 0, uint32(0)
	for i, pkt := range vpkts {
		c := *pkt
		p.handle(desc.Medias[0], vf, &c)
		if !pkt.Marker {
			continue
		}
		frame := i
		for aacTS <= uint32(frame)*640 {
			pk, err := aenc.Encode([][]byte{{0x21, 0x10, 0x04, byte(aacN)}})
			if err != nil {
				t.Fatal(err)
			}
			pk[0].Timestamp = 5000 + aacTS
			p.handle(desc.Medias[1], af, pk[0])
			aacTS += 1024
			aacN++
		}
		gp, err := genc.Encode(make([]byte, 320))
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range gp {
			g.Timestamp = 7000 + uint32(frame)*320
			p.handle(desc.Medias[2], gf, g)
		}
	}
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
	inits := sink.snapshot()
	c := verify(t, inits, codecH264, time.Second)
	if c.audioSamples == 0 {
		t.Fatal("no audio sample recorded")
	}
	if c.videoSamples != len(aus) {
		t.Errorf("video samples %d, want %d", c.videoSamples, len(aus))
	}
	if got := inits[0].codecs; got != "H264 160x120, MPEG-4 audio, G711 (as LPCM)" {
		t.Errorf("codecs = %q", got)
	}
	// Every sample holds its own bytes, whether its fragment was written in place (headers in
	// front of the video samples, audio appended after them) or copied.
	var video, aac [][]byte
	for _, f := range inits[0].frags {
		var parts fmp4.Parts
		if err := parts.Unmarshal(f.Data); err != nil {
			t.Fatal(err)
		}
		for _, pt := range parts[0].Tracks {
			for _, smp := range pt.Samples {
				switch pt.ID {
				case 1:
					video = append(video, smp.Payload)
				case 2:
					aac = append(aac, smp.Payload)
				}
			}
		}
	}
	for i, smp := range video {
		if want := appendAVCC(nil, aus[i]); !bytes.Equal(smp, want) {
			t.Fatalf("video sample %d: %d bytes differ from the access unit sent (%d bytes)", i, len(smp), len(want))
		}
	}
	for i, smp := range aac {
		if want := []byte{0x21, 0x10, 0x04, byte(i)}; !bytes.Equal(smp, want) {
			t.Fatalf("AAC sample %d = % x, want % x", i, smp, want)
		}
	}
	if len(aac) < len(aus)/2 {
		t.Errorf("%d AAC samples for %d video frames", len(aac), len(aus))
	}
}

func TestSelectTracksNoVideo(t *testing.T) {
	desc := &description.Session{Medias: []*description.Media{
		{Type: description.MediaTypeVideo, Formats: []format.Format{&format.MJPEG{}}},
		{Type: description.MediaTypeAudio, Formats: []format.Format{&format.G711{PayloadTyp: 8, SampleRate: 8000, ChannelCount: 1}}},
	}}
	_, err := selectTracks(desc)
	if !errors.Is(err, ErrNoVideo) {
		t.Fatalf("err = %v, want ErrNoVideo", err)
	}
	for _, want := range []string{"M-JPEG", "G711"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name the offered %s", err, want)
		}
	}
}

type failSink struct{ memSink }

func (s *failSink) WriteFragment(model.Fragment) error { return errors.New("disk full") }

func TestPipelineSinkErrorIsSticky(t *testing.T) {
	aus := loadAUs(t, "testdata/h264_160x120.h264", codecH264)
	desc, f := h264Desc()
	var failed error
	sink := &failSink{}
	p, _, err := newPipeline(desc, pipelineConfig{Sink: sink, FragmentMax: time.Second, OnFail: func(err error) { failed = err }})
	if err != nil {
		t.Fatal(err)
	}
	feed(p, desc.Medias[0], f, rtpEncode(t, f, aus))
	if !errors.Is(failed, ErrSink) || !strings.Contains(failed.Error(), "disk full") {
		t.Fatalf("OnFail got %v", failed)
	}
	if !errors.Is(p.close(), ErrSink) {
		t.Error("close does not report the sink error")
	}
}

// Whole frames lost in a sequence-number gap (a sender that dropped them for a slow
// reader) are counted as dropped, so the loss is never silent.
func TestPipelineCountsFramesLostInAGap(t *testing.T) {
	aus := loadAUs(t, "testdata/h264_160x120.h264", codecH264)
	for i := range aus {
		aus[i] = withSEI(codecH264, aus[i], uint32(i))
	}
	desc, f := h264Desc()
	sink := &memSink{}
	h := newHealth("cam", model.CameraConnecting)
	p, _, err := newPipeline(desc, pipelineConfig{Sink: sink, Health: h, FragmentMax: time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	before := FramesDropped()[DropRTPLoss]
	var kept []*rtp.Packet
	lostPkts := 0
	for i, au := range aus {
		pkts := rtpEncode(t, f, [][][]byte{au})
		for j, pkt := range pkts {
			pkt.Timestamp = 1000 + uint32(i)*3600
			pkt.SequenceNumber = uint16(len(kept) + lostPkts + j)
		}
		if i >= 30 && i < 35 {
			lostPkts += len(pkts)
			continue
		}
		kept = append(kept, pkts...)
	}
	for _, pkt := range kept {
		if pkt.Timestamp == 1000+35*3600 && h.lost.Load() == 0 {
			h.lost.Add(uint64(lostPkts)) // what the RTSP client reports before the packet
		}
		c := *pkt
		p.handle(desc.Medias[0], f, &c)
	}
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
	c := verify(t, sink.snapshot(), codecH264, time.Second)
	if c.videoSamples != 45 {
		t.Errorf("recorded %d frames, want 45 (50 sent, 5 lost)", c.videoSamples)
	}
	if got := h.dropped.Load(); got != 5 {
		t.Errorf("camera dropped-frame count = %d, want the 5 frames lost in the gap", got)
	}
	if got := FramesDropped()[DropRTPLoss] - before; got != 5 {
		t.Errorf("process %s count grew by %d, want 5", DropRTPLoss, got)
	}
	if got := FramesDropped()[DropDepacketize]; got != 0 {
		t.Errorf("%s = %d, want 0 (no frame was cut)", DropDepacketize, got)
	}
}

// A camera that never sets the marker bit (the FLIR M400 does so) and fragments its frames
// over several packets: each frame comes out of the depacketizer only when the next
// frame's first NAL unit is complete, several packets into it. Every frame still gets its
// own timestamp: samples 40 ms apart, none squeezed to a tick.
func TestPipelineWithoutMarkerBitsKeepsFrameTimes(t *testing.T) {
	aus := loadAUs(t, "testdata/h264_320x240.h264", codecH264)
	desc, f := h264Desc()
	enc := &rtph264.Encoder{PayloadType: 96, PayloadMaxSize: 100, PacketizationMode: 1}
	if err := enc.Init(); err != nil {
		t.Fatal(err)
	}
	var pkts []*rtp.Packet
	fragmented := 0
	for i, au := range aus {
		ps, err := enc.Encode(au)
		if err != nil {
			t.Fatal(err)
		}
		if ps[0].Payload[0]&0x1f == 28 {
			fragmented++
		}
		for _, pk := range ps {
			pk.Timestamp = 1000 + uint32(i)*3600
			pk.Marker = false
		}
		pkts = append(pkts, ps...)
	}
	if fragmented < len(aus)/2 {
		t.Fatalf("only %d of %d frames start with a fragmented NAL unit: the test needs them split", fragmented, len(aus))
	}
	sink := &memSink{}
	p, _, err := newPipeline(desc, pipelineConfig{Sink: sink, FragmentMax: time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	feed(p, desc.Medias[0], f, pkts)
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
	inits := sink.snapshot()
	c := verify(t, inits, codecH264, time.Second)
	// The last frame never ends (no marker, no next timestamp).
	if c.videoSamples != len(aus)-1 {
		t.Errorf("%d video samples, want %d", c.videoSamples, len(aus)-1)
	}
	for fi, fr := range inits[0].frags {
		var parts fmp4.Parts
		if err := parts.Unmarshal(fr.Data); err != nil {
			t.Fatal(err)
		}
		for si, smp := range parts[0].Tracks[0].Samples {
			if smp.Duration != 3600 {
				t.Fatalf("fragment %d sample %d lasts %d ticks, want 3600 (40 ms)", fi, si, smp.Duration)
			}
		}
	}
}
