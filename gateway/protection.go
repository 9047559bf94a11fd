package gateway

import (
	"context"
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	vigiev1 "github.com/vigie-vms/vigie/gateway/api/vigie/v1"
	"github.com/vigie-vms/vigie/model"
)

// Protection reports how well the recorded footage is protected: the repair of shards lost
// on dead or decommissioned nodes, each node's disk, and each node's erasure-coding
// counters. ProtectionStatus may ask other nodes for their counters: it returns by ctx's
// deadline with what it has (a node that did not answer is absent from Counters).
type Protection interface {
	ProtectionStatus(ctx context.Context) ProtectionStatus
}

// ProtectionStatus is what Protection reports.
type ProtectionStatus struct {
	// Repair is nil when the answering node cannot tell (its catalog failed to read).
	Repair *RepairStatus
	// Disks holds the last disk report of each node that made one.
	Disks map[model.NodeID]DiskUsage
	// Counters holds the counters of each node that answered.
	Counters map[model.NodeID]ProtectionCounters
}

// RepairStatus is the state of the rebuilding of lost shards.
type RepairStatus struct {
	Nodes []RepairNode
	// AtRisk counts the stripes that lost shards, by surviving shards and spare shards
	// (survivors − k).
	AtRisk        []StripesAtRisk
	Unrecoverable int
	Stuck         int
	PendingShards int
	PendingBytes  int64
	DoneShards    int
	// BytesPerSecond is the measured repair rate; 0 while no progress has been seen.
	BytesPerSecond float64
	// ETA is PendingBytes / BytesPerSecond; 0 when unknown (no rate) or nothing is pending.
	ETA time.Duration
}

// RepairNode is a node whose shards are being rebuilt elsewhere.
type RepairNode struct {
	ID                 model.NodeID
	Reason             string // "dead" or "decommissioned"
	Since              time.Time
	Shards, Left, Done int
}

// StripesAtRisk counts the stripes with Survivors shards left, Spare of them beyond k.
type StripesAtRisk struct {
	Survivors, Spare, Stripes int
}

// DiskUsage is a node's disk report.
type DiskUsage struct {
	FreeBytes, TotalBytes int64
	Full                  bool
}

// ProtectionCounters are a node's erasure-coding counters since it started.
type ProtectionCounters struct {
	StripesMade                             int64
	RepairsDone, RepairsFailed, RepairBytes int64
	DegradedReads, DegradedBytes            int64
	ShardErrors                             int64
	ScrubPasses, ScrubFindings              int64
	ScrubRepaired                           int64
}

// protectionTimeout bounds how long the cluster status waits for other nodes' counters.
const protectionTimeout = 2 * time.Second

func repairToPB(r *RepairStatus) *vigiev1.Repair {
	if r == nil {
		return nil
	}
	out := &vigiev1.Repair{
		Unrecoverable:  int32(r.Unrecoverable),
		Stuck:          int32(r.Stuck),
		PendingShards:  int32(r.PendingShards),
		PendingBytes:   r.PendingBytes,
		DoneShards:     int32(r.DoneShards),
		BytesPerSecond: r.BytesPerSecond,
	}
	if r.ETA > 0 {
		out.Eta = durationpb.New(r.ETA)
	}
	for _, n := range r.Nodes {
		out.Nodes = append(out.Nodes, &vigiev1.RepairNode{
			Id: string(n.ID), Reason: n.Reason, Since: ts(n.Since),
			Shards: int32(n.Shards), Left: int32(n.Left), Done: int32(n.Done),
		})
	}
	risk := append([]StripesAtRisk(nil), r.AtRisk...)
	sort.Slice(risk, func(i, j int) bool {
		if risk[i].Spare != risk[j].Spare {
			return risk[i].Spare < risk[j].Spare
		}
		return risk[i].Survivors < risk[j].Survivors
	})
	for _, a := range risk {
		out.AtRisk = append(out.AtRisk, &vigiev1.StripesAtRisk{Survivors: int32(a.Survivors), Spare: int32(a.Spare), Stripes: int32(a.Stripes)})
	}
	return out
}

func diskToPB(d DiskUsage, ok bool) *vigiev1.DiskUsage {
	if !ok {
		return nil
	}
	return &vigiev1.DiskUsage{FreeBytes: d.FreeBytes, TotalBytes: d.TotalBytes, Full: d.Full}
}

func countersToPB(c ProtectionCounters, ok bool) *vigiev1.ProtectionCounters {
	if !ok {
		return nil
	}
	return &vigiev1.ProtectionCounters{
		StripesMade:   c.StripesMade,
		RepairsDone:   c.RepairsDone,
		RepairsFailed: c.RepairsFailed,
		RepairBytes:   c.RepairBytes,
		DegradedReads: c.DegradedReads,
		DegradedBytes: c.DegradedBytes,
		ShardErrors:   c.ShardErrors,
		ScrubPasses:   c.ScrubPasses,
		ScrubFindings: c.ScrubFindings,
		ScrubRepaired: c.ScrubRepaired,
	}
}
