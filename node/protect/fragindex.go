package protect

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"

	"github.com/vigie-vms/vigie/model"
)

// ErrFormat is wrapped by every error about segment bytes that are not the fMP4 the
// segmenter writes (init section, then moof+mdat pairs).
var ErrFormat = errors.New("protect: bad fMP4")

// Limits that keep a parser of untrusted bytes from allocating without bound.
const (
	maxInitBytes = 4 << 20 // ftyp+moov
	maxMoofBytes = 4 << 20 // one moof (sample tables of a 1 s fragment are a few KiB)
)

// RebuildIndex reads the fragment index of a segment from its bytes: the segment is the
// init section (ftyp, moov) followed by one moof+mdat pair per fragment, size bytes in
// all, read through r (a local file, a DegradedReader: only box headers and moofs are
// read, never the media data). It is how a node that lost the holder's Pebble index — the
// holder is dead, or the bytes arrived as a stripe's data shard — serves the segment.
//
// Offset and Size are exact (the box layout). Duration is the sum of the reference track's
// sample durations (the first video track, else the first track), Keyframe whether its
// first sample is a sync sample: both as the segmenter computed them. Start is start (the
// catalog's segment start, the first fragment's wall-clock time) plus the presentation
// time elapsed on the reference track since the first fragment — equal to the recorded
// value while the recorder's wall-clock anchor held for the whole segment (the segmenter
// keeps decode times continuous within a segment).
func RebuildIndex(r io.ReaderAt, size int64, start time.Time) (init []byte, frags []model.FragmentInfo, err error) {
	// Init: every box before the first moof.
	off := int64(0)
	for {
		typ, boxSize, _, err := boxHeader(r, off, size)
		if err != nil {
			return nil, nil, err
		}
		if typ == "moof" {
			break
		}
		if typ == "mdat" {
			return nil, nil, fmt.Errorf("%w: mdat at offset %d before any moof", ErrFormat, off)
		}
		off += boxSize
		if off > maxInitBytes {
			return nil, nil, fmt.Errorf("%w: no moof in the first %d bytes", ErrFormat, int64(maxInitBytes))
		}
	}
	if off == 0 {
		return nil, nil, fmt.Errorf("%w: segment starts with a moof, no init section", ErrFormat)
	}
	init = make([]byte, off)
	if _, err := r.ReadAt(init, 0); err != nil {
		return nil, nil, fmt.Errorf("protect: read init section: %w", err)
	}
	ref, timescale, err := referenceTrack(init)
	if err != nil {
		return nil, nil, err
	}

	var firstPTS int64
	for off < size {
		typ, moofSize, hdr, err := boxHeader(r, off, size)
		if err != nil {
			return nil, nil, err
		}
		if typ != "moof" {
			return nil, nil, fmt.Errorf("%w: %q box at offset %d where a moof was expected", ErrFormat, typ, off)
		}
		if moofSize > maxMoofBytes {
			return nil, nil, fmt.Errorf("%w: moof at offset %d is %d bytes", ErrFormat, off, moofSize)
		}
		moof := make([]byte, moofSize)
		if _, err := r.ReadAt(moof, off); err != nil {
			return nil, nil, fmt.Errorf("protect: read moof at offset %d: %w", off, err)
		}
		t, err := parseMoof(moof[hdr:], ref)
		if err != nil {
			return nil, nil, fmt.Errorf("moof at offset %d: %w", off, err)
		}
		end := off + moofSize
		// The media data: every box up to the next moof (the segmenter writes one mdat).
		for end < size {
			typ, n, _, err := boxHeader(r, end, size)
			if err != nil {
				return nil, nil, err
			}
			if typ == "moof" {
				break
			}
			end += n
		}
		pts := int64(t.baseTime) + int64(t.firstCTO)
		if len(frags) == 0 {
			firstPTS = pts
		}
		frags = append(frags, model.FragmentInfo{
			Offset:   off,
			Size:     end - off,
			Start:    start.Add(ticksToDuration(pts-firstPTS, int64(timescale))),
			Duration: ticksToDuration(t.duration, int64(timescale)),
			Keyframe: t.keyframe,
		})
		off = end
	}
	if len(frags) == 0 {
		return nil, nil, fmt.Errorf("%w: no fragment after the %d-byte init section", ErrFormat, len(init))
	}
	return init, frags, nil
}

// boxHeader reads the header of the box at off of a size-byte object: its type, total
// size and header length. A box that does not fit wraps ErrFormat.
func boxHeader(r io.ReaderAt, off, size int64) (typ string, boxSize int64, hdr int64, err error) {
	if size-off < 8 {
		return "", 0, 0, fmt.Errorf("%w: %d trailing bytes at offset %d are not a box", ErrFormat, size-off, off)
	}
	var b [16]byte
	n := min(int64(16), size-off)
	if _, err := r.ReadAt(b[:n], off); err != nil && !(errors.Is(err, io.EOF) && n < 16) {
		return "", 0, 0, fmt.Errorf("protect: read box header at offset %d: %w", off, err)
	}
	boxSize, hdr = int64(binary.BigEndian.Uint32(b[:4])), 8
	typ = string(b[4:8])
	switch boxSize {
	case 0:
		boxSize = size - off
	case 1:
		if n < 16 {
			return "", 0, 0, fmt.Errorf("%w: truncated 64-bit box size at offset %d", ErrFormat, off)
		}
		u := binary.BigEndian.Uint64(b[8:16])
		if u > uint64(size) {
			return "", 0, 0, fmt.Errorf("%w: %q box at offset %d claims %d bytes", ErrFormat, typ, off, u)
		}
		boxSize, hdr = int64(u), 16
	}
	if boxSize < hdr || boxSize > size-off {
		return "", 0, 0, fmt.Errorf("%w: %q box at offset %d claims %d bytes, %d left", ErrFormat, typ, off, boxSize, size-off)
	}
	return typ, boxSize, hdr, nil
}

// referenceTrack returns the id and timescale of the track that anchors wall-clock time:
// the first video track, else the first track (as the gateway's media package does).
func referenceTrack(init []byte) (id uint32, timescale uint32, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: init: %v", ErrFormat, r)
		}
	}()
	var in fmp4.Init
	if err := in.Unmarshal(bytes.NewReader(init)); err != nil {
		return 0, 0, fmt.Errorf("%w: init: %v", ErrFormat, err)
	}
	var ref *fmp4.InitTrack
	for _, t := range in.Tracks {
		if t.Codec != nil && t.Codec.IsVideo() {
			ref = t
			break
		}
	}
	if ref == nil && len(in.Tracks) > 0 {
		ref = in.Tracks[0]
	}
	if ref == nil || ref.TimeScale == 0 {
		return 0, 0, fmt.Errorf("%w: init has no track with a timescale", ErrFormat)
	}
	return uint32(ref.ID), ref.TimeScale, nil
}

// trackRun is what a moof says about the reference track.
type trackRun struct {
	baseTime uint64
	duration int64
	firstCTO int32
	keyframe bool
}

// Box flags (ISO/IEC 14496-12).
const (
	tfhdBaseDataOffset   = 0x000001
	tfhdSampleDescIndex  = 0x000002
	tfhdDefaultDuration  = 0x000008
	tfhdDefaultSize      = 0x000010
	tfhdDefaultFlags     = 0x000020
	trunDataOffset       = 0x000001
	trunFirstSampleFlags = 0x000004
	trunSampleDuration   = 0x000100
	trunSampleSize       = 0x000200
	trunSampleFlags      = 0x000400
	trunSampleCTO        = 0x000800
	sampleIsNonSync      = 0x00010000
)

// parseMoof reads the moof payload (after its header) and returns the run of track ref.
func parseMoof(b []byte, ref uint32) (trackRun, error) {
	var out trackRun
	found := false
	err := eachBox(b, func(typ string, traf []byte) error {
		if typ != "traf" || found {
			return nil
		}
		var (
			tid                     uint32
			defDur, defFlags        uint32
			haveTfhd, haveTfdt, any bool
			first                   = true
			t                       trackRun
		)
		err := eachBox(traf, func(typ string, p []byte) error {
			switch typ {
			case "tfhd":
				if len(p) < 8 {
					return fmt.Errorf("%w: tfhd of %d bytes", ErrFormat, len(p))
				}
				flags := binary.BigEndian.Uint32(p) & 0xffffff
				tid = binary.BigEndian.Uint32(p[4:])
				p = p[8:]
				skip := func(n int) error {
					if len(p) < n {
						return fmt.Errorf("%w: tfhd too short for its flags %06x", ErrFormat, flags)
					}
					p = p[n:]
					return nil
				}
				var u32 [1]uint32
				read := func() error {
					if len(p) < 4 {
						return fmt.Errorf("%w: tfhd too short for its flags %06x", ErrFormat, flags)
					}
					u32[0] = binary.BigEndian.Uint32(p)
					p = p[4:]
					return nil
				}
				if flags&tfhdBaseDataOffset != 0 {
					if err := skip(8); err != nil {
						return err
					}
				}
				if flags&tfhdSampleDescIndex != 0 {
					if err := skip(4); err != nil {
						return err
					}
				}
				if flags&tfhdDefaultDuration != 0 {
					if err := read(); err != nil {
						return err
					}
					defDur = u32[0]
				}
				if flags&tfhdDefaultSize != 0 {
					if err := skip(4); err != nil {
						return err
					}
				}
				if flags&tfhdDefaultFlags != 0 {
					if err := read(); err != nil {
						return err
					}
					defFlags = u32[0]
				}
				haveTfhd = true
			case "tfdt":
				if len(p) < 8 {
					return fmt.Errorf("%w: tfdt of %d bytes", ErrFormat, len(p))
				}
				if p[0] == 1 {
					if len(p) < 12 {
						return fmt.Errorf("%w: tfdt v1 of %d bytes", ErrFormat, len(p))
					}
					t.baseTime = binary.BigEndian.Uint64(p[4:])
				} else {
					t.baseTime = uint64(binary.BigEndian.Uint32(p[4:]))
				}
				haveTfdt = true
			case "trun":
				if !haveTfhd {
					return fmt.Errorf("%w: trun before tfhd", ErrFormat)
				}
				if len(p) < 8 {
					return fmt.Errorf("%w: trun of %d bytes", ErrFormat, len(p))
				}
				version := p[0]
				flags := binary.BigEndian.Uint32(p) & 0xffffff
				count := binary.BigEndian.Uint32(p[4:])
				p = p[8:]
				firstFlags, haveFirst := uint32(0), false
				if flags&trunDataOffset != 0 {
					if len(p) < 4 {
						return fmt.Errorf("%w: trun truncated", ErrFormat)
					}
					p = p[4:]
				}
				if flags&trunFirstSampleFlags != 0 {
					if len(p) < 4 {
						return fmt.Errorf("%w: trun truncated", ErrFormat)
					}
					firstFlags, haveFirst = binary.BigEndian.Uint32(p), true
					p = p[4:]
				}
				entry := 0
				for _, f := range []uint32{trunSampleDuration, trunSampleSize, trunSampleFlags, trunSampleCTO} {
					if flags&f != 0 {
						entry += 4
					}
				}
				if uint64(count)*uint64(entry) > uint64(len(p)) {
					return fmt.Errorf("%w: trun of %d samples in %d bytes", ErrFormat, count, len(p))
				}
				for i := uint32(0); i < count; i++ {
					dur, sflags, cto := defDur, defFlags, int32(0)
					if flags&trunSampleDuration != 0 {
						dur = binary.BigEndian.Uint32(p)
						p = p[4:]
					}
					if flags&trunSampleSize != 0 {
						p = p[4:]
					}
					if flags&trunSampleFlags != 0 {
						sflags = binary.BigEndian.Uint32(p)
						p = p[4:]
					}
					if flags&trunSampleCTO != 0 {
						v := binary.BigEndian.Uint32(p)
						if version == 0 {
							cto = int32(min(v, 1<<31-1))
						} else {
							cto = int32(v)
						}
						p = p[4:]
					}
					if i == 0 && haveFirst {
						sflags = firstFlags
					}
					if first {
						t.firstCTO = cto
						t.keyframe = sflags&sampleIsNonSync == 0
						first = false
					}
					t.duration += int64(dur)
					any = true
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if !haveTfhd || tid != ref {
			return nil
		}
		if !haveTfdt {
			return fmt.Errorf("%w: traf of track %d has no tfdt", ErrFormat, tid)
		}
		if !any {
			return fmt.Errorf("%w: traf of track %d has no sample", ErrFormat, tid)
		}
		out, found = t, true
		return nil
	})
	if err != nil {
		return trackRun{}, err
	}
	if !found {
		return trackRun{}, fmt.Errorf("%w: no traf of reference track %d", ErrFormat, ref)
	}
	return out, nil
}

// eachBox calls fn with the type and payload of each box in b.
func eachBox(b []byte, fn func(typ string, payload []byte) error) error {
	for len(b) > 0 {
		if len(b) < 8 {
			return fmt.Errorf("%w: %d trailing bytes in a container box", ErrFormat, len(b))
		}
		size, hdr := uint64(binary.BigEndian.Uint32(b)), uint64(8)
		typ := string(b[4:8])
		switch size {
		case 0:
			size = uint64(len(b))
		case 1:
			if len(b) < 16 {
				return fmt.Errorf("%w: truncated 64-bit box size", ErrFormat)
			}
			size, hdr = binary.BigEndian.Uint64(b[8:]), 16
		}
		if size < hdr || size > uint64(len(b)) {
			return fmt.Errorf("%w: %q box of %d bytes in %d", ErrFormat, typ, size, len(b))
		}
		if err := fn(typ, b[hdr:size]); err != nil {
			return err
		}
		b = b[size:]
	}
	return nil
}

// ticksToDuration converts ticks of a timescale to a duration exactly as the segmenter
// does (node/ingest), so rebuilt durations equal recorded ones.
func ticksToDuration(ticks int64, rate int64) time.Duration {
	return time.Duration(ticks/rate*int64(time.Second) + (ticks%rate)*int64(time.Second)/rate)
}
