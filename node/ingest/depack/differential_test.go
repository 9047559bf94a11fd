package depack

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pion/rtp"

	"github.com/vigie-vms/vigie/testdata/clips"
)

func committedClips(tb testing.TB) []clip {
	return []clip{
		{"h264_160x120", false, readTestdata(tb, "../testdata/h264_160x120.h264")},
		{"h264_320x240", false, readTestdata(tb, "../testdata/h264_320x240.h264")},
		{"h265_160x120", true, readTestdata(tb, "../testdata/h265_160x120.h265")},
		{"testsrc2_h264", false, clips.H264},
		{"testsrc2_h265", true, clips.H265},
	}
}

var payloadSizes = []int{200, 1200, 1460}

// TestMatchesGortsplibOnClips: real clips packetized by gortsplib's encoders decode to the
// same access units, packet by packet, with both decoders — and to the clip's own access
// units.
func TestMatchesGortsplibOnClips(t *testing.T) {
	for _, c := range committedClips(t) {
		aus := splitAUs(t, c.data, c.isH265)
		for _, size := range payloadSizes {
			t.Run(fmt.Sprintf("%s/payload%d", c.name, size), func(t *testing.T) {
				pkts := packetize(t, aus, c.isH265, size)
				p := newPair(t, c.isH265)
				p.feedAll(t, pkts)
				if p.aus != len(aus) {
					t.Fatalf("%d access units decoded from %d packets, clip has %d", p.aus, len(pkts), len(aus))
				}
			})
		}
	}
}

// TestMatchesGortsplibOnGeneratedClips: clips made by ffmpeg with several slices per
// picture (several NAL units per access unit, so STAP-A / aggregation packets).
func TestMatchesGortsplibOnGeneratedClips(t *testing.T) {
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("ffmpeg is required on CI: %v", err)
		}
		t.Skipf("ffmpeg not on PATH (%v): skipping the multi-slice clips", err)
	}
	dir := t.TempDir()
	gen := []struct {
		name   string
		isH265 bool
		args   []string
	}{
		{"x264_4slices.h264", false, []string{"-c:v", "libx264", "-preset", "ultrafast", "-x264-params", "slices=4", "-bsf:v", "h264_mp4toannexb", "-f", "h264"}},
		{"x265_4slices.h265", true, []string{"-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "slices=4:log-level=error", "-f", "hevc"}},
	}
	for _, g := range gen {
		t.Run(g.name, func(t *testing.T) {
			out := filepath.Join(dir, g.name)
			args := append([]string{"-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
				"-i", "testsrc2=size=320x240:rate=25", "-t", "0.8", "-an", "-threads", "1"}, g.args...)
			args = append(args, out)
			if b, err := exec.Command(ffmpeg, args...).CombinedOutput(); err != nil {
				if os.Getenv("CI") == "true" {
					t.Fatalf("ffmpeg %v: %v\n%s", args, err, b)
				}
				t.Skipf("ffmpeg cannot encode %s (%v): %s", g.name, err, b)
			}
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			aus := splitAUs(t, data, g.isH265)
			for _, size := range payloadSizes {
				pkts := packetize(t, aus, g.isH265, size)
				p := newPair(t, g.isH265)
				p.feedAll(t, pkts)
				if p.aus != len(aus) {
					t.Fatalf("payload %d: %d access units decoded, clip has %d", size, p.aus, len(aus))
				}
			}
		})
	}
}

// damage is a way to break a packet stream the way networks and cameras do.
type damage struct {
	name  string
	apply func(r *rand.Rand, pkts []*rtp.Packet, isH265 bool) []*rtp.Packet
}

func isFU(p *rtp.Packet, isH265 bool) bool {
	if isH265 {
		return len(p.Payload) >= 3 && (p.Payload[0]>>1)&0x3f == 49
	}
	return len(p.Payload) >= 2 && p.Payload[0]&0x1f == 28
}

func isAggregate(p *rtp.Packet, isH265 bool) bool {
	if isH265 {
		return len(p.Payload) >= 2 && (p.Payload[0]>>1)&0x3f == 48
	}
	return len(p.Payload) >= 1 && p.Payload[0]&0x1f == 24
}

// fuHeader is the index of the FU header byte (S, E bits).
func fuHeader(isH265 bool) int {
	if isH265 {
		return 2
	}
	return 1
}

var basicDamages = []damage{
	{"drop", func(r *rand.Rand, pkts []*rtp.Packet, _ bool) []*rtp.Packet {
		var out []*rtp.Packet
		for _, p := range pkts {
			if r.IntN(100) >= 4 {
				out = append(out, p)
			}
		}
		return out
	}},
	{"duplicate", func(r *rand.Rand, pkts []*rtp.Packet, _ bool) []*rtp.Packet {
		var out []*rtp.Packet
		for _, p := range pkts {
			out = append(out, p)
			if r.IntN(100) < 4 {
				out = append(out, p)
			}
		}
		return out
	}},
	{"reorder", func(r *rand.Rand, pkts []*rtp.Packet, _ bool) []*rtp.Packet {
		for i := 0; i+1 < len(pkts); i++ {
			if r.IntN(100) < 4 {
				pkts[i], pkts[i+1] = pkts[i+1], pkts[i]
			}
		}
		return pkts
	}},
	{"no-marker", func(_ *rand.Rand, pkts []*rtp.Packet, _ bool) []*rtp.Packet {
		for _, p := range pkts {
			p.Marker = false
		}
		return pkts
	}},
	{"some-markers-lost", func(r *rand.Rand, pkts []*rtp.Packet, _ bool) []*rtp.Packet {
		for _, p := range pkts {
			if r.IntN(100) < 30 {
				p.Marker = false
			}
		}
		return pkts
	}},
	{"timestamp-jitter-no-marker", func(r *rand.Rand, pkts []*rtp.Packet, _ bool) []*rtp.Packet {
		// fragments of one NAL unit with different timestamps: the new access unit may
		// start in the middle of a fragmented NAL unit.
		for _, p := range pkts {
			p.Marker = p.Marker && r.IntN(2) == 0
			if r.IntN(100) < 10 {
				p.Timestamp += uint32(r.IntN(3)) * 3600
			}
		}
		return pkts
	}},
	{"truncate", func(r *rand.Rand, pkts []*rtp.Packet, _ bool) []*rtp.Packet {
		for _, p := range pkts {
			if r.IntN(100) < 4 {
				p.Payload = p.Payload[:r.IntN(len(p.Payload)+1)]
			}
		}
		return pkts
	}},
	{"flip-bytes", func(r *rand.Rand, pkts []*rtp.Packet, _ bool) []*rtp.Packet {
		for _, p := range pkts {
			if len(p.Payload) > 0 && r.IntN(100) < 5 {
				// the first bytes (headers) are the interesting ones
				i := r.IntN(min(len(p.Payload), 6))
				p.Payload[i] ^= byte(1 << r.IntN(8))
			}
		}
		return pkts
	}},
	{"fu-start-and-end", func(r *rand.Rand, pkts []*rtp.Packet, isH265 bool) []*rtp.Packet {
		h := fuHeader(isH265)
		for _, p := range pkts {
			if isFU(p, isH265) && r.IntN(100) < 20 {
				p.Payload[h] |= 0xC0 // CostarHD: start and end in one FU
			}
		}
		return pkts
	}},
	{"costarhd-small-frames", func(_ *rand.Rand, pkts []*rtp.Packet, isH265 bool) []*rtp.Packet {
		// a NAL unit sent as a single FU with both bits, instead of a single NALU packet
		var out []*rtp.Packet
		for _, p := range pkts {
			if !isFU(p, isH265) && !isAggregate(p, isH265) && len(p.Payload) > 2 && !isH265 {
				fu := append([]byte{p.Payload[0]&0xE0 | 28, 0xC0 | p.Payload[0]&0x1f}, p.Payload[1:]...)
				p.Payload = fu
			}
			out = append(out, p)
		}
		return out
	}},
	{"aggregate-padding", func(r *rand.Rand, pkts []*rtp.Packet, isH265 bool) []*rtp.Packet {
		for _, p := range pkts {
			if isAggregate(p, isH265) {
				p.Payload = append(p.Payload, make([]byte, r.IntN(5))...)
				if r.IntN(10) == 0 {
					p.Payload = append(p.Payload, 0, 0, 7) // padding that is not all zeros
				}
			}
		}
		return pkts
	}},
	{"annexb-wrapped", func(r *rand.Rand, pkts []*rtp.Packet, isH265 bool) []*rtp.Packet {
		// some servers send Annex-B (start codes) in single NAL unit packets, sometimes
		// several NAL units in one packet.
		var out []*rtp.Packet
		for i := 0; i < len(pkts); i++ {
			p := pkts[i]
			if !isFU(p, isH265) && !isAggregate(p, isH265) && r.IntN(100) < 30 {
				pl := append([]byte{0, 0, 0, 1}, p.Payload...)
				if i+1 < len(pkts) && !isFU(pkts[i+1], isH265) && !isAggregate(pkts[i+1], isH265) && pkts[i+1].Timestamp == p.Timestamp && r.IntN(2) == 0 {
					pl = append(append(pl, 0, 0, 1), pkts[i+1].Payload...)
					p.Marker = pkts[i+1].Marker
					i++
				}
				p.Payload = pl
			}
			out = append(out, p)
		}
		return out
	}},
	{"join-mid-stream", func(r *rand.Rand, pkts []*rtp.Packet, _ bool) []*rtp.Packet {
		return pkts[1+r.IntN(min(len(pkts)-1, 40)):]
	}},
	{"sequence-jumps", func(r *rand.Rand, pkts []*rtp.Packet, _ bool) []*rtp.Packet {
		off := uint16(0)
		for _, p := range pkts {
			if r.IntN(100) < 3 {
				off += uint16(r.IntN(5))
			}
			p.SequenceNumber += off
		}
		return pkts
	}},
}

// damages are the basic damages, then all of them at random at once.
var damages = append(basicDamages[:len(basicDamages):len(basicDamages)], damage{
	"everything", func(r *rand.Rand, pkts []*rtp.Packet, isH265 bool) []*rtp.Packet {
		for _, d := range basicDamages {
			if r.IntN(3) == 0 {
				pkts = d.apply(r, pkts, isH265)
			}
		}
		return pkts
	},
})

// TestMatchesGortsplibOnDamagedStreams: lost, duplicated, reordered, re-stamped,
// truncated and corrupted packets, FU packets with both start and end bits, padded
// aggregation packets and Annex-B wrapped NAL units give the same results (errors
// included) with both decoders.
func TestMatchesGortsplibOnDamagedStreams(t *testing.T) {
	cs := []clip{
		{"h264_160x120", false, readTestdata(t, "../testdata/h264_160x120.h264")},
		{"h265_160x120", true, readTestdata(t, "../testdata/h265_160x120.h265")},
	}
	for _, c := range cs {
		aus := splitAUs(t, c.data, c.isH265)
		for _, size := range []int{200, 1200} {
			clean := packetize(t, aus, c.isH265, size)
			for _, d := range damages {
				t.Run(fmt.Sprintf("%s/payload%d/%s", c.name, size, d.name), func(t *testing.T) {
					for seed := range uint64(4) {
						pkts := make([]*rtp.Packet, len(clean))
						for i, p := range clean {
							pkts[i] = clonePacket(p)
						}
						r := rand.New(rand.NewPCG(seed, 0xdec0de))
						pkts = d.apply(r, pkts, c.isH265)
						p := newPair(t, c.isH265)
						for _, pkt := range pkts {
							if s := p.feed(pkt); s != "" {
								t.Fatalf("seed %d: %s", seed, s)
							}
						}
					}
				})
			}
		}
	}
}

// TestMatchesGortsplibOnEdgeCases: hand-made sequences for limits and rare packet types.
func TestMatchesGortsplibOnEdgeCases(t *testing.T) {
	pk := func(seq uint16, ts uint32, marker bool, payload ...byte) *rtp.Packet {
		return &rtp.Packet{Header: rtp.Header{SequenceNumber: seq, Timestamp: ts, Marker: marker}, Payload: payload}
	}
	big := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	fuA := func(seq uint16, s, e bool, body []byte) *rtp.Packet {
		h := byte(5)
		if s {
			h |= 0x80
		}
		if e {
			h |= 0x40
		}
		return pk(seq, 90, e, append([]byte{0x7c, h}, body...)...)
	}
	fuH265 := func(seq uint16, s, e bool, body []byte) *rtp.Packet {
		h := byte(19)
		if s {
			h |= 0x80
		}
		if e {
			h |= 0x40
		}
		return pk(seq, 90, e, append([]byte{49 << 1, 1, h}, body...)...)
	}

	cases := []struct {
		name   string
		isH265 bool
		pkts   func() []*rtp.Packet
	}{
		{"h264 too many NAL units", false, func() []*rtp.Packet {
			var ps []*rtp.Packet
			for i := range 30 {
				ps = append(ps, pk(uint16(i), 90, i == 29, 0x41, byte(i)))
			}
			return ps
		}},
		{"h264 STAP-A with too many NAL units", false, func() []*rtp.Packet {
			pl := []byte{24}
			for range 40 {
				pl = append(pl, 0, 2, 0x41, 0x9a)
			}
			return []*rtp.Packet{pk(1, 90, true, pl...), pk(2, 180, true, 0x65, 1)}
		}},
		{"h265 aggregation unit with too many NAL units", true, func() []*rtp.Packet {
			pl := []byte{48 << 1, 1}
			for range 30 {
				pl = append(pl, 0, 3, 2, 1, 0x9a)
			}
			return []*rtp.Packet{pk(1, 90, true, pl...), pk(2, 180, true, 2, 1, 7)}
		}},
		{"h264 fragmented NAL unit too big", false, func() []*rtp.Packet {
			ps := []*rtp.Packet{fuA(0, true, false, big(60000, 1))}
			for i := 1; i < 145; i++ {
				ps = append(ps, fuA(uint16(i), false, i == 144, big(60000, byte(i))))
			}
			return append(ps, pk(145, 180, true, 0x65, 1, 2))
		}},
		{"h264 access unit too big", false, func() []*rtp.Packet {
			var ps []*rtp.Packet
			seq := uint16(0)
			for n := range 3 { // three 3.6 MB NAL units in one access unit
				ps = append(ps, fuA(seq, true, false, big(60000, byte(n))))
				seq++
				for i := 1; i < 60; i++ {
					p := fuA(seq, false, i == 59, big(60000, byte(i)))
					p.Marker = false
					ps = append(ps, p)
					seq++
				}
			}
			return append(ps, pk(seq, 90, true, 0x41, 1), pk(seq+1, 180, true, 0x65, 1, 2))
		}},
		{"h265 fragmented NAL unit too big", true, func() []*rtp.Packet {
			ps := []*rtp.Packet{fuH265(0, true, false, big(60000, 1))}
			for i := 1; i < 145; i++ {
				ps = append(ps, fuH265(uint16(i), false, i == 144, big(60000, byte(i))))
			}
			return append(ps, pk(145, 180, true, 2, 1, 7))
		}},
		{"h264 unsupported types", false, func() []*rtp.Packet {
			return []*rtp.Packet{
				pk(1, 90, false, 25, 1, 2), pk(2, 90, false, 26, 1), pk(3, 90, false, 27), pk(4, 90, true, 29, 0x85),
				fuA(5, false, true, []byte{1}), pk(6, 90, true, 0x65, 1),
			}
		}},
		{"h265 PACI and short packets", true, func() []*rtp.Packet {
			return []*rtp.Packet{
				pk(1, 90, false, 50<<1, 1, 2), pk(2, 90, false, 2), pk(3, 90, false, 49<<1, 1),
				fuH265(4, false, true, []byte{1}), pk(5, 90, true, 2, 1, 3),
			}
		}},
		{"h265 non-starting fragment after single NAL units", true, func() []*rtp.Packet {
			// rtph265 does not count single NAL unit packets as "a previous packet"
			return []*rtp.Packet{pk(1, 90, true, 2, 1, 3), fuH265(2, false, true, []byte{1}), fuH265(3, true, false, []byte{1}), fuH265(5, false, true, []byte{1})}
		}},
		{"h264 empty and short packets", false, func() []*rtp.Packet {
			return []*rtp.Packet{
				pk(1, 90, false), fuA(2, true, false, []byte{1, 2}), pk(3, 90, false, 28), fuA(3, false, true, []byte{3}),
				pk(4, 90, true, 24), pk(5, 90, true, 24, 0), pk(6, 90, true, 24, 0, 0, 0, 0), pk(7, 90, true, 24, 0, 5, 1),
			}
		}},
		{"h264 Annex-B with only start codes", false, func() []*rtp.Packet {
			return []*rtp.Packet{pk(1, 90, true, 0, 0, 0, 1, 0, 0, 1), pk(2, 180, true, 0x41, 1), pk(3, 270, true, 0, 0, 0, 1)}
		}},
		{"h264 joins in the middle of a fragmented NAL unit", false, func() []*rtp.Packet {
			return []*rtp.Packet{fuA(5, false, false, []byte{1}), fuA(6, false, true, []byte{2}), pk(7, 180, true, 0x65, 1)}
		}},
		{"h264 Annex-B with 3- and 4-byte start codes", false, func() []*rtp.Packet {
			return []*rtp.Packet{
				pk(1, 90, true, 0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 3, 0, 0),
				pk(2, 180, true, 0x41, 0, 0, 1, 0x41, 5),
				pk(3, 270, true, 0x41, 6),
			}
		}},
		{"h264 timestamp change into too many NAL units", false, func() []*rtp.Packet {
			pl := []byte{24}
			for range 30 {
				pl = append(pl, 0, 2, 0x41, 0x9a)
			}
			return []*rtp.Packet{pk(1, 90, false, 0x41, 1), pk(2, 180, true, pl...), pk(3, 270, true, 0x65, 1)}
		}},
		{"h264 timestamp change, packet with marker", false, func() []*rtp.Packet {
			return []*rtp.Packet{pk(1, 90, false, 0x67, 1), pk(2, 180, true, 0x65, 2), pk(3, 270, true, 0x41, 3), pk(4, 270, true, 0x41, 4)}
		}},
		{"h264 fragment starts before a timestamp change and ends after", false, func() []*rtp.Packet {
			a := fuA(3, true, false, []byte{1})
			b := fuA(4, false, true, []byte{2})
			b.Timestamp = 180
			c := fuA(6, true, false, []byte{3})
			c.Timestamp = 270
			d := fuA(7, false, true, []byte{4})
			d.Timestamp = 180
			d.Marker = false
			return []*rtp.Packet{pk(1, 90, false, 0x67, 1), pk(2, 90, false, 0x68, 1), a, b, pk(5, 180, false, 0x41, 9), c, d, pk(8, 360, true, 0x41, 5)}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newPair(t, c.isH265)
			p.feedAll(t, c.pkts())
		})
	}
}
