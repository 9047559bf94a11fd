package depack

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"
)

// sentinels are the errors callers test with errors.Is: both decoders must agree on each.
var sentinels = []error{
	rtph264.ErrMorePacketsNeeded,
	rtph264.ErrNonStartingPacketAndNoPrevious,
	rtph265.ErrMorePacketsNeeded,
	rtph265.ErrNonStartingPacketAndNoPrevious,
	h264.ErrAnnexBNoNALUs,
}

// splitAUs splits an Annex-B elementary stream into access units with mediacommon's
// Annex-B parser: a new access unit starts at a non-VCL NAL unit that may only lead one
// (AUD, SEI, parameter sets) or at a first slice, once the current one has a picture.
func splitAUs(tb testing.TB, stream []byte, isH265 bool) [][][]byte {
	tb.Helper()
	var nalus h264.AnnexB
	if err := nalus.Unmarshal(stream); err != nil {
		tb.Fatalf("split Annex-B stream: %v", err)
	}
	var aus [][][]byte
	var cur [][]byte
	hasVCL := false
	for _, n := range nalus {
		vcl, first, leads := classify(n, isH265)
		if hasVCL && (leads || (vcl && first)) {
			aus = append(aus, cur)
			cur, hasVCL = nil, false
		}
		cur = append(cur, n)
		hasVCL = hasVCL || vcl
	}
	if len(cur) > 0 {
		aus = append(aus, cur)
	}
	if len(aus) == 0 {
		tb.Fatal("clip has no access unit")
	}
	return aus
}

// classify says whether n is a slice, whether it is the first slice of its picture, and
// whether (not being a slice) it can only lead an access unit.
func classify(n []byte, isH265 bool) (vcl, first, leads bool) {
	if isH265 {
		if len(n) < 3 {
			return false, false, false
		}
		typ := (n[0] >> 1) & 0x3f
		switch {
		case typ < 32:
			return true, n[2]&0x80 != 0, false
		case typ <= 35, typ == 39:
			return false, false, true
		}
		return false, false, false
	}
	if len(n) < 2 {
		return false, false, false
	}
	switch typ := n[0] & 0x1f; {
	case typ >= 1 && typ <= 5:
		return true, n[1]&0x80 != 0, false // first_mb_in_slice == 0 is ue(v) "1"
	case typ >= 6 && typ <= 9:
		return false, false, true
	}
	return false, false, false
}

// packetize encodes access units with gortsplib's own encoder; access unit i gets RTP
// timestamp 1000+3600*i (25 fps at 90 kHz).
func packetize(tb testing.TB, aus [][][]byte, isH265 bool, payloadMax int) []*rtp.Packet {
	tb.Helper()
	ssrc, seq := uint32(0x1234), uint16(65000) // wraps inside the clip
	var enc interface {
		Encode([][]byte) ([]*rtp.Packet, error)
	}
	if isH265 {
		e := &rtph265.Encoder{PayloadType: 96, SSRC: &ssrc, InitialSequenceNumber: &seq, PayloadMaxSize: payloadMax}
		if err := e.Init(); err != nil {
			tb.Fatal(err)
		}
		enc = e
	} else {
		e := &rtph264.Encoder{PayloadType: 96, SSRC: &ssrc, InitialSequenceNumber: &seq, PayloadMaxSize: payloadMax, PacketizationMode: 1}
		if err := e.Init(); err != nil {
			tb.Fatal(err)
		}
		enc = e
	}
	var pkts []*rtp.Packet
	for i, au := range aus {
		ps, err := enc.Encode(au)
		if err != nil {
			tb.Fatalf("encode access unit %d: %v", i, err)
		}
		for _, p := range ps {
			p.Timestamp = 1000 + uint32(i)*3600
			p.Payload = bytes.Clone(p.Payload) // the encoder aliases single NAL units
		}
		pkts = append(pkts, ps...)
	}
	return pkts
}

func clonePacket(p *rtp.Packet) *rtp.Packet {
	c := *p
	c.Payload = bytes.Clone(p.Payload)
	return &c
}

// pair feeds the same packets to gortsplib's decoder and to ours.
type pair struct {
	isH265 bool
	ref    func(*rtp.Packet) ([][]byte, error)
	dec    *Decoder
	n      int // packets fed
	aus    int // access units returned
	nalus  int
}

func newPair(tb testing.TB, isH265 bool) *pair {
	tb.Helper()
	p := &pair{isH265: isH265}
	var err error
	if isH265 {
		r := &rtph265.Decoder{}
		if err := r.Init(); err != nil {
			tb.Fatal(err)
		}
		p.ref = r.Decode
		p.dec, err = NewH265()
	} else {
		r := &rtph264.Decoder{PacketizationMode: 1}
		if err := r.Init(); err != nil {
			tb.Fatal(err)
		}
		p.ref = r.Decode
		p.dec, err = NewH264(1)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// feed decodes pkt with both decoders and returns a description of how they differ, or
// "". Our decoder gets a copy of the packet that is overwritten right after Decode, so a
// result aliasing a packet payload shows up as a difference.
func (p *pair) feed(pkt *rtp.Packet) string {
	p.n++
	refAU, refErr := p.ref(clonePacket(pkt)) // gortsplib keeps references to payloads
	mine := clonePacket(pkt)
	au, err := p.dec.Decode(mine)
	for i := range mine.Payload {
		mine.Payload[i] = 0xAA
	}
	if d := diff(refAU, refErr, au, err); d != "" {
		return fmt.Sprintf("packet %d (seq %d, ts %d, marker %v, %d-byte payload % x…): %s",
			p.n, pkt.SequenceNumber, pkt.Timestamp, pkt.Marker, len(pkt.Payload), head(pkt.Payload, 8), d)
	}
	if au != nil {
		p.aus++
		p.nalus += len(au)
	}
	return ""
}

func head(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// diff compares two Decode results: error nil-ness and sentinels, then access units.
func diff(refAU [][]byte, refErr error, au [][]byte, err error) string {
	if (refErr == nil) != (err == nil) {
		return fmt.Sprintf("gortsplib error %v, ours %v", refErr, err)
	}
	for _, s := range sentinels {
		if errors.Is(refErr, s) != errors.Is(err, s) {
			return fmt.Sprintf("gortsplib error %q, ours %q (errors.Is(%q) differs)", refErr, err, s)
		}
	}
	if (refAU == nil) != (au == nil) {
		return fmt.Sprintf("gortsplib access unit nil=%v, ours nil=%v", refAU == nil, au == nil)
	}
	if len(refAU) != len(au) {
		return fmt.Sprintf("gortsplib returned %d NAL units, ours %d", len(refAU), len(au))
	}
	for i := range au {
		if !bytes.Equal(refAU[i], au[i]) {
			return fmt.Sprintf("NAL unit %d differs: gortsplib %d bytes % x…, ours %d bytes % x…",
				i, len(refAU[i]), head(refAU[i], 8), len(au[i]), head(au[i], 8))
		}
	}
	return ""
}

// feedAll feeds every packet and fails at the first difference.
func (p *pair) feedAll(tb testing.TB, pkts []*rtp.Packet) {
	tb.Helper()
	for _, pkt := range pkts {
		if d := p.feed(pkt); d != "" {
			tb.Fatal(d)
		}
	}
}

// clip is an Annex-B elementary stream to packetize.
type clip struct {
	name   string
	isH265 bool
	data   []byte
}

func readTestdata(tb testing.TB, rel string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.FromSlash(rel))
	if err != nil {
		tb.Fatalf("read clip: %v", err)
	}
	return b
}
