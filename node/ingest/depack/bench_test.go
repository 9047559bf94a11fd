package depack

import (
	"testing"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/pion/rtp"

	"github.com/vigie-vms/vigie/testdata/clips"
)

// benchPackets is the committed testsrc2 clip (640x360, 25 fps, 250 frames, ≈1 Mbit/s)
// packetized at 1460-byte payloads, like a camera streaming over UDP.
func benchPackets(b *testing.B) ([]*rtp.Packet, int64) {
	pkts := packetize(b, splitAUs(b, clips.H264, false), false, 1460)
	var n int64
	for _, p := range pkts {
		n += int64(len(p.Payload))
	}
	return pkts, n
}

// benchDecode runs one op = decoding the whole clip (10 s of video).
func benchDecode(b *testing.B, decode func(*rtp.Packet) ([][]byte, error)) {
	pkts, size := benchPackets(b)
	aus := 0
	for _, p := range pkts { // warm up: buffers grow to the largest access unit
		_, _ = decode(p)
	}
	b.ReportAllocs()
	b.SetBytes(size)
	for b.Loop() {
		for _, p := range pkts {
			if au, err := decode(p); err == nil && au != nil {
				aus++
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(pkts)), "ns/packet")
	if aus == 0 {
		b.Fatal("no access unit decoded")
	}
}

func BenchmarkDecodeH264(b *testing.B) {
	d, err := NewH264(1)
	if err != nil {
		b.Fatal(err)
	}
	benchDecode(b, d.Decode)
}

func BenchmarkDecodeH264Gortsplib(b *testing.B) {
	d := &rtph264.Decoder{PacketizationMode: 1}
	if err := d.Init(); err != nil {
		b.Fatal(err)
	}
	benchDecode(b, d.Decode)
}
