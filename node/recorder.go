package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/node/replica"
	"github.com/vigie-vms/vigie/storage"
)

// segmentStore is what a recorder needs of the local store.
type segmentStore interface {
	Create(camera model.CameraID, epoch uint64, init []byte, start time.Time) (*storage.SegmentWriter, error)
}

// recorder turns one camera's fragments into segments: it implements ingest.Sink.
// Calls come sequentially from one ingest session, but close may come from the manager
// while a session is running, so the state is guarded.
type recorder struct {
	camera   model.CameraID
	epoch    uint64
	store    segmentStore
	maxBytes int64
	maxAge   time.Duration
	sealed   func(model.Segment) // receives every sealed segment (the committer)
	log      *slog.Logger
	// sender streams every fragment to the camera's hot replicas (nil: no replication);
	// replicas names them for a new segment.
	sender   *replica.Sender
	replicas func() []model.NodeID

	mu     sync.Mutex
	init   []byte
	codecs string
	w      *storage.SegmentWriter
	stream *replica.Stream // the open segment's replication, nil without replicas
	closed bool
	// idOffset (nanoseconds) moves the start this recorder gives its segments back by a
	// few nanoseconds when it is not the camera's owner: a critical camera's secondary, or
	// the incoming owner of a handover, records the same camera under the same epoch and
	// often opens a segment at the same keyframe; segment ids are built from (camera,
	// start, epoch), so without it the two recordings would share an id.
	idOffset atomic.Int64
	// nextEpoch, when not 0, is the epoch the next segment is recorded under (setEpoch).
	// setEpoch and setIDOffset never wait for mu: it is held across the fragment's disk
	// writes, and the camera manager calls them holding its own lock (a recorder stuck on
	// a slow disk blinded the health API and /metrics).
	nextEpoch atomic.Uint64
}

// setIDOffset sets idOffset (see there) for the segments opened from now on.
func (r *recorder) setIDOffset(d time.Duration) { r.idOffset.Store(int64(d)) }

var errRecorderClosed = errors.New("recorder closed")

// WriteInit starts a new codec configuration: the open segment (if any) is sealed and the
// next fragment opens a new one with this init.
func (r *recorder) WriteInit(init []byte, codecs string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errRecorderClosed
	}
	r.sealLocked()
	r.init = append([]byte(nil), init...)
	r.codecs = codecs
	r.log.Info("codec configuration", slog.String("codecs", codecs))
	return nil
}

// WriteFragment appends a fragment to the open segment; it returns once the fragment is
// durable. A segment that has reached its size or age is sealed at the next keyframe (so
// every segment starts with a keyframe), or unconditionally at four times its size limit.
func (r *recorder) WriteFragment(f model.Fragment) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errRecorderClosed
	}
	if r.init == nil {
		return fmt.Errorf("camera %s: fragment before init", r.camera)
	}
	next := r.nextEpoch.Load()
	if next == r.epoch {
		next = 0 // nothing changes
	}
	if r.w != nil {
		info := r.w.Info()
		full := info.Bytes+int64(len(f.Data)) > r.maxBytes || f.Start.Sub(info.Start) >= r.maxAge
		if ((full || next != 0) && f.Keyframe) || info.Bytes > 4*r.maxBytes {
			r.sealLocked()
		}
	}
	if r.w == nil && next != 0 {
		r.epoch = next
		r.nextEpoch.CompareAndSwap(next, 0) // unless setEpoch came again meanwhile
	}
	if r.w == nil {
		w, err := r.store.Create(r.camera, r.epoch, r.init, f.Start.Add(-time.Duration(r.idOffset.Load())))
		if err != nil {
			return fmt.Errorf("camera %s: open segment: %w", r.camera, err)
		}
		r.w = w
		r.openStream(f.Start)
	}
	if err := r.w.Append(f); err != nil {
		return fmt.Errorf("camera %s: segment %s: %w", r.camera, r.w.ID(), err)
	}
	if r.stream != nil {
		// A fragment counts as recorded once durable here and on the replicas; a replica
		// that fails is caught up in the background and never stops the recording.
		_ = r.stream.Append(context.Background(), f)
	}
	return nil
}

// openStream starts replicating the segment just opened to the camera's hot replicas.
func (r *recorder) openStream(start time.Time) {
	if r.sender == nil || r.replicas == nil {
		return
	}
	nodes := r.replicas()
	if len(nodes) == 0 {
		return
	}
	st, err := r.sender.Open(context.Background(), r.camera, r.epoch, start.Add(-time.Duration(r.idOffset.Load())), r.init, nodes)
	if err != nil {
		r.log.Error("replicate segment", slog.Any("err", err))
		return
	}
	r.stream = st
}

// EndSession seals the open segment when the camera's session ends (ingest.SessionEnder).
// The next session starts with an init, which opens a new segment.
func (r *recorder) EndSession() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sealLocked()
}

// setEpoch records the next segments under the camera's new epoch (a segment has one
// epoch), without interrupting the ingest: the open segment is sealed at the next
// keyframe, so the new one starts with a keyframe like every segment, and a handover
// completes with no frame lost.
func (r *recorder) setEpoch(epoch uint64) { r.nextEpoch.Store(epoch) }

// close seals the open segment; the recorder accepts nothing afterwards.
func (r *recorder) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sealLocked()
	r.closed = true
}

func (r *recorder) sealLocked() {
	if r.w == nil {
		return
	}
	w := r.w
	r.w = nil
	stream := r.stream
	r.stream = nil
	if stream != nil {
		defer func() {
			if err := stream.Seal(context.Background()); err != nil {
				r.log.Warn("seal replica", slog.String("segment", string(w.ID())), slog.Any("err", err))
			}
			stream.Close()
		}()
	}
	if w.Info().Fragments == 0 {
		// Nothing was written: still seal so the store holds no open segment; an empty
		// segment is not committed.
		_, _ = w.Seal()
		return
	}
	seg, err := w.Seal()
	if err != nil {
		// The fragments stay durable and the startup check seals the segment; the
		// catalog learns of it then.
		r.log.Error("seal segment", slog.String("segment", string(w.ID())), slog.Any("err", err))
		return
	}
	r.sealed(seg)
}
