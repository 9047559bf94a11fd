// Package protect keeps a node's footage alive when nodes are lost (DESIGN.md write path
// 5–7, read path): it groups the node's sealed segments into erasure-coded stripes, reads
// any striped segment whatever node is down or whatever bytes are corrupt, rebuilds the
// shards of lost nodes, scrubs the store and reports its disk.
//
// A Protector runs four loops (Start/Close):
//
//   - Striper (StripeOnce, every StripeInterval): the catalog's UnstripedSegments of this
//     node, older than MinSegmentAge, grouped k at a time by redundancy class with
//     (k, m) = erasure.CodeFor(live active nodes) — 2 nodes: a 1+1 mirror; 1 node:
//     nothing. Data segments stay whole: data shard 0 stays here as the segment file,
//     data shards 1..k−1 are shipped with transfer PutShard to the nodes PlaceStripe
//     picks (the receiving store keeps them as shard files), the m parity shards are
//     computed by erasure.Encode streaming straight into transfer PutShards. Then
//     CommitStripe (which moves each data segment's catalog Node to its shard's node),
//     and only then the shipped segments are deleted here.
//     Crash safety: nothing is deleted before the commit returned. Shards shipped for a
//     stripe never committed are orphans: CollectGarbage (same loop) deletes a shard whose
//     stripe the catalog does not know, or places on another node, after it was seen so
//     for OrphanGrace; a stripe whose shipping took more than OrphanGrace/2 is abandoned.
//     A local segment that a committed stripe places on another node (crash between
//     commit and delete) is deleted as surplus.
//   - Repair (RepairOnce, every RepairInterval): the catalog's RepairTasks for this node:
//     copy the shard from the node that lost it when it still answers, else Rebuild it
//     from k others; store it here (PutShard, checked against the stripe's checksum; a
//     data shard too is a shard file), then UpdateShard (compare-and-set; losing drops
//     the copy). Writes are paced to RepairRate bytes/s.
//   - Scrub (ScrubOnce, a pass then ScrubPause): Store.Scrub at ScrubRate; every finding
//     is logged, counted, and rewritten from its stripe (Rebuild, then RepairSegment or
//     RepairShard, which accept only the bytes first recorded).
//   - Disk (every DiskInterval): ReportDisk with the store's FreeBytes and Full.
//
// Reads: OpenSegment opens a striped segment through a storage.DegradedReader (its own
// shard while it reads and verifies, else the same range rebuilt from k others fetched
// with transfer) and a storage.SegmentView. The fragment index is the local store's when
// this node recorded the segment; otherwise it is rebuilt from the bytes (RebuildIndex:
// box headers and moofs only, never the media data) and cached — offsets, sizes,
// durations and keyframe flags exactly as recorded, wall-clock starts derived from the
// catalog's segment start plus the reference track's presentation time. OpenLocal serves
// by id a segment this node holds as a data shard (the node's peer API needs it).
//
// It must not decide placement or repair plans (the cluster does), open network
// listeners (the node registers transfer.Server on its gRPC listener and dials peers),
// or import package node. It never deletes bytes the catalog still places on this node.
package protect
