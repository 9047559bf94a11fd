package node

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/vigie-vms/vigie/cluster"
	"github.com/vigie-vms/vigie/gateway"
	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage"
)

// recordings serves the gateway's view of footage: the catalog's sealed segments plus the
// segments this node is still writing (they reach the catalog when sealed), read from the
// local store.
type recordings struct {
	clu   *cluster.Cluster
	store *storage.Store
}

var _ gateway.Recordings = (*recordings)(nil)

func (r *recordings) Segments(camera model.CameraID, from, to time.Time) ([]model.Segment, error) {
	sealed, err := r.clu.Segments(camera, from, to)
	if err != nil {
		return nil, err
	}
	local, err := r.store.Segments(camera, from, to)
	if err != nil {
		return nil, err
	}
	seen := make(map[model.SegmentID]bool, len(sealed))
	for _, s := range sealed {
		seen[s.ID] = true
	}
	out := sealed
	added := false
	for _, s := range local {
		if !seen[s.ID] {
			out = append(out, s)
			added = true
		}
	}
	if added {
		sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	}
	return out, nil
}

func (r *recordings) Outages(camera model.CameraID, from, to time.Time) ([]model.Outage, error) {
	return r.clu.Outages(camera, from, to)
}

func (r *recordings) Deletions(camera model.CameraID, from, to time.Time) ([]model.Deletion, error) {
	return r.clu.Deletions(camera, from, to)
}

// OpenSegment opens a segment held by this node. Segments held by other nodes are served
// by the multi-node issue (proxy or reconstruction).
func (r *recordings) OpenSegment(_ context.Context, seg model.Segment) (gateway.SegmentReader, error) {
	rd, err := r.store.OpenReader(seg.ID)
	if err != nil {
		return nil, fmt.Errorf("segment %s on node %s: %w", seg.ID, seg.Node, err)
	}
	return rd, nil
}

// clusterInfo is the cluster status as the gateway shows it, with what only the node
// knows (its HTTP address) filled in.
type clusterInfo struct{ n *Node }

func (c clusterInfo) Status() []model.NodeStatus {
	st := c.n.clu.Status()
	for i := range st {
		if st[i].ID == model.NodeID(c.n.cfg.NodeID) && st[i].HTTPAddr == "" {
			st[i].HTTPAddr = c.n.HTTPAddr()
		}
	}
	return st
}
