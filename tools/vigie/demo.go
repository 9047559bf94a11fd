package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	"github.com/vigie-vms/vigie/loadtest/simcam"
	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/node"
)

// demoTenant owns the demo cameras.
const demoTenant = "demo"

func runDemo(args []string) error {
	fs := newFlagSet("demo", "demo [--cameras N] [--sim-addr host:port] [node flags]\n\nRuns a node (same flags as 'vigie node') plus simulated cameras served over RTSP,\nregisters them in tenant \"demo\" and prints the URLs to open.")
	cameras := fs.Int("cameras", 4, "number of simulated cameras")
	simAddr := fs.String("sim-addr", "127.0.0.1:8555", "address of the simulated cameras' RTSP server")
	cfg, err := node.Load(fs, args, os.LookupEnv)
	if err != nil {
		return err
	}
	if *cameras < 1 || *cameras > 1000 {
		return fmt.Errorf("--cameras must be between 1 and 1000, got %d", *cameras)
	}
	log := cfg.Logger()
	ctx, stop := signalContext()
	defer stop()

	ids := make([]string, *cameras)
	for i := range ids {
		ids[i] = fmt.Sprintf("demo-cam-%d", i+1)
	}
	clip, err := simcam.DefaultClip(simcam.CodecH264)
	if err != nil {
		return err
	}
	sim, err := simcam.New(simcam.Config{Addr: *simAddr, Clip: clip, Cameras: ids, Logger: log.With(slog.String("component", "simcam"))})
	if err != nil {
		return fmt.Errorf("simulated cameras: %w", err)
	}
	if err := sim.Start(); err != nil {
		return fmt.Errorf("simulated cameras on %s: %w (another demo running? use --sim-addr)", *simAddr, err)
	}
	defer sim.Close()

	n, err := node.New(cfg, log)
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}
	defer n.Close()
	started := time.Now().UTC().Truncate(time.Second)
	if err := registerDemoCameras(ctx, n, sim, ids); err != nil {
		return err
	}

	base := "http://" + n.HTTPAddr()
	fmt.Printf("\nVigie demo: %d simulated cameras are being recorded by node %s.\n\n", len(ids), cfg.NodeID)
	fmt.Printf("  Cameras:   %s/v1/cameras\n", base)
	fmt.Printf("  Timeline:  %s/v1/cameras/%s/timeline\n", base, ids[0])
	fmt.Printf("  Health:    %s/v1/cameras/%s/health\n", base, ids[0])
	fmt.Printf("  Playback:  %s\n", playbackURL(base, ids[0], started, 10*time.Minute))
	fmt.Printf("  OpenAPI:   %s/openapi.json\n  Metrics:   %s/metrics\n\n", base, base)
	fmt.Printf("Try:  ffplay '%s'\n      vigie ctl timeline %s\n\nPress Ctrl-C to stop.\n", playbackURL(base, ids[0], started, 10*time.Minute), ids[0])
	<-ctx.Done()
	fmt.Println("stopping: sealing open segments…")
	return nil
}

func playbackURL(base, camera string, start time.Time, d time.Duration) string {
	q := url.Values{"start": {start.Format(time.RFC3339)}, "duration": {d.String()}}
	return fmt.Sprintf("%s/media/v1/cameras/%s/stream.mp4?%s", base, camera, q.Encode())
}

// registerDemoCameras creates the demo tenant and the cameras that do not exist yet (a
// restarted demo keeps recording into the same cameras).
func registerDemoCameras(ctx context.Context, n *node.Node, sim *simcam.Server, ids []string) error {
	c := n.Cluster()
	_, err := c.CreateTenant(ctx, model.Tenant{ID: demoTenant, Name: "Demo commune"})
	if err != nil && !errors.Is(err, model.ErrExists) {
		return fmt.Errorf("create demo tenant: %w", err)
	}
	var missing []model.Camera
	for i, id := range ids {
		if _, err := c.Camera(model.CameraID(id)); err == nil {
			continue
		}
		missing = append(missing, model.Camera{
			ID: model.CameraID(id), Tenant: demoTenant, Name: fmt.Sprintf("Demo camera %d", i+1),
			Location: "simulated", URL: sim.URL(id), Tags: []string{"demo"},
		})
	}
	if len(missing) == 0 {
		return nil
	}
	_, err = c.CreateCameras(ctx, missing)
	return err
}
