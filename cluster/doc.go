// Package cluster is Vigie's replicated state: a hashicorp/raft node whose state machine
// is stored in Pebble. It holds the tenants, cameras (passwords sealed with AES-256-GCM),
// camera assignments with their fencing epochs, and the catalog of segments, outages and
// deletions. Every node applies the same log and answers reads from its local store.
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
// Pebble batch, or use randomness inside the state machine; hold a camera password in
// clear anywhere but in memory.
//
// Today a cluster is one node bootstrapped as a single voter. Membership (memberlist),
// adding voters and non-voters, and forwarding writes to the leader come next and fit
// around Open's raft node without changing the state machine. See DESIGN.md for the
// invariants.
package cluster
