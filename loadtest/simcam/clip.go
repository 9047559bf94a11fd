package simcam

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vigie-vms/vigie/loadtest/sei"
	"github.com/vigie-vms/vigie/testdata/clips"
)

// Codecs a Clip can hold.
const (
	CodecH264 = "H264"
	CodecH265 = "H265"
)

// DefaultFPS is the frame rate a clip is played at when nothing says otherwise.
const DefaultFPS = 25

// ErrBadClip is wrapped by every error about a clip that cannot be streamed.
var ErrBadClip = errors.New("clip cannot be streamed")

// Clip is a video elementary stream split into access units, ready to be looped by a
// simulated camera. The first access unit is a random access point (IDR) so that the loop
// decodes from any of its turns.
type Clip struct {
	// Codec is CodecH264 or CodecH265.
	Codec string
	// FPS is the rate access units are sent at. Set it before New to change it.
	FPS int
	// AccessUnits holds the NAL units (no start codes) of each access unit, in decode
	// order. Any tag SEI already in the source (a re-recorded simcam stream) is removed.
	AccessUnits [][][]byte
	// Parameter sets found first in the stream, announced in the SDP. VPS is H.265 only.
	VPS, SPS, PPS []byte
	// Path is the file the clip was read from, or "embedded:<name>".
	Path string
}

// H265 reports whether the clip is H.265.
func (c *Clip) H265() bool { return c.Codec == CodecH265 }

// LoadClip reads an Annex-B elementary stream file. The codec comes from the extension
// (.h264/.264/.avc or .h265/.265/.hevc) or, failing that, is sniffed from the first NAL
// units. FPS is DefaultFPS (raw streams carry no timing); change Clip.FPS to override.
func LoadClip(path string) (*Clip, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load clip: %w", err)
	}
	codec := ""
	switch strings.ToLower(filepath.Ext(path)) {
	case ".h264", ".264", ".avc":
		codec = CodecH264
	case ".h265", ".265", ".hevc":
		codec = CodecH265
	}
	c, err := ParseClip(data, codec, DefaultFPS)
	if err != nil {
		return nil, fmt.Errorf("load clip %s: %w", path, err)
	}
	c.Path = path
	return c, nil
}

// DefaultClip returns the committed test clip of codec (CodecH264 or CodecH265) from the
// bytes embedded in the binary, so it works from any working directory.
func DefaultClip(codec string) (*Clip, error) {
	var data []byte
	var name string
	switch codec {
	case CodecH264:
		data, name = clips.H264, clips.H264File
	case CodecH265:
		data, name = clips.H265, clips.H265File
	default:
		return nil, fmt.Errorf("default clip: codec %q, want %q or %q: %w", codec, CodecH264, CodecH265, ErrBadClip)
	}
	c, err := ParseClip(data, codec, clips.FPS)
	if err != nil {
		return nil, fmt.Errorf("default clip %s: %w", name, err)
	}
	c.Path = "embedded:" + name
	return c, nil
}

// DefaultClipPath returns the path of the committed clip file of codec, found by walking
// up from the working directory to the directory holding go.mod, then testdata/clips/.
// It returns "" when there is no such file (outside the repository: use DefaultClip).
func DefaultClipPath(codec string) string {
	name := clips.H264File
	if codec == CodecH265 {
		name = clips.H265File
	}
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "testdata", "clips", name)
			if _, err := os.Stat(p); err == nil {
				return p
			}
			return ""
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// ParseClip splits an Annex-B stream into access units. codec "" sniffs it. fps <= 0 means
// DefaultFPS. The slices of the result alias data.
func ParseClip(data []byte, codec string, fps int) (*Clip, error) {
	nalus := sei.SplitAnnexB(data)
	if len(nalus) == 0 {
		return nil, fmt.Errorf("no Annex-B NAL unit found (%d bytes): %w", len(data), ErrBadClip)
	}
	if codec == "" {
		codec = sniffCodec(nalus)
	}
	if codec != CodecH264 && codec != CodecH265 {
		return nil, fmt.Errorf("codec %q, want %q or %q: %w", codec, CodecH264, CodecH265, ErrBadClip)
	}
	if fps <= 0 {
		fps = DefaultFPS
	}
	c := &Clip{Codec: codec, FPS: fps}
	h265 := c.H265()

	// Drop tags of ours already in the source, keep the first parameter sets for the SDP.
	kept := nalus[:0]
	for _, n := range nalus {
		if _, ok, _ := sei.Decode(n, h265); ok {
			continue
		}
		switch nalType(n, h265) {
		case typeVPS:
			if c.VPS == nil {
				c.VPS = n
			}
		case typeSPS:
			if c.SPS == nil {
				c.SPS = n
			}
		case typePPS:
			if c.PPS == nil {
				c.PPS = n
			}
		}
		kept = append(kept, n)
	}
	c.AccessUnits = splitAccessUnits(kept, h265)

	var problems []string
	if len(c.AccessUnits) == 0 {
		problems = append(problems, "no access unit with a picture (VCL NAL unit)")
	} else if !isRandomAccess(c.AccessUnits[0], h265) {
		problems = append(problems, "the first access unit is not a random access point (IDR), so the loop cannot be decoded")
	}
	if c.SPS == nil || c.PPS == nil || (h265 && c.VPS == nil) {
		problems = append(problems, "parameter sets missing (need SPS and PPS, and VPS for H.265)")
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s stream: %s: %w", codec, strings.Join(problems, "; "), ErrBadClip)
	}
	return c, nil
}

// Normalised NAL categories for both codecs.
const (
	typeOther = iota
	typeVPS
	typeSPS
	typePPS
)

func nalType(n []byte, h265 bool) int {
	if h265 {
		if len(n) < 2 {
			return typeOther
		}
		switch (n[0] >> 1) & 0x3f {
		case 32:
			return typeVPS
		case 33:
			return typeSPS
		case 34:
			return typePPS
		}
		return typeOther
	}
	if len(n) < 1 {
		return typeOther
	}
	switch n[0] & 0x1f {
	case 7:
		return typeSPS
	case 8:
		return typePPS
	}
	return typeOther
}

// classify says whether n is a picture (VCL) NAL unit, whether it is the first slice of a
// picture, and whether (being non-VCL) it can only appear at the start of an access unit.
func classify(n []byte, h265 bool) (vcl, firstSlice, startsAU bool) {
	if h265 {
		if len(n) < 2 {
			return false, false, false
		}
		typ := (n[0] >> 1) & 0x3f
		switch {
		case typ < 32:
			return true, len(n) > 2 && n[2]&0x80 != 0, false
		case typ <= 35, typ == 39, typ >= 41 && typ <= 44, typ >= 48 && typ <= 55:
			return false, false, true
		}
		return false, false, false
	}
	if len(n) < 1 {
		return false, false, false
	}
	typ := n[0] & 0x1f
	switch {
	case typ >= 1 && typ <= 5:
		// first_mb_in_slice == 0 is the ue(v) code "1": the first payload bit.
		return true, len(n) > 1 && n[1]&0x80 != 0, false
	case typ == 6, typ >= 7 && typ <= 9, typ >= 14 && typ <= 18:
		return false, false, true
	}
	return false, false, false
}

func splitAccessUnits(nalus [][]byte, h265 bool) [][][]byte {
	var aus [][][]byte
	var cur [][]byte
	hasVCL := false
	for _, n := range nalus {
		vcl, first, starts := classify(n, h265)
		if hasVCL && (starts || (vcl && first)) {
			aus = append(aus, cur)
			cur, hasVCL = nil, false
		}
		cur = append(cur, n)
		if vcl {
			hasVCL = true
		}
	}
	if hasVCL {
		aus = append(aus, cur)
	}
	return aus
}

func isRandomAccess(au [][]byte, h265 bool) bool {
	for _, n := range au {
		if h265 {
			if len(n) >= 2 {
				if typ := (n[0] >> 1) & 0x3f; typ >= 16 && typ <= 21 {
					return true
				}
			}
		} else if len(n) >= 1 && n[0]&0x1f == 5 {
			return true
		}
	}
	return false
}

func isVCL(n []byte, h265 bool) bool {
	vcl, _, _ := classify(n, h265)
	return vcl
}

func sniffCodec(nalus [][]byte) string {
	// An H.265 stream starts with VPS (0x40 0x01); H.264 NAL headers have bit 7 clear and a
	// type 1..23. Look at the first few NAL units for an unambiguous parameter set.
	for i, n := range nalus {
		if i >= 8 || len(n) < 2 {
			break
		}
		if n[0] == 0x40 && n[1] == 0x01 { // H.265 VPS, layer 0, tid 1
			return CodecH265
		}
		if t := n[0] & 0x1f; t == 7 && n[0]&0x80 == 0 { // H.264 SPS
			return CodecH264
		}
	}
	return ""
}
