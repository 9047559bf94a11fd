package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/pion/rtp"

	"github.com/vigie-vms/vigie/model"
)

// ServerConfig configures the RTSP server that accepts pushed streams (ANNOUNCE/RECORD).
type ServerConfig struct {
	// Addr is the RTSP listen address (TCP), e.g. "127.0.0.1:8554".
	Addr string
	// UDPRTPAddr and UDPRTCPAddr enable RTP over UDP when both are set (e.g. ":8000",
	// ":8001"); empty means TCP only.
	UDPRTPAddr, UDPRTCPAddr string
	Logger                  *slog.Logger
	FragmentMax             time.Duration
	// ReadTimeout is how long a publisher may stay silent before its session is closed.
	ReadTimeout time.Duration
	// Publisher resolves the path of an ANNOUNCE (e.g. "cam-1") to the camera and its sink;
	// ok=false → 404 with a clear reason. Called once per publishing session.
	Publisher func(path string) (camera model.CameraID, sink Sink, ok bool)
}

// DefaultServerConfig returns the defaults; Publisher must still be set.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{Addr: "127.0.0.1:8554", FragmentMax: time.Second, ReadTimeout: 10 * time.Second}
}

// Validate reports every problem of the configuration at once, naming each option.
func (c ServerConfig) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, model.Invalid("addr", "is required, e.g. 127.0.0.1:8554"))
	}
	if (c.UDPRTPAddr == "") != (c.UDPRTCPAddr == "") {
		errs = append(errs, model.Invalid("udp_rtp_addr", "and udp_rtcp_addr must be set together"))
	}
	if c.Publisher == nil {
		errs = append(errs, model.Invalid("publisher", "is required"))
	}
	if c.FragmentMax < 0 || (c.FragmentMax > 0 && c.FragmentMax < 100*time.Millisecond) {
		errs = append(errs, model.Invalid("fragment_max", "must be at least 100ms, got %v", c.FragmentMax))
	}
	if c.ReadTimeout < 0 {
		errs = append(errs, model.Invalid("read_timeout", "must not be negative, got %v", c.ReadTimeout))
	}
	return errors.Join(errs...)
}

// Server accepts RTSP publishers (cameras, encoders, ffmpeg -f rtsp) and records them.
type Server struct {
	cfg ServerConfig
	log *slog.Logger
	srv *gortsplib.Server

	mu       sync.Mutex
	health   map[model.CameraID]*health
	sessions map[model.CameraID]*gortsplib.ServerSession
	ln       net.Listener
}

// pushSession is the state of one publishing session (ServerSession.UserData).
type pushSession struct {
	camera model.CameraID
	health *health
	pl     *pipeline
	sel    *selection
	closed sync.Once
}

// NewServer checks cfg (zero durations take their defaults) and returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	d := DefaultServerConfig()
	if cfg.FragmentMax == 0 {
		cfg.FragmentMax = d.FragmentMax
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = d.ReadTimeout
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ingest server: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, health: map[model.CameraID]*health{}, sessions: map[model.CameraID]*gortsplib.ServerSession{}}
	s.srv = &gortsplib.Server{
		Handler:        (*serverHandler)(s),
		RTSPAddress:    cfg.Addr,
		UDPRTPAddress:  cfg.UDPRTPAddr,
		UDPRTCPAddress: cfg.UDPRTCPAddr,
		ReadTimeout:    cfg.ReadTimeout,
		WriteTimeout:   cfg.ReadTimeout,
		Listen: func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			if err == nil {
				s.mu.Lock()
				s.ln = ln
				s.mu.Unlock()
			}
			return ln, err
		},
	}
	return s, nil
}

// Start listens; publishers can connect when it returns nil.
func (s *Server) Start() error {
	if err := s.srv.Start(); err != nil {
		return fmt.Errorf("ingest server: listen on %s: %w", s.cfg.Addr, err)
	}
	s.log.Info("RTSP ingest server listening", slog.String("addr", s.cfg.Addr))
	return nil
}

// Addr returns the address the server listens on (useful with port 0).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.cfg.Addr
}

// Close stops listening and ends every session; the fragments in progress are flushed.
func (s *Server) Close() { s.srv.Close() }

// Health returns the health of a camera that has published at least once since Start.
func (s *Server) Health(camera model.CameraID) (model.CameraHealth, bool) {
	s.mu.Lock()
	h := s.health[camera]
	s.mu.Unlock()
	if h == nil {
		return model.CameraHealth{}, false
	}
	return h.snapshot(), true
}

// serverHandler holds the gortsplib callbacks, kept off Server's public method set.
type serverHandler Server

func respond(code base.StatusCode) *base.Response { return &base.Response{StatusCode: code} }

// OnDescribe refuses readers: this server only records.
func (h *serverHandler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	return respond(base.StatusNotFound), nil, fmt.Errorf("path %q: this server only accepts publishers (ANNOUNCE/RECORD)", ctx.Path)
}

// OnAnnounce resolves the camera and prepares its pipeline.
func (h *serverHandler) OnAnnounce(ctx *gortsplib.ServerHandlerOnAnnounceCtx) (*base.Response, error) {
	s := (*Server)(h)
	path := strings.Trim(ctx.Path, "/")
	camera, sink, ok := s.cfg.Publisher(path)
	if !ok || sink == nil {
		s.log.Warn("publisher refused: unknown path", slog.String("path", path))
		return respond(base.StatusNotFound), fmt.Errorf("no camera is registered for push path %q: %w", path, model.ErrNotFound)
	}
	log := s.log.With(slog.String("camera", string(camera)))
	s.mu.Lock()
	hl := s.health[camera]
	if hl == nil {
		hl = newHealth(camera, model.CameraWaiting)
		s.health[camera] = hl
	} else {
		hl.reconnects.Add(1)
	}
	old := s.sessions[camera]
	s.sessions[camera] = ctx.Session
	s.mu.Unlock()
	if old != nil && old != ctx.Session {
		log.Info("a new publisher replaces the previous one")
		old.Close()
	}
	hl.setState(model.CameraConnecting, nil)

	ps := &pushSession{camera: camera, health: hl}
	sess := ctx.Session
	pl, sel, err := newPipeline(ctx.Description, pipelineConfig{
		Sink:        sink,
		Health:      hl,
		Logger:      log,
		FragmentMax: s.cfg.FragmentMax,
		NTP:         sess.PacketNTP,
		OnFail:      func(error) { go sess.Close() },
	})
	if err != nil {
		hl.setState(model.CameraWaiting, err)
		log.Warn("publisher refused", slog.Any("error", err))
		return respond(base.StatusBadRequest), err
	}
	ps.pl, ps.sel = pl, sel
	sess.SetUserData(ps)
	return respond(base.StatusOK), nil
}

// OnSetup accepts the setup of announced medias only.
func (h *serverHandler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Session.State() == gortsplib.ServerSessionStateInitial {
		return respond(base.StatusNotFound), nil, fmt.Errorf("path %q: this server only accepts publishers (ANNOUNCE/RECORD)", ctx.Path)
	}
	return respond(base.StatusOK), nil, nil
}

// OnRecord starts feeding the pipeline.
func (h *serverHandler) OnRecord(ctx *gortsplib.ServerHandlerOnRecordCtx) (*base.Response, error) {
	ps, _ := ctx.Session.UserData().(*pushSession)
	if ps == nil {
		return respond(base.StatusBadRequest), fmt.Errorf("RECORD without a successful ANNOUNCE")
	}
	ctx.Session.OnPacketRTPAny(func(medi *description.Media, forma format.Format, pkt *rtp.Packet) {
		ps.pl.handle(medi, forma, pkt)
	})
	ps.health.setState(model.CameraConnecting, nil)
	(*Server)(h).log.Info("publisher recording", slog.String("camera", string(ps.camera)))
	return respond(base.StatusOK), nil
}

// OnSessionClose flushes the fragment in progress and marks the camera waiting.
func (h *serverHandler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	s := (*Server)(h)
	ps, _ := ctx.Session.UserData().(*pushSession)
	if ps == nil {
		return
	}
	ps.closed.Do(func() {
		err := ps.pl.close()
		s.mu.Lock()
		current := s.sessions[ps.camera] == ctx.Session
		if current {
			delete(s.sessions, ps.camera)
		}
		s.mu.Unlock()
		var torn liberrors.ErrServerSessionTornDown
		if err == nil && !errors.As(ctx.Error, &torn) {
			err = ctx.Error // a TEARDOWN is a normal end, not an error
		}
		if current {
			ps.health.setState(model.CameraWaiting, err)
		}
		s.log.Info("publisher gone", slog.String("camera", string(ps.camera)), slog.Any("reason", ctx.Error))
	})
}

// OnPacketsLost counts lost RTP packets.
func (h *serverHandler) OnPacketsLost(ctx *gortsplib.ServerHandlerOnPacketsLostCtx) {
	if ps, _ := ctx.Session.UserData().(*pushSession); ps != nil {
		ps.health.lost.Add(ctx.Lost)
	}
}

// OnDecodeError logs undecodable packets at debug level.
func (h *serverHandler) OnDecodeError(ctx *gortsplib.ServerHandlerOnDecodeErrorCtx) {
	(*Server)(h).log.Debug("RTP decode error", slog.Any("error", ctx.Error))
}
