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
	cam        model.Camera
	assignment model.Assignment // this node's role: owner, next or secondary
	epoch      uint64
	rec        *recorder
	puller     *ingest.Puller // nil for a pushed camera
	cancel     context.CancelFunc
	done       chan struct{}

	lastState model.CameraState
	outage    *model.Outage // open outage, if the camera is down
}

func newCameraManager(n *Node) *cameraManager {
	return &cameraManager{n: n, log: n.log.With(slog.String("component", "cameras")), running: map[model.CameraID]*cameraRun{}}
}

const (
	resyncInterval = 5 * time.Second
	healthInterval = time.Second
	loadInterval   = 10 * time.Second
)

func (m *cameraManager) run(ctx context.Context) {
	m.sync(ctx)
	resync := time.NewTicker(resyncInterval)
	defer resync.Stop()
	health := time.NewTicker(healthInterval)
	defer health.Stop()
	load := time.NewTicker(loadInterval)
	defer load.Stop()
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
			m.confirmHandovers(ctx)
		case <-load.C:
			m.reportLoad(ctx)
		}
	}
}

// sync makes the set of running recorders match the catalog: this node records every
// camera it owns, is taking over (Next, make-before-break) or records as the second
// recorder of a critical camera. The leader decides who records what.
func (m *cameraManager) sync(ctx context.Context) {
	self := model.NodeID(m.n.cfg.NodeID)
	assignments, err := m.n.clu.Assignments()
	if err != nil {
		m.log.Error("list assignments", slog.Any("err", err))
		return
	}
	desired := map[model.CameraID]model.Camera{}
	roles := map[model.CameraID]model.Assignment{}
	for _, a := range assignments {
		if a.Node != self && a.Next != self && a.Secondary != self {
			continue
		}
		cam, err := m.n.clu.Camera(a.Camera)
		if err != nil {
			if !errors.Is(err, model.ErrNotFound) {
				m.log.Error("read camera", slog.String("camera", string(a.Camera)), slog.Any("err", err))
			}
			continue
		}
		if cam.Recording != model.RecordContinuous {
			continue
		}
		desired[cam.ID] = cam
		roles[cam.ID] = a
	}

	m.mu.Lock()
	var stopping []*cameraRun
	for id, run := range m.running {
		cam, ok := desired[id]
		if ok && sameIngest(run.cam, cam) {
			run.cam = cam
			if a := roles[id]; a.Epoch != run.epoch {
				run.epoch = a.Epoch
				run.rec.setEpoch(a.Epoch)
			}
			run.assignment = roles[id]
			run.rec.setIDOffset(idOffset(roles[id], self))
			continue
		}
		stopping = append(stopping, run)
		delete(m.running, id)
	}
	m.mu.Unlock()
	// Stopped without the lock, in parallel: a recorder stuck on a slow disk must not
	// hold up the others, nor the health and metrics readers that take the lock.
	stopRuns(stopping)
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, cam := range desired {
		if _, ok := m.running[id]; ok {
			continue
		}
		run, err := m.start(cam, roles[id].Epoch)
		if err != nil {
			m.log.Error("start recorder", slog.String("camera", string(id)), slog.Any("err", err))
			continue
		}
		run.assignment = roles[id]
		run.rec.setIDOffset(idOffset(roles[id], self))
		m.running[id] = run
	}
}

// idOffset is how far back a recorder moves its segments' start so that two nodes
// recording the same camera under the same epoch never build the same segment id (see
// recorder.idOffset): none for the owner, 1 ns for the secondary, 2 ns for the next owner.
func idOffset(a model.Assignment, self model.NodeID) time.Duration {
	switch self {
	case a.Node:
		return 0
	case a.Secondary:
		return time.Nanosecond
	default:
		return 2 * time.Nanosecond
	}
}

// confirmHandovers tells the leader, for every camera this node is taking over, that it
// now records it: the leader then makes it the owner and the old owner stops.
func (m *cameraManager) confirmHandovers(ctx context.Context) {
	self := model.NodeID(m.n.cfg.NodeID)
	for _, run := range m.snapshot() {
		if run.assignment.Next != self || m.health(run).State != model.CameraRecording {
			continue
		}
		if _, err := m.n.clu.ConfirmRecording(ctx, run.cam.ID, self); err != nil {
			m.log.Warn("confirm handover", slog.String("camera", string(run.cam.ID)), slog.Any("err", err))
			continue
		}
		m.log.Info("took the camera over", slog.String("camera", string(run.cam.ID)))
		run.assignment.Next = "" // the next sync reads the new assignment
	}
}

// reportLoad tells the leader the bitrate of the cameras this node owns, for balancing.
func (m *cameraManager) reportLoad(ctx context.Context) {
	self := model.NodeID(m.n.cfg.NodeID)
	bps := map[model.CameraID]float64{}
	for _, run := range m.snapshot() {
		if run.assignment.Node != self {
			continue
		}
		if h := m.health(run); h.State == model.CameraRecording && h.BitrateBps > 0 {
			bps[run.cam.ID] = h.BitrateBps
		}
	}
	if len(bps) == 0 {
		return
	}
	if err := m.n.clu.ReportLoad(ctx, self, bps); err != nil {
		m.log.Warn("report load", slog.Any("err", err))
	}
}

func (m *cameraManager) snapshot() []*cameraRun {
	m.mu.Lock()
	defer m.mu.Unlock()
	runs := make([]*cameraRun, 0, len(m.running))
	for _, r := range m.running {
		runs = append(runs, r)
	}
	return runs
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
		sender:   m.n.repSend,
		replicas: func() []model.NodeID {
			return m.n.clu.ReplicasFor(cam.ID, model.NodeID(m.n.cfg.NodeID))
		},
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

// stopRuns stops recorders in parallel and waits for them: each one's ingest ends and its
// open segment is sealed and queued for commit.
func stopRuns(runs []*cameraRun) {
	var wg sync.WaitGroup
	for _, run := range runs {
		wg.Go(func() {
			run.cancel()
			<-run.done
			run.rec.close()
		})
	}
	wg.Wait()
}

// stopAll stops every recorder; their open segments are sealed and queued for commit.
func (m *cameraManager) stopAll() {
	m.mu.Lock()
	runs := make([]*cameraRun, 0, len(m.running))
	for id, run := range m.running {
		runs = append(runs, run)
		delete(m.running, id)
	}
	m.mu.Unlock()
	stopRuns(runs)
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
	runs := m.snapshot()
	out := make([]model.CameraHealth, 0, len(runs))
	for _, r := range runs {
		out = append(out, m.health(r))
	}
	return out
}

// trackOutages opens an outage when a recording camera stops delivering and closes it
// when frames come back, so the timeline shows "camera unreachable" for that gap.
func (m *cameraManager) trackOutages(ctx context.Context) {
	self := model.NodeID(m.n.cfg.NodeID)
	for _, run := range m.snapshot() {
		if run.assignment.Node != self {
			continue // only the owner speaks for the camera's timeline
		}
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
