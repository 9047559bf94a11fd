package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtplpcm"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpsimpleaudio"
	"github.com/bluenviron/gortsplib/v4/pkg/rtptime"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/g711"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/pion/rtp"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/node/ingest/depack"
)

// ErrNoVideo: the stream offers no H.264 or H.265 video track Vigie can record.
var ErrNoVideo = errors.New("no supported video track (H264 or H265)")

const maxAudioTracks = 4

type audioKind int

const (
	audioAAC audioKind = iota + 1
	audioG711
	audioOpus
	audioLPCM
)

// selection is the result of choosing, in a session description, the tracks to record.
type selection struct {
	videoMedia  *description.Media
	videoFormat format.Format
	audio       []audioChoice
	// skipped lists what was offered but will not be recorded, e.g. "MJPEG (video)".
	skipped []string
}

type audioChoice struct {
	media  *description.Media
	format format.Format
	kind   audioKind
}

// medias returns the medias to SETUP.
func (s *selection) medias() []*description.Media {
	m := []*description.Media{s.videoMedia}
	for _, a := range s.audio {
		m = append(m, a.media)
	}
	return m
}

// selectTracks picks the first usable H.264/H.265 format and every supported audio
// format (MPEG-4 audio, G.711, Opus, LPCM; one per media). It never fails because of audio.
func selectTracks(desc *description.Session) (selection, error) {
	var sel selection
	if desc == nil {
		return sel, fmt.Errorf("%w: empty session description", ErrNoVideo)
	}
	for _, medi := range desc.Medias {
		if medi == nil {
			continue
		}
		used := false
		for _, forma := range medi.Formats {
			if forma == nil {
				continue
			}
			name := fmt.Sprintf("%s (%s)", forma.Codec(), medi.Type)
			if used {
				sel.skipped = append(sel.skipped, name)
				continue
			}
			switch f := forma.(type) {
			case *format.H264:
				if sel.videoFormat == nil && f.PacketizationMode < 2 {
					sel.videoMedia, sel.videoFormat, used = medi, f, true
				}
			case *format.H265:
				if sel.videoFormat == nil && f.MaxDONDiff == 0 {
					sel.videoMedia, sel.videoFormat, used = medi, f, true
				}
			case *format.MPEG4Audio:
				if f.Config != nil && f.Config.SampleRate > 0 && f.Config.ChannelCount > 0 &&
					f.SizeLength > 0 && len(sel.audio) < maxAudioTracks {
					sel.audio = append(sel.audio, audioChoice{medi, f, audioAAC})
					used = true
				}
			case *format.G711:
				if f.SampleRate > 0 && f.ChannelCount > 0 && f.ChannelCount <= 8 && len(sel.audio) < maxAudioTracks {
					sel.audio = append(sel.audio, audioChoice{medi, f, audioG711})
					used = true
				}
			case *format.Opus:
				if f.ChannelCount > 0 && f.ChannelCount <= 8 && len(sel.audio) < maxAudioTracks {
					sel.audio = append(sel.audio, audioChoice{medi, f, audioOpus})
					used = true
				}
			case *format.LPCM:
				if (f.BitDepth == 16 || f.BitDepth == 24) && f.SampleRate > 0 && f.ChannelCount > 0 &&
					f.ChannelCount <= 8 && len(sel.audio) < maxAudioTracks {
					sel.audio = append(sel.audio, audioChoice{medi, f, audioLPCM})
					used = true
				}
			}
			if !used {
				sel.skipped = append(sel.skipped, name)
			}
		}
	}
	if sel.videoFormat == nil {
		offered := "nothing"
		if len(sel.skipped) > 0 || len(sel.audio) > 0 {
			var names []string
			for _, a := range sel.audio {
				names = append(names, fmt.Sprintf("%s (%s)", a.format.Codec(), a.media.Type))
			}
			names = append(names, sel.skipped...)
			offered = strings.Join(names, ", ")
		}
		return sel, fmt.Errorf("%w: the stream offers %s", ErrNoVideo, offered)
	}
	return sel, nil
}

// pipelineConfig configures a pipeline.
type pipelineConfig struct {
	Sink        Sink
	Health      *health
	Logger      *slog.Logger
	FragmentMax time.Duration
	// NTP returns the absolute time of a packet from the RTCP sender reports; nil or
	// ok=false means "use the receive time".
	NTP func(*description.Media, *rtp.Packet) (time.Time, bool)
	// Now returns the receive time (time.Now when nil).
	Now func() time.Time
	// OnFail is called once, under the pipeline's lock, with the first fatal error (a sink
	// failure). It must not block.
	OnFail func(error)
}

// pipeline is the per-session path RTP packet → access unit → segmenter → Sink. It needs
// no network: tests, fuzzers and benchmarks feed it packets directly. Packets of different
// tracks may arrive from different goroutines (RTSP over UDP); a mutex serialises them.
type pipeline struct {
	cfg     pipelineConfig
	log     *slog.Logger
	mu      sync.Mutex
	timeDec *rtptime.GlobalDecoder2
	seg     *segmenter
	video   videoIn
	audio   []*audioIn
	err     error // sticky: the first sink error
	once    map[string]bool

	anchorSet  bool
	anchorWall time.Time
	anchorPTS  int64
}

type videoIn struct {
	media  *description.Media
	format format.Format
	// dec returns access units that alias its buffers: valid until its next Decode
	// (whatever is kept is copied: parameter sets, samples).
	dec    *depack.Decoder
	params videoParams

	h264DTS  *h264.DTSExtractor
	h265DTS  *h265.DTSExtractor
	dtsGen   uint64
	dtsReady bool
	haveDTS  bool
	prevDTS  int64

	// The PTS of the last two timestamps seen: an access unit comes out of the
	// depacketizer after a packet of the next one when the camera does not set the marker
	// bit. Before a packet is remembered, ptsOf[0].ts is the previous packet's timestamp
	// (frame interval, lost frames).
	ptsOf [2]tsPTS // [0] the latest timestamp, [1] the one before

	// Drop accounting (health.countDropped).
	lostSeen   uint64 // the camera's packets-lost counter at the previous packet
	frameTicks uint32 // RTP timestamp step between consecutive frames, 0 until known
	emitted    bool   // an access unit came out of the depacketizer this session
	dropTS     uint32 // timestamp of the last frame counted as depacketize drop
	dropTSSet  bool
}

// tsPTS is the PTS an RTP timestamp was decoded to.
type tsPTS struct {
	ts    uint32
	pts   int64
	ok    bool // the timestamp decoder gave a PTS
	known bool
}

// rememberPTS records the PTS of a packet's timestamp. The timestamp decoder gives none
// until the track's first packet of a random access point (the SPS packet before it, with
// the same timestamp, gets none): a later packet of the same timestamp fills it in.
func (v *videoIn) rememberPTS(ts uint32, pts int64, ok bool) {
	if latest := &v.ptsOf[0]; latest.known && latest.ts == ts {
		if ok && !latest.ok {
			latest.pts, latest.ok = pts, true
		}
		return
	}
	v.ptsOf[1], v.ptsOf[0] = v.ptsOf[0], tsPTS{ts: ts, pts: pts, ok: ok, known: true}
}

// auPTS returns the PTS of the access unit with RTP timestamp ts (one of the last two
// timestamps seen; ok false otherwise).
func (v *videoIn) auPTS(ts uint32) (int64, bool) {
	for _, e := range v.ptsOf {
		if e.known && e.ts == ts {
			return e.pts, e.ok
		}
	}
	return 0, false
}

type audioIn struct {
	media   *description.Media
	format  format.Format
	kind    audioKind
	index   int
	aac     *rtpmpeg4audio.Decoder
	simple  *rtpsimpleaudio.Decoder
	lpcm    *rtplpcm.Decoder
	spau    int64 // AAC samples per access unit
	mulaw   bool
	scratch []byte
}

var (
	mulawTable = g711Table(true)
	alawTable  = g711Table(false)
)

func g711Table(mu bool) (t [256][2]byte) {
	for i := 0; i < 256; i++ {
		in := []byte{byte(i)}
		var out []byte
		if mu {
			var m g711.Mulaw
			m.Unmarshal(in)
			out = m
		} else {
			var a g711.Alaw
			a.Unmarshal(in)
			out = a
		}
		t[i] = [2]byte{out[0], out[1]}
	}
	return t
}

// newPipeline builds the pipeline for a session description. The error wraps ErrNoVideo
// when nothing can be recorded.
func newPipeline(desc *description.Session, cfg pipelineConfig) (*pipeline, *selection, error) {
	sel, err := selectTracks(desc)
	if err != nil {
		return nil, &sel, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Health == nil {
		cfg.Health = newHealth("", model.CameraConnecting)
	}
	p := &pipeline{cfg: cfg, log: cfg.Logger, timeDec: &rtptime.GlobalDecoder2{}, once: map[string]bool{}}
	p.timeDec.Initialize()
	p.video.media, p.video.format = sel.videoMedia, sel.videoFormat
	switch f := sel.videoFormat.(type) {
	case *format.H264:
		d, err := depack.NewH264(f.PacketizationMode)
		if err != nil {
			return nil, &sel, fmt.Errorf("%w: H264: %v", ErrNoVideo, err)
		}
		p.video.dec = d
		p.video.params.codec = codecH264
		sps, pps := f.SafeParams()
		p.adoptSDPParams(nil, sps, pps)
	case *format.H265:
		d, err := depack.NewH265()
		if err != nil {
			return nil, &sel, fmt.Errorf("%w: H265: %v", ErrNoVideo, err)
		}
		p.video.dec = d
		p.video.params.codec = codecH265
		vps, sps, pps := f.SafeParams()
		p.adoptSDPParams(vps, sps, pps)
	}
	p.seg = newSegmenter(cfg.Sink, cfg.Health, cfg.FragmentMax, &p.video.params)
	kept := sel.audio[:0]
	for _, a := range sel.audio {
		in := &audioIn{media: a.media, format: a.format, kind: a.kind}
		var codec fmp4.Codec
		var name string
		var err error
		switch f := a.format.(type) {
		case *format.MPEG4Audio:
			in.aac, err = f.CreateDecoder()
			codec, name = &fmp4.CodecMPEG4Audio{Config: *f.Config}, "MPEG-4 audio"
			in.spau = 1024
			if f.Config.FrameLengthFlag {
				in.spau = 960
			}
		case *format.G711:
			in.lpcm, err = f.CreateDecoder()
			in.mulaw = f.MULaw
			codec = &fmp4.CodecLPCM{BitDepth: 16, SampleRate: f.SampleRate, ChannelCount: f.ChannelCount}
			name = "G711 (as LPCM)"
		case *format.Opus:
			in.simple, err = f.CreateDecoder()
			codec, name = &fmp4.CodecOpus{ChannelCount: f.ChannelCount}, "Opus"
		case *format.LPCM:
			in.lpcm, err = f.CreateDecoder()
			codec = &fmp4.CodecLPCM{BitDepth: f.BitDepth, SampleRate: f.SampleRate, ChannelCount: f.ChannelCount}
			name = "LPCM"
		}
		if err != nil || codec == nil {
			sel.skipped = append(sel.skipped, fmt.Sprintf("%s (audio: %v)", a.format.Codec(), err))
			continue
		}
		in.index = p.seg.addAudio(codec, a.format.ClockRate(), name)
		p.audio = append(p.audio, in)
		kept = append(kept, a)
	}
	sel.audio = kept
	if len(sel.skipped) > 0 {
		p.log.Info("tracks not recorded", slog.String("tracks", strings.Join(sel.skipped, ", ")))
	}
	return p, &sel, nil
}

func (p *pipeline) adoptSDPParams(vps, sps, pps []byte) {
	vp := &p.video.params
	if vps != nil {
		if err := vp.setVPS(vps); err != nil {
			p.logOnce("sdp-vps", "ignoring the VPS of the SDP", err)
		}
	}
	if sps != nil {
		if err := vp.setSPS(sps); err != nil {
			p.logOnce("sdp-sps", "ignoring the SPS of the SDP", err)
		}
	}
	if pps != nil {
		if err := vp.setPPS(pps); err != nil {
			p.logOnce("sdp-pps", "ignoring the PPS of the SDP", err)
		}
	}
}

// logOnce logs a problem the first time it happens in this session.
func (p *pipeline) logOnce(key, msg string, err error) {
	if p.once[key] {
		return
	}
	p.once[key] = true
	p.log.Warn(msg, slog.Any("error", err))
}

// handle routes a packet of media/format to its track. Unknown formats are ignored.
func (p *pipeline) handle(medi *description.Media, forma format.Format, pkt *rtp.Packet) {
	if forma == p.video.format {
		p.handleVideo(pkt)
		return
	}
	for _, a := range p.audio {
		if forma == a.format {
			p.handleAudio(a, pkt)
			return
		}
	}
}

func (p *pipeline) handleVideo(pkt *rtp.Packet) {
	p.cfg.Health.packets.Add(1)
	v := &p.video
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return
	}
	pts, ptsOK := p.timeDec.Decode(v.format, pkt)
	p.countLostFrames(pkt)
	v.rememberPTS(pkt.Timestamp, pts, ptsOK)
	au, err := v.dec.Decode(pkt)

	if err != nil {
		more := errors.Is(err, rtph264.ErrMorePacketsNeeded) || errors.Is(err, rtph265.ErrMorePacketsNeeded)
		noStart := errors.Is(err, rtph264.ErrNonStartingPacketAndNoPrevious) || errors.Is(err, rtph265.ErrNonStartingPacketAndNoPrevious)
		if !more && !noStart {
			p.logOnce("video-rtp", "dropping malformed video RTP packets", err)
		}
		// A frame cut by a lost packet or malformed is dropped: counted once per frame.
		// Joining a stream in the middle of a frame (before the first access unit of the
		// session) is not a loss.
		if !more && (v.emitted || !noStart) && (!v.dropTSSet || v.dropTS != pkt.Timestamp) {
			v.dropTS, v.dropTSSet = pkt.Timestamp, true
			p.cfg.Health.countDropped(DropDepacketize, 1)
		}
		return
	}
	// Without a marker bit, the access unit returned may be the previous timestamp's.
	auPTS, auOK := v.auPTS(v.dec.Timestamp())
	if !auOK || len(au) == 0 {
		return
	}
	v.emitted = true
	au, info, perr := v.params.scanAU(au)
	if perr != nil {
		p.logOnce("video-params", "ignoring a malformed in-band parameter set", perr)
	}
	if !info.hasPicture {
		return
	}
	now := p.cfg.Now()
	p.cfg.Health.lastFrame.Store(now.UnixNano())
	dts := p.dts(au, info, auPTS)
	wall := p.wallClock(pkt, pts, auPTS, now)
	if err := p.seg.writeVideo(au, info, auPTS, dts, wall); err != nil {
		p.fail(err)
	}
}

// maxLostFrames bounds the frames counted for one sequence-number gap (10 s at 25 fps):
// a larger timestamp jump is a sender's discontinuity, not frames in flight.
const maxLostFrames = 250

// countLostFrames counts the whole frames lost in a sequence-number gap just before pkt
// (the RTSP client reports the gap, through health.lost, before it hands over the packet
// that reveals it): the RTP timestamp jumped by more than one frame interval. It also
// learns the frame interval from gap-free frame changes.
func (p *pipeline) countLostFrames(pkt *rtp.Packet) {
	v := &p.video
	lost := p.cfg.Health.lost.Load()
	gap := lost != v.lostSeen
	v.lostSeen = lost
	prev := v.ptsOf[0]
	if !prev.known || pkt.Timestamp == prev.ts {
		return
	}
	d := pkt.Timestamp - prev.ts // wraps like RTP timestamps
	if d >= 1<<31 {
		return // backwards: reordered or a new timeline
	}
	if !gap {
		if d < videoTimescale { // a plausible frame interval (under a second)
			v.frameTicks = d
		}
		return
	}
	if v.frameTicks == 0 {
		return
	}
	if n := (d + v.frameTicks/2) / v.frameTicks; n > 1 {
		p.cfg.Health.countDropped(DropRTPLoss, uint64(min(n-1, maxLostFrames)))
	}
}

// dts returns the decode timestamp of an access unit: the DTS extractor's answer when it
// has one, else the PTS; always strictly increasing.
func (p *pipeline) dts(au [][]byte, info auInfo, pts int64) int64 {
	v := &p.video
	if !v.dtsReady || v.dtsGen != v.params.gen {
		v.dtsReady = false
		if info.randomAccess && v.params.ready() {
			// prime a fresh extractor with the parameter sets (it reads them from AUs only)
			prime := [][]byte{v.params.sps, v.params.pps}
			if v.params.codec == codecH265 {
				prime = [][]byte{v.params.vps, v.params.sps, v.params.pps}
				v.h265DTS = &h265.DTSExtractor{}
				v.h265DTS.Initialize()
				v.h265DTS.Extract(prime, pts) //nolint:errcheck // only primes the parameter sets
			} else {
				v.h264DTS = &h264.DTSExtractor{}
				v.h264DTS.Initialize()
				v.h264DTS.Extract(prime, pts) //nolint:errcheck // only primes the parameter sets
			}
			v.dtsReady, v.dtsGen = true, v.params.gen
		}
	}
	dts := pts
	if v.dtsReady {
		var err error
		var d int64
		if v.params.codec == codecH265 {
			d, err = v.h265DTS.Extract(au, pts)
		} else {
			d, err = v.h264DTS.Extract(au, pts)
		}
		if err != nil {
			p.logOnce("dts", "cannot compute DTS, using PTS", err)
			v.dtsReady = false // re-primed at the next random access point
		} else {
			dts = d
		}
	}
	if v.haveDTS && dts <= v.prevDTS {
		dts = v.prevDTS + 1
	}
	v.haveDTS, v.prevDTS = true, dts
	return dts
}

// Wall-clock policy. Frames are timed by the receive time of the first frame plus the
// progression of their RTP timestamps (re-anchored when the two drift apart by more than
// maxAnchorDrift, e.g. after the sender paused). When the camera sends RTCP sender
// reports, its clock is followed only while it agrees with the receive time within
// maxClockSkew, and then gradually (at most maxSlewPerFrame per frame), so a frame's time
// never jumps and never goes backwards; a camera whose clock is further off is logged once
// and timed by receive time, since an unsynchronised camera clock must not move footage
// on the timeline. No frame is ever timed later than its receive time plus
// maxFutureSkew.
const (
	maxAnchorDrift  = 5 * time.Second
	maxClockSkew    = time.Second
	maxSlewPerFrame = 5 * time.Millisecond
	maxFutureSkew   = 100 * time.Millisecond
)

// wallClock returns the absolute time of an access unit (see the policy above).
func (p *pipeline) wallClock(pkt *rtp.Packet, pktPTS, auPTS int64, now time.Time) time.Time {
	if p.anchorSet {
		w := p.anchorWall.Add(ticksToDuration(auPTS-p.anchorPTS, videoTimescale))
		if d := now.Sub(w); d >= maxAnchorDrift || d <= -maxAnchorDrift {
			p.anchorSet = false
		}
	}
	if !p.anchorSet {
		p.anchorSet, p.anchorWall, p.anchorPTS = true, now, auPTS
	}
	if p.cfg.NTP != nil {
		if ntp, ok := p.cfg.NTP(p.video.media, pkt); ok {
			ntp = ntp.Add(-ticksToDuration(pktPTS-auPTS, videoTimescale))
			w := p.anchorWall.Add(ticksToDuration(auPTS-p.anchorPTS, videoTimescale))
			skew := ntp.Sub(w)
			switch {
			case skew > maxClockSkew || skew < -maxClockSkew:
				p.logOnce("clock", "camera clock (RTCP sender reports) disagrees with receive time; timing frames by receive time",
					fmt.Errorf("camera clock is %s off", skew.Round(time.Millisecond)))
			default:
				p.anchorWall = p.anchorWall.Add(max(-maxSlewPerFrame, min(maxSlewPerFrame, skew)))
			}
		}
	}
	w := p.anchorWall.Add(ticksToDuration(auPTS-p.anchorPTS, videoTimescale))
	if limit := now.Add(maxFutureSkew); w.After(limit) {
		p.anchorWall = p.anchorWall.Add(limit.Sub(w))
		w = limit
	}
	return w
}

func (p *pipeline) handleAudio(a *audioIn, pkt *rtp.Packet) {
	p.cfg.Health.packets.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return
	}
	pts, ok := p.timeDec.Decode(a.format, pkt)
	switch a.kind {
	case audioAAC:
		aus, err := a.aac.Decode(pkt)
		if err != nil {
			if !errors.Is(err, rtpmpeg4audio.ErrMorePacketsNeeded) {
				p.logOnce("audio", "dropping malformed audio packets", err)
			}
			return
		}
		if !ok {
			return
		}
		for i, au := range aus {
			p.seg.writeAudio(a.index, au, pts+int64(i)*a.spau)
		}
	case audioOpus:
		frame, err := a.simple.Decode(pkt)
		if err != nil {
			p.logOnce("audio", "dropping malformed audio packets", err)
			return
		}
		if ok {
			p.seg.writeAudio(a.index, frame, pts)
		}
	case audioG711, audioLPCM:
		raw, err := a.lpcm.Decode(pkt)
		if err != nil {
			p.logOnce("audio", "dropping malformed audio packets", err)
			return
		}
		if !ok {
			return
		}
		if a.kind == audioG711 {
			tbl := &alawTable
			if a.mulaw {
				tbl = &mulawTable
			}
			a.scratch = a.scratch[:0]
			for _, b := range raw {
				a.scratch = append(a.scratch, tbl[b][0], tbl[b][1])
			}
			raw = a.scratch
		}
		p.seg.writeAudio(a.index, raw, pts)
	}
}

func (p *pipeline) fail(err error) {
	if p.err == nil {
		p.err = err
		if p.cfg.OnFail != nil {
			p.cfg.OnFail(err)
		}
	}
}

// Err returns the first fatal error (a sink failure), if any.
func (p *pipeline) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// close flushes the fragment in progress (end of session).
func (p *pipeline) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	if err := p.seg.close(); err != nil {
		p.fail(err)
	}
	if ender, ok := p.cfg.Sink.(SessionEnder); ok {
		ender.EndSession()
	}
	return p.err
}
