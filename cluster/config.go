package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/memberlist"
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
	// Bootstrap makes this node a single-voter cluster when Dir holds no raft state. A
	// node without Seeds bootstraps too; a node with Seeds and no Bootstrap waits until
	// the leader adds it to raft.
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

	// ---- membership (memberlist) ----

	// GossipAddr is the host:port memberlist binds and advertises (UDP and TCP) when
	// MemberTransport is nil. Gossip is off when both are empty: the node is a cluster of
	// its own (the single-node default), and Members lists the raft servers only.
	GossipAddr string
	// MemberTransport, when set, replaces memberlist's network transport (an in-memory
	// network in tests). Close shuts it down through memberlist.
	MemberTransport memberlist.Transport
	// Seeds are gossip addresses of other nodes to join. Open does not wait for them: it
	// keeps trying in the background every RejoinInterval until one answers.
	Seeds []string
	// Meta is what the other nodes learn about this one through gossip (at most
	// MaxMetaSize bytes encoded). Meta.RaftAddr is filled in by Open.
	Meta NodeMeta
	// Forwarder carries writes made on a follower to the leader. Without it a write on a
	// follower fails with model.ErrNotLeader naming the leader.
	Forwarder Forwarder

	// Failure detection (see DESIGN.md for the detection times they give). A node that
	// misses a probe (ProbeTimeout, then indirect probes until the end of ProbeInterval)
	// is suspected; it is declared dead after SuspicionMult × max(1, log10 N) ×
	// ProbeInterval (up to SuspicionMaxTimeoutMult times that while no other node
	// confirms the suspicion).
	ProbeInterval           time.Duration
	ProbeTimeout            time.Duration
	SuspicionMult           int
	SuspicionMaxTimeoutMult int
	// GossipInterval is how often state is gossiped to a few random nodes;
	// PushPullInterval how often full state is exchanged with one node.
	GossipInterval   time.Duration
	PushPullInterval time.Duration
	// RejoinInterval: how often a node that has not joined anyone, or that sees members
	// dead, tries the seeds and the dead members' addresses again (heals partitions).
	RejoinInterval time.Duration

	// ---- leader duties ----

	// ManageCameras runs the leader's placement: every camera owned by one live active
	// node, balanced by bitrate, moved off dead and draining nodes. Off, cameras are
	// assigned only by Assign.
	ManageCameras bool
	// ReconcileInterval is how often the leader reconciles membership with raft and
	// placement with the cameras, besides reacting to changes at once.
	ReconcileInterval time.Duration
	// DeadNodeGrace is how long a node must have been declared dead by memberlist before
	// its cameras move to survivors (default 1 s: memberlist's suspicion has already
	// waited ≥ 2 s for the node to refute; the grace only absorbs a declaration that is
	// refuted at once, and every second of it is a second of footage lost).
	DeadNodeGrace time.Duration
	// DeadServerGrace is how long a dead node stays in the raft configuration before the
	// leader removes it (a voter is replaced by promoting a non-voter at once).
	DeadServerGrace time.Duration
	// HandoverTimeout: a planned move whose incoming node has not confirmed it records
	// the camera within this time is retried with another node.
	HandoverTimeout time.Duration
	// MaxMovesPerRound bounds the planned moves (drain, rebalance) started per round.
	MaxMovesPerRound int
	// RebalanceTolerance: nodes are left alone while every node's load is within this
	// fraction of the mean (0.05 = ±5 %).
	RebalanceTolerance float64

	// ---- footage protection ----

	// RepairGrace is how long a node must have been dead before the leader marks its
	// stripe shards for rebuilding on other nodes (RepairTasks). A decommissioned node is
	// marked at once. Shorter means less time at reduced redundancy, longer means less
	// needless rebuilding after a reboot.
	RepairGrace time.Duration
	// HotReplicas is how many nodes besides the owner receive a camera's open segment
	// (ReplicaNodes) until it is striped; 0 disables hot replicas.
	HotReplicas int
}

// MaxMetaSize is memberlist's limit on node metadata.
const MaxMetaSize = memberlist.MetaMaxSize

// DefaultConfig returns the configuration of a single node on 127.0.0.1. NodeID, Dir and
// SecretKey have no sensible default and must be set.
func DefaultConfig() Config {
	return Config{
		RaftAddr: "127.0.0.1:7000",
		// Twice hashicorp/raft's defaults: on a loaded 2-core machine (3 nodes, 200
		// cameras and the fleet, loadtest/scenarios/failover.yaml) 1 s / 500 ms lost the
		// leader lease to CPU starvation 8 times in 5 minutes. Camera failover does not wait
		// on these (memberlist declares nodes dead); only a leader's own death does.
		HeartbeatTimeout:   2000 * time.Millisecond,
		ElectionTimeout:    2000 * time.Millisecond,
		LeaderLeaseTimeout: 1000 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		ApplyTimeout:       10 * time.Second,
		SnapshotInterval:   120 * time.Second,
		SnapshotThreshold:  8192,
		TrailingLogs:       10240,
		SnapshotRetain:     2,

		ProbeInterval:           500 * time.Millisecond,
		ProbeTimeout:            250 * time.Millisecond,
		SuspicionMult:           4,
		SuspicionMaxTimeoutMult: 4,
		GossipInterval:          100 * time.Millisecond,
		PushPullInterval:        5 * time.Second,
		RejoinInterval:          2 * time.Second,

		ManageCameras:      true,
		ReconcileInterval:  time.Second,
		DeadNodeGrace:      time.Second,
		DeadServerGrace:    5 * time.Minute,
		HandoverTimeout:    30 * time.Second,
		MaxMovesPerRound:   64,
		RebalanceTolerance: 0.05,

		RepairGrace: 10 * time.Minute,
		HotReplicas: 1,
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
	if c.MemberTransport == nil && c.GossipAddr != "" {
		if _, _, err := net.SplitHostPort(c.GossipAddr); err != nil {
			bad("GossipAddr", "%q is not host:port: %v", c.GossipAddr, err)
		}
	}
	if len(c.Seeds) > 0 && c.MemberTransport == nil && c.GossipAddr == "" {
		bad("Seeds", "need gossip: set GossipAddr")
	}
	if n := len(c.Meta.encode()); n > MaxMetaSize {
		bad("Meta", "encodes to %d bytes, more than memberlist's %d", n, MaxMetaSize)
	}
	if c.gossip() {
		pos("ProbeInterval", c.ProbeInterval)
		pos("ProbeTimeout", c.ProbeTimeout)
		pos("GossipInterval", c.GossipInterval)
		pos("PushPullInterval", c.PushPullInterval)
		pos("RejoinInterval", c.RejoinInterval)
		if c.ProbeTimeout > c.ProbeInterval {
			bad("ProbeTimeout", "(%v) must not exceed ProbeInterval (%v)", c.ProbeTimeout, c.ProbeInterval)
		}
		if c.SuspicionMult < 1 {
			bad("SuspicionMult", "must be at least 1, got %d", c.SuspicionMult)
		}
		if c.SuspicionMaxTimeoutMult < 1 {
			bad("SuspicionMaxTimeoutMult", "must be at least 1, got %d", c.SuspicionMaxTimeoutMult)
		}
	}
	pos("ReconcileInterval", c.ReconcileInterval)
	if c.DeadNodeGrace < 0 {
		bad("DeadNodeGrace", "must not be negative, got %v", c.DeadNodeGrace)
	}
	if c.DeadServerGrace < 0 {
		bad("DeadServerGrace", "must not be negative, got %v", c.DeadServerGrace)
	}
	pos("HandoverTimeout", c.HandoverTimeout)
	if c.MaxMovesPerRound < 1 {
		bad("MaxMovesPerRound", "must be at least 1, got %d", c.MaxMovesPerRound)
	}
	if c.RebalanceTolerance < 0 || c.RebalanceTolerance >= 1 {
		bad("RebalanceTolerance", "must be in [0, 1), got %v", c.RebalanceTolerance)
	}
	if c.RepairGrace < 0 {
		bad("RepairGrace", "must not be negative, got %v", c.RepairGrace)
	}
	if c.HotReplicas < 0 {
		bad("HotReplicas", "must not be negative, got %d", c.HotReplicas)
	}
	return errors.Join(errs...)
}

// gossip reports whether memberlist runs.
func (c Config) gossip() bool { return c.MemberTransport != nil || c.GossipAddr != "" }

// bootstraps reports whether an empty node makes itself a single-voter cluster.
func (c Config) bootstraps() bool { return c.Bootstrap || len(c.Seeds) == 0 }

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
