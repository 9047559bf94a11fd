package media

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
)

// ErrFormat is wrapped by every error about bytes that are not the fMP4 expected.
var ErrFormat = errors.New("media: bad fMP4")

// ParseInit parses an init section (ftyp+moov).
func ParseInit(b []byte) (init *fmp4.Init, err error) {
	defer func() {
		if r := recover(); r != nil {
			init, err = nil, fmt.Errorf("%w: init: %v", ErrFormat, r)
		}
	}()
	var in fmp4.Init
	if err := in.Unmarshal(bytes.NewReader(b)); err != nil {
		return nil, fmt.Errorf("%w: init: %v", ErrFormat, err)
	}
	if len(in.Tracks) == 0 {
		return nil, fmt.Errorf("%w: init has no track", ErrFormat)
	}
	for _, t := range in.Tracks {
		if t.TimeScale == 0 || t.Codec == nil {
			return nil, fmt.Errorf("%w: init track %d has no timescale or codec", ErrFormat, t.ID)
		}
	}
	return &in, nil
}

// ParseFragment parses a fragment (one or more moof+mdat).
func ParseFragment(b []byte) (parts fmp4.Parts, err error) {
	defer func() {
		if r := recover(); r != nil {
			parts, err = nil, fmt.Errorf("%w: fragment: %v", ErrFormat, r)
		}
	}()
	if err := parts.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("%w: fragment: %v", ErrFormat, err)
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("%w: fragment has no moof", ErrFormat)
	}
	return parts, nil
}

// refTrack is the track whose decode time anchors a fragment to its wall-clock start: the
// first video track, else the first track.
func refTrack(init *fmp4.Init) *fmp4.InitTrack {
	for _, t := range init.Tracks {
		if t.Codec.IsVideo() {
			return t
		}
	}
	return init.Tracks[0]
}

// toTicks converts d to a timescale, rounding to the nearest tick.
func toTicks(d time.Duration, timescale uint32) int64 {
	return int64(math.Round(d.Seconds() * float64(timescale)))
}

// Rebaser rewrites the decode times (tfdt) of fragments so that a stream built from
// several segments starts at 0 and follows wall-clock time. Call StartSegment before the
// first fragment of each segment, then Rebase for each fragment in order.
type Rebaser struct {
	origin time.Time
	init   *fmp4.Init
	ref    *fmp4.InitTrack
	scale  map[int]uint32
	shift  map[int]int64 // ticks added to each track's tfdt in the current segment
	end    map[int]int64 // each track's decode time after the last sample placed
	// wallTimes: a segment is placed at its wall-clock time even when that is before the
	// end of what was placed (Export does its own ordering and cuts its end by wall time).
	wallTimes bool
	seq       uint32
	buf       seekablebuffer.Buffer
}

// NewRebaser returns a Rebaser for fragments described by init; origin is the wall-clock
// time that becomes media time 0 (the first fragment's start).
func NewRebaser(init *fmp4.Init, origin time.Time) *Rebaser {
	r := &Rebaser{origin: origin, init: init, ref: refTrack(init), scale: map[int]uint32{}, shift: map[int]int64{}, end: map[int]int64{}}
	for _, t := range init.Tracks {
		r.scale[t.ID] = t.TimeScale
	}
	return r
}

// StartSegment forgets the per-track offsets: the next fragment comes from another
// segment, whose decode times follow another clock.
func (r *Rebaser) StartSegment() { clear(r.shift) }

// Place parses a fragment that starts at wall-clock time start and sets each track's
// BaseTime to its position in the stream. The parts stay valid until the next call.
func (r *Rebaser) Place(frag []byte, start time.Time) (fmp4.Parts, error) {
	parts, err := ParseFragment(frag)
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		var refBase int64 = -1
		for _, pt := range p.Tracks {
			if pt.ID == r.ref.ID {
				refBase = int64(pt.BaseTime)
			}
		}
		for _, pt := range p.Tracks {
			ts, ok := r.scale[pt.ID]
			if !ok {
				return nil, fmt.Errorf("%w: fragment has track %d, absent from the init", ErrFormat, pt.ID)
			}
			if _, ok := r.shift[pt.ID]; !ok {
				base := toTicks(start.Sub(r.origin), ts)
				if refBase >= 0 && pt.ID != r.ref.ID {
					// Keep this track's offset from the reference track inside the fragment.
					d := float64(pt.BaseTime)/float64(ts) - float64(refBase)/float64(r.ref.TimeScale)
					base += int64(math.Round(d * float64(ts)))
				}
				// A segment never starts before the end of what was placed: two nodes'
				// clock mappings differ by up to a few hundred ms at a handover, and decode
				// times that go back make players drop the overlapping frames.
				if e, ok := r.end[pt.ID]; ok && base < e && !r.wallTimes {
					base = e
				}
				r.shift[pt.ID] = base - int64(pt.BaseTime)
			}
			nb := int64(pt.BaseTime) + r.shift[pt.ID]
			if nb < 0 {
				nb = 0
			}
			pt.BaseTime = uint64(nb)
			for _, smp := range pt.Samples {
				nb += int64(smp.Duration)
			}
			r.end[pt.ID] = nb
		}
		r.seq++
		p.SequenceNumber = r.seq
	}
	return parts, nil
}

// Rebase returns the fragment re-encoded with its decode times placed in the stream (see
// Place) and sequence numbers counting from 1.
func (r *Rebaser) Rebase(frag []byte, start time.Time) ([]byte, error) {
	parts, err := r.Place(frag, start)
	if err != nil {
		return nil, err
	}
	r.buf.Reset()
	if err := parts.Marshal(&r.buf); err != nil {
		return nil, fmt.Errorf("media: marshal fragment: %w", err)
	}
	return r.buf.Bytes(), nil
}
