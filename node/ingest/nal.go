package ingest

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
)

// videoCodec is the video codec of a recorded track.
type videoCodec int

const (
	codecH264 videoCodec = iota + 1
	codecH265
)

func (c videoCodec) String() string {
	switch c {
	case codecH264:
		return "H264"
	case codecH265:
		return "H265"
	}
	return "unknown"
}

// errBadParamSet is wrapped when an in-band or SDP parameter set cannot be parsed.
var errBadParamSet = errors.New("malformed parameter set")

// videoParams tracks the parameter sets (VPS for H.265, SPS, PPS) of a video track: the ones
// from the SDP first, then every in-band one that differs. It owns copies of the bytes, so
// the depacketizer's buffers can be reused.
type videoParams struct {
	codec         videoCodec
	vps, sps, pps []byte
	width, height int
	// gen increases at every change of a parameter set; the segmenter compares it with the
	// generation its current init section was written for.
	gen uint64
}

// ready reports whether every parameter set the codec needs is known.
func (vp *videoParams) ready() bool {
	if vp.codec == codecH265 && len(vp.vps) == 0 {
		return false
	}
	return len(vp.sps) != 0 && len(vp.pps) != 0
}

// setSPS validates sps and, if it differs from the current one, adopts a copy of it.
func (vp *videoParams) setSPS(sps []byte) error {
	if bytes.Equal(sps, vp.sps) {
		return nil
	}
	var w, h int
	switch vp.codec {
	case codecH264:
		var p h264.SPS
		if err := p.Unmarshal(sps); err != nil {
			return fmt.Errorf("H264 SPS: %w: %v", errBadParamSet, err)
		}
		w, h = p.Width(), p.Height()
	case codecH265:
		var p h265.SPS
		if err := p.Unmarshal(sps); err != nil {
			return fmt.Errorf("H265 SPS: %w: %v", errBadParamSet, err)
		}
		w, h = p.Width(), p.Height()
	}
	if w <= 0 || h <= 0 || w > 16384 || h > 16384 {
		return fmt.Errorf("%v SPS: %w: picture size %dx%d", vp.codec, errBadParamSet, w, h)
	}
	vp.sps = append(vp.sps[:0:0], sps...)
	vp.width, vp.height = w, h
	vp.gen++
	return nil
}

func (vp *videoParams) setPPS(pps []byte) error {
	if bytes.Equal(pps, vp.pps) {
		return nil
	}
	if len(pps) < 2 {
		return fmt.Errorf("%v PPS: %w: %d bytes", vp.codec, errBadParamSet, len(pps))
	}
	vp.pps = append(vp.pps[:0:0], pps...)
	vp.gen++
	return nil
}

func (vp *videoParams) setVPS(vps []byte) error {
	if bytes.Equal(vps, vp.vps) {
		return nil
	}
	if len(vps) < 2 {
		return fmt.Errorf("H265 VPS: %w: %d bytes", errBadParamSet, len(vps))
	}
	vp.vps = append(vp.vps[:0:0], vps...)
	vp.gen++
	return nil
}

// auInfo is what the segmenter needs to know of an access unit.
type auInfo struct {
	randomAccess bool // starts with an IDR (H.264) or IRAP (H.265) picture
	hasPicture   bool // holds at least one coded slice
}

// scanAU removes empty NAL units from au (in place), adopts the in-band parameter sets that
// differ from the current ones and classifies the access unit. A malformed parameter set is
// ignored (the previous one stays) and reported in err; the access unit is still usable.
// A parameter set equal to the current one is replaced in au by vp's own copy: au aliases
// the depacketizer's buffers, and the DTS extractors keep the SPS they are given.
func (vp *videoParams) scanAU(au [][]byte) (out [][]byte, info auInfo, err error) {
	n := 0
	for _, nalu := range au {
		if len(nalu) == 0 {
			continue
		}
		au[n] = nalu
		n++
		var perr error
		switch vp.codec {
		case codecH264:
			switch h264.NALUType(nalu[0] & 0x1f) {
			case h264.NALUTypeSPS:
				perr = vp.setSPS(nalu)
			case h264.NALUTypePPS:
				perr = vp.setPPS(nalu)
			case h264.NALUTypeIDR:
				info.randomAccess = true
				info.hasPicture = true
			case h264.NALUTypeNonIDR, h264.NALUTypeDataPartitionA:
				info.hasPicture = true
			}
		case codecH265:
			if len(nalu) < 2 {
				continue // a NAL unit header is two bytes; keep the bytes, nothing to learn
			}
			typ := h265.NALUType((nalu[0] >> 1) & 0x3f)
			switch {
			case typ == h265.NALUType_VPS_NUT:
				perr = vp.setVPS(nalu)
			case typ == h265.NALUType_SPS_NUT:
				perr = vp.setSPS(nalu)
			case typ == h265.NALUType_PPS_NUT:
				perr = vp.setPPS(nalu)
			case typ >= 16 && typ <= 21: // BLA, IDR, CRA: intra random access points
				info.randomAccess = true
				info.hasPicture = true
			case typ <= 9: // TRAIL, TSA, STSA, RADL, RASL
				info.hasPicture = true
			}
		}
		if perr != nil && err == nil {
			err = perr
		}
		if perr != nil {
			// A parameter set refused here may still be kept by a DTS extractor: not a
			// slice of the depacketizer's buffer, then (rare: a malformed camera).
			au[n-1] = bytes.Clone(nalu)
		} else {
			au[n-1] = vp.owned(nalu)
		}
	}
	return au[:n], info, err
}

// owned returns vp's copy of nalu when nalu is one of the current parameter sets, else nalu.
func (vp *videoParams) owned(nalu []byte) []byte {
	for _, ps := range [][]byte{vp.sps, vp.pps, vp.vps} {
		if len(ps) == len(nalu) && len(ps) > 0 && &ps[0] != &nalu[0] && bytes.Equal(ps, nalu) {
			return ps
		}
	}
	return nalu
}

// fmp4Codec returns the sample description of the current parameter sets.
func (vp *videoParams) fmp4Codec() fmp4.Codec {
	if vp.codec == codecH265 {
		return &fmp4.CodecH265{VPS: vp.vps, SPS: vp.sps, PPS: vp.pps}
	}
	return &fmp4.CodecH264{SPS: vp.sps, PPS: vp.pps}
}

func (vp *videoParams) describe() string {
	return fmt.Sprintf("%v %dx%d", vp.codec, vp.width, vp.height)
}

// appendAVCC appends au to dst in the length-prefixed form MP4 samples use.
func appendAVCC(dst []byte, au [][]byte) []byte {
	for _, nalu := range au {
		l := len(nalu)
		dst = append(dst, byte(l>>24), byte(l>>16), byte(l>>8), byte(l))
		dst = append(dst, nalu...)
	}
	return dst
}
