package simcam

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"

	"github.com/vigie-vms/vigie/model"
)

// Misbehaviour on demand. Besides SetStalled (server.go), a camera can:
//
//   - drop its reader sessions (DropSessions), as a camera that reboots or a flaky link
//     would: the readers see their TCP connection closed and must reconnect;
//   - send garbage (InjectGarbage): N RTP packets of random bytes, with the timestamp of
//     the next frame, just before it; the frame itself is sent intact;
//   - switch to another clip (SetAltClip), typically another resolution, at the next IDR of
//     the clip it plays: the new SPS/PPS arrive in-band before that IDR (the SDP still
//     announces the first clip's), exactly as when an operator changes an encoder's
//     resolution. Frame numbers run on across the switch.
//
// Every switch and injection is applied by the scheduler worker that sends the camera's
// next frame, so it never races with a send.

// misbehaviour is the per-camera state of the injected faults.
type misbehaviour struct {
	wantAlt     atomic.Bool  // SetAltClip's request
	garbageNext atomic.Int32 // garbage packets to send before the next frame

	// touched only by the scheduler worker that owns the camera for a tick
	alt  bool   // playing AltClip
	base uint64 // frame index at which the current clip started (0 or the switch)

	sessMu   sync.Mutex
	sessions map[*gortsplib.ServerSession]struct{}
}

func (m *misbehaviour) addSession(ss *gortsplib.ServerSession) {
	m.sessMu.Lock()
	if m.sessions == nil {
		m.sessions = make(map[*gortsplib.ServerSession]struct{})
	}
	m.sessions[ss] = struct{}{}
	m.sessMu.Unlock()
}

func (m *misbehaviour) removeSession(ss *gortsplib.ServerSession) {
	m.sessMu.Lock()
	delete(m.sessions, ss)
	m.sessMu.Unlock()
}

func (c Config) validateAltClip() []error {
	a := c.AltClip
	if a == nil {
		return nil
	}
	var errs []error
	if len(a.AccessUnits) == 0 {
		errs = append(errs, model.Invalid("AltClip.AccessUnits", "is empty"))
	}
	codec, fps := CodecH264, DefaultFPS
	if c.Clip != nil {
		codec, fps = c.Clip.Codec, c.Clip.FPS
	}
	if a.Codec != codec {
		errs = append(errs, model.Invalid("AltClip.Codec", "%q, want the codec of Clip (%q)", a.Codec, codec))
	}
	if a.FPS != fps {
		errs = append(errs, model.Invalid("AltClip.FPS", "%d, want the frame rate of Clip (%d)", a.FPS, fps))
	}
	return errs
}

// pickAU returns the access unit camera c sends as its frame k, switching clips at an IDR
// when SetAltClip asked for it.
func (s *Server) pickAU(c *camera, k uint64) *auPackets {
	aus := s.aus
	if c.alt {
		aus = s.altAUs
	}
	i := (k - c.base) % uint64(len(aus))
	if want := c.wantAlt.Load(); want != c.alt && aus[i].key && s.altAUs != nil {
		c.alt, c.base = want, k
		aus, i = s.aus, 0
		if want {
			aus = s.altAUs
		}
		s.log.Info("camera switched clip", slog.String("camera", c.id), slog.Bool("alt", want), slog.Uint64("frame", s.cfg.StartFrame+k))
	}
	return &aus[i]
}

// SetAltClip asks camera to play Config.AltClip (alt true) or Config.Clip (false) from the
// next IDR on. It fails when the camera is unknown or no AltClip was configured.
func (s *Server) SetAltClip(camera string, alt bool) error {
	c := s.byID[camera]
	if c == nil {
		return fmt.Errorf("simcam: camera %q: %w", camera, model.ErrNotFound)
	}
	if s.altAUs == nil {
		return fmt.Errorf("simcam: camera %q: no AltClip configured: %w", camera, model.ErrInvalid)
	}
	c.wantAlt.Store(alt)
	return nil
}

// InjectGarbage makes camera send packets RTP packets of random bytes just before its next
// frame (which is sent intact). It reports whether camera exists.
func (s *Server) InjectGarbage(camera string, packets int) bool {
	c := s.byID[camera]
	if c == nil {
		return false
	}
	c.garbageNext.Add(int32(max(0, min(packets, 1000))))
	return true
}

// DropSessions closes every reader session of camera (their TCP connections close, as when
// a camera reboots) and returns how many there were. Readers may reconnect at once.
func (s *Server) DropSessions(camera string) int {
	c := s.byID[camera]
	if c == nil {
		return 0
	}
	c.sessMu.Lock()
	var list []*gortsplib.ServerSession
	for ss := range c.sessions {
		list = append(list, ss)
	}
	c.sessMu.Unlock()
	for _, ss := range list {
		ss.Close()
	}
	s.kicked.Add(uint64(len(list)))
	if len(list) > 0 {
		s.log.Info("camera sessions dropped", slog.String("camera", camera), slog.Int("sessions", len(list)))
	}
	return len(list)
}

// writeGarbage sends g RTP packets of random bytes (a random NAL header included) with the
// timestamp of the frame about to be sent.
func (s *Server) writeGarbage(c *camera, g int) {
	for range g {
		p := make([]byte, 64+rand.IntN(900))
		for i := range p {
			p[i] = byte(rand.Uint32())
		}
		c.pkt.SequenceNumber = c.seq
		c.seq++
		c.pkt.Marker = false
		c.pkt.Payload = p
		_ = c.stream.WritePacketRTP(c.media, &c.pkt)
		s.garbage.Add(1)
	}
}

// appendGarbage appends g interleaved RTP packets of random bytes with timestamp ts (the
// frame about to be sent) to b: the direct path's writeGarbage.
func (s *Server) appendGarbage(b []byte, c *camera, ch byte, ts uint32, g int) []byte {
	var p [1024]byte
	for range g {
		n := 64 + rand.IntN(900)
		for i := range p[:n] {
			p[i] = byte(rand.Uint32())
		}
		b = appendRTP(b, ch, false, c.seq, ts, c.ssrc, p[:n])
		c.seq++
		s.garbage.Add(1)
	}
	return b
}

// FrameTime returns when frame number frame (as carried in its tag, so counting from
// Config.StartFrame) of camera is scheduled: the time Start was called, plus the camera's
// phase offset, plus frame/FPS. ok is false for an unknown camera or before Start.
func (s *Server) FrameTime(camera string, frame uint64) (t time.Time, ok bool) {
	c := s.byID[camera]
	if c == nil || s.start.IsZero() || frame < s.cfg.StartFrame {
		return time.Time{}, false
	}
	return s.start.Add(s.frameTime(c.index%s.cfg.Phases, frame-s.cfg.StartFrame)), true
}

// FPS returns the frame rate every camera sends at.
func (s *Server) FPS() int { return s.clip.FPS }

// LatenessBounds are the upper bounds of the buckets of Lateness.Counts; the last bucket
// counts everything above the last bound.
var LatenessBounds = []time.Duration{
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	20 * time.Millisecond, 40 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	time.Second,
}

// Lateness is a histogram of how late each frame was sent compared with its schedule
// (Start + phase offset + k/FPS), for frames actually sent (not while stalled). "Sent" is
// when the frame's write syscall to its readers returned (direct path), when it was
// handed to gortsplib's queues (gortsplib path), or when its counter moved (a camera
// without reader). Counts[i] counts frames at most LatenessBounds[i] late (and more than
// the previous bound); Counts[len(LatenessBounds)] counts the rest.
type Lateness struct {
	Counts []uint64
	Max    time.Duration
}

// Total returns the number of frames in the histogram.
func (l Lateness) Total() uint64 {
	var n uint64
	for _, c := range l.Counts {
		n += c
	}
	return n
}

// Over returns how many frames were later than d (d should be one of LatenessBounds; for
// other values the bucket holding d counts as not over).
func (l Lateness) Over(d time.Duration) uint64 {
	var n uint64
	for i := 1; i < len(l.Counts); i++ {
		if LatenessBounds[i-1] >= d {
			n += l.Counts[i]
		}
	}
	return n
}

// Quantile returns the upper bound of the bucket that holds quantile q (0..1), or Max for
// the overflow bucket.
func (l Lateness) Quantile(q float64) time.Duration {
	total := l.Total()
	if total == 0 {
		return 0
	}
	want := uint64(q*float64(total) + 0.5)
	var n uint64
	for i, c := range l.Counts {
		n += c
		if n >= want && c > 0 {
			if i < len(LatenessBounds) {
				return LatenessBounds[i]
			}
			return l.Max
		}
	}
	return l.Max
}

type lateness struct {
	counts [10]atomic.Uint64 // len(LatenessBounds)+1
	max    atomic.Int64
}

func (l *lateness) observe(d time.Duration) {
	i := 0
	for i < len(LatenessBounds) && d > LatenessBounds[i] {
		i++
	}
	l.counts[i].Add(1)
	for {
		m := l.max.Load()
		if int64(d) <= m || l.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

func (l *lateness) snapshot() Lateness {
	out := Lateness{Counts: make([]uint64, len(l.counts)), Max: time.Duration(l.max.Load())}
	for i := range l.counts {
		out.Counts[i] = l.counts[i].Load()
	}
	return out
}
