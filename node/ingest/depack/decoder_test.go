package depack

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"

	"github.com/vigie-vms/vigie/testdata/clips"
)

func pkt(seq uint16, ts uint32, marker bool, payload ...byte) *rtp.Packet {
	return &rtp.Packet{Header: rtp.Header{SequenceNumber: seq, Timestamp: ts, Marker: marker}, Payload: payload}
}

func TestNewH264RejectsInterleavedMode(t *testing.T) {
	for _, mode := range []int{0, 1} {
		if _, err := NewH264(mode); err != nil {
			t.Errorf("NewH264(%d): %v", mode, err)
		}
	}
	_, err := NewH264(2)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("packetization mode 2")) {
		t.Fatalf("NewH264(2) = %v, want an error naming packetization mode 2", err)
	}
}

// TestAccessUnits: what a recorder sees for the common packet shapes, byte for byte.
func TestAccessUnits(t *testing.T) {
	type step struct {
		pkt  *rtp.Packet
		want [][]byte // nil: no access unit
		err  error    // sentinel wanted, or errAny
	}
	errAny := errors.New("any error")
	cases := []struct {
		name   string
		isH265 bool
		steps  []step
	}{
		{"h264 FU-A reassembled, STAP-A split, marker ends the access unit", false, []step{
			{pkt(1, 90, false, 24, 0, 2, 0x67, 0xaa, 0, 1, 0x68), nil, rtph264.ErrMorePacketsNeeded},
			{pkt(2, 90, false, 0x7c, 0x85, 1, 2), nil, rtph264.ErrMorePacketsNeeded},
			{pkt(3, 90, false, 0x7c, 0x05, 3), nil, rtph264.ErrMorePacketsNeeded},
			{pkt(4, 90, true, 0x7c, 0x45, 4, 5), [][]byte{{0x67, 0xaa}, {0x68}, {0x65, 1, 2, 3, 4, 5}}, nil},
		}},
		{"h264 timestamp change without marker returns the previous access unit", false, []step{
			{pkt(1, 90, false, 0x65, 1), nil, rtph264.ErrMorePacketsNeeded},
			{pkt(2, 180, false, 0x41, 2), [][]byte{{0x65, 1}}, nil},
			{pkt(3, 270, true, 0x41, 3), [][]byte{{0x41, 2}}, nil}, // marker of a new timestamp is ignored
			{pkt(4, 270, true, 0x41, 4), [][]byte{{0x41, 3}, {0x41, 4}}, nil},
		}},
		{"h264 lost fragment drops the NAL unit", false, []step{
			{pkt(1, 90, false, 0x7c, 0x85, 1), nil, rtph264.ErrMorePacketsNeeded},
			{pkt(3, 90, true, 0x7c, 0x45, 3), nil, errAny},
			{pkt(4, 180, true, 0x41, 9), [][]byte{{0x41, 9}}, nil},
		}},
		{"h264 joining mid-fragment", false, []step{
			{pkt(1, 90, false, 0x7c, 0x05, 1), nil, rtph264.ErrNonStartingPacketAndNoPrevious},
			{pkt(2, 90, true, 0x7c, 0x45, 1), nil, rtph264.ErrNonStartingPacketAndNoPrevious},
		}},
		{"h264 CostarHD FU-A with start and end", false, []step{
			{pkt(1, 90, true, 0x5c, 0xc1, 7, 8), [][]byte{{0x41, 7, 8}}, nil},
		}},
		{"h264 STAP-A zero padding", false, []step{
			{pkt(1, 90, true, 24, 0, 1, 0x09, 0, 2, 0x41, 1, 0, 0, 0, 0), [][]byte{{0x09}, {0x41, 1}}, nil},
			{pkt(2, 180, true, 24, 0, 1, 0x09, 0, 0, 0, 7), nil, errAny},
		}},
		{"h264 Annex-B wrapped NAL units, for good", false, []step{
			{pkt(1, 90, true, 0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2), [][]byte{{0x67, 1}, {0x68, 2}}, nil},
			{pkt(2, 180, true, 0x41, 0, 0, 1, 0x41, 5), [][]byte{{0x41}, {0x41, 5}}, nil},
			{pkt(3, 270, true, 0, 0, 0, 1), nil, h264.ErrAnnexBNoNALUs},
		}},
		{"h264 unsupported STAP-B", false, []step{
			{pkt(1, 90, true, 25, 0, 0, 0, 1, 0x41), nil, errAny},
		}},
		{"h265 fragmentation unit and aggregation unit", true, []step{
			{pkt(1, 90, false, 48<<1, 1, 0, 2, 0x40, 1, 0, 3, 0x42, 1, 7), nil, rtph265.ErrMorePacketsNeeded},
			{pkt(2, 90, false, 49<<1, 1, 0x80|19, 1, 2), nil, rtph265.ErrMorePacketsNeeded},
			{pkt(3, 90, true, 49<<1, 1, 0x40|19, 3), [][]byte{{0x40, 1}, {0x42, 1, 7}, {19 << 1, 1, 1, 2, 3}}, nil},
		}},
		{"h265 does not split by timestamp", true, []step{
			{pkt(1, 90, false, 2, 1, 1), nil, rtph265.ErrMorePacketsNeeded},
			{pkt(2, 180, true, 2, 1, 2), [][]byte{{2, 1, 1}, {2, 1, 2}}, nil},
		}},
		{"h265 FU with start and end is an error", true, []step{
			{pkt(1, 90, true, 49<<1, 1, 0xc0|19, 1), nil, errAny},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, _ := NewH264(1)
			if c.isH265 {
				d, _ = NewH265()
			}
			for i, s := range c.steps {
				au, err := d.Decode(s.pkt)
				switch {
				case s.err == nil && err != nil:
					t.Fatalf("step %d: unexpected error %v", i, err)
				case s.err == errAny && err == nil, s.err != nil && s.err != errAny && !errors.Is(err, s.err):
					t.Fatalf("step %d: error %v, want %v", i, err, s.err)
				}
				if fmt.Sprintf("%x", au) != fmt.Sprintf("%x", s.want) {
					t.Fatalf("step %d: access unit %x, want %x", i, au, s.want)
				}
			}
		})
	}
}

// TestResultValidUntilNextDecode: a returned access unit is not touched by the Decoder
// nor by the caller reusing its packet buffers, until the next Decode — also when it is
// returned because the timestamp changed while the next access unit is already being
// filled, and when fragments of the next NAL unit have different timestamps. Appending to
// a returned NAL unit does not overwrite the next one.
func TestResultValidUntilNextDecode(t *testing.T) {
	aus := splitAUs(t, readTestdata(t, "../testdata/h264_320x240.h264"), false)
	for _, size := range []int{200, 1460} {
		for _, mode := range []string{"marker", "no-marker", "no-marker-jitter"} {
			t.Run(fmt.Sprintf("payload%d/%s", size, mode), func(t *testing.T) {
				pkts := packetize(t, aus, false, size)
				for i, p := range pkts {
					switch mode {
					case "no-marker":
						p.Marker = false
					case "no-marker-jitter":
						p.Marker = false
						if i%7 == 3 {
							p.Timestamp += 3600 // splits access units, also inside fragmented NAL units
						}
					}
				}
				ref := &rtph264.Decoder{PacketizationMode: 1}
				if err := ref.Init(); err != nil {
					t.Fatal(err)
				}
				d, _ := NewH264(1)
				buf := make([]byte, 0, 2000) // the caller's single, reused packet buffer
				got := 0
				for i, p := range pkts {
					want, _ := ref.Decode(clonePacket(p))
					reused := *p
					reused.Payload = append(buf[:0], p.Payload...)
					au, err := d.Decode(&reused)
					for j := range reused.Payload {
						reused.Payload[j] = 0xAA // the caller receives the next packet into its buffer
					}
					if (err == nil) != (want != nil) {
						t.Fatalf("packet %d: error %v, gortsplib access unit %d NAL units", i, err, len(want))
					}
					if want == nil {
						continue
					}
					got++
					if len(au) != len(want) {
						t.Fatalf("packet %d: %d NAL units, want %d", i, len(au), len(want))
					}
					for j := range au {
						if !bytes.Equal(au[j], want[j]) {
							t.Fatalf("packet %d: NAL unit %d changed before the next Decode", i, j)
						}
						if cap(au[j]) != len(au[j]) {
							t.Fatalf("packet %d: NAL unit %d has spare capacity %d: appending would overwrite the Decoder's buffer", i, j, cap(au[j])-len(au[j]))
						}
					}
				}
				if atLeast := len(aus) - 1; got < atLeast && (mode != "no-marker-jitter" || got < atLeast/2) {
					t.Fatalf("%d access units, clip has %d", got, len(aus))
				}
			})
		}
	}
}

// TestNoAllocationInSteadyState: once its buffers have grown, decoding a stream allocates
// nothing — with markers, and when access units are split by timestamp.
func TestNoAllocationInSteadyState(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	for _, c := range []clip{{"h264", false, clips.H264}, {"h265", true, clips.H265}} {
		aus := splitAUs(t, c.data, c.isH265)[:60]
		for _, marker := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/marker=%v", c.name, marker), func(t *testing.T) {
				if c.isH265 && !marker {
					t.Skip("rtph265 does not split access units by timestamp")
				}
				pkts := packetize(t, aus, c.isH265, 1200)
				for _, p := range pkts {
					p.Marker = p.Marker && marker
				}
				d, _ := NewH264(1)
				if c.isH265 {
					d, _ = NewH265()
				}
				n := 0
				run := func() {
					for _, p := range pkts {
						if au, err := d.Decode(p); err == nil && au != nil {
							n++
						}
					}
				}
				run() // warm up: buffers grow to the largest access unit
				n = 0
				if a := testing.AllocsPerRun(5, run); a != 0 {
					t.Fatalf("%.1f allocations per pass over %d packets, want 0", a, len(pkts))
				}
				if n < 5*(len(aus)-1) {
					t.Fatalf("%d access units in 5 passes, want about %d", n, 5*len(aus))
				}
			})
		}
	}
}

// TestHugeAccessUnitDoesNotPinMemory: after a one-off 6 MB frame, the Decoder drops the
// buffer that held it instead of keeping it for every later, small frame.
func TestHugeAccessUnitDoesNotPinMemory(t *testing.T) {
	d, _ := NewH264(1)
	seq := uint16(0)
	frag := bytes.Repeat([]byte{0x11}, 60000)
	if _, err := d.Decode(pkt(seq, 90, false, append([]byte{0x7c, 0x85}, frag...)...)); !errors.Is(err, rtph264.ErrMorePacketsNeeded) {
		t.Fatal(err)
	}
	for i := 1; i < 100; i++ {
		seq++
		h := byte(0x05)
		if i == 99 {
			h = 0x45
		}
		au, err := d.Decode(pkt(seq, 90, i == 99, append([]byte{0x7c, h}, frag...)...))
		if i == 99 {
			if err != nil || len(au) != 1 || len(au[0]) != 100*60000+1 {
				t.Fatalf("huge access unit: %d NAL units, err %v", len(au), err)
			}
		}
	}
	for i := range 3 {
		seq++
		if au, err := d.Decode(pkt(seq, uint32(180+90*i), true, 0x41, byte(i))); err != nil || len(au) != 1 {
			t.Fatalf("small access unit %d: %v", i, err)
		}
	}
	for i, b := range d.bufs {
		if cap(b.data) > maxRetainedBuffer {
			t.Errorf("buffer %d still holds %d bytes after small frames", i, cap(b.data))
		}
	}
}

// Timestamp names the access unit Decode returned, not the packet: without a marker bit,
// a frame comes out when the next frame's first NAL unit is complete, after a fragmented
// NAL unit spanning several packets of the next timestamp.
func TestTimestampOfReturnedAccessUnit(t *testing.T) {
	d, err := NewH264(1)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		p      *rtp.Packet
		wantAU bool
		wantTS uint32
	}{
		{pkt(1, 1000, false, 0x41, 0xaa), false, 0},       // frame at 1000, no marker
		{pkt(2, 4600, false, 0x7c, 0x85, 1, 2), false, 0}, // FU-A start of the frame at 4600
		{pkt(3, 4600, false, 0x7c, 0x05, 3, 4), false, 0}, // middle
		{pkt(4, 4600, false, 0x7c, 0x45, 5, 6), true, 1000},
		{pkt(5, 8200, true, 0x41, 0xbb), true, 4600}, // timestamp change: the frame at 4600
	}
	for i, s := range steps {
		au, err := d.Decode(s.p)
		if got := err == nil && au != nil; got != s.wantAU {
			t.Fatalf("packet %d: access unit %v (err %v), want %v", i+1, got, err, s.wantAU)
		}
		if s.wantAU && d.Timestamp() != s.wantTS {
			t.Fatalf("packet %d: returned access unit has timestamp %d, want %d", i+1, d.Timestamp(), s.wantTS)
		}
	}
}
