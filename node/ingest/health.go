package ingest

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// healthWindow is the span over which fps and bitrate are averaged.
const healthWindow = time.Second

// health is the live health of one camera. Counters touched per packet are atomics; the rest
// changes at most once per fragment and sits behind a mutex. snapshot is cheap.
type health struct {
	camera     model.CameraID
	packets    atomic.Uint64
	lost       atomic.Uint64
	reconnects atomic.Uint64
	dropped    atomic.Uint64 // video frames dropped (countDropped)
	lastFrame  atomic.Int64  // unix nanoseconds of the last video access unit received

	mu        sync.Mutex
	state     model.CameraState
	since     time.Time
	codec     string
	lastError string
	fps       float64
	bitrate   float64
	keyframe  time.Duration
	winFrames int
	winBytes  int
	winDur    time.Duration
}

func newHealth(camera model.CameraID, state model.CameraState) *health {
	return &health{camera: camera, state: state, since: time.Now()}
}

func (h *health) snapshot() model.CameraHealth {
	h.mu.Lock()
	ch := model.CameraHealth{
		Camera:           h.camera,
		State:            h.state,
		Codec:            h.codec,
		FPS:              h.fps,
		BitrateBps:       h.bitrate,
		KeyframeInterval: h.keyframe,
		LastError:        h.lastError,
		Since:            h.since,
	}
	h.mu.Unlock()
	ch.PacketsReceived = h.packets.Load()
	ch.PacketsLost = h.lost.Load()
	ch.Reconnects = h.reconnects.Load()
	if ns := h.lastFrame.Load(); ns != 0 {
		ch.LastFrame = time.Unix(0, ns)
	}
	return ch
}

// setState moves to state; a non-nil err becomes LastError (a nil one keeps the previous
// error visible, so "recording" after a reconnect still shows why it dropped).
func (h *health) setState(state model.CameraState, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != state {
		h.state = state
		h.since = time.Now()
	}
	if err != nil {
		h.lastError = err.Error()
	}
	if state != model.CameraRecording {
		h.fps, h.bitrate = 0, 0
		h.winFrames, h.winBytes, h.winDur = 0, 0, 0
	}
}

func (h *health) setCodec(c string) {
	h.mu.Lock()
	h.codec = c
	h.mu.Unlock()
}

func (h *health) setKeyframeInterval(d time.Duration) {
	h.mu.Lock()
	h.keyframe = d
	h.mu.Unlock()
}

func (h *health) onFragment(frames, bytes int, dur time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != model.CameraRecording {
		h.state = model.CameraRecording
		h.since = time.Now()
	}
	h.winFrames += frames
	h.winBytes += bytes
	h.winDur += dur
	if h.winDur >= healthWindow {
		sec := h.winDur.Seconds()
		h.fps = float64(h.winFrames) / sec
		h.bitrate = float64(h.winBytes) * 8 / sec
		h.winFrames, h.winBytes, h.winDur = 0, 0, 0
	}
}
