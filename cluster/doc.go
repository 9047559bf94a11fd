// Package cluster is Vigie's replicated state: a hashicorp/raft node whose state machine
// is stored in Pebble. It holds the tenants, cameras (passwords sealed with AES-256-GCM),
// camera assignments with their fencing epochs, the catalog of segments, stripes, outages
// and deletions, legal holds, node disk reports and repair marks. Every node applies the same log and answers reads from its local store.
//
// Concepts:
//
//   - Writes (CreateTenant, CreateCameras, Assign, CommitSegment, ...) are commands in the
//     raft log. The caller-side method validates the input, sets timestamps and seals
//     passwords; the state machine applies the command and makes the checks that depend on
//     the state (existence, quota, epoch compare-and-set). A refusal comes back as an error
//     wrapping a sentinel of package model (ErrNotFound, ErrExists, ErrInUse, ErrQuota,
//     ErrStaleEpoch, ErrNotLeader, ErrInvalid) with the object it is about.
//   - The store persists itself: each batch of log entries is one Pebble batch that also
//     records the index of the last entry applied. A restart reopens the store and skips
//     the entries it already holds, instead of replaying the whole history; raft
//     snapshots exist to bring other nodes (and a store that lost its tail) up to date.
//   - Fencing: a camera's epoch grows at every change of owner (and when the camera is
//     deleted). A segment is committed only if it carries the current epoch.
//
// What this package must not do: import storage, gateway or node (it speaks in the types
// of package model only); read the wall clock, do network or file I/O other than its
// Pebble batch, or use randomness inside the state machine (the leader's decisions are
// made outside it and travel in the commands); hold a camera password in clear anywhere
// but in memory; talk HTTP itself (forwarding goes through the injected Forwarder).
//
// Several nodes: every node gossips (hashicorp/memberlist) its liveness and its NodeMeta
// (addresses, zone, capacity). A node without seeds, or with Bootstrap, starts a
// single-voter raft cluster; the others join the gossip through their seeds, and the
// leader adds them to raft: voters up to 3 (5 from 6 nodes, where stripes become 4+2), spread across zones, the
// rest non-voters that still apply the whole log (reads are local everywhere). A write
// made on a follower is carried to the leader by the injected Forwarder (the node does it
// over HTTP: ApplyForwarded on the other end); errors keep their model sentinel.
//
// The leader also places cameras (placement.go): every camera is owned by exactly one
// live active node, balanced by the bitrates nodes report (ReportLoad). A dead node's
// cameras move once gossip has declared it dead and DeadNodeGrace has passed, with a new
// epoch. Planned moves (Drain, rebalance) are make-before-break: the leader names the
// incoming node in Assignment.Next, that node records and calls ConfirmRecording, and
// only then does it become the owner (epoch + 1). Critical cameras get a Secondary that
// records too. Footage recorded by a node cut off from the quorum is kept with
// ReconcileSegment (Reconciled=true), never replacing current-epoch entries.
//
// Footage protection (api_stripes.go, protect.go, repair.go): the catalog records each
// erasure-coded stripe (CommitStripe: k sealed data segments + m parity shards on k+m
// distinct nodes), which stripe protects a segment (StripeOf), and which sealed segments
// of a node are not protected yet (UnstripedSegments). Any node computes, from its store
// and gossip view, the hot replica nodes of a camera (ReplicaNodes, a rendezvous hash:
// another zone, never a full node) and where a new stripe's shards go (PlaceStripe,
// weighted by free space). Nodes report their disk (ReportDisk); a full node gets no new
// cameras, replicas or shards, and its cameras are handed over make-before-break to nodes
// with space (they come back by rebalancing once it reports space; nothing moves when
// every node is full). When a node has been dead for RepairGrace, or is
// decommissioned, the leader marks it; every node then derives the same repair plan
// (RepairTasks: which shard each node rebuilds, most endangered stripes first) and
// records each rebuilt shard with UpdateShard, a compare-and-set on the shard's node.
// Legal holds (CreateHold, ReleaseHold, HeldAt) keep footage past retention:
// DeleteStripe and DeleteSegments refuse held footage (model.ErrInUse naming the hold).
//
// Gossip is off when neither GossipAddr nor MemberTransport is set: the node is then a
// cluster of its own (the embedded single-node default). Package clustertest runs
// several nodes in one test process. See DESIGN.md for the invariants and measurements.
package cluster
