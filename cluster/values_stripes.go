package cluster

import (
	"fmt"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// Encodings of the values and commands of stripes, holds, disk reports and repair marks
// (value version 3). The rules of values.go hold: fixed field order, a new field is a new
// version, decoders never panic.

// minStripeShardBytes is the least an encoded shard takes (4 one-byte fields + checksum).
const minStripeShardBytes = 7

func (e *encoder) stripe(st model.Stripe) {
	e.str(string(st.ID))
	e.int(st.K)
	e.int(st.M)
	e.varint(st.ShardSize)
	e.uvarint(uint64(len(st.Shards)))
	for _, sh := range st.Shards {
		e.str(string(sh.Node))
		e.str(string(sh.Segment))
		e.varint(sh.Bytes)
		e.u32(sh.Checksum)
	}
	e.time(st.CreatedAt)
}

func (d *decoder) stripe() model.Stripe {
	st := model.Stripe{ID: model.StripeID(d.str()), K: d.int(), M: d.int(), ShardSize: d.varint()}
	if n := d.listLen(minStripeShardBytes); n > 0 {
		st.Shards = make([]model.StripeShard, n)
		for i := range st.Shards {
			st.Shards[i] = model.StripeShard{Node: model.NodeID(d.str()), Segment: model.SegmentID(d.str()), Bytes: d.varint(), Checksum: d.u32()}
		}
	}
	st.CreatedAt = d.time()
	return st
}

func (e *encoder) hold(h model.Hold) {
	e.str(string(h.ID))
	e.uvarint(uint64(len(h.Cameras)))
	for _, c := range h.Cameras {
		e.str(string(c))
	}
	e.time(h.Start)
	e.time(h.End)
	e.str(h.CaseRef)
	e.str(h.CreatedBy)
	e.time(h.CreatedAt)
	e.time(h.Until)
	e.time(h.ReleasedAt)
	e.str(h.ReleasedBy)
}

func (d *decoder) hold() model.Hold {
	h := model.Hold{ID: model.HoldID(d.str())}
	if n := d.listLen(1); n > 0 {
		h.Cameras = make([]model.CameraID, n)
		for i := range h.Cameras {
			h.Cameras[i] = model.CameraID(d.str())
		}
	}
	h.Start = d.time()
	h.End = d.time()
	h.CaseRef = d.str()
	h.CreatedBy = d.str()
	h.CreatedAt = d.time()
	h.Until = d.time()
	h.ReleasedAt = d.time()
	h.ReleasedBy = d.str()
	return h
}

// DiskUsage is what a node reports of its recording disk (ReportDisk).
type DiskUsage struct {
	// FreeBytes and TotalBytes of the file system that holds segments and shards.
	FreeBytes  int64 `json:"free_bytes"`
	TotalBytes int64 `json:"total_bytes"`
	// Full: the node refuses new data (below its reserve). A full node gets no new
	// cameras, hot replicas, stripe shards or repaired shards; its cameras are handed over
	// make-before-break to nodes with space; its footage stays.
	Full bool `json:"full"`
}

func (e *encoder) disk(u DiskUsage) {
	e.varint(u.FreeBytes)
	e.varint(u.TotalBytes)
	e.boolean(u.Full)
}

func (d *decoder) disk() DiskUsage {
	return DiskUsage{FreeBytes: d.varint(), TotalBytes: d.varint(), Full: d.boolean()}
}

// repairMark says a node's shards are to be rebuilt on other nodes: it has been dead
// longer than RepairGrace, or it is decommissioned. Shards is how many shards it held
// when it was marked (progress = Shards − shards still on it).
type repairMark struct {
	Node   model.NodeID
	Reason string
	Since  time.Time
	Shards int
}

// Repair reasons.
const (
	repairDead           = "dead"
	repairDecommissioned = "decommissioned"
)

func (e *encoder) repairMark(r repairMark) {
	e.str(string(r.Node))
	e.str(r.Reason)
	e.time(r.Since)
	e.int(r.Shards)
}

func (d *decoder) repairMark() repairMark {
	return repairMark{Node: model.NodeID(d.str()), Reason: d.str(), Since: d.time(), Shards: d.int()}
}

// decodeV3 decodes a value kind that exists from version 3 on.
func decodeV3[T any](b []byte, what string, read func(d *decoder) T) (T, error) {
	return decodeValue(b, what, func(d *decoder) T {
		if d.ver < 3 {
			d.fail(fmt.Sprintf("%s at value version %d (exists from 3)", what, d.ver))
		}
		return read(d)
	})
}

func encStripe(st model.Stripe) []byte {
	return encodeValue(func(e *encoder) { e.stripe(st) })
}
func decStripe(b []byte) (model.Stripe, error) { return decodeV3(b, "stripe", (*decoder).stripe) }
func encHold(h model.Hold) []byte {
	return encodeValue(func(e *encoder) { e.hold(h) })
}
func decHold(b []byte) (model.Hold, error) { return decodeV3(b, "hold", (*decoder).hold) }
func encDisk(u DiskUsage) []byte {
	return encodeValue(func(e *encoder) { e.disk(u) })
}
func decDisk(b []byte) (DiskUsage, error) { return decodeV3(b, "disk", (*decoder).disk) }
func encRepairMark(r repairMark) []byte {
	return encodeValue(func(e *encoder) { e.repairMark(r) })
}
func decRepairMark(b []byte) (repairMark, error) {
	return decodeV3(b, "repair mark", (*decoder).repairMark)
}
