package simcam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/pion/rtp"

	"github.com/vigie-vms/vigie/loadtest/sei"
	"github.com/vigie-vms/vigie/model"
)

// Config configures a Server. Start from DefaultConfig.
type Config struct {
	// Addr is the RTSP listen address (TCP). ":0" picks a free port; URL reports it.
	Addr string
	// Clip is looped by every camera. nil means the embedded H.264 test clip.
	Clip *Clip
	// Cameras are the camera ids, each served at rtsp://Addr/<id>. Ids follow
	// model.ValidateID (a-z, 0-9, '-', '_').
	Cameras []string
	// Logger receives the server's logs. nil discards them.
	Logger *slog.Logger
	// StartFrame is the frame number of each camera's first frame (to continue a numbering
	// across restarts). Frame numbers then advance by one per frame interval.
	StartFrame uint64
	// Phases spreads the cameras over the frame interval so that a thousand cameras do not
	// all send at the same instant: camera i sends at offset (i mod Phases) × interval /
	// Phases. 1 sends everything at once. Default 8.
	Phases int
	// Workers is the number of goroutines that write the frames of one phase in parallel.
	// Default GOMAXPROCS.
	Workers int
	// FlushInterval chooses the write path. Positive (the default) selects the direct
	// path (direct.go): each frame leaves for each reader in one non-blocking write
	// syscall as soon as it is built; the value itself no longer matters (it was the
	// period of a write batcher the direct path made useless). Negative sends every packet
	// through gortsplib's ServerStream, one allocation, queue hop and syscall per packet and
	// reader: several times the CPU, kept for comparison (BenchmarkCameras).
	FlushInterval time.Duration
	// WriteQueueSize bounds what waits for a slow reader, in packets (a power of two):
	// gortsplib's per-reader queue on the gortsplib path, WriteQueueSize × 1472 bytes of
	// backlog on the direct path. Beyond it, packets (direct path: whole frames) are
	// dropped for that reader only. Default 512: an IDR of the default clip is about 30
	// packets.
	WriteQueueSize int
	// AltClip, when set, is a second clip (same codec and frame rate, typically another
	// resolution) that SetAltClip switches a camera to, at its next IDR. nil disables
	// SetAltClip.
	AltClip *Clip
}

// DefaultConfig returns the defaults: one camera "cam1" on 127.0.0.1:8555 looping the
// embedded H.264 clip.
func DefaultConfig() Config {
	return Config{
		Addr:           "127.0.0.1:8555",
		Cameras:        []string{"cam1"},
		Phases:         8,
		Workers:        runtime.GOMAXPROCS(0),
		FlushInterval:  2 * time.Millisecond,
		WriteQueueSize: 512,
	}
}

// Validate reports every problem of the configuration at once, each naming its option.
// Errors wrap model.ErrInvalid.
func (c Config) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, model.Invalid("Addr", "is required (host:port, e.g. 127.0.0.1:8555)"))
	} else if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, model.Invalid("Addr", "%q is not host:port: %v", c.Addr, err))
	}
	if len(c.Cameras) == 0 {
		errs = append(errs, model.Invalid("Cameras", "at least one camera id is required"))
	}
	seen := make(map[string]int, len(c.Cameras))
	for i, id := range c.Cameras {
		field := fmt.Sprintf("Cameras[%d]", i)
		if err := model.ValidateID(field, id); err != nil {
			errs = append(errs, err)
		} else if j, dup := seen[id]; dup {
			errs = append(errs, model.Invalid(field, "%q is already Cameras[%d]", id, j))
		}
		seen[id] = i
	}
	if c.Clip != nil {
		if c.Clip.FPS <= 0 || c.Clip.FPS > 1000 {
			errs = append(errs, model.Invalid("Clip.FPS", "%d, want 1 to 1000", c.Clip.FPS))
		}
		if len(c.Clip.AccessUnits) == 0 {
			errs = append(errs, model.Invalid("Clip.AccessUnits", "is empty"))
		}
		if c.Clip.Codec != CodecH264 && c.Clip.Codec != CodecH265 {
			errs = append(errs, model.Invalid("Clip.Codec", "%q, want %q or %q", c.Clip.Codec, CodecH264, CodecH265))
		}
	}
	errs = append(errs, c.validateAltClip()...)
	if c.Phases < 1 || c.Phases > 1000 {
		errs = append(errs, model.Invalid("Phases", "%d, want 1 to 1000", c.Phases))
	}
	if c.Workers < 1 {
		errs = append(errs, model.Invalid("Workers", "%d, want at least 1", c.Workers))
	}
	if c.FlushInterval == 0 || c.FlushInterval > time.Second {
		errs = append(errs, model.Invalid("FlushInterval", "%v, want a positive duration up to 1s, or negative to disable batching", c.FlushInterval))
	}
	if q := c.WriteQueueSize; q < 1 || q&(q-1) != 0 {
		errs = append(errs, model.Invalid("WriteQueueSize", "%d, want a power of two", q))
	}
	return errors.Join(errs...)
}

// Stats is a snapshot of a Server's counters.
type Stats struct {
	Cameras int
	// Readers is the number of RTSP sessions playing, over all cameras.
	Readers int
	// FramesSent counts frames emitted (with or without readers; not while stalled).
	FramesSent uint64
	// FramesSkipped counts frames never emitted because the simulator fell more than a
	// second behind (it is overloaded): their numbers are missing from the streams.
	FramesSkipped uint64
	// FramesBehind counts frames due by the time of the snapshot and not sent yet (the
	// scheduler's backlog; at most a second's worth, beyond that they are skipped). Over
	// a window, frames due = sent + skipped + stalled + the change in FramesBehind: no
	// frame goes missing uncounted.
	FramesBehind uint64
	// PacketsDropped counts RTP packets not delivered to a reader whose write queue was
	// full (a slow reader); other readers are not affected. On the direct path whole
	// frames are dropped, and their packets counted here.
	PacketsDropped uint64
	// Lateness is the histogram of how late frames were handed to gortsplib compared with
	// their schedule (see Lateness).
	Lateness Lateness
	// GarbagePackets counts the garbage RTP packets injected (InjectGarbage).
	GarbagePackets uint64
	// SessionsDropped counts the reader sessions closed by DropSessions.
	SessionsDropped uint64
}

// Server is a fleet of simulated cameras behind one RTSP server.
type Server struct {
	cfg   Config
	log   *slog.Logger
	clip  *Clip
	aus   []auPackets
	cams  []*camera
	byID  map[string]*camera
	phase [][]*camera // cameras of each phase

	rtsp    *gortsplib.Server
	direct  bool     // the direct write path (direct.go), not gortsplib's stream
	scratch [][]byte // per worker: the frame being built (direct path)
	addr    atomic.Pointer[string]
	ready   atomic.Bool
	start   time.Time
	next    []atomic.Uint64 // per phase: next frame index to send (written by the scheduler)
	skipped atomic.Uint64
	dropped atomic.Uint64
	late    lateness
	altAUs  []auPackets
	garbage atomic.Uint64
	kicked  atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed sync.Once
}

// auPackets is one access unit of the clip, packetized once for every camera. The tag
// SEI of each frame goes, as its own packet, between prefix and rest.
type auPackets struct {
	prefix [][]byte // RTP payloads of the non-VCL NAL units before the first VCL one
	rest   [][]byte // RTP payloads of the VCL NAL units and whatever follows them
	key    bool     // a random access point (IDR): a switch of clip may happen here
}

type camera struct {
	id    string
	index int

	stream  *gortsplib.ServerStream
	media   *description.Media
	ssrc    uint32                    // the stream's SSRC, as announced in SETUP
	direct  atomic.Pointer[[]*reader] // playing readers on the direct path (copy on write)
	readers atomic.Int64
	sent    atomic.Uint64
	stalled atomic.Bool
	misbehaviour

	// touched only by the scheduler worker that owns the camera for a tick
	seq     uint16
	tsBase  uint32
	pkt     rtp.Packet
	sei     []byte
	packets uint32 // RTP packets and payload octets sent, for sender reports
	octets  uint32
}

func (c *camera) addReader(r *reader) {
	c.sessMu.Lock()
	defer c.sessMu.Unlock()
	var list []*reader
	if old := c.direct.Load(); old != nil {
		list = append(list, *old...)
	}
	list = append(list, r)
	c.direct.Store(&list)
}

func (c *camera) removeReader(r *reader) {
	c.sessMu.Lock()
	defer c.sessMu.Unlock()
	old := c.direct.Load()
	if old == nil {
		return
	}
	list := make([]*reader, 0, len(*old))
	for _, o := range *old {
		if o != r {
			list = append(list, o)
		}
	}
	c.direct.Store(&list)
}

type sessionData struct {
	cam     *camera
	rd      *reader // direct path
	playing atomic.Bool
	warned  atomic.Bool
}

// EnsureDefaults fills the zero-valued tuning options (Phases, Workers, FlushInterval,
// WriteQueueSize) and Logger with their defaults, so that a Config literal naming only
// Addr, Clip and Cameras works.
func (c *Config) EnsureDefaults() {
	d := DefaultConfig()
	if c.Phases == 0 {
		c.Phases = d.Phases
	}
	if c.Workers == 0 {
		c.Workers = d.Workers
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = d.FlushInterval
	}
	if c.WriteQueueSize == 0 {
		c.WriteQueueSize = d.WriteQueueSize
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// New fills cfg's zero options with defaults (EnsureDefaults), checks it and prepares the
// cameras; Start begins serving.
func New(cfg Config) (*Server, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("simcam: %w", err)
	}
	clip := cfg.Clip
	if clip == nil {
		var err error
		if clip, err = DefaultClip(CodecH264); err != nil {
			return nil, fmt.Errorf("simcam: %w", err)
		}
	}
	s := &Server{
		cfg:    cfg,
		log:    cfg.Logger.With(slog.String("component", "simcam")),
		clip:   clip,
		byID:   make(map[string]*camera, len(cfg.Cameras)),
		phase:  make([][]*camera, cfg.Phases),
		next:   make([]atomic.Uint64, cfg.Phases),
		direct: cfg.FlushInterval > 0,
	}
	var err error
	if s.aus, err = packetize(clip); err != nil {
		return nil, fmt.Errorf("simcam: packetize %s: %w", clip.Path, err)
	}
	if cfg.AltClip != nil {
		if s.altAUs, err = packetize(cfg.AltClip); err != nil {
			return nil, fmt.Errorf("simcam: packetize %s: %w", cfg.AltClip.Path, err)
		}
	}
	for i, id := range cfg.Cameras {
		c := &camera{
			id:     id,
			index:  i,
			seq:    uint16(rand.Uint32()),
			tsBase: rand.Uint32(),
			sei:    make([]byte, 0, 64+len(id)),
		}
		c.pkt.Header = rtp.Header{Version: 2, PayloadType: 96}
		s.cams = append(s.cams, c)
		s.byID[id] = c
		s.phase[i%cfg.Phases] = append(s.phase[i%cfg.Phases], c)
	}
	s.addr.Store(&cfg.Addr)
	s.rtsp = &gortsplib.Server{
		Handler:        &handler{s: s},
		RTSPAddress:    cfg.Addr,
		WriteQueueSize: cfg.WriteQueueSize,
		Listen:         s.listen,
	}
	return s, nil
}

func (s *Server) listen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	a := ln.Addr().String()
	s.addr.Store(&a)
	if s.direct {
		return directListener{Listener: ln}, nil
	}
	return ln, nil
}

func (s *Server) newDescription() *description.Session {
	var f format.Format
	if s.clip.H265() {
		f = &format.H265{PayloadTyp: 96, VPS: s.clip.VPS, SPS: s.clip.SPS, PPS: s.clip.PPS}
	} else {
		f = &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: s.clip.SPS, PPS: s.clip.PPS}
	}
	return &description.Session{Medias: []*description.Media{{
		Type:    description.MediaTypeVideo,
		Formats: []format.Format{f},
	}}}
}

// Start listens and starts every camera: frame 0 of each leaves now (plus its phase
// offset), whether or not anyone reads it.
func (s *Server) Start() error {
	s.scratch = make([][]byte, s.cfg.Workers)
	if err := s.rtsp.Start(); err != nil {
		return fmt.Errorf("simcam: listen on %s: %w", s.cfg.Addr, err)
	}
	for _, c := range s.cams {
		c.stream = &gortsplib.ServerStream{Server: s.rtsp, Desc: s.newDescription()}
		if err := c.stream.Initialize(); err != nil {
			s.Close()
			return fmt.Errorf("simcam: camera %q: %w", c.id, err)
		}
		c.media = c.stream.Desc.Medias[0]
		for _, f := range c.stream.Stats().Medias[c.media].Formats {
			c.ssrc = f.LocalSSRC
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.start = time.Now()
	s.ready.Store(true)
	s.wg.Add(1)
	go s.run()
	s.log.Info("simulated cameras started",
		slog.String("addr", *s.addr.Load()),
		slog.Int("cameras", len(s.cams)),
		slog.String("codec", s.clip.Codec),
		slog.Int("fps", s.clip.FPS),
		slog.String("clip", s.clip.Path),
		slog.Int("clip_frames", len(s.clip.AccessUnits)))
	return nil
}

// Close stops the cameras, disconnects readers and stops listening. Shutdown order: the
// scheduler first (no more frames), then every reader's backlog is written out (a frame
// counted in FramesSent is on the wire before its connection closes; at most
// closeFlushTimeout for a reader that stopped reading), then the streams (their sessions
// close), then the RTSP server.
func (s *Server) Close() {
	s.closed.Do(func() {
		s.ready.Store(false)
		if s.cancel != nil {
			s.cancel()
			s.wg.Wait()
		}
		s.flushReaders(time.Now().Add(closeFlushTimeout))
		for _, c := range s.cams {
			if c.stream != nil {
				c.stream.Close()
			}
		}
		s.rtsp.Close()
		st := s.Stats()
		s.log.Info("simulated cameras stopped",
			slog.Uint64("frames_sent", st.FramesSent),
			slog.Uint64("frames_skipped", st.FramesSkipped))
	})
}

// closeFlushTimeout bounds how long Close waits for readers' backlogs to be written (well
// under the 10 s the scenario runner gives a fleet process to stop after SIGINT).
const closeFlushTimeout = 5 * time.Second

// flushReaders waits until the backlog of every playing reader has been written, its
// connection failed, or deadline passed; it logs the readers whose backlog was cut off.
func (s *Server) flushReaders(deadline time.Time) {
	cut := 0
	for _, c := range s.cams {
		list := c.direct.Load()
		if list == nil {
			continue
		}
		for _, r := range *list {
			if !r.conn.waitFlushed(deadline) {
				cut++
			}
		}
	}
	if cut > 0 {
		s.log.Warn("closing readers with frames still queued (they stopped reading)",
			slog.Int("readers", cut), slog.Duration("waited", closeFlushTimeout))
	}
}

// Addr returns the address the server listens on (the real port after Start with ":0").
func (s *Server) Addr() string { return *s.addr.Load() }

// URL returns the RTSP URL of camera.
func (s *Server) URL(camera string) string { return "rtsp://" + s.Addr() + "/" + camera }

// Cameras returns the camera ids, in configuration order.
func (s *Server) Cameras() []string { return append([]string(nil), s.cfg.Cameras...) }

// Clip returns the clip the cameras loop.
func (s *Server) Clip() *Clip { return s.clip }

// FramesSent returns how many frames camera has emitted since Start (0 for an unknown id).
func (s *Server) FramesSent(camera string) uint64 {
	if c := s.byID[camera]; c != nil {
		return c.sent.Load()
	}
	return 0
}

// SetStalled makes camera stop sending frames (true) or resume (false), as a frozen
// encoder would: the RTSP session stays up, nothing arrives. Frame numbers keep advancing
// while stalled, so the first frame after resuming shows exactly how many were not sent.
// It reports whether camera exists.
func (s *Server) SetStalled(camera string, stalled bool) bool {
	c := s.byID[camera]
	if c == nil {
		return false
	}
	if c.stalled.Swap(stalled) != stalled {
		s.log.Info("camera stall changed", slog.String("camera", camera), slog.Bool("stalled", stalled))
	}
	return true
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{Cameras: len(s.cams), FramesBehind: s.behind(time.Now()), FramesSkipped: s.skipped.Load(), PacketsDropped: s.dropped.Load(),
		Lateness: s.late.snapshot(), GarbagePackets: s.garbage.Load(), SessionsDropped: s.kicked.Load()}
	for _, c := range s.cams {
		st.FramesSent += c.sent.Load()
		st.Readers += int(c.readers.Load())
	}
	return st
}

// --- scheduling ---

// run is the one scheduler of every camera. It wakes Phases times per frame interval and
// sends, for each phase whose frames are due, that frame of each of its cameras.
func (s *Server) run() {
	defer s.wg.Done()
	fps := s.clip.FPS
	tick := time.Second / time.Duration(fps*s.cfg.Phases)
	if tick <= 0 {
		tick = time.Millisecond
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	s.tick(time.Now())
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.tick(time.Now())
		}
	}
}

// frameTime is when frame k of phase p is due, relative to start.
func (s *Server) frameTime(p int, k uint64) time.Duration {
	fps := uint64(s.clip.FPS)
	off := time.Duration(uint64(p) * uint64(time.Second) / (fps * uint64(s.cfg.Phases)))
	return off + time.Duration(k*uint64(time.Second)/fps)
}

func (s *Server) tick(now time.Time) {
	elapsed := now.Sub(s.start)
	fps := uint64(s.clip.FPS)
	for p := range s.cfg.Phases {
		off := s.frameTime(p, 0)
		if elapsed < off || len(s.phase[p]) == 0 {
			continue
		}
		due := uint64(elapsed-off)*fps/uint64(time.Second) + 1 // frames 0..due-1 are due
		next := s.next[p].Load()
		if due <= next {
			continue
		}
		if due-next > fps { // more than a second behind: skip to the newest frame
			skip := due - 1 - next
			s.skipped.Add(skip * uint64(len(s.phase[p])))
			s.log.Warn("simulator overloaded: frames skipped",
				slog.Int("phase", p), slog.Uint64("frames", skip), slog.Int("cameras", len(s.phase[p])))
			next = due - 1
		}
		for k := next; k < due; k++ {
			s.sendPhase(p, k)
			s.next[p].Store(k + 1)
		}
	}
}

// behind returns how many frames are due by now but not sent yet, over all cameras: the
// scheduler's backlog (it sends them late, or skips and counts them past a second).
func (s *Server) behind(now time.Time) uint64 {
	if s.start.IsZero() {
		return 0
	}
	elapsed := now.Sub(s.start)
	fps := uint64(s.clip.FPS)
	var n uint64
	for p := range s.cfg.Phases {
		off := s.frameTime(p, 0)
		if elapsed < off {
			continue
		}
		due := uint64(elapsed-off)*fps/uint64(time.Second) + 1
		if next := s.next[p].Load(); due > next {
			n += (due - next) * uint64(len(s.phase[p]))
		}
	}
	return n
}

// sendPhase sends frame k of every camera of phase p, split over the workers.
func (s *Server) sendPhase(p int, k uint64) {
	cams := s.phase[p]
	ntp := s.start.Add(s.frameTime(p, k))
	w := s.cfg.Workers
	if w > 1 && len(cams) >= 32 {
		chunk := (len(cams) + w - 1) / w
		var wg sync.WaitGroup
		for i := 0; i < len(cams); i += chunk {
			part := cams[i:min(i+chunk, len(cams))]
			scratch := &s.scratch[i/chunk]
			wg.Go(func() {
				for _, c := range part {
					s.sendFrame(c, k, ntp, scratch)
				}
			})
		}
		wg.Wait()
		return
	}
	for _, c := range cams {
		s.sendFrame(c, k, ntp, &s.scratch[0])
	}
}

// sendFrame sends frame k (0-based since Start) of camera c: the clip's access unit
// k mod len, with the tag SEI inserted before its first picture NAL unit. ntp is the
// frame's scheduled wall-clock time, for RTCP sender reports; the tag carries the time the
// frame was built. scratch is the calling worker's frame buffer (direct path).
func (s *Server) sendFrame(c *camera, k uint64, ntp time.Time, scratch *[]byte) {
	au := s.pickAU(c, k)
	n := uint16(len(au.prefix) + 1 + len(au.rest))
	if c.stalled.Load() {
		return
	}
	if c.readers.Load() == 0 {
		// Nobody watches: the camera still "sends" (counters and sequence numbers advance)
		// but nothing is marshalled for no one.
		s.late.observe(time.Since(ntp))
		c.seq += n
		c.sent.Add(1)
		return
	}
	tag := sei.Tag{Camera: c.id, Frame: s.cfg.StartFrame + k, SentAt: time.Now()}
	if s.clip.H265() {
		c.sei = sei.AppendH265(c.sei[:0], tag)
	} else {
		c.sei = sei.AppendH264(c.sei[:0], tag)
	}
	ts := c.tsBase + uint32(k*90000/uint64(s.clip.FPS))
	if s.direct {
		s.sendDirect(c, k, ntp, ts, au, scratch)
		s.late.observe(time.Since(ntp))
		c.sent.Add(1)
		return
	}
	s.late.observe(time.Since(ntp))
	c.pkt.Timestamp = ts
	left := n
	if g := c.garbageNext.Swap(0); g > 0 {
		s.writeGarbage(c, int(g))
	}
	write := func(payload []byte) {
		left--
		c.pkt.SequenceNumber = c.seq
		c.seq++
		c.pkt.Marker = left == 0
		c.pkt.Payload = payload
		if err := c.stream.WritePacketRTPWithNTP(c.media, &c.pkt, ntp); err != nil {
			// only when the stream is closed (shutdown)
			s.log.Debug("write RTP", slog.String("camera", c.id), slog.Any("error", err))
		}
	}
	for _, pl := range au.prefix {
		write(pl)
	}
	write(c.sei)
	for _, pl := range au.rest {
		write(pl)
	}
	c.pkt.Payload = nil
	c.sent.Add(1)
}

// sendDirect builds frame k of camera c once, as interleaved records, and writes it to
// each active reader's connection in one non-blocking syscall (direct.go). A sender report
// follows the frame at a reader's first frame and then every senderReportPeriod.
func (s *Server) sendDirect(c *camera, k uint64, ntp time.Time, ts uint32, au *auPackets, scratch *[]byte) {
	n := uint16(len(au.prefix) + 1 + len(au.rest))
	var list []*reader
	if p := c.direct.Load(); p != nil {
		list = *p
	}
	ch := -1 // RTP channel of the first active reader: the frame is built for it
	sr := false
	for _, r := range list {
		if !r.active.Load() {
			continue
		}
		if ch < 0 {
			ch = int(r.ch)
		}
		if !r.started || k >= r.srNext {
			sr = true
		}
	}
	if ch < 0 {
		// Readers are between OnPlay and their PLAY response: this frame goes to no one.
		c.seq += n
		return
	}
	b := (*scratch)[:0]
	if g := c.garbageNext.Swap(0); g > 0 {
		b = s.appendGarbage(b, c, byte(ch), ts, int(g))
	}
	left := n
	add := func(payload []byte) {
		left--
		b = appendRTP(b, byte(ch), left == 0, c.seq, ts, c.ssrc, payload)
		c.seq++
		c.packets++
		c.octets += uint32(len(payload))
	}
	for _, pl := range au.prefix {
		add(pl)
	}
	add(c.sei)
	for _, pl := range au.rest {
		add(pl)
	}
	if sr {
		b = appendSenderReport(b, byte(ch)+1, c.ssrc, ntp, ts, c.packets, c.octets)
	}
	*scratch = b
	limit := s.cfg.WriteQueueSize * maxRTPPacket
	period := uint64(senderReportPeriod.Seconds() * float64(s.clip.FPS))
	cur := byte(ch)
	for _, r := range list {
		if !r.active.Load() {
			continue
		}
		if sr {
			r.started, r.srNext = true, k+period
		}
		if r.ch != cur {
			setChannels(b, cur, r.ch)
			cur = r.ch
		}
		dropped, err := r.conn.writeFrame(b, limit)
		if dropped {
			s.dropped.Add(uint64(n))
			if !r.warned.Swap(true) {
				s.log.Warn("reader too slow: frames dropped for it", slog.String("camera", c.id),
					slog.String("remote", r.conn.RemoteAddr().String()))
			}
		} else if err != nil {
			// the connection failed or closed: gortsplib ends the session (OnSessionClose)
			s.log.Debug("write frame", slog.String("camera", c.id), slog.Any("error", err))
		}
	}
}

// packetize turns every access unit of clip into RTP payloads once.
func packetize(clip *Clip) ([]auPackets, error) {
	type encoder interface {
		Encode([][]byte) ([]*rtp.Packet, error)
	}
	var enc encoder
	if clip.H265() {
		e, err := (&format.H265{PayloadTyp: 96}).CreateEncoder()
		if err != nil {
			return nil, err
		}
		enc = e
	} else {
		e, err := (&format.H264{PayloadTyp: 96, PacketizationMode: 1}).CreateEncoder()
		if err != nil {
			return nil, err
		}
		enc = e
	}
	payloads := func(nalus [][]byte) ([][]byte, error) {
		if len(nalus) == 0 {
			return nil, nil
		}
		pkts, err := enc.Encode(nalus)
		if err != nil {
			return nil, err
		}
		out := make([][]byte, len(pkts))
		for i, p := range pkts {
			out[i] = p.Payload
		}
		return out, nil
	}
	h265 := clip.H265()
	aus := make([]auPackets, len(clip.AccessUnits))
	for i, au := range clip.AccessUnits {
		first := len(au)
		for j, n := range au {
			if isVCL(n, h265) {
				first = j
				break
			}
		}
		var err error
		if aus[i].prefix, err = payloads(au[:first]); err != nil {
			return nil, fmt.Errorf("access unit %d: %w", i, err)
		}
		if aus[i].rest, err = payloads(au[first:]); err != nil {
			return nil, fmt.Errorf("access unit %d: %w", i, err)
		}
		aus[i].key = isRandomAccess(au, h265)
	}
	return aus, nil
}

// --- RTSP handler ---

type handler struct{ s *Server }

func (h *handler) camera(path string) (*camera, *base.Response) {
	if !h.s.ready.Load() {
		return nil, &base.Response{StatusCode: base.StatusServiceUnavailable}
	}
	id := strings.Trim(path, "/")
	c := h.s.byID[id]
	if c == nil {
		return nil, &base.Response{StatusCode: base.StatusNotFound}
	}
	return c, nil
}

func (h *handler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	c, res := h.camera(ctx.Path)
	if c == nil {
		return res, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, c.stream, nil
}

// OnResponse notes, on the direct path, the interleaved channel a SETUP response assigned
// (the streams have one media, so a connection carries one channel pair).
func (h *handler) OnResponse(sc *gortsplib.ServerConn, res *base.Response) {
	dc, ok := sc.NetConn().(*directConn)
	if !ok || res.StatusCode != base.StatusOK {
		return
	}
	v, ok := res.Header["Transport"]
	if !ok {
		return
	}
	var th headers.Transport
	if th.Unmarshal(v) == nil && th.InterleavedIDs != nil {
		dc.setChannel(th.InterleavedIDs[0])
	}
}

func (h *handler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	c, res := h.camera(ctx.Path)
	if c == nil {
		return res, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, c.stream, nil
}

func (h *handler) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	c, res := h.camera(ctx.Path)
	if c == nil {
		return res, nil
	}
	sd, _ := ctx.Session.UserData().(*sessionData)
	if sd == nil {
		sd = &sessionData{cam: c}
		ctx.Session.SetUserData(sd)
	}
	if !sd.playing.Swap(true) {
		if h.s.direct {
			dc, ok := ctx.Conn.NetConn().(*directConn)
			ch := -1
			if ok {
				ch = dc.rtpChannel()
			}
			if ch < 0 || ch > 254 {
				sd.playing.Store(false)
				return &base.Response{StatusCode: base.StatusUnsupportedTransport}, nil
			}
			sd.rd = &reader{conn: dc, ch: byte(ch), sess: ctx.Session}
			dc.arm(sd.rd) // media starts once the PLAY response has left
			sd.cam.addReader(sd.rd)
		}
		sd.cam.readers.Add(1)
		sd.cam.addSession(ctx.Session)
	}
	h.s.log.Debug("reader playing", slog.String("camera", c.id), slog.String("remote", ctx.Conn.NetConn().RemoteAddr().String()))
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func (h *handler) OnPause(ctx *gortsplib.ServerHandlerOnPauseCtx) (*base.Response, error) {
	h.stopped(ctx.Session)
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func (h *handler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	h.stopped(ctx.Session)
}

// OnStreamWriteError is called when a reader's queue is full (it reads slower than the
// camera sends): gortsplib drops the packet for that reader only. Counted in Stats, logged
// once per session.
func (h *handler) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	h.s.dropped.Add(1)
	sd, _ := ctx.Session.UserData().(*sessionData)
	if sd != nil && !sd.warned.Swap(true) {
		h.s.log.Warn("reader too slow: packets dropped for it", slog.String("camera", sd.cam.id), slog.Any("error", ctx.Error))
	}
}

func (h *handler) stopped(ss *gortsplib.ServerSession) {
	if sd, _ := ss.UserData().(*sessionData); sd != nil && sd.playing.Swap(false) {
		if sd.rd != nil {
			sd.cam.removeReader(sd.rd)
			sd.rd = nil
		}
		sd.cam.readers.Add(-1)
		sd.cam.removeSession(ss)
	}
}
