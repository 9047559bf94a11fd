package sei

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// TagUUID is the uuid_iso_iec_11578 that opens our user_data_unregistered SEI payload.
// It holds no 0x00 byte and does not start with a byte <= 3, so emulation prevention never
// alters it and it can be found in an escaped NAL unit with a plain byte search.
var TagUUID = [16]byte{
	0x76, 0x69, 0x67, 0x69, 0x65, 0x2d, 0x74, 0x61, // "vigie-ta"
	0x67, 0xc1, 0x5e, 0x1f, 0x9a, 0x37, 0x4b, 0xd2,
}

// ErrMalformed is wrapped by every decoding error: the SEI carries our UUID but the rest of
// the message cannot be read (truncated, wrong magic, unknown version).
var ErrMalformed = errors.New("malformed vigie SEI tag")

const (
	// Version is the payload version written by this package.
	Version = 1

	payloadTypeUserDataUnregistered = 5
	nalTypeH264SEI                  = 6
	nalTypeH265PrefixSEI            = 39
	nalTypeH265SuffixSEI            = 40

	// MaxCameraLen is the longest camera id a tag carries; longer ids are truncated.
	MaxCameraLen = 255

	fixedLen = 16 + 2 + 1 + 1 + 8 + 8 // uuid, magic, version, camLen, frame, sentAt
	// maxNALLen bounds an encoded NAL unit: 2-byte header, 2-byte type, 2-byte size,
	// payload, trailing byte, and at worst one emulation-prevention byte per 2 bytes.
	maxRBSPLen = 2 + 2 + fixedLen + MaxCameraLen + 1
)

var magic = [2]byte{'V', 'G'}

// Tag is what every simulated frame carries.
type Tag struct {
	// Camera is the camera id (the RTSP path of the simulated camera).
	Camera string
	// Frame is the frame index since the camera started, 0-based and consecutive: a
	// receiver that sees 41 after 39 lost frame 40.
	Frame uint64
	// SentAt is when the frame was handed to the network. The zero time round-trips (as
	// 0 on the wire, so the Unix epoch itself decodes as the zero time).
	SentAt time.Time
}

// EncodeH264 returns a complete H.264 SEI NAL unit (type 6) carrying t, without start code.
func EncodeH264(t Tag) []byte { return AppendH264(nil, t) }

// EncodeH265 returns a complete H.265 prefix SEI NAL unit (type 39) carrying t, without
// start code.
func EncodeH265(t Tag) []byte { return AppendH265(nil, t) }

// AppendH264 appends the NAL unit EncodeH264 returns to dst; it does not allocate when dst
// has room (about 60 bytes plus the camera id).
func AppendH264(dst []byte, t Tag) []byte {
	dst = append(dst, nalTypeH264SEI) // forbidden_zero_bit 0, nal_ref_idc 0, type 6
	return appendRBSP(dst, t)
}

// AppendH265 appends the NAL unit EncodeH265 returns to dst.
func AppendH265(dst []byte, t Tag) []byte {
	// forbidden_zero_bit 0, nal_unit_type 39, nuh_layer_id 0, nuh_temporal_id_plus1 1
	dst = append(dst, nalTypeH265PrefixSEI<<1, 1)
	return appendRBSP(dst, t)
}

func appendRBSP(dst []byte, t Tag) []byte {
	cam := t.Camera
	if len(cam) > MaxCameraLen {
		cam = cam[:MaxCameraLen]
	}
	var raw [maxRBSPLen]byte
	r := raw[:0]
	r = appendFF(r, payloadTypeUserDataUnregistered)
	r = appendFF(r, fixedLen+len(cam))
	r = append(r, TagUUID[:]...)
	r = append(r, magic[0], magic[1], Version, byte(len(cam)))
	r = append(r, cam...)
	r = binary.BigEndian.AppendUint64(r, t.Frame)
	var ns int64
	if !t.SentAt.IsZero() {
		ns = t.SentAt.UnixNano()
	}
	r = binary.BigEndian.AppendUint64(r, uint64(ns))
	r = append(r, 0x80) // rbsp_trailing_bits: stop bit + alignment

	// emulation prevention: never let 00 00 0x (x <= 3) appear in the NAL unit.
	zeros := 0
	for _, b := range r {
		if zeros >= 2 && b <= 3 {
			dst = append(dst, 3)
			zeros = 0
		}
		dst = append(dst, b)
		if b == 0 {
			zeros++
		} else {
			zeros = 0
		}
	}
	return dst
}

// appendFF writes an SEI payload type or size: 0xFF per 255, then the remainder.
func appendFF(dst []byte, v int) []byte {
	for v >= 255 {
		dst = append(dst, 0xff)
		v -= 255
	}
	return append(dst, byte(v))
}

// DecodeH264 reads a tag from an H.264 NAL unit (no start code). ok is false when the NAL
// unit is not an SEI or carries no message with our UUID; err (wrapping ErrMalformed) when
// our UUID is there but the message cannot be read.
func DecodeH264(nal []byte) (tag Tag, ok bool, err error) {
	if len(nal) < 1 || nal[0]&0x1f != nalTypeH264SEI {
		return Tag{}, false, nil
	}
	return decodeSEI(nal[1:])
}

// DecodeH265 reads a tag from an H.265 NAL unit (no start code): a prefix (39) or suffix
// (40) SEI. Results as DecodeH264.
func DecodeH265(nal []byte) (tag Tag, ok bool, err error) {
	if len(nal) < 2 {
		return Tag{}, false, nil
	}
	if typ := (nal[0] >> 1) & 0x3f; typ != nalTypeH265PrefixSEI && typ != nalTypeH265SuffixSEI {
		return Tag{}, false, nil
	}
	return decodeSEI(nal[2:])
}

// Decode dispatches to DecodeH265 when h265 is true, else DecodeH264.
func Decode(nal []byte, h265 bool) (Tag, bool, error) {
	if h265 {
		return DecodeH265(nal)
	}
	return DecodeH264(nal)
}

func decodeSEI(escaped []byte) (Tag, bool, error) {
	// Cheap reject: our UUID is never altered by emulation prevention (see TagUUID).
	if !bytes.Contains(escaped, TagUUID[:]) {
		return Tag{}, false, nil
	}
	p := unescape(escaped)
	for len(p) > 0 {
		if p[0] == 0x80 && allZero(p[1:]) {
			break // rbsp_trailing_bits
		}
		typ, rest, ok1 := readFF(p)
		size, rest, ok2 := readFF(rest)
		if !ok1 || !ok2 {
			return Tag{}, false, nil
		}
		if size > len(rest) {
			if typ == payloadTypeUserDataUnregistered && len(rest) >= 16 && [16]byte(rest[:16]) == TagUUID {
				return Tag{}, false, fmt.Errorf("SEI payload says %d bytes, NAL unit holds %d: %w", size, len(rest), ErrMalformed)
			}
			return Tag{}, false, nil
		}
		msg := rest[:size]
		p = rest[size:]
		if typ == payloadTypeUserDataUnregistered && size >= 16 && [16]byte(msg[:16]) == TagUUID {
			t, err := parseTag(msg[16:])
			if err != nil {
				return Tag{}, false, err
			}
			return t, true, nil
		}
	}
	return Tag{}, false, nil
}

func parseTag(b []byte) (Tag, error) {
	if len(b) < 4 {
		return Tag{}, fmt.Errorf("payload of %d bytes after the UUID, want at least %d: %w", len(b), fixedLen-16, ErrMalformed)
	}
	if b[0] != magic[0] || b[1] != magic[1] {
		return Tag{}, fmt.Errorf("magic %q, want %q: %w", b[:2], magic[:], ErrMalformed)
	}
	if b[2] != Version {
		return Tag{}, fmt.Errorf("version %d, this build reads %d: %w", b[2], Version, ErrMalformed)
	}
	camLen := int(b[3])
	b = b[4:]
	if len(b) < camLen+16 {
		return Tag{}, fmt.Errorf("payload truncated: %d bytes for a %d-byte camera id and 16 bytes of counters: %w", len(b), camLen, ErrMalformed)
	}
	t := Tag{Camera: string(b[:camLen])}
	b = b[camLen:]
	t.Frame = binary.BigEndian.Uint64(b)
	if ns := int64(binary.BigEndian.Uint64(b[8:])); ns != 0 {
		t.SentAt = time.Unix(0, ns)
	}
	return t, nil
}

func readFF(p []byte) (v int, rest []byte, ok bool) {
	for i, b := range p {
		v += int(b)
		if b != 0xff {
			return v, p[i+1:], true
		}
	}
	return 0, nil, false
}

func allZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// unescape removes emulation-prevention bytes (00 00 03 → 00 00).
func unescape(p []byte) []byte {
	out := make([]byte, 0, len(p))
	zeros := 0
	for _, b := range p {
		if zeros >= 2 && b == 3 {
			zeros = 0
			continue
		}
		out = append(out, b)
		if b == 0 {
			zeros++
		} else {
			zeros = 0
		}
	}
	return out
}

// SplitAnnexB returns the NAL units of an Annex-B byte stream (start codes 00 00 01 or
// 00 00 00 01), without start codes and without trailing zero bytes. Bytes before the
// first start code are ignored. The returned slices alias stream. It never fails: garbage
// yields garbage NAL units or none.
func SplitAnnexB(stream []byte) [][]byte {
	var out [][]byte
	ForEachAnnexB(stream, func(nal []byte) { out = append(out, nal) })
	return out
}

// ForEachAnnexB calls fn for each NAL unit of an Annex-B stream, as SplitAnnexB returns
// them, without allocating.
func ForEachAnnexB(stream []byte, fn func(nal []byte)) {
	start := -1
	i := 0
	for i+2 < len(stream) {
		if stream[i] == 0 && stream[i+1] == 0 && stream[i+2] == 1 {
			if start >= 0 {
				emit(stream[start:i], fn)
			}
			i += 3
			start = i
			continue
		}
		// skip ahead fast: a start code needs stream[i+2] <= 1
		if stream[i+2] > 1 {
			i += 3
		} else {
			i++
		}
	}
	if start >= 0 {
		emit(stream[start:], fn)
	}
}

func emit(nal []byte, fn func([]byte)) {
	for len(nal) > 0 && nal[len(nal)-1] == 0 {
		nal = nal[:len(nal)-1]
	}
	if len(nal) > 0 {
		fn(nal)
	}
}

// ScanAnnexB returns every tag found in an Annex-B stream, in stream order. Malformed
// tags are skipped; use Decode on the NAL units of SplitAnnexB to see their errors.
func ScanAnnexB(stream []byte, h265 bool) []Tag {
	var tags []Tag
	ForEachAnnexB(stream, func(nal []byte) {
		if t, ok, err := Decode(nal, h265); ok && err == nil {
			tags = append(tags, t)
		}
	})
	return tags
}

// ScanAVCC returns every tag found in a sample of 4-byte big-endian length-prefixed NAL
// units (an MP4 sample). Scanning stops at the first length that overruns the sample.
func ScanAVCC(sample []byte, h265 bool) []Tag {
	var tags []Tag
	for len(sample) >= 4 {
		n := binary.BigEndian.Uint32(sample)
		sample = sample[4:]
		if uint64(n) > uint64(len(sample)) {
			break
		}
		if t, ok, err := Decode(sample[:n], h265); ok && err == nil {
			tags = append(tags, t)
		}
		sample = sample[n:]
	}
	return tags
}

// ScanAU returns every tag in an access unit given as a list of NAL units (what an RTP
// depacketizer returns).
func ScanAU(nalus [][]byte, h265 bool) []Tag {
	var tags []Tag
	for _, nal := range nalus {
		if t, ok, err := Decode(nal, h265); ok && err == nil {
			tags = append(tags, t)
		}
	}
	return tags
}
