package depack

import (
	"bytes"
	"testing"

	"github.com/pion/rtp"
)

// Fuzz input format: byte 0 bit 0 selects H.265; then packets, each as
//
//	flags: bit 0 marker; bits 1-2 sequence-number step (+1, +0, +2, -1);
//	       bits 3-4 timestamp step (+0, +3600, -3600, +1); bits 5-7 payload length / 256
//	length: payload length % 256
//	payload (cut short by the end of the input)
var (
	fuzzSeqSteps = [4]uint16{1, 0, 2, 0xffff}
	fuzzTSSteps  = [4]uint32{0, 3600, 1<<32 - 3600, 1}
)

const fuzzMaxPayload = 8*256 - 1

func parseFuzzInput(data []byte) (isH265 bool, pkts []*rtp.Packet) {
	if len(data) == 0 {
		return false, nil
	}
	isH265 = data[0]&1 == 1
	data = data[1:]
	seq, ts := uint16(0), uint32(0)
	for len(data) >= 2 && len(pkts) < 2000 {
		f := data[0]
		n := min(int(f>>5)<<8|int(data[1]), len(data)-2)
		seq += fuzzSeqSteps[(f>>1)&3]
		ts += fuzzTSSteps[(f>>3)&3]
		pkts = append(pkts, &rtp.Packet{
			Header:  rtp.Header{Marker: f&1 == 1, SequenceNumber: seq, Timestamp: ts},
			Payload: data[2 : 2+n],
		})
		data = data[2+n:]
	}
	return isH265, pkts
}

// fuzzInput encodes packets in the fuzz input format; steps it cannot express (and those
// to the first packet) become +1 and +0.
func fuzzInput(isH265 bool, pkts []*rtp.Packet) []byte {
	b := []byte{0}
	if isH265 {
		b[0] = 1
	}
	for i, p := range pkts {
		if len(p.Payload) > fuzzMaxPayload {
			continue
		}
		var f byte
		if p.Marker {
			f |= 1
		}
		if i > 0 {
			prev := pkts[i-1]
			for j, s := range fuzzSeqSteps {
				if prev.SequenceNumber+s == p.SequenceNumber {
					f |= byte(j) << 1
					break
				}
			}
			for j, s := range fuzzTSSteps {
				if prev.Timestamp+s == p.Timestamp {
					f |= byte(j) << 3
					break
				}
			}
		}
		f |= byte(len(p.Payload)>>8) << 5
		b = append(b, f, byte(len(p.Payload)))
		b = append(b, p.Payload...)
	}
	return b
}

// synthetic access units: parameter sets, a keyframe and P-frames with recognisable bytes.
func syntheticAUs(isH265 bool) [][][]byte {
	body := func(n int, seed byte) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i*7)
		}
		return b
	}
	if isH265 {
		return [][][]byte{
			{append([]byte{0x40, 0x01}, body(20, 1)...), append([]byte{0x42, 0x01}, body(30, 2)...), append([]byte{0x44, 0x01}, body(6, 3)...), append([]byte{0x26, 0x01, 0x80}, body(300, 4)...)},
			{append([]byte{0x02, 0x01, 0x80}, body(90, 5)...)},
			{append([]byte{0x02, 0x01, 0x80}, body(40, 6)...), append([]byte{0x02, 0x01, 0x00}, body(40, 7)...)},
		}
	}
	return [][][]byte{
		{append([]byte{0x67}, body(12, 1)...), append([]byte{0x68}, body(4, 2)...), append([]byte{0x65, 0x88}, body(300, 3)...)},
		{append([]byte{0x41, 0x9a}, body(90, 4)...)},
		{append([]byte{0x41, 0x9a}, body(40, 5)...), append([]byte{0x41, 0x1a}, body(40, 6)...)},
	}
}

// FuzzDecodeMatchesGortsplib: for any packet sequence, our decoder returns after every
// packet what gortsplib's returns (errors, sentinels, access units byte for byte).
func FuzzDecodeMatchesGortsplib(f *testing.F) {
	for _, isH265 := range []bool{false, true} {
		aus := syntheticAUs(isH265)
		for _, size := range []int{60, 120, 1400} {
			pkts := packetize(f, aus, isH265, size)
			f.Add(fuzzInput(isH265, pkts))
			for _, p := range pkts {
				p.Marker = false
			}
			f.Add(fuzzInput(isH265, pkts))
		}
	}
	clipPkts := packetize(f, splitAUs(f, readTestdata(f, "../testdata/h264_160x120.h264"), false)[:3], false, 300)
	f.Add(fuzzInput(false, clipPkts))
	// Annex-B wrapped NAL units, then a CostarHD FU-A, then STAP-A padding.
	f.Add(fuzzInput(false, []*rtp.Packet{
		pkt(1, 0, true, 0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2),
		pkt(2, 3600, true, 0x5c, 0xc1, 7, 8),
		pkt(3, 7200, true, 24, 0, 1, 0x09, 0, 2, 0x41, 1, 0, 0, 0),
	}))
	f.Add(fuzzInput(false, []*rtp.Packet{
		pkt(1, 0, true, 0x5c, 0xc1, 7, 8),
		pkt(2, 3600, false, 24, 0, 1, 0x09, 0, 2, 0x41, 1, 0, 0),
		pkt(3, 7200, true, 0x7c, 0x85, 1),
		pkt(4, 7200, true, 0x7c, 0x45, 2),
	}))

	f.Fuzz(func(t *testing.T, data []byte) {
		isH265, pkts := parseFuzzInput(data)
		p := newPair(t, isH265)
		for _, pk := range pkts {
			if d := p.feed(pk); d != "" {
				t.Fatal(d)
			}
		}
	})
}

// TestFuzzInputRoundTrip: the seeds mean what they say.
func TestFuzzInputRoundTrip(t *testing.T) {
	pkts := packetize(t, syntheticAUs(false), false, 120)
	isH265, got := parseFuzzInput(fuzzInput(false, pkts))
	if isH265 || len(got) != len(pkts) {
		t.Fatalf("round trip: h265=%v, %d packets, want %d", isH265, len(got), len(pkts))
	}
	for i := range got {
		if got[i].Marker != pkts[i].Marker || !bytes.Equal(got[i].Payload, pkts[i].Payload) ||
			got[i].SequenceNumber-got[0].SequenceNumber != pkts[i].SequenceNumber-pkts[0].SequenceNumber ||
			got[i].Timestamp-got[0].Timestamp != pkts[i].Timestamp-pkts[0].Timestamp {
			t.Fatalf("packet %d differs after round trip: %v %v", i, got[i], pkts[i])
		}
	}
}
