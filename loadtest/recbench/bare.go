package recbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/pion/rtp"
)

// BareConfig configures the bare receiver.
type BareConfig struct {
	// FleetAddr is the fleet's RTSP address (host:port); cameras are CameraIDs(Cameras).
	FleetAddr string
	Cameras   int
	// ConnectTimeout bounds connecting every camera.
	ConnectTimeout time.Duration
	Logger         *slog.Logger
}

// BareStats is what the bare receiver reports on each "stats" request. Counters are
// cumulated since the start.
type BareStats struct {
	Connected    int    `json:"connected"`     // sessions playing now
	Ended        int    `json:"ended"`         // sessions that ended (an error: nothing reconnects)
	Frames       uint64 `json:"frames"`        // access units out of the depacketizer
	Packets      uint64 `json:"packets"`       // RTP packets received
	Bytes        uint64 `json:"bytes"`         // RTP payload bytes
	Lost         uint64 `json:"lost"`          // RTP packets lost (sequence gaps)
	DecodeErrors uint64 `json:"decode_errors"` // depacketizer errors other than "need more packets"
}

// bareCounters are shared by every session: on the one core the receiver runs on, an
// uncontended atomic add per packet is negligible next to the read syscalls.
type bareCounters struct {
	frames, packets, bytes, lost, decodeErrors atomic.Uint64
	connected, ended                           atomic.Int64
}

func (c *bareCounters) snapshot() BareStats {
	return BareStats{
		Connected: int(c.connected.Load()), Ended: int(c.ended.Load()),
		Frames: c.frames.Load(), Packets: c.packets.Load(), Bytes: c.bytes.Load(),
		Lost: c.lost.Load(), DecodeErrors: c.decodeErrors.Load(),
	}
}

// bareSession plays one camera over RTSP/TCP and depacketizes its H.264 into access units,
// which it counts and drops: the least any recorder must do.
func bareSession(u *base.URL, cnt *bareCounters) (*gortsplib.Client, error) {
	tcp := gortsplib.TransportTCP
	c := &gortsplib.Client{
		Scheme:        u.Scheme,
		Host:          u.Host,
		Transport:     &tcp,
		OnPacketsLost: func(n uint64) { cnt.lost.Add(n) },
		OnDecodeError: func(error) { cnt.decodeErrors.Add(1) },
	}
	if err := c.Start2(); err != nil {
		return nil, err
	}
	desc, _, err := c.Describe(u)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("DESCRIBE: %w", err)
	}
	var forma *format.H264
	medi := desc.FindFormat(&forma)
	if medi == nil {
		c.Close()
		return nil, fmt.Errorf("no H.264 track in %s", u)
	}
	dec, err := forma.CreateDecoder()
	if err != nil {
		c.Close()
		return nil, err
	}
	if _, err := c.Setup(desc.BaseURL, medi, 0, 0); err != nil {
		c.Close()
		return nil, fmt.Errorf("SETUP: %w", err)
	}
	c.OnPacketRTP(medi, forma, func(pkt *rtp.Packet) {
		cnt.packets.Add(1)
		cnt.bytes.Add(uint64(len(pkt.Payload)))
		au, err := dec.Decode(pkt)
		if err != nil {
			if !errors.Is(err, rtph264.ErrMorePacketsNeeded) && !errors.Is(err, rtph264.ErrNonStartingPacketAndNoPrevious) {
				cnt.decodeErrors.Add(1)
			}
			return
		}
		if len(au) > 0 {
			cnt.frames.Add(1)
		}
	})
	if _, err := c.Play(nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("PLAY: %w", err)
	}
	return c, nil
}

// RunBare opens cfg.Cameras gortsplib clients (TCP) to the fleet, receives and
// depacketizes until in ends or ctx is done, and speaks the control protocol on in/out.
// It is the body of the hidden "bare" subcommand, the baseline the recorder is compared
// with. It prints the ready line once every camera plays.
func RunBare(ctx context.Context, cfg BareConfig, in io.Reader, out io.Writer) error {
	if cfg.Cameras < 1 || cfg.Cameras > MaxCameras {
		return fmt.Errorf("bare: %d cameras, want 1 to %d", cfg.Cameras, MaxCameras)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var cnt bareCounters
	var clients []*gortsplib.Client
	var wg sync.WaitGroup
	var closing atomic.Bool
	defer func() {
		closing.Store(true)
		for _, c := range clients {
			c.Close()
		}
		wg.Wait()
	}()
	deadline := time.Now().Add(cfg.ConnectTimeout)
	for _, id := range CameraIDs(cfg.Cameras) {
		if time.Now().After(deadline) {
			return fmt.Errorf("bare: %d of %d cameras connected within %v", len(clients), cfg.Cameras, cfg.ConnectTimeout)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		u, err := base.ParseURL("rtsp://" + cfg.FleetAddr + "/" + id)
		if err != nil {
			return fmt.Errorf("bare: camera %s: %w", id, err)
		}
		c, err := bareSession(u, &cnt)
		if err != nil {
			return fmt.Errorf("bare: camera %s: %w", id, err)
		}
		clients = append(clients, c)
		cnt.connected.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.Wait()
			cnt.connected.Add(-1)
			cnt.ended.Add(1)
			if !closing.Load() {
				log.Warn("bare session ended", slog.String("camera", id), slog.Any("error", err))
			}
		}()
	}
	log.Info("bare receiver playing", slog.Int("cameras", len(clients)))
	if _, err := fmt.Fprintf(out, "%s %d\n", lineReady, len(clients)); err != nil {
		return err
	}
	return serveControl(ctx, in, out, func() any { return cnt.snapshot() })
}
