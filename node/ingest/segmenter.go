package ingest

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"

	"github.com/vigie-vms/vigie/model"
)

const (
	videoTimescale = 90000
	// maxVideoGap: a DTS step larger than this (or not positive) is a discontinuity: the
	// previous sample gets the last known duration and the fragment is closed.
	maxVideoGap = 10 * videoTimescale
	// defaultFrameTicks is the duration given to a lone sample when none is known (25 fps).
	defaultFrameTicks = videoTimescale / 25
	// maxBufferedAudio bounds the audio samples held while video stalls.
	maxBufferedAudio = 4096
)

// ErrSink is wrapped around an error returned by the Sink: the recording of the session
// stops (the puller reconnects; a pushed session is closed).
var ErrSink = errors.New("sink refused the recording")

// audioTrack is the segmenter side of one audio track.
type audioTrack struct {
	buf      trackBuf
	codec    fmp4.Codec
	name     string
	rate     int64
	started  bool
	pend     []byte
	pendPTS  int64
	havePend bool
	lastDur  uint32
}

// segmenter turns access units into an init section and fMP4 fragments. It knows nothing of
// RTP: video arrives as NAL units with PTS/DTS in 90 kHz ticks, audio as frames with a PTS in
// the track's clock. It is not safe for concurrent use; the pipeline serialises calls.
type segmenter struct {
	sink    Sink
	health  *health
	fragMax int64 // in 90 kHz ticks

	vp     *videoParams
	video  trackBuf
	audio  []*audioTrack
	tracks []*trackBuf // video first, then audio; what appendFragment writes

	haveInit bool
	initGen  uint64
	badGen   uint64 // generation whose init could not be written; retried only on change
	hasBad   bool
	startDTS int64 // DTS of the sample at decode time 0 of the current init

	havePend   bool
	pendDTS    int64
	lastDur    uint32
	fragTicks  int64
	fragWall   time.Time
	fragKey    bool
	fragFrames int

	haveKey bool
	lastKey int64

	seq uint32
	out []byte
	ib  seekablebuffer.Buffer
}

func newSegmenter(sink Sink, h *health, fragMax time.Duration, vp *videoParams) *segmenter {
	s := &segmenter{sink: sink, health: h, vp: vp}
	s.fragMax = int64(fragMax) * videoTimescale / int64(time.Second)
	if s.fragMax < 1 {
		s.fragMax = 1
	}
	s.video = trackBuf{id: 1, timescale: videoTimescale, isVideo: true}
	s.video.setHead(initialFragmentHead)
	s.tracks = []*trackBuf{&s.video}
	return s
}

func (s *segmenter) addAudio(codec fmp4.Codec, rate int, name string) int {
	a := &audioTrack{codec: codec, rate: int64(rate), name: name}
	a.buf = trackBuf{id: len(s.tracks) + 1, timescale: uint32(rate)}
	s.audio = append(s.audio, a)
	s.tracks = append(s.tracks, &a.buf)
	return len(s.audio) - 1
}

// codecs describes the current configuration, e.g. "H264 1280x720, MPEG-4 audio".
func (s *segmenter) codecs() string {
	var b strings.Builder
	b.WriteString(s.vp.describe())
	for _, a := range s.audio {
		b.WriteString(", ")
		b.WriteString(a.name)
	}
	return b.String()
}

// writeInit starts a new init section with the current parameter sets.
func (s *segmenter) writeInit(dts int64) (bool, error) {
	if s.hasBad && s.badGen == s.vp.gen {
		return false, nil
	}
	init := fmp4.Init{Tracks: []*fmp4.InitTrack{{ID: 1, TimeScale: videoTimescale, Codec: s.vp.fmp4Codec()}}}
	for _, a := range s.audio {
		init.Tracks = append(init.Tracks, &fmp4.InitTrack{ID: a.buf.id, TimeScale: a.buf.timescale, Codec: a.codec})
	}
	s.ib.Reset()
	if err := init.Marshal(&s.ib); err != nil {
		s.hasBad, s.badGen = true, s.vp.gen
		return false, fmt.Errorf("cannot write an init section for %s: %w", s.vp.describe(), err)
	}
	codecs := s.codecs()
	if err := s.sink.WriteInit(s.ib.Bytes(), codecs); err != nil {
		return false, fmt.Errorf("%w: init: %w", ErrSink, err)
	}
	s.health.setCodec(codecs)
	s.haveInit, s.initGen, s.hasBad = true, s.vp.gen, false
	s.startDTS = dts
	for _, t := range s.tracks {
		t.data, t.samples, t.base, t.next = t.data[:t.head], t.samples[:0], 0, 0
	}
	for _, a := range s.audio {
		a.started, a.havePend = false, false
	}
	s.havePend, s.fragTicks, s.fragFrames = false, 0, 0
	return true, nil
}

// writeVideo adds one access unit. Access units are dropped until the parameter sets are
// known and a random access point arrives (and again after a parameter change).
// It returns a non-nil error only when the sink failed or an init could not be written.
func (s *segmenter) writeVideo(au [][]byte, info auInfo, pts, dts int64, wall time.Time) error {
	if !s.vp.ready() {
		return nil
	}
	if !s.haveInit || s.vp.gen != s.initGen {
		if !info.randomAccess {
			if s.haveInit {
				// a parameter change mid-session: frames wait for the next keyframe
				s.health.countDropped(DropWaitKeyframe, 1)
			}
			return nil
		}
		if s.haveInit {
			if err := s.finishPending(s.lastDur); err != nil {
				return err
			}
		}
		ok, err := s.writeInit(dts)
		if !ok {
			return err
		}
		s.addVideo(au, info, pts, dts, wall)
		return nil
	}
	discontinuity := false
	d := dts - s.pendDTS
	if d <= 0 || d > maxVideoGap {
		discontinuity = true
		d = int64(s.lastDur)
		if d == 0 {
			d = defaultFrameTicks
		}
	}
	s.finalize(uint32(d))
	if info.randomAccess || discontinuity || s.fragTicks+d > s.fragMax {
		if err := s.flush(); err != nil {
			return err
		}
	}
	s.addVideo(au, info, pts, dts, wall)
	return nil
}

func (s *segmenter) addVideo(au [][]byte, info auInfo, pts, dts int64, wall time.Time) {
	if len(s.video.samples) == 0 {
		s.fragWall = wall
		s.fragKey = info.randomAccess
	}
	start := len(s.video.data)
	s.video.data = appendAVCC(s.video.data, au)
	s.video.samples = append(s.video.samples, sampleMeta{
		size:    uint32(len(s.video.data) - start),
		cto:     int32(pts - dts),
		nonSync: !info.randomAccess,
	})
	s.havePend, s.pendDTS = true, dts
	s.fragFrames++
	if info.randomAccess {
		if s.haveKey && dts > s.lastKey {
			s.health.setKeyframeInterval(ticksToDuration(dts-s.lastKey, videoTimescale))
		}
		s.haveKey, s.lastKey = true, dts
	}
}

// finalize gives the pending (last) video sample its duration.
func (s *segmenter) finalize(d uint32) {
	if !s.havePend {
		return
	}
	s.video.samples[len(s.video.samples)-1].duration = d
	s.video.next += uint64(d)
	s.fragTicks += int64(d)
	s.lastDur = d
	s.havePend = false
}

// finishPending closes the fragment in progress, giving the last sample duration d.
func (s *segmenter) finishPending(d uint32) error {
	if d == 0 {
		d = defaultFrameTicks
	}
	s.finalize(d)
	if len(s.video.samples) == 0 {
		return nil
	}
	return s.flush()
}

// close flushes what is buffered (end of session).
func (s *segmenter) close() error {
	if !s.haveInit {
		return nil
	}
	return s.finishPending(s.lastDur)
}

// initialFragmentHead is the room first reserved for a fragment's moof and mdat headers in
// front of the video samples: a 1 s fragment at 25 fps without audio needs 496 bytes. A
// fragment whose headers do not fit is copied once into s.out, and the room grows.
const initialFragmentHead = 1024

func (s *segmenter) flush() error {
	if len(s.video.samples) == 0 {
		return nil
	}
	s.seq++
	v := &s.video
	var data []byte
	moofSize, _ := fragmentSizes(s.tracks)
	grow := 0
	if hdr := moofSize + 8; hdr <= v.head {
		// In place: the headers go just before the video samples, the audio samples after.
		start := v.head - hdr
		appendFragmentHeader(v.data[start:start:v.head], s.seq, s.tracks)
		for _, a := range s.audio {
			if len(a.buf.samples) != 0 {
				v.data = append(v.data, a.buf.payload()...)
			}
		}
		data = v.data[start:]
	} else {
		s.out = appendFragment(s.out[:0], s.seq, s.tracks)
		data = s.out
		grow = hdr + hdr/2
	}
	f := model.Fragment{
		Start:    s.fragWall,
		Duration: ticksToDuration(s.fragTicks, videoTimescale),
		Keyframe: s.fragKey,
		Data:     data,
	}
	frames, ticks := s.fragFrames, s.fragTicks
	for _, t := range s.tracks {
		t.reset()
	}
	if grow > 0 {
		v.setHead(grow)
	}
	s.fragTicks, s.fragFrames = 0, 0
	s.health.onFragment(frames, len(f.Data), ticksToDuration(ticks, videoTimescale))
	if err := s.sink.WriteFragment(f); err != nil {
		return fmt.Errorf("%w: fragment: %w", ErrSink, err)
	}
	return nil
}

// writeAudio adds one audio frame of track i with its PTS in the track's clock. Audio is
// never a reason to fail: frames that do not fit are dropped.
func (s *segmenter) writeAudio(i int, frame []byte, pts int64) {
	if !s.haveInit || i < 0 || i >= len(s.audio) || len(frame) == 0 {
		return
	}
	a := s.audio[i]
	if !a.started {
		off := pts - mulDiv(s.startDTS, a.rate, videoTimescale)
		if off < 0 {
			return // before the first video sample of this init
		}
		a.buf.base, a.buf.next, a.started = uint64(off), uint64(off), true
	}
	if a.havePend {
		d := pts - a.pendPTS
		if d <= 0 || d > 10*a.rate {
			d = int64(a.lastDur)
			if d == 0 {
				d = 1
			}
		}
		a.lastDur = uint32(d)
		if len(a.buf.samples) < maxBufferedAudio {
			a.buf.data = append(a.buf.data, a.pend...)
			a.buf.samples = append(a.buf.samples, sampleMeta{size: uint32(len(a.pend)), duration: uint32(d)})
			a.buf.next += uint64(d)
		}
	}
	a.pend = append(a.pend[:0], frame...)
	a.pendPTS, a.havePend = pts, true
}

func ticksToDuration(ticks int64, rate int64) time.Duration {
	return time.Duration(mulDiv(ticks, int64(time.Second), rate))
}

// mulDiv computes v*m/d without overflowing for the values used here.
func mulDiv(v, m, d int64) int64 {
	return v/d*m + (v%d)*m/d
}
