package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/vigie-vms/vigie/loadtest/simcam"
	"github.com/vigie-vms/vigie/model"
)

// Camera is one simulated camera of the fleet.
type Camera struct {
	ID    string
	Codec string // simcam.CodecH264 or simcam.CodecH265; "" means H264
}

// Config configures a Fleet. Start from DefaultConfig.
type Config struct {
	// Host is the address the RTSP servers listen on (one server, on its own free port,
	// per codec in use).
	Host string
	// Port of the first server (the first codec); 0 picks a free one. Further codecs use
	// free ports.
	Port int
	// Cameras to serve.
	Cameras []Camera
	// Bitrate of the clips in bit/s (see ClipSpec); 0 uses the embedded ~1 Mbit/s clips.
	Bitrate int
	// Size of generated clips (WIDTHxHEIGHT), "" for the default of ClipSpec.
	Size string
	// AltSize, when set (e.g. "320x180"), generates a second clip per codec at that size
	// (same bitrate), which SetResolution switches cameras to. Needs ffmpeg.
	AltSize string
	// ClipDir caches generated clips. "" means $TMPDIR/vigie-loadtest-clips.
	ClipDir string
	// Logger receives the fleet's logs; nil discards them.
	Logger *slog.Logger
	// FlushInterval, Phases and Workers are passed to simcam (0 keeps its defaults).
	FlushInterval time.Duration
	Phases        int
	Workers       int
}

// DefaultConfig serves nothing yet: set Cameras.
func DefaultConfig() Config { return Config{Host: "127.0.0.1"} }

// Validate reports every problem at once, naming the option; errors wrap model.ErrInvalid.
func (c Config) Validate() error {
	var errs []error
	if c.Host == "" {
		errs = append(errs, model.Invalid("Host", "is required (e.g. 127.0.0.1)"))
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, model.Invalid("Port", "%d, want 0 to 65535", c.Port))
	}
	if len(c.Cameras) == 0 {
		errs = append(errs, model.Invalid("Cameras", "at least one camera is required"))
	}
	for i, cam := range c.Cameras {
		if cam.Codec != "" && cam.Codec != simcam.CodecH264 && cam.Codec != simcam.CodecH265 {
			errs = append(errs, model.Invalid(fmt.Sprintf("Cameras[%d].Codec", i), "%q, want %q or %q", cam.Codec, simcam.CodecH264, simcam.CodecH265))
		}
	}
	if c.Bitrate < 0 || c.Bitrate > 100_000_000 {
		errs = append(errs, model.Invalid("Bitrate", "%d bit/s, want 0 (embedded clips) to 100000000", c.Bitrate))
	}
	return errors.Join(errs...)
}

// IDs returns n camera ids prefix-0000, prefix-0001, ….
func IDs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return out
}

// Interval is a time range [Start, End); End zero means "still open".
type Interval struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end,omitzero"`
}

// CameraState is what the fleet knows of one camera, for the verifier.
type CameraState struct {
	ID    string `json:"id"`
	Codec string `json:"codec"`
	URL   string `json:"url"`
	FPS   int    `json:"fps"`
	// Frame0 is when frame number 0 was scheduled: frame k is due at Frame0 + k/FPS.
	Frame0     time.Time `json:"frame0"`
	FramesSent uint64    `json:"frames_sent"`
	// Stalls are the periods the camera sent nothing (Stall): frames scheduled then were
	// never sent, and are not "lost" by the recorder.
	Stalls []Interval `json:"stalls,omitempty"`
	Alt    bool       `json:"alt"`
}

// Stats sums the fleet's counters.
type Stats struct {
	Cameras       int    `json:"cameras"`
	Readers       int    `json:"readers"`
	FramesSent    uint64 `json:"frames_sent"`
	FramesSkipped uint64 `json:"frames_skipped"`
	// FramesBehind is the fleet's backlog at the snapshot: frames due, not sent yet.
	FramesBehind    uint64          `json:"frames_behind"`
	PacketsDropped  uint64          `json:"packets_dropped"`
	GarbagePackets  uint64          `json:"garbage_packets"`
	SessionsDropped uint64          `json:"sessions_dropped"`
	Lateness        simcam.Lateness `json:"lateness"`
	// LateFrames counts frames handed to the network more than one frame interval (40 ms
	// at 25 fps) after their schedule.
	LateFrames uint64 `json:"late_frames"`
}

// Fleet serves simulated cameras, one simcam server per codec, and injects misbehaviour.
type Fleet struct {
	cfg    Config
	log    *slog.Logger
	groups []*group
	byID   map[string]*group

	mu     sync.Mutex
	stalls map[string][]Interval
	alt    map[string]bool
}

type group struct {
	codec string
	srv   *simcam.Server
	alt   bool // has an alternate clip
}

// New prepares the clips (generating them with ffmpeg when Bitrate or Size ask for it)
// and the servers; Start begins serving.
func New(ctx context.Context, cfg Config) (*Fleet, error) {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{cfg: cfg, log: cfg.Logger.With(slog.String("component", "fleet")), byID: map[string]*group{},
		stalls: map[string][]Interval{}, alt: map[string]bool{}}
	byCodec := map[string][]string{}
	for _, c := range cfg.Cameras {
		codec := c.Codec
		if codec == "" {
			codec = simcam.CodecH264
		}
		byCodec[codec] = append(byCodec[codec], c.ID)
	}
	port := cfg.Port
	for _, codec := range []string{simcam.CodecH264, simcam.CodecH265} {
		ids := byCodec[codec]
		if len(ids) == 0 {
			continue
		}
		clip, err := LoadClip(ctx, ClipSpec{Codec: codec, Bitrate: cfg.Bitrate, Size: cfg.Size}, cfg.ClipDir)
		if err != nil {
			return nil, fmt.Errorf("fleet: %w", err)
		}
		var alt *simcam.Clip
		if cfg.AltSize != "" {
			br := cfg.Bitrate
			if br == 0 {
				br = 1_000_000
			}
			if alt, err = LoadClip(ctx, ClipSpec{Codec: codec, Bitrate: br, Size: cfg.AltSize}, cfg.ClipDir); err != nil {
				return nil, fmt.Errorf("fleet: alternate clip: %w", err)
			}
		}
		srv, err := simcam.New(simcam.Config{
			Addr: net.JoinHostPort(cfg.Host, fmt.Sprint(port)), Clip: clip, AltClip: alt, Cameras: ids,
			Logger: cfg.Logger, FlushInterval: cfg.FlushInterval, Phases: cfg.Phases, Workers: cfg.Workers,
		})
		if err != nil {
			return nil, fmt.Errorf("fleet: %s cameras: %w", codec, err)
		}
		g := &group{codec: codec, srv: srv, alt: alt != nil}
		f.groups = append(f.groups, g)
		for _, id := range ids {
			f.byID[id] = g
		}
		f.log.Info("clip ready", slog.String("codec", codec), slog.String("clip", clip.Path),
			slog.Float64("mbit_s", Bitrate(clip)/1e6), slog.Int("cameras", len(ids)))
		port = 0
	}
	return f, nil
}

// Start starts every server.
func (f *Fleet) Start() error {
	for i, g := range f.groups {
		if err := g.srv.Start(); err != nil {
			for _, h := range f.groups[:i] {
				h.srv.Close()
			}
			return fmt.Errorf("fleet: %w", err)
		}
	}
	return nil
}

// Close stops every server (readers are disconnected).
func (f *Fleet) Close() {
	for _, g := range f.groups {
		g.srv.Close()
	}
}

// Addrs returns the RTSP address of each server (one per codec in use).
func (f *Fleet) Addrs() []string {
	var out []string
	for _, g := range f.groups {
		out = append(out, g.srv.Addr())
	}
	return out
}

// IDs returns the camera ids, sorted.
func (f *Fleet) IDs() []string {
	out := make([]string, 0, len(f.byID))
	for id := range f.byID {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func (f *Fleet) group(id string) (*group, error) {
	g := f.byID[id]
	if g == nil {
		return nil, fmt.Errorf("fleet: camera %q: %w", id, model.ErrNotFound)
	}
	return g, nil
}

// URL returns camera id's RTSP URL ("" for an unknown id).
func (f *Fleet) URL(id string) string {
	if g := f.byID[id]; g != nil {
		return g.srv.URL(id)
	}
	return ""
}

// Stall freezes (on) or resumes a camera; the stall periods are kept for the verifier.
func (f *Fleet) Stall(id string, on bool) error {
	g, err := f.group(id)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.stalls[id]
	open := len(st) > 0 && st[len(st)-1].End.IsZero()
	now := time.Now()
	switch {
	case on && !open:
		f.stalls[id] = append(st, Interval{Start: now})
	case !on && open:
		st[len(st)-1].End = now
	}
	g.srv.SetStalled(id, on)
	return nil
}

// Drop closes the camera's reader sessions (a reboot) and returns how many there were.
func (f *Fleet) Drop(id string) (int, error) {
	g, err := f.group(id)
	if err != nil {
		return 0, err
	}
	return g.srv.DropSessions(id), nil
}

// Garbage sends packets random RTP packets before the camera's next frame.
func (f *Fleet) Garbage(id string, packets int) error {
	g, err := f.group(id)
	if err != nil {
		return err
	}
	g.srv.InjectGarbage(id, packets)
	return nil
}

// SetResolution switches the camera to the alternate clip (Config.AltSize) or back, at
// its next IDR.
func (f *Fleet) SetResolution(id string, alt bool) error {
	g, err := f.group(id)
	if err != nil {
		return err
	}
	if !g.alt {
		return fmt.Errorf("fleet: camera %q: no alternate resolution (set AltSize / alt_size): %w", id, model.ErrInvalid)
	}
	if err := g.srv.SetAltClip(id, alt); err != nil {
		return err
	}
	f.mu.Lock()
	f.alt[id] = alt
	f.mu.Unlock()
	return nil
}

// Camera returns what the fleet knows of camera id.
func (f *Fleet) Camera(id string) (CameraState, bool) {
	g := f.byID[id]
	if g == nil {
		return CameraState{}, false
	}
	t0, _ := g.srv.FrameTime(id, 0)
	f.mu.Lock()
	stalls := append([]Interval(nil), f.stalls[id]...)
	alt := f.alt[id]
	f.mu.Unlock()
	return CameraState{ID: id, Codec: g.codec, URL: g.srv.URL(id), FPS: g.srv.FPS(), Frame0: t0,
		FramesSent: g.srv.FramesSent(id), Stalls: stalls, Alt: alt}, true
}

// Stats sums the counters of every server.
func (f *Fleet) Stats() Stats {
	var st Stats
	for _, g := range f.groups {
		s := g.srv.Stats()
		st.Cameras += s.Cameras
		st.Readers += s.Readers
		st.FramesSent += s.FramesSent
		st.FramesSkipped += s.FramesSkipped
		st.FramesBehind += s.FramesBehind
		st.PacketsDropped += s.PacketsDropped
		st.GarbagePackets += s.GarbagePackets
		st.SessionsDropped += s.SessionsDropped
		if st.Lateness.Counts == nil {
			st.Lateness = s.Lateness
		} else {
			for i := range s.Lateness.Counts {
				st.Lateness.Counts[i] += s.Lateness.Counts[i]
			}
			st.Lateness.Max = max(st.Lateness.Max, s.Lateness.Max)
		}
		st.LateFrames += s.Lateness.Over(time.Second / time.Duration(g.srv.FPS()))
	}
	return st
}
