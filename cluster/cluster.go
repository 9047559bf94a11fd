package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/vigie-vms/vigie/model"
)

// Cluster is one node's replica of Vigie's replicated state: the raft node, its log and
// snapshots, and the Pebble-backed state machine. Writes go through raft; reads are served
// by the local store.
type Cluster struct {
	cfg    Config
	logger *slog.Logger
	sealer *sealer

	fsm       *fsm
	logs      *raftboltdb.BoltStore
	snaps     *raft.FileSnapshotStore
	transport raft.Transport
	ownsTrans bool
	raft      *raft.Raft

	// members is nil when gossip is off (single node).
	members    *membership
	memberKick chan struct{}
	loopStop   chan struct{}
	loopDone   chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// Open starts the node: it opens (or creates) the store, the raft log and snapshots under
// cfg.Dir, catches the store up with the latest snapshot if it is behind, bootstraps a
// single-voter cluster when asked and there is no state, and starts raft. It does not wait
// for a leader (see WaitLeader).
func Open(cfg Config) (_ *Cluster, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With(slog.String("node", string(cfg.NodeID)))
	s, err := newSealer(cfg.SecretKey)
	if err != nil {
		return nil, fmt.Errorf("cluster: SecretKey: %w", err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: Dir: %w", err)
	}
	c := &Cluster{cfg: cfg, logger: logger, sealer: s, memberKick: make(chan struct{}, 1)}
	// On failure, undo in reverse order what was opened.
	defer func() {
		if err != nil {
			c.release()
		}
	}()

	if c.fsm, err = openFSM(filepath.Join(cfg.Dir, "fsm"), logger); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if c.logs, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.Dir, "raft.db")}); err != nil {
		return nil, fmt.Errorf("cluster: open raft log: %w", err)
	}
	hl := newHclog(logger, "raft")
	if c.snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.SnapshotRetain, hl); err != nil {
		return nil, fmt.Errorf("cluster: open snapshots: %w", err)
	}
	if err = c.catchUpWithSnapshot(); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}

	c.transport = cfg.Transport
	if c.transport == nil {
		t, err := raft.NewTCPTransportWithLogger(cfg.RaftAddr, nil, 3, 10*time.Second, hl)
		if err != nil {
			return nil, fmt.Errorf("cluster: RaftAddr %q: %w", cfg.RaftAddr, err)
		}
		c.transport, c.ownsTrans = t, true
	}

	rc := cfg.raftConfig()
	rc.Logger = hl
	if cfg.bootstraps() {
		has, err := raft.HasExistingState(c.logs, c.logs, c.snaps)
		if err != nil {
			return nil, fmt.Errorf("cluster: read raft state: %w", err)
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter,
				ID:       raft.ServerID(cfg.NodeID),
				Address:  c.transport.LocalAddr(),
			}}}
			if err := raft.BootstrapCluster(rc, c.logs, c.logs, c.snaps, c.transport, conf); err != nil {
				return nil, fmt.Errorf("cluster: bootstrap: %w", err)
			}
			logger.Info("bootstrapped a single-voter cluster", slog.String("raft_addr", string(c.transport.LocalAddr())))
		}
	}
	if c.raft, err = raft.NewRaft(rc, c.fsm, c.logs, c.logs, c.snaps, c.transport); err != nil {
		return nil, fmt.Errorf("cluster: start raft: %w", err)
	}
	if cfg.gossip() {
		meta := cfg.Meta
		meta.RaftAddr = string(c.transport.LocalAddr())
		if c.members, err = newMembership(cfg, meta, logger, c.kickMembers); err != nil {
			_ = c.raft.Shutdown().Error()
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	c.loopStop, c.loopDone = make(chan struct{}), make(chan struct{})
	go c.leaderLoop()
	logger.Info("cluster node open",
		slog.String("raft_addr", string(c.transport.LocalAddr())),
		slog.Bool("gossip", c.members != nil),
		slog.Uint64("applied_index", c.fsm.applied.Load()))
	return c, nil
}

// catchUpWithSnapshot restores the latest snapshot into the store when the store is
// behind it (a crash lost unsynced Pebble writes older than a truncated log, or a restore
// was interrupted). Normally the store is ahead and nothing happens: raft is configured
// not to restore snapshots at start.
func (c *Cluster) catchUpWithSnapshot() error {
	list, err := c.snaps.List()
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	if len(list) == 0 || list[0].Index <= c.fsm.applied.Load() {
		return nil
	}
	meta, rc, err := c.snaps.Open(list[0].ID)
	if err != nil {
		return fmt.Errorf("open snapshot %s: %w", list[0].ID, err)
	}
	defer rc.Close()
	c.logger.Warn("store is behind the latest snapshot; restoring it",
		slog.Uint64("store_index", c.fsm.applied.Load()), slog.Uint64("snapshot_index", meta.Index))
	if err := c.fsm.restoreAt(rc, meta.Index); err != nil {
		return fmt.Errorf("restore snapshot %s: %w", meta.ID, err)
	}
	return nil
}

// Close stops the leader duties, leaves the gossip (the others see the node leave at
// once rather than after failure detection), stops raft, then closes the transport (if
// Open created it), the raft log and the store, in that order. It is safe to call more
// than once.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		var errs []error
		if c.loopStop != nil {
			close(c.loopStop)
			<-c.loopDone
		}
		if c.members != nil {
			if err := c.members.shutdown(true); err != nil {
				errs = append(errs, fmt.Errorf("gossip shutdown: %w", err))
			}
		}
		if c.raft != nil {
			if err := c.raft.Shutdown().Error(); err != nil {
				errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
			}
		}
		errs = append(errs, c.release())
		c.closeErr = errors.Join(errs...)
		c.logger.Info("cluster node closed")
	})
	return c.closeErr
}

// release closes what Open opened, except raft itself.
func (c *Cluster) release() error {
	var errs []error
	if c.ownsTrans {
		if cl, ok := c.transport.(io.Closer); ok {
			errs = append(errs, cl.Close())
		}
	}
	if c.logs != nil {
		errs = append(errs, c.logs.Close())
	}
	if c.fsm != nil {
		errs = append(errs, c.fsm.close())
	}
	return errors.Join(errs...)
}

// WaitLeader blocks until the cluster has a leader. When this node is the leader it also
// waits until every committed entry is applied to the local store (a raft barrier), so
// reads that follow see everything committed before.
func (c *Cluster) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if addr, _ := c.raft.LeaderWithID(); addr != "" {
			if c.raft.State() != raft.Leader {
				return nil
			}
			timeout := c.cfg.ApplyTimeout
			if dl, ok := ctx.Deadline(); ok {
				timeout = time.Until(dl)
			}
			err := c.raft.Barrier(timeout).Error()
			if err == nil {
				return nil
			}
			if !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipLost) {
				return fmt.Errorf("wait for leader: barrier: %w", err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for leader: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// IsLeader reports whether this node is the raft leader.
func (c *Cluster) IsLeader() bool { return c.raft.State() == raft.Leader }

// Changes is signalled (coalesced, never blocking the state machine) after an applied
// entry created, changed or deleted a camera, changed an assignment or a repair mark (a
// node's shards are now to be rebuilt, or no longer), and after a snapshot restore. Reconcilers re-read the state when it fires.
func (c *Cluster) Changes() <-chan struct{} { return c.fsm.changes }

// Status lists every node (see Members).
func (c *Cluster) Status() []model.NodeStatus { return c.Members() }

// apply submits a command: to raft when this node is the leader, else through the
// Forwarder to the leader (when there is one). It waits until the command is applied (on
// the leader; this node's store follows shortly after). Refusals of the state machine come
// back as errors wrapping the model sentinels. When the leader changes under a write that
// was refused with model.ErrNotLeader, the write is sent to the new leader, within
// ApplyTimeout.
func (c *Cluster) apply(ctx context.Context, cmd command) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ApplyTimeout)
	defer cancel()
	if c.cfg.Forwarder == nil {
		return c.applyLocal(ctx, cmd)
	}
	var payload []byte
	wait := time.NewTicker(20 * time.Millisecond)
	defer wait.Stop()
	var lastErr error
	for {
		_, leader := c.raft.LeaderWithID()
		switch {
		case leader == raft.ServerID(c.cfg.NodeID):
			res, err := c.applyLocal(ctx, cmd)
			if !errors.Is(err, model.ErrNotLeader) {
				return res, err
			}
			lastErr = err
		case leader != "":
			if payload == nil {
				payload = encodeForward(encodeCommand(cmd))
			}
			id := model.NodeID(leader)
			var meta NodeMeta
			if c.members != nil {
				mb, _ := c.members.get(id)
				meta = mb.Meta
			}
			ans, err := c.cfg.Forwarder.Forward(ctx, id, meta, payload)
			if err != nil {
				if ctx.Err() != nil {
					return nil, fmt.Errorf("forward to leader %q: %w (the write may still be applied)", id, err)
				}
				// Unreachable leader: retry only if another leader shows up (a write
				// that failed in transit may have been applied; never send it twice to
				// the same leader).
				lastErr = fmt.Errorf("cannot reach the leader %q: %v: %w", id, err, model.ErrNotLeader)
				if !c.waitLeaderChange(ctx, leader) {
					return nil, lastErr
				}
				continue
			}
			res, idx, err := decodeAnswer(ans)
			if !errors.Is(err, model.ErrNotLeader) {
				c.waitApplied(ctx, idx)
				return res, err
			}
			lastErr = err
		default:
			lastErr = fmt.Errorf("no leader known (an election is under way or the quorum is lost): %w", model.ErrNotLeader)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (gave up after %v)", lastErr, c.cfg.ApplyTimeout)
		case <-wait.C:
		}
	}
}

// waitApplied waits (within ctx) until this node's store holds the entry at index, so a
// write forwarded from here is visible to the reads that follow it here.
func (c *Cluster) waitApplied(ctx context.Context, index uint64) {
	if index == 0 || c.fsm.applied.Load() >= index {
		return
	}
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for c.fsm.applied.Load() < index {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// waitLeaderChange waits until raft knows a leader other than old; false when ctx ends
// first.
func (c *Cluster) waitLeaderChange(ctx context.Context, old raft.ServerID) bool {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if _, id := c.raft.LeaderWithID(); id != "" && id != old {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// applyLocal submits a command to this node's raft and waits until it is applied here.
func (c *Cluster) applyLocal(ctx context.Context, cmd command) (any, error) {
	res, _, err := c.applyLocalIndex(ctx, cmd)
	return res, err
}

// applyLocalIndex is applyLocal that also returns the command's raft index.
func (c *Cluster) applyLocalIndex(ctx context.Context, cmd command) (any, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ApplyTimeout)
	defer cancel()
	dl, _ := ctx.Deadline()
	timeout := time.Until(dl)
	f := c.raft.Apply(encodeCommand(cmd), timeout) // timeout bounds the enqueue only
	var err error
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("not applied within %v: %w (the write may still be applied)", timeout.Round(time.Millisecond), ctx.Err())
	}
	if err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
			errors.Is(err, raft.ErrLeadershipTransferInProgress):
			addr, id := c.raft.LeaderWithID()
			return nil, 0, fmt.Errorf("%w (leader is %q at %q): %v", model.ErrNotLeader, id, addr, err)
		case errors.Is(err, raft.ErrEnqueueTimeout):
			return nil, 0, fmt.Errorf("not committed within %v: %w", timeout, context.DeadlineExceeded)
		case errors.Is(err, raft.ErrRaftShutdown):
			return nil, 0, fmt.Errorf("cluster node is closed: %w", model.ErrNotLeader)
		}
		return nil, 0, err
	}
	if e, ok := f.Response().(error); ok {
		return nil, f.Index(), e
	}
	return f.Response(), f.Index(), nil
}

// now is the wall clock of the caller side (never read inside the state machine).
func now() time.Time { return time.Now().UTC().Round(0) }
