// Package clips embeds the committed test clips, so that tests in any package and
// `vigie demo` run from any directory can stream them without finding files on disk.
//
// The clips are raw Annex-B elementary streams made by generate.sh from ffmpeg's testsrc2
// (see README.md): 640x360, 25 fps, 10 s (250 frames), an IDR every 50 frames (closed GOPs,
// 2 s) preceded by its parameter sets, no B-frames, about 1 Mbit/s. The package holds no
// logic and imports nothing; it is the only Go package under testdata/, which the go tool
// leaves out of ./... patterns (build it by its path: go build ./testdata/clips).
package clips

import _ "embed"

//go:generate sh generate.sh

// Names of the clip files in this directory.
const (
	H264File = "testsrc2-640x360-25fps.h264"
	H265File = "testsrc2-640x360-25fps.h265"
)

// H264 is testsrc2-640x360-25fps.h264: H.264 Main profile, SPS+PPS before every IDR.
//
//go:embed testsrc2-640x360-25fps.h264
var H264 []byte

// H265 is testsrc2-640x360-25fps.h265: H.265 Main profile, VPS+SPS+PPS before every IDR.
//
//go:embed testsrc2-640x360-25fps.h265
var H265 []byte

// FPS is the frame rate the clips were encoded at. Annex-B streams carry no timestamps;
// whoever plays them paces frames at this rate.
const FPS = 25
