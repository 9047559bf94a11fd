package recbench

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/vigie-vms/vigie/loadtest/simcam"
)

// FleetConfig configures the fleet subprocess.
type FleetConfig struct {
	// Addr is the RTSP listen address; 127.0.0.1:0 picks a port (reported on the ready
	// line).
	Addr string
	// ClipPath is the Annex-B clip every camera loops; "" uses simcam's default clip.
	ClipPath string
	FPS      int
	Cameras  int
	Logger   *slog.Logger
}

// FleetStats is what the fleet reports on each "stats" request.
type FleetStats struct {
	simcam.Stats
}

// RunFleet serves cfg.Cameras simulated cameras (ids from CameraIDs) until in ends or ctx
// is done, speaking the control protocol on in/out (see control.go). It is the body of
// the hidden "fleet" subcommand, run pinned to its own core.
func RunFleet(ctx context.Context, cfg FleetConfig, in io.Reader, out io.Writer) error {
	if cfg.Cameras < 1 || cfg.Cameras > MaxCameras {
		return fmt.Errorf("fleet: %d cameras, want 1 to %d", cfg.Cameras, MaxCameras)
	}
	var clip *simcam.Clip
	var err error
	if cfg.ClipPath == "" {
		clip, err = simcam.DefaultClip(simcam.CodecH264)
	} else {
		clip, err = simcam.LoadClip(cfg.ClipPath)
	}
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	if cfg.FPS > 0 {
		clip.FPS = cfg.FPS
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s, err := simcam.New(simcam.Config{Addr: cfg.Addr, Clip: clip, Cameras: CameraIDs(cfg.Cameras), Logger: cfg.Logger})
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	if err := s.Start(); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	defer s.Close()
	if _, err := fmt.Fprintf(out, "%s %s\n", lineReady, s.Addr()); err != nil {
		return err
	}
	return serveControl(ctx, in, out, func() any { return FleetStats{s.Stats()} })
}
