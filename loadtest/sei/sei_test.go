package sei

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

var sampleTags = []Tag{
	{Camera: "cam-0001", Frame: 0, SentAt: time.Unix(1_700_000_000, 123456789)},
	{Camera: "", Frame: 0, SentAt: time.Time{}}, // all zeros: exercises emulation prevention
	{Camera: "x", Frame: math.MaxUint64, SentAt: time.Unix(0, math.MaxInt64)},
	{Camera: "commune-lyon_042", Frame: 1 << 32, SentAt: time.Unix(0, 1)},
	{Camera: "\x00\x00\x00\x00\x03", Frame: 3, SentAt: time.Unix(0, 0x0000000300000003)},
	{Camera: strings.Repeat("a", MaxCameraLen), Frame: 7, SentAt: time.Unix(5, 0)},
}

func sameTag(a, b Tag) bool {
	return a.Camera == b.Camera && a.Frame == b.Frame && a.SentAt.Equal(b.SentAt) && a.SentAt.IsZero() == b.SentAt.IsZero()
}

func TestRoundTrip(t *testing.T) {
	for _, h265 := range []bool{false, true} {
		for _, want := range sampleTags {
			var nal []byte
			if h265 {
				nal = EncodeH265(want)
			} else {
				nal = EncodeH264(want)
			}
			got, ok, err := Decode(nal, h265)
			if err != nil || !ok {
				t.Fatalf("h265=%v %+v: Decode = ok %v, err %v", h265, want, ok, err)
			}
			if !sameTag(got, want) {
				t.Fatalf("h265=%v: got %+v, want %+v", h265, got, want)
			}
		}
	}
}

func TestNALHeaders(t *testing.T) {
	tag := sampleTags[0]
	if nal := EncodeH264(tag); nal[0] != 0x06 {
		t.Errorf("H.264 header %#x, want 0x06 (SEI, nal_ref_idc 0)", nal[0])
	}
	nal := EncodeH265(tag)
	if typ := (nal[0] >> 1) & 0x3f; typ != 39 || nal[1] != 1 {
		t.Errorf("H.265 header type %d tid %d, want prefix SEI 39, temporal_id_plus1 1", typ, nal[1])
	}
	// Last byte: rbsp_trailing_bits.
	if nal[len(nal)-1] != 0x80 {
		t.Errorf("last byte %#x, want 0x80", nal[len(nal)-1])
	}
}

// No start-code emulation may appear in the encoded NAL unit, whatever the tag holds.
func TestEmulationPrevention(t *testing.T) {
	for _, tag := range sampleTags {
		for _, nal := range [][]byte{EncodeH264(tag), EncodeH265(tag)} {
			for i := 0; i+2 < len(nal); i++ {
				if nal[i] == 0 && nal[i+1] == 0 && nal[i+2] <= 2 {
					t.Fatalf("%+v: start-code emulation at byte %d: % x", tag, i, nal)
				}
			}
			// And the reference unescaper agrees with ours on the payload.
			if got, want := unescape(nal), h264.EmulationPreventionRemove(nal); !bytes.Equal(got, want) {
				t.Fatalf("unescape differs from mediacommon:\n% x\n% x", got, want)
			}
		}
	}
}

func TestLongCameraIsTruncated(t *testing.T) {
	long := strings.Repeat("b", 300)
	got, ok, err := DecodeH264(EncodeH264(Tag{Camera: long, Frame: 1}))
	if !ok || err != nil {
		t.Fatalf("ok %v err %v", ok, err)
	}
	if got.Camera != long[:MaxCameraLen] {
		t.Fatalf("camera of %d bytes, want truncated to %d", len(got.Camera), MaxCameraLen)
	}
}

func TestNotOurs(t *testing.T) {
	// x264 writes its settings in a user_data_unregistered SEI with its own UUID.
	x264 := []byte{0x06, 0x05, 0x14,
		0xdc, 0x45, 0xe9, 0xbd, 0xe6, 0xd9, 0x48, 0xb7, 0x96, 0x2c, 0xd8, 0x20, 0xd9, 0x23, 0xee, 0xef,
		'x', '2', '6', '4', 0x80}
	cases := map[string][]byte{
		"empty":          nil,
		"slice":          {0x65, 0x88, 0x84, 0x00},
		"x264 user data": x264,
		"SPS":            {0x67, 0x4d, 0x00, 0x1f},
		// our UUID in a payload of another type (user_data_registered, 4) is not ours
		"other payload type": append(append([]byte{0x06, 0x04, 20}, TagUUID[:]...), 'V', 'G', 1, 0, 0x80),
	}
	for name, nal := range cases {
		if _, ok, err := DecodeH264(nal); ok || err != nil {
			t.Errorf("%s: ok %v err %v, want not ours", name, ok, err)
		}
	}
	// An H.264 SEI is not an H.265 SEI (byte 0x06 is H.265 type 3).
	if _, ok, _ := DecodeH265(EncodeH264(sampleTags[0])); ok {
		t.Error("H.264 SEI decoded as H.265")
	}
}

func TestMalformed(t *testing.T) {
	good := EncodeH264(Tag{Camera: "cam", Frame: 9, SentAt: time.Unix(1, 2)})
	// Layout: header(1) type(1) size(1) uuid(16) magic(2) version(1) camLen(1) cam(3) ...
	mutate := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), good...))
	}
	cases := map[string]struct {
		nal  []byte
		want string
	}{
		"truncated":    {mutate(func(b []byte) []byte { return b[:30] }), "NAL unit holds"},
		"bad magic":    {mutate(func(b []byte) []byte { b[19] = 'X'; return b }), "magic"},
		"bad version":  {mutate(func(b []byte) []byte { b[21] = 9; return b }), "version 9"},
		"camLen large": {mutate(func(b []byte) []byte { b[22] = 200; return b }), "camera id"},
		"size too small": {mutate(func(b []byte) []byte { b[2] = 18; return b }),
			"at least"},
	}
	for name, c := range cases {
		_, ok, err := DecodeH264(c.nal)
		if ok || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: ok %v err %v, want ErrMalformed mentioning %q", name, ok, err, c.want)
		}
	}
}

// Several SEI messages in one NAL unit: ours is found after a foreign one.
func TestSeveralMessages(t *testing.T) {
	want := Tag{Camera: "c1", Frame: 42, SentAt: time.Unix(3, 4)}
	ours := EncodeH264(want)
	// foreign message: type 1 (pic_timing) of 2 bytes, then our message (ours minus header).
	nal := append([]byte{0x06, 0x01, 0x02, 0xaa, 0xbb}, ours[1:]...)
	got, ok, err := DecodeH264(nal)
	if !ok || err != nil || !sameTag(got, want) {
		t.Fatalf("got %+v ok %v err %v", got, ok, err)
	}
}

func TestScanAnnexBAndAVCC(t *testing.T) {
	for _, h265 := range []bool{false, true} {
		enc := EncodeH264
		slice := []byte{0x65, 0x88, 0x00, 0x00, 0x03, 0x01, 0x42}
		if h265 {
			enc = EncodeH265
			slice = []byte{0x26, 0x01, 0xaf, 0x00, 0x00, 0x03, 0x01}
		}
		var annexB, avcc []byte
		var want []Tag
		for i := range 5 {
			tag := Tag{Camera: "cam", Frame: uint64(i), SentAt: time.Unix(1, int64(i)*40e6)}
			want = append(want, tag)
			for j, nal := range [][]byte{enc(tag), slice} {
				if j == 0 && i%2 == 0 {
					annexB = append(annexB, 0, 0, 0, 1) // 4-byte start code
				} else {
					annexB = append(annexB, 0, 0, 1)
				}
				annexB = append(annexB, nal...)
				avcc = binary.BigEndian.AppendUint32(avcc, uint32(len(nal)))
				avcc = append(avcc, nal...)
			}
		}
		for name, got := range map[string][]Tag{"annexb": ScanAnnexB(annexB, h265), "avcc": ScanAVCC(avcc, h265)} {
			if len(got) != len(want) {
				t.Fatalf("h265=%v %s: %d tags, want %d", h265, name, len(got), len(want))
			}
			for i := range want {
				if !sameTag(got[i], want[i]) {
					t.Fatalf("h265=%v %s: tag %d = %+v, want %+v", h265, name, i, got[i], want[i])
				}
			}
		}
	}
}

func TestSplitAnnexB(t *testing.T) {
	stream := []byte{0xff, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65, 3, 0, 0}
	got := SplitAnnexB(stream)
	want := [][]byte{{0x67, 1}, {0x68, 2}, {0x65, 3}}
	if len(got) != len(want) {
		t.Fatalf("got %d NAL units % x, want %d", len(got), got, len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("NAL %d = % x, want % x", i, got[i], want[i])
		}
	}
}

func TestAppendDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 128)
	tag := sampleTags[0]
	if n := testing.AllocsPerRun(100, func() { buf = AppendH264(buf[:0], tag) }); n != 0 {
		t.Errorf("AppendH264 allocates %v times per call", n)
	}
}

func FuzzDecodeH264(f *testing.F) {
	for _, tag := range sampleTags {
		f.Add(EncodeH264(tag))
	}
	f.Add([]byte{0x06})
	f.Add(append([]byte{0x06, 0xff, 0xff}, TagUUID[:]...))
	f.Fuzz(func(t *testing.T, nal []byte) {
		tag, ok, err := DecodeH264(nal)
		if ok && err != nil {
			t.Fatalf("ok and error %v", err)
		}
		if ok {
			// what decodes re-encodes to something that decodes the same
			again, ok2, err2 := DecodeH264(EncodeH264(tag))
			if !ok2 || err2 != nil || !sameTag(again, tag) {
				t.Fatalf("re-encode of %+v: %+v %v %v", tag, again, ok2, err2)
			}
		}
	})
}

func FuzzDecodeH265(f *testing.F) {
	for _, tag := range sampleTags {
		f.Add(EncodeH265(tag))
	}
	f.Add([]byte{0x4e})
	f.Add(append([]byte{0x50, 0x01, 0x05, 0x10}, TagUUID[:]...))
	f.Fuzz(func(t *testing.T, nal []byte) {
		tag, ok, err := DecodeH265(nal)
		if ok && err != nil {
			t.Fatalf("ok and error %v", err)
		}
		if ok {
			again, ok2, err2 := DecodeH265(EncodeH265(tag))
			if !ok2 || err2 != nil || !sameTag(again, tag) {
				t.Fatalf("re-encode of %+v: %+v %v %v", tag, again, ok2, err2)
			}
		}
	})
}

func FuzzScanAnnexB(f *testing.F) {
	var stream []byte
	for i, tag := range sampleTags {
		stream = append(stream, 0, 0, 1)
		if i%2 == 0 {
			stream = append(stream, EncodeH264(tag)...)
		} else {
			stream = append(stream, EncodeH265(tag)...)
		}
	}
	f.Add(stream, false)
	f.Add(stream, true)
	f.Add([]byte{0, 0, 1}, false)
	f.Add([]byte{0, 0, 0, 1, 0, 0, 1, 0, 0}, true)
	f.Fuzz(func(t *testing.T, stream []byte, h265 bool) {
		tags := ScanAnnexB(stream, h265)
		// every NAL unit is a sub-slice of the input, so there cannot be more tags than
		// minimal tag NAL units fit in it
		if len(tags) > len(stream)/(fixedLen+4) {
			t.Fatalf("%d tags from %d bytes", len(tags), len(stream))
		}
		_ = ScanAVCC(stream, h265)
	})
}

func BenchmarkAppendH264(b *testing.B) {
	buf := make([]byte, 0, 128)
	tag := sampleTags[0]
	for b.Loop() {
		buf = AppendH264(buf[:0], tag)
	}
}

func BenchmarkDecodeH264(b *testing.B) {
	nal := EncodeH264(sampleTags[0])
	for b.Loop() {
		_, _, _ = DecodeH264(nal)
	}
}
