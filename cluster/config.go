package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/vigie-vms/vigie/model"
)

// Config configures one node's replica of the state machine.
type Config struct {
	NodeID model.NodeID
	// Dir holds the raft log and stable store (raft.db), the snapshots (snapshots/) and the
	// Pebble store of the state machine (fsm/).
	Dir string
	// RaftAddr is the TCP address raft binds and advertises when Transport is nil,
	// e.g. "127.0.0.1:7000" (":0" picks a free port).
	RaftAddr string
	// Transport, when set, replaces the TCP transport (raft.NewInmemTransport in tests).
	// Close does not close an injected transport.
	Transport raft.Transport
	// Bootstrap makes this node a single-voter cluster when Dir holds no raft state.
	Bootstrap bool
	// SecretKey is the 32-byte AES-256-GCM key that seals camera passwords. Every node of
	// the cluster needs the same key.
	SecretKey []byte
	Logger    *slog.Logger

	// Raft timing. The defaults suit 1..N nodes on a LAN; tests use tens of milliseconds.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// ApplyTimeout bounds how long a write waits to be committed and applied.
	ApplyTimeout time.Duration

	// SnapshotInterval, SnapshotThreshold and TrailingLogs are raft's snapshot policy: every
	// SnapshotInterval, if at least SnapshotThreshold entries were added, a snapshot is
	// taken and the log is truncated to its last TrailingLogs entries. A restart reads (and
	// skips) at most the entries since the last snapshot.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// SnapshotRetain is how many snapshots are kept on disk.
	SnapshotRetain int
}

// DefaultConfig returns the configuration of a single node on 127.0.0.1. NodeID, Dir and
// SecretKey have no sensible default and must be set.
func DefaultConfig() Config {
	return Config{
		RaftAddr:           "127.0.0.1:7000",
		Bootstrap:          true,
		HeartbeatTimeout:   1000 * time.Millisecond,
		ElectionTimeout:    1000 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		ApplyTimeout:       10 * time.Second,
		SnapshotInterval:   120 * time.Second,
		SnapshotThreshold:  8192,
		TrailingLogs:       10240,
		SnapshotRetain:     2,
	}
}

// Validate reports every problem of the configuration at once, naming the option.
func (c Config) Validate() error {
	var errs []error
	bad := func(opt, format string, args ...any) {
		errs = append(errs, fmt.Errorf("cluster config: %s: %s", opt, fmt.Sprintf(format, args...)))
	}
	if c.NodeID == "" {
		bad("NodeID", "is required")
	}
	if c.Dir == "" {
		bad("Dir", "is required")
	}
	if c.Transport == nil {
		if c.RaftAddr == "" {
			bad("RaftAddr", "is required when no Transport is injected")
		} else if _, _, err := net.SplitHostPort(c.RaftAddr); err != nil {
			bad("RaftAddr", "%q is not host:port: %v", c.RaftAddr, err)
		}
	}
	if len(c.SecretKey) != 32 {
		bad("SecretKey", "must be 32 bytes (AES-256), got %d", len(c.SecretKey))
	}
	pos := func(opt string, d time.Duration) {
		if d <= 0 {
			bad(opt, "must be positive, got %v", d)
		}
	}
	pos("HeartbeatTimeout", c.HeartbeatTimeout)
	pos("ElectionTimeout", c.ElectionTimeout)
	pos("LeaderLeaseTimeout", c.LeaderLeaseTimeout)
	pos("CommitTimeout", c.CommitTimeout)
	pos("ApplyTimeout", c.ApplyTimeout)
	pos("SnapshotInterval", c.SnapshotInterval)
	// raft's own rules (raft.ValidateConfig), reported in our option names
	if c.HeartbeatTimeout > 0 && c.HeartbeatTimeout < 5*time.Millisecond {
		bad("HeartbeatTimeout", "must be at least 5ms, got %v", c.HeartbeatTimeout)
	}
	if c.ElectionTimeout > 0 && c.ElectionTimeout < 5*time.Millisecond {
		bad("ElectionTimeout", "must be at least 5ms, got %v", c.ElectionTimeout)
	}
	if c.ElectionTimeout > 0 && c.ElectionTimeout < c.HeartbeatTimeout {
		bad("ElectionTimeout", "(%v) must be at least HeartbeatTimeout (%v)", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.LeaderLeaseTimeout > 0 && c.LeaderLeaseTimeout < 5*time.Millisecond {
		bad("LeaderLeaseTimeout", "must be at least 5ms, got %v", c.LeaderLeaseTimeout)
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout && c.HeartbeatTimeout > 0 {
		bad("LeaderLeaseTimeout", "(%v) must not exceed HeartbeatTimeout (%v)", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.SnapshotThreshold == 0 {
		bad("SnapshotThreshold", "must be positive")
	}
	if c.TrailingLogs == 0 {
		bad("TrailingLogs", "must be positive")
	}
	if c.SnapshotRetain < 1 {
		bad("SnapshotRetain", "must be at least 1, got %d", c.SnapshotRetain)
	}
	return errors.Join(errs...)
}

func (c Config) raftConfig() *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.NodeID)
	rc.HeartbeatTimeout = c.HeartbeatTimeout
	rc.ElectionTimeout = c.ElectionTimeout
	rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	rc.CommitTimeout = c.CommitTimeout
	rc.SnapshotInterval = c.SnapshotInterval
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.TrailingLogs = c.TrailingLogs
	// The store persists itself (Pebble, applied index in the same batch): raft must not
	// load a snapshot into it at start; Open restores one only if the store is behind it.
	rc.NoSnapshotRestoreOnStart = true
	// Let raft hand the FSM up to MaxAppendEntries commands per ApplyBatch.
	rc.BatchApplyCh = true
	return rc
}
