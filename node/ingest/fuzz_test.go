package ingest

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/sdp"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/pion/rtp"

	"github.com/vigie-vms/vigie/model"
)

// discardSink accepts everything.
type discardSink struct{ inits, frags int }

func (s *discardSink) WriteInit([]byte, string) error     { s.inits++; return nil }
func (s *discardSink) WriteFragment(model.Fragment) error { s.frags++; return nil }

// FuzzSelectTracks: arbitrary SDP text through gortsplib's parser and our track selection
// and pipeline construction never panics.
func FuzzSelectTracks(f *testing.F) {
	f.Add("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n" +
		"a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z0LAHtkDxWhAAAADAEAAAAwDxYuS,aMuMsg==\r\n" +
		"m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/16000/1\r\na=fmtp:97 streamtype=5; mode=AAC-hbr; config=1408; sizelength=13; indexlength=3; indexdeltalength=3\r\n")
	f.Add("v=0\r\ns=x\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\na=fmtp:96 sprop-vps=AAAA; sprop-sps=QgEB; sprop-pps=RAHA\r\n")
	f.Add("v=0\r\ns=x\r\nm=audio 0 RTP/AVP 0\r\nm=video 0 RTP/AVP 26\r\n")
	f.Fuzz(func(t *testing.T, text string) {
		var sd sdp.SessionDescription
		if err := sd.Unmarshal([]byte(text)); err != nil {
			return
		}
		var desc description.Session
		if err := desc.Unmarshal(&sd); err != nil {
			return
		}
		p, sel, err := newPipeline(&desc, pipelineConfig{Sink: &discardSink{}, FragmentMax: time.Second})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if len(sel.medias()) == 0 || p.video.format == nil {
			t.Fatal("pipeline without a video track")
		}
	})
}

// packetsBlob serialises packets as (uint16 length, bytes)*, the fuzzer's input format.
func packetsBlob(pkts []*rtp.Packet) []byte {
	var b []byte
	for _, p := range pkts {
		raw, _ := p.Marshal()
		b = binary.BigEndian.AppendUint16(b, uint16(len(raw)))
		b = append(b, raw...)
	}
	return b
}

// FuzzRTPToSegmenter: arbitrary RTP packets into the H.264 and H.265 pipelines never panic,
// and whatever comes out parses back as fMP4.
func FuzzRTPToSegmenter(f *testing.F) {
	aus := loadAUs(f, "testdata/h264_160x120.h264", codecH264)
	_, hf := h264Desc()
	f.Add(false, packetsBlob(rtpEncode(f, hf, aus[:30])))
	haus := loadAUs(f, "testdata/h265_160x120.h265", codecH265)
	f.Add(true, packetsBlob(rtpEncode(f, &format.H265{PayloadTyp: 96}, haus[:30])))
	f.Fuzz(func(t *testing.T, h265 bool, blob []byte) {
		var forma format.Format = &format.H264{PayloadTyp: 96, PacketizationMode: 1}
		if h265 {
			forma = &format.H265{PayloadTyp: 96}
		}
		desc := &description.Session{Medias: []*description.Media{{Type: description.MediaTypeVideo, Formats: []format.Format{forma}}}}
		sink := &memSink{}
		p, _, err := newPipeline(desc, pipelineConfig{Sink: sink, FragmentMax: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		for len(blob) >= 2 {
			n := int(binary.BigEndian.Uint16(blob))
			blob = blob[2:]
			if n > len(blob) {
				n = len(blob)
			}
			var pkt rtp.Packet
			if err := pkt.Unmarshal(blob[:n]); err == nil {
				p.handle(desc.Medias[0], forma, &pkt)
			}
			blob = blob[n:]
		}
		if err := p.close(); err != nil {
			t.Fatal(err)
		}
		for _, in := range sink.snapshot() {
			var init fmp4.Init
			if err := init.Unmarshal(bytes.NewReader(in.data)); err != nil {
				t.Fatalf("init does not parse: %v", err)
			}
			for _, fr := range in.frags {
				var parts fmp4.Parts
				if err := parts.Unmarshal(fr.Data); err != nil {
					t.Fatalf("fragment does not parse: %v", err)
				}
			}
		}
	})
}

// FuzzScanAU: our NAL unit scan and parameter-set handling on arbitrary bytes never panics,
// and parameter sets it accepts make an init section mediacommon can write.
func FuzzScanAU(f *testing.F) {
	for _, name := range []string{"testdata/h264_160x120.h264", "testdata/h265_160x120.h265"} {
		codec := codecH264
		if name[len(name)-1] == '5' {
			codec = codecH265
		}
		aus := loadAUs(f, name, codec)
		var b []byte
		for _, n := range aus[0] {
			b = binary.BigEndian.AppendUint16(b, uint16(len(n)))
			b = append(b, n...)
		}
		f.Add(codec == codecH265, b)
	}
	f.Fuzz(func(t *testing.T, h265 bool, blob []byte) {
		vp := videoParams{codec: codecH264}
		if h265 {
			vp.codec = codecH265
		}
		var au [][]byte
		for len(blob) >= 2 {
			n := int(binary.BigEndian.Uint16(blob))
			blob = blob[2:]
			if n > len(blob) {
				n = len(blob)
			}
			au = append(au, blob[:n])
			blob = blob[n:]
		}
		out, _, _ := vp.scanAU(au)
		for _, n := range out {
			if len(n) == 0 {
				t.Fatal("empty NAL unit kept")
			}
		}
		_ = vp.describe()
		if vp.ready() {
			init := fmp4.Init{Tracks: []*fmp4.InitTrack{{ID: 1, TimeScale: 90000, Codec: vp.fmp4Codec()}}}
			var buf seekablebuffer.Buffer
			_ = init.Marshal(&buf) // an error is fine (reported by the segmenter); a panic is not
		}
	})
}

// BenchmarkPipelineH264 measures depacketize + segment per frame (320x240, 25 fps, GOP 25,
// RTP packets of ≤1460 bytes), without network.
func BenchmarkPipelineH264(b *testing.B) {
	aus := loadAUs(b, "testdata/h264_320x240.h264", codecH264)
	desc, f := h264Desc()
	pkts := rtpEncode(b, f, aus)
	perFrame := make([][]*rtp.Packet, 0, len(aus))
	var cur []*rtp.Packet
	for _, p := range pkts {
		cur = append(cur, p)
		if p.Marker {
			perFrame = append(perFrame, cur)
			cur = nil
		}
	}
	sink := &discardSink{}
	p, _, err := newPipeline(desc, pipelineConfig{Sink: sink, FragmentMax: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	bytesPerLoop := 0
	for _, fr := range perFrame {
		for _, pk := range fr {
			bytesPerLoop += len(pk.Payload)
		}
	}
	b.SetBytes(int64(bytesPerLoop / len(perFrame)))
	b.ReportAllocs()
	var pkt rtp.Packet
	seq := uint16(0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, src := range perFrame[i%len(perFrame)] {
			pkt = *src
			pkt.SequenceNumber = seq
			pkt.Timestamp = uint32(i) * 3600
			seq++
			p.handle(desc.Medias[0], f, &pkt)
		}
	}
	b.StopTimer()
	if sink.frags == 0 && b.N > 100 {
		b.Fatal("no fragment written")
	}
}
