package simcam

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigie-vms/vigie/loadtest/sei"
)

// The committed clips have the shape testdata/clips/README.md promises.
func TestClipShape(t *testing.T) {
	for _, codec := range []string{CodecH264, CodecH265} {
		t.Run(codec, func(t *testing.T) {
			c, err := DefaultClip(codec)
			if err != nil {
				t.Fatal(err)
			}
			h265 := c.H265()
			if got := len(c.AccessUnits); got != 250 {
				t.Errorf("%d access units, want 250 (10 s at 25 fps)", got)
			}
			if c.FPS != 25 {
				t.Errorf("FPS %d, want 25", c.FPS)
			}
			for i, au := range c.AccessUnits {
				ra := isRandomAccess(au, h265)
				if ra != (i%50 == 0) {
					t.Errorf("access unit %d: random access %v, want an IDR exactly every 50 frames", i, ra)
				}
				if ra {
					var have [4]bool
					for _, n := range au {
						have[nalType(n, h265)] = true
					}
					if !have[typeSPS] || !have[typePPS] || (h265 && !have[typeVPS]) {
						t.Errorf("access unit %d: IDR without its parameter sets", i)
					}
				}
				vcl := 0
				for _, n := range au {
					if isVCL(n, h265) {
						vcl++
					}
				}
				if vcl != 1 {
					t.Errorf("access unit %d: %d slices, want 1", i, vcl)
				}
			}
			if c.SPS == nil || c.PPS == nil || (h265 && c.VPS == nil) {
				t.Error("parameter sets not found")
			}
		})
	}
}

func TestLoadClipMatchesEmbedded(t *testing.T) {
	for _, codec := range []string{CodecH264, CodecH265} {
		path := DefaultClipPath(codec)
		if path == "" {
			t.Fatalf("DefaultClipPath(%s) found nothing walking up from the working directory", codec)
		}
		fromFile, err := LoadClip(path)
		if err != nil {
			t.Fatal(err)
		}
		embedded, _ := DefaultClip(codec)
		if fromFile.Codec != codec || len(fromFile.AccessUnits) != len(embedded.AccessUnits) {
			t.Errorf("%s: file gives %s with %d access units, embedded %d", path, fromFile.Codec, len(fromFile.AccessUnits), len(embedded.AccessUnits))
		}
		// Sniffing, without the extension.
		data, _ := os.ReadFile(path)
		tmp := filepath.Join(t.TempDir(), "clip.bin")
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			t.Fatal(err)
		}
		sniffed, err := LoadClip(tmp)
		if err != nil || sniffed.Codec != codec {
			t.Errorf("sniffing %s: codec %v, err %v", codec, sniffed, err)
		}
	}
}

func TestParseClipStripsOurTags(t *testing.T) {
	c, _ := DefaultClip(CodecH264)
	var stream []byte
	for i, au := range c.AccessUnits[:3] {
		stream = append(stream, 0, 0, 0, 1)
		stream = append(stream, sei.EncodeH264(sei.Tag{Camera: "old", Frame: uint64(i)})...)
		for _, n := range au {
			stream = append(append(stream, 0, 0, 1), n...)
		}
	}
	got, err := ParseClip(stream, CodecH264, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.AccessUnits) != 3 {
		t.Fatalf("%d access units, want 3", len(got.AccessUnits))
	}
	for i, au := range got.AccessUnits {
		if tags := sei.ScanAU(au, false); len(tags) != 0 {
			t.Errorf("access unit %d still carries %d tags", i, len(tags))
		}
	}
}

func TestParseClipErrors(t *testing.T) {
	c, _ := DefaultClip(CodecH264)
	pFrame := append([]byte{0, 0, 1}, c.AccessUnits[1][0]...)
	cases := map[string]struct {
		data  []byte
		codec string
		want  string
	}{
		"empty":         {nil, "", "no Annex-B NAL unit found (0 bytes)"},
		"garbage":       {[]byte("hello world"), "", "no Annex-B NAL unit"},
		"unknown":       {pFrame, "", `codec ""`},
		"starts with P": {pFrame, CodecH264, "H264 stream: the first access unit is not a random access point (IDR), so the loop cannot be decoded; parameter sets missing (need SPS and PPS, and VPS for H.265)"},
		"bad codec":     {pFrame, "VP8", `codec "VP8"`},
	}
	for name, tc := range cases {
		_, err := ParseClip(tc.data, tc.codec, 25)
		if !errors.Is(err, ErrBadClip) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want ErrBadClip containing %q", name, err, tc.want)
		}
	}
	if _, err := LoadClip("/nonexistent/clip.h264"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want os.ErrNotExist", err)
	}
}
