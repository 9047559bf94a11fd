package node

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// segmentCommitter is what the committer needs of the catalog.
type segmentCommitter interface {
	CommitSegment(ctx context.Context, seg model.Segment) error
	ReconcileSegment(ctx context.Context, seg model.Segment) (model.Segment, error)
}

// committer commits sealed segments to the catalog in the background, so a slow consensus
// round never stalls a camera's ingest. A commit that fails for a passing reason is
// retried with backoff; the segment's bytes are already durable on disk, and the startup
// check commits whatever was still queued at a crash.
type committer struct {
	cat segmentCommitter
	log *slog.Logger

	mu      sync.Mutex
	queue   []model.Segment
	wake    chan struct{}
	idle    *sync.Cond
	working bool
}

func newCommitter(cat segmentCommitter, log *slog.Logger) *committer {
	c := &committer{cat: cat, log: log, wake: make(chan struct{}, 1)}
	c.idle = sync.NewCond(&c.mu)
	return c
}

// add queues a sealed segment for commit.
func (c *committer) add(seg model.Segment) {
	c.mu.Lock()
	c.queue = append(c.queue, seg)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *committer) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.working = false
			c.idle.Broadcast()
			c.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-c.wake:
				continue
			}
		}
		seg := c.queue[0]
		c.working = true
		c.mu.Unlock()

		err := c.cat.CommitSegment(ctx, seg)
		if errors.Is(err, model.ErrStaleEpoch) {
			// Recorded under an epoch that is no longer current: the camera moved while this
			// segment was written (a handover, or this node was cut off). Fencing refuses it
			// as current footage; it is kept as reconciled footage, never lost.
			_, err = c.cat.ReconcileSegment(ctx, seg)
		}
		switch {
		case err == nil, errors.Is(err, model.ErrInvalid), errors.Is(err, model.ErrStaleEpoch):
			if err != nil {
				c.log.Warn("segment not committed; it stays on this disk", slog.String("segment", string(seg.ID)), slog.Any("err", err))
			}
			c.mu.Lock()
			c.queue = c.queue[1:]
			c.mu.Unlock()
			backoff = 100 * time.Millisecond
		default:
			c.log.Warn("segment commit failed, retrying", slog.String("segment", string(seg.ID)),
				slog.Duration("in", backoff), slog.Any("err", err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// drain waits until the queue is empty or the timeout passes.
func (c *committer) drain(timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		c.mu.Lock()
		for len(c.queue) > 0 || c.working {
			c.idle.Wait()
		}
		c.mu.Unlock()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		c.mu.Lock()
		left := len(c.queue)
		c.mu.Unlock()
		c.log.Warn("shutdown with segments not yet committed; the startup check commits them", slog.Int("segments", left))
	}
}
