package media

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"
)

// MaxExportBytes is the largest export: a progressive MP4 written by mediacommon uses
// 32-bit chunk offsets.
const MaxExportBytes = math32 - 1

const math32 = 1 << 32

// ErrTooLarge is returned when an export would exceed MaxExportBytes.
var ErrTooLarge = errors.New("export larger than 4 GiB: split the range")

// Export builds a progressive MP4 (ftyp, moov, mdat) from fragments, in two passes: Add
// reads every fragment once to learn its samples (sizes, durations, keyframes), then
// WriteTo fetches the fragments again to copy the sample bytes. Nothing but the sample
// table is held in memory, so the size is known (Size) before the first byte is written.
type Export struct {
	init   *fmp4.Init
	origin time.Time
	end    time.Time
	rb     *Rebaser
	pres   pmp4.Presentation
	tracks map[int]*exportTrack
	data   int64
	// cache of fragments fetched back in WriteTo (samples of two tracks interleave, so a
	// fragment may be needed again after the next one was read).
	cache []*fragRef
}

type exportTrack struct {
	t       *pmp4.Track
	next    int64 // decode time just after the last sample, in the track's timescale
	endTick int64
}

type fragRef struct {
	fetch func() ([]byte, error)
	parts fmp4.Parts
}

// NewExport starts an export of [origin, end): origin is the wall-clock start of the first
// fragment (a keyframe), which becomes time 0; samples at or after end are left out.
func NewExport(init *fmp4.Init, origin, end time.Time) *Export {
	e := &Export{init: init, origin: origin, end: end, rb: NewRebaser(init, origin), tracks: map[int]*exportTrack{}}
	e.rb.wallTimes = true
	for _, it := range init.Tracks {
		t := &pmp4.Track{ID: it.ID, TimeScale: it.TimeScale, Codec: it.Codec}
		e.pres.Tracks = append(e.pres.Tracks, t)
		e.tracks[it.ID] = &exportTrack{t: t, endTick: toTicks(end.Sub(origin), it.TimeScale)}
	}
	return e
}

// StartSegment must be called before the first fragment of each segment.
func (e *Export) StartSegment() { e.rb.StartSegment() }

// Add adds the samples of a fragment that starts at wall-clock time start. fetch returns
// the same bytes again when WriteTo needs them. It returns the number of samples of the
// reference (video) track added.
func (e *Export) Add(frag []byte, start time.Time, fetch func() ([]byte, error)) (int, error) {
	parts, err := e.rb.Place(frag, start)
	if err != nil {
		return 0, err
	}
	ref := &fragRef{fetch: fetch}
	added := 0
	for pi, p := range parts {
		for ti, pt := range p.Tracks {
			et := e.tracks[pt.ID]
			base := int64(pt.BaseTime)
			dts := base
			for si, s := range pt.Samples {
				if dts >= et.endTick {
					break
				}
				if n := len(et.t.Samples); n > 0 {
					// Stretch or shrink the previous sample so this one lands at its place
					// (a gap in the recording, or clock jitter between segments). It never
					// shrinks below half its duration: a segment that starts a little before
					// the previous one ended (two nodes' clocks at a handover) is pushed
					// later instead, or players and remuxers see two frames at one time.
					if si == 0 {
						last := et.t.Samples[n-1]
						d := int64(last.Duration) + base - et.next
						if floor := max(int64(last.Duration)/2, 1); d < floor {
							d = floor
						}
						et.next += d - int64(last.Duration)
						last.Duration = uint32(d)
					}
				} else {
					if base > 0 && base < 1<<31 {
						et.t.TimeOffset = int32(base)
					}
					et.next = base
				}
				pi, ti, si := pi, ti, si
				et.t.Samples = append(et.t.Samples, &pmp4.Sample{
					Duration:        s.Duration,
					PTSOffset:       s.PTSOffset,
					IsNonSyncSample: s.IsNonSyncSample,
					PayloadSize:     uint32(len(s.Payload)),
					GetPayload:      func() ([]byte, error) { return e.payload(ref, pi, ti, si) },
				})
				e.data += int64(len(s.Payload))
				if pt.ID == e.rb.ref.ID {
					added++
				}
				dts += int64(s.Duration)
				et.next += int64(s.Duration)
			}
		}
	}
	if e.data > MaxExportBytes {
		return added, ErrTooLarge
	}
	return added, nil
}

func (e *Export) payload(ref *fragRef, pi, ti, si int) ([]byte, error) {
	if ref.parts == nil {
		b, err := ref.fetch()
		if err != nil {
			return nil, err
		}
		parts, err := ParseFragment(b)
		if err != nil {
			return nil, err
		}
		ref.parts = parts
		e.cache = append(e.cache, ref)
		if len(e.cache) > 3 {
			e.cache[0].parts = nil
			e.cache = e.cache[1:]
		}
	}
	if pi >= len(ref.parts) || ti >= len(ref.parts[pi].Tracks) || si >= len(ref.parts[pi].Tracks[ti].Samples) {
		return nil, fmt.Errorf("%w: fragment changed between reads", ErrFormat)
	}
	return ref.parts[pi].Tracks[ti].Samples[si].Payload, nil
}

// Samples returns the number of samples of the reference (video) track.
func (e *Export) Samples() int { return len(e.tracks[e.rb.ref.ID].t.Samples) }

var errDryRun = errors.New("dry run")

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// Size returns the exact number of bytes WriteTo writes.
func (e *Export) Size() (int64, error) {
	if e.Samples() == 0 {
		return 0, errors.New("export: no sample")
	}
	// Marshal writes ftyp+moov and the mdat header, then asks for the first payload: stop
	// there and add the payload sizes.
	saved := make(map[*pmp4.Sample]func() ([]byte, error))
	for _, t := range e.pres.Tracks {
		for _, s := range t.Samples {
			saved[s] = s.GetPayload
			s.GetPayload = func() ([]byte, error) { return nil, errDryRun }
		}
	}
	var cw countWriter
	err := e.pres.Marshal(&cw)
	for s, f := range saved {
		s.GetPayload = f
	}
	if err != nil && !errors.Is(err, errDryRun) {
		return 0, fmt.Errorf("export: %w", err)
	}
	total := cw.n + e.data
	if total > MaxExportBytes {
		return total, ErrTooLarge
	}
	return total, nil
}

// WriteTo writes the MP4.
func (e *Export) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	err := e.pres.Marshal(cw)
	return cw.n, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
