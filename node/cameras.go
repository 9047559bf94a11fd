package node

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/node/ingest"
)

// cameraManager keeps one recorder running for every camera this node owns and records,
// and stops the others. It also turns changes of camera health into outages in the
// catalog, so the timeline can say why footage is missing.
type cameraManager struct {
	n   *Node
	log *slog.Logger

	mu      sync.Mutex
	running map[model.CameraID]*cameraRun
}

// cameraRun is one camera being recorded.
type cameraRun struct {
	cam    model.Camera
	epoch  uint64
	rec    *recorder
	puller *ingest.Puller // nil for a pushed camera
	cancel context.CancelFunc
	done   chan struct{}

	lastState model.CameraState
	outage    *model.Outage // open outage, if the camera is down
}

func newCameraManager(n *Node) *cameraManager {
	return &cameraManager{n: n, log: n.log.With(slog.String("component", "cameras")), running: map[model.CameraID]*cameraRun{}}
}

const (
	resyncInterval = 5 * time.Second
	healthInterval = time.Second
)

func (m *cameraManager) run(ctx context.Context) {
	m.sync(ctx)
	resync := time.NewTicker(resyncInterval)
	defer resync.Stop()
	health := time.NewTicker(healthInterval)
	defer health.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.n.clu.Changes():
			m.sync(ctx)
		case <-resync.C:
			m.sync(ctx)
		case <-health.C:
			m.trackOutages(ctx)
		}
	}
}

// sync assigns unowned cameras to this node (single-node cluster: the leader owns all)
// and makes the set of running recorders match the catalog.
func (m *cameraManager) sync(ctx context.Context) {
	self := model.NodeID(m.n.cfg.NodeID)
	desired := map[model.CameraID]model.Camera{}
	epochs := map[model.CameraID]uint64{}
	var after model.CameraID
	for {
		page, err := m.n.clu.Cameras("", after, 1000)
		if err != nil {
			m.log.Error("list cameras", slog.Any("err", err))
			return
		}
		for _, cam := range page {
			a, err := m.n.clu.Assignment(cam.ID)
			if errors.Is(err, model.ErrNotFound) || (err == nil && a.Node == "") {
				if !m.n.clu.IsLeader() {
					continue
				}
				if a, err = m.n.clu.Assign(ctx, cam.ID, self); err != nil {
					m.log.Error("assign camera", slog.String("camera", string(cam.ID)), slog.Any("err", err))
					continue
				}
			} else if err != nil {
				m.log.Error("camera assignment", slog.String("camera", string(cam.ID)), slog.Any("err", err))
				continue
			}
			if a.Node == self && cam.Recording == model.RecordContinuous {
				desired[cam.ID] = cam
				epochs[cam.ID] = a.Epoch
			}
		}
		if len(page) < 1000 {
			break
		}
		after = page[len(page)-1].ID
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	for id, run := range m.running {
		cam, ok := desired[id]
		if ok && sameIngest(run.cam, cam) && run.epoch == epochs[id] {
			run.cam = cam
			continue
		}
		m.stopLocked(run)
		delete(m.running, id)
	}
	for id, cam := range desired {
		if _, ok := m.running[id]; ok {
			continue
		}
		run, err := m.start(cam, epochs[id])
		if err != nil {
			m.log.Error("start recorder", slog.String("camera", string(id)), slog.Any("err", err))
			continue
		}
		m.running[id] = run
	}
}

// sameIngest reports whether a camera's change leaves its recording untouched.
func sameIngest(a, b model.Camera) bool {
	return a.URL == b.URL && a.Username == b.Username && a.Password == b.Password &&
		a.Transport == b.Transport && a.Ingest == b.Ingest
}

func (m *cameraManager) start(cam model.Camera, epoch uint64) (*cameraRun, error) {
	log := m.log.With(slog.String("camera", string(cam.ID)))
	rec := &recorder{
		camera:   cam.ID,
		epoch:    epoch,
		store:    m.n.store,
		maxBytes: m.n.cfg.SegmentMaxBytes,
		maxAge:   m.n.cfg.SegmentMaxAge,
		sealed:   m.n.comm.add,
		log:      log,
	}
	run := &cameraRun{cam: cam, epoch: epoch, rec: rec, done: make(chan struct{})}
	if cam.Ingest == model.IngestPush {
		close(run.done)
		run.cancel = func() {}
		log.Info("waiting for the camera to publish", slog.String("rtsp", "rtsp://"+m.n.cfg.RTSPAddr+"/"+string(cam.ID)))
		return run, nil
	}
	p, err := ingest.NewPuller(ingest.PullerConfig{
		Source: ingest.Source{
			Camera: cam.ID, URL: cam.URL, Username: cam.Username, Password: cam.Password,
			Transport: cam.Transport,
		},
		Sink:        rec,
		Logger:      m.log, // the puller adds the camera
		FragmentMax: m.n.cfg.FragmentMax,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	run.puller, run.cancel = p, cancel
	go func() {
		defer close(run.done)
		if err := p.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("recorder stopped", slog.Any("err", err))
		}
	}()
	log.Info("recording", slog.String("url", cam.URL), slog.Uint64("epoch", epoch))
	return run, nil
}

func (m *cameraManager) stopLocked(run *cameraRun) {
	run.cancel()
	<-run.done
	run.rec.close()
}

// stopAll stops every recorder; their open segments are sealed and queued for commit.
func (m *cameraManager) stopAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	var wg sync.WaitGroup
	for id, run := range m.running {
		wg.Add(1)
		go func() { defer wg.Done(); m.stopLocked(run) }()
		delete(m.running, id)
	}
	wg.Wait()
}

// publisher resolves the path of an RTSP publish to the recorder of a pushed camera.
func (m *cameraManager) publisher(path string) (model.CameraID, ingest.Sink, bool) {
	id := model.CameraID(strings.Trim(path, "/"))
	m.mu.Lock()
	defer m.mu.Unlock()
	run, ok := m.running[id]
	if !ok || run.cam.Ingest != model.IngestPush {
		return "", nil, false
	}
	return id, run.rec, true
}

// CameraHealth is the health of a camera recorded by this node.
func (m *cameraManager) CameraHealth(id model.CameraID) (model.CameraHealth, bool) {
	m.mu.Lock()
	run, ok := m.running[id]
	m.mu.Unlock()
	if !ok {
		if cam, err := m.n.clu.Camera(id); err == nil && cam.Recording == model.RecordOff {
			return model.CameraHealth{Camera: id, State: model.CameraDisabled}, true
		}
		return model.CameraHealth{}, false
	}
	return m.health(run), true
}

func (m *cameraManager) health(run *cameraRun) model.CameraHealth {
	if run.puller != nil {
		return run.puller.Health()
	}
	if m.n.push != nil {
		if h, ok := m.n.push.Health(run.cam.ID); ok {
			return h
		}
	}
	return model.CameraHealth{Camera: run.cam.ID, State: model.CameraWaiting}
}

// healthSnapshot returns the health of every camera this node records (for metrics).
func (m *cameraManager) healthSnapshot() []model.CameraHealth {
	m.mu.Lock()
	runs := make([]*cameraRun, 0, len(m.running))
	for _, r := range m.running {
		runs = append(runs, r)
	}
	m.mu.Unlock()
	out := make([]model.CameraHealth, 0, len(runs))
	for _, r := range runs {
		out = append(out, m.health(r))
	}
	return out
}

// trackOutages opens an outage when a recording camera stops delivering and closes it
// when frames come back, so the timeline shows "camera unreachable" for that gap.
func (m *cameraManager) trackOutages(ctx context.Context) {
	m.mu.Lock()
	runs := make([]*cameraRun, 0, len(m.running))
	for _, r := range m.running {
		runs = append(runs, r)
	}
	m.mu.Unlock()
	for _, run := range runs {
		h := m.health(run)
		switch {
		case h.State == model.CameraRecording && run.outage != nil:
			run.outage.End = time.Now()
			m.record(ctx, *run.outage)
			run.outage = nil
		case h.State != model.CameraRecording && run.lastState == model.CameraRecording && run.outage == nil:
			start := h.LastFrame
			if start.IsZero() {
				start = time.Now()
			}
			run.outage = &model.Outage{Camera: run.cam.ID, Start: start, Cause: model.GapCameraUnreachable, Detail: h.LastError}
			m.record(ctx, *run.outage)
		}
		run.lastState = h.State
	}
}

func (m *cameraManager) record(ctx context.Context, o model.Outage) {
	if err := m.n.clu.RecordOutage(ctx, o); err != nil {
		m.log.Warn("record outage", slog.String("camera", string(o.Camera)), slog.Any("err", err))
	}
}
