package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"

	"github.com/vigie-vms/vigie/model"
)

// Sink receives one camera's recording. Calls are sequential per camera; a slow sink slows
// the RTSP reader of that camera (TCP back-pressure), it never makes ingest buffer more.
type Sink interface {
	// WriteInit is called before the first fragment and whenever the codec configuration
	// changes; the fragments that follow belong to this init. codecs is a short
	// description, e.g. "H264 1280x720, MPEG-4 audio".
	WriteInit(init []byte, codecs string) error
	// WriteFragment gets one fMP4 fragment (moof+mdat). f.Data is only valid during the
	// call (copy if kept).
	WriteFragment(f model.Fragment) error
}

// SessionEnder is implemented by sinks that want to know when a camera's session ends
// (connection lost, publisher gone, recording stopped), after its last fragment: the
// recorder seals its open segment then, so footage of a finished push is in the catalog
// at once.
type SessionEnder interface {
	EndSession()
}

// Source is a camera to pull.
type Source struct {
	Camera             model.CameraID
	URL                string
	Username, Password string
	Transport          model.Transport // "" means TCP
}

// PullerConfig configures a Puller.
type PullerConfig struct {
	Source Source
	Sink   Sink
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between connection attempts; the wait doubles
	// after each failure and returns to MinBackoff after a session that recorded for
	// HealthyAfter. A camera without a supported video track is retried every MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// FragmentMax is the longest fragment: a fragment ends before the next keyframe or when
	// it would exceed FragmentMax.
	FragmentMax time.Duration
	// ReadTimeout is how long the camera may stay silent before the session is dropped.
	ReadTimeout time.Duration
	// HealthyAfter is how long a session must record before the backoff resets.
	HealthyAfter time.Duration
}

// DefaultPullerConfig returns the defaults; Source and Sink must still be set.
func DefaultPullerConfig() PullerConfig {
	return PullerConfig{
		MinBackoff:   time.Second,
		MaxBackoff:   30 * time.Second,
		FragmentMax:  time.Second,
		ReadTimeout:  10 * time.Second,
		HealthyAfter: 30 * time.Second,
	}
}

// withDefaults fills zero durations with the defaults.
func (c PullerConfig) withDefaults() PullerConfig {
	d := DefaultPullerConfig()
	if c.MinBackoff == 0 {
		c.MinBackoff = d.MinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = d.MaxBackoff
	}
	if c.FragmentMax == 0 {
		c.FragmentMax = d.FragmentMax
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = d.ReadTimeout
	}
	if c.HealthyAfter == 0 {
		c.HealthyAfter = d.HealthyAfter
	}
	if c.Source.Transport == "" {
		c.Source.Transport = model.TransportTCP
	}
	return c
}

// Validate reports every problem of the configuration at once, naming each option.
func (c PullerConfig) Validate() error {
	var errs []error
	if err := model.ValidateID("source.camera", string(c.Source.Camera)); err != nil {
		errs = append(errs, err)
	}
	if u, err := url.Parse(c.Source.URL); err != nil || (u.Scheme != "rtsp" && u.Scheme != "rtsps") || u.Host == "" {
		errs = append(errs, model.Invalid("source.url", "must be an rtsp:// or rtsps:// URL with a host, got %q", c.Source.URL))
	}
	if t := c.Source.Transport; t != "" && t != model.TransportTCP && t != model.TransportUDP {
		errs = append(errs, model.Invalid("source.transport", "must be %q or %q, got %q", model.TransportTCP, model.TransportUDP, t))
	}
	if c.Sink == nil {
		errs = append(errs, model.Invalid("sink", "is required"))
	}
	errs = append(errs, validateDurations(map[string]time.Duration{
		"min_backoff": c.MinBackoff, "max_backoff": c.MaxBackoff, "fragment_max": c.FragmentMax,
		"read_timeout": c.ReadTimeout, "healthy_after": c.HealthyAfter,
	})...)
	if c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		errs = append(errs, model.Invalid("min_backoff", "(%v) must not exceed max_backoff (%v)", c.MinBackoff, c.MaxBackoff))
	}
	if c.FragmentMax > 0 && c.FragmentMax < 100*time.Millisecond {
		errs = append(errs, model.Invalid("fragment_max", "must be at least 100ms, got %v", c.FragmentMax))
	}
	return errors.Join(errs...)
}

func validateDurations(m map[string]time.Duration) []error {
	var errs []error
	for _, name := range []string{"min_backoff", "max_backoff", "fragment_max", "read_timeout", "healthy_after"} {
		if d, ok := m[name]; ok && d < 0 {
			errs = append(errs, model.Invalid(name, "must not be negative, got %v", d))
		}
	}
	return errs
}

// Puller records one camera that Vigie pulls over RTSP.
type Puller struct {
	cfg    PullerConfig
	log    *slog.Logger
	health *health
}

// NewPuller checks cfg (zero durations take their defaults) and returns a Puller.
func NewPuller(cfg PullerConfig) (*Puller, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ingest puller: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With(slog.String("camera", string(cfg.Source.Camera)))
	return &Puller{cfg: cfg, log: log, health: newHealth(cfg.Source.Camera, model.CameraConnecting)}, nil
}

// Health returns the camera's health; safe to call from any goroutine at any time.
func (p *Puller) Health() model.CameraHealth { return p.health.snapshot() }

// FramesDropped returns the video frames of this camera ingest dropped (every reason of
// DropReasons; a lower bound for frames lost in a sequence-number gap).
func (p *Puller) FramesDropped() uint64 { return p.health.dropped.Load() }

// Run connects, records and reconnects with exponential backoff until ctx is done; it then
// returns nil after flushing the fragment in progress.
func (p *Puller) Run(ctx context.Context) error {
	backoff := p.cfg.MinBackoff
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			p.health.reconnects.Add(1)
		}
		p.health.setState(model.CameraConnecting, nil)
		started := time.Now()
		recorded, err := p.session(ctx)
		if ctx.Err() != nil {
			p.health.setState(model.CameraDown, nil)
			return nil
		}
		wait := backoff
		switch {
		case errors.Is(err, ErrNoVideo):
			wait = p.cfg.MaxBackoff
		case recorded && time.Since(started) >= p.cfg.HealthyAfter:
			backoff = p.cfg.MinBackoff
			wait = backoff
		}
		backoff = min(backoff*2, p.cfg.MaxBackoff)
		p.health.setState(model.CameraDown, err)
		p.log.Warn("camera session ended, retrying", slog.Any("error", err), slog.Duration("retry_in", wait))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// session runs one RTSP session; recorded tells whether any fragment was written.
func (p *Puller) session(ctx context.Context) (recorded bool, err error) {
	u, err := base.ParseURL(p.cfg.Source.URL)
	if err != nil {
		return false, fmt.Errorf("camera URL: %w", err)
	}
	if p.cfg.Source.Username != "" {
		u.User = url.UserPassword(p.cfg.Source.Username, p.cfg.Source.Password)
	}
	transport := gortsplib.TransportTCP
	if p.cfg.Source.Transport == model.TransportUDP {
		transport = gortsplib.TransportUDP
	}
	c := &gortsplib.Client{
		Scheme:        u.Scheme,
		Host:          u.Host,
		Transport:     &transport,
		ReadTimeout:   p.cfg.ReadTimeout,
		WriteTimeout:  p.cfg.ReadTimeout,
		DialContext:   dialBuffered,
		OnPacketsLost: func(n uint64) { p.health.lost.Add(n) },
		OnDecodeError: func(err error) { p.log.Debug("RTP decode error", slog.Any("error", err)) },
	}
	if err := c.Start2(); err != nil {
		return false, fmt.Errorf("connect %s: %w", u.Host, err)
	}
	stop := context.AfterFunc(ctx, c.Close)
	defer stop()
	defer c.Close()

	desc, _, err := c.Describe(u)
	if err != nil {
		return false, fmt.Errorf("DESCRIBE %s: %w", redact(u), err)
	}
	failed := make(chan error, 1)
	pl, sel, err := newPipeline(desc, pipelineConfig{
		Sink:        p.cfg.Sink,
		Health:      p.health,
		Logger:      p.log,
		FragmentMax: p.cfg.FragmentMax,
		NTP:         c.PacketNTP,
		OnFail: func(err error) {
			select {
			case failed <- err:
			default:
			}
		},
	})
	if err != nil {
		return false, err
	}
	if err := c.SetupAll(desc.BaseURL, sel.medias()); err != nil {
		return false, fmt.Errorf("SETUP %s: %w", redact(u), err)
	}
	c.OnPacketRTPAny(func(medi *description.Media, forma format.Format, pkt *rtp.Packet) {
		pl.handle(medi, forma, pkt)
	})
	if _, err := c.Play(nil); err != nil {
		return false, fmt.Errorf("PLAY %s: %w", redact(u), err)
	}
	p.log.Info("camera connected", slog.String("transport", transport.String()))

	waitErr := make(chan error, 1)
	go func() { waitErr <- c.Wait() }()
	select {
	case err = <-waitErr:
		err = fmt.Errorf("camera session: %w", err)
	case err = <-failed:
		c.Close()
		<-waitErr
	}
	if cerr := pl.close(); cerr != nil && !errors.Is(err, ErrSink) {
		err = cerr
	}
	return p.health.snapshot().State == model.CameraRecording, err
}

func redact(u *base.URL) string {
	v := *(*url.URL)(u)
	v.User = nil
	return v.String()
}
