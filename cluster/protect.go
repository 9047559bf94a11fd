package cluster

import (
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"sort"

	"github.com/vigie-vms/vigie/model"
)

// Footage protection decisions that any node computes from its local state (the
// replicated store and its gossip view): hot replica nodes, stripe placement, repair
// targets. They are deterministic functions of that state, so nodes that see the same
// state agree; gossip converges within seconds, and every change they lead to is
// recorded with a compare-and-set (UpdateShard), so a brief disagreement costs work,
// never data.

// nodeInfo is a node as these decisions see it.
type nodeInfo struct {
	ID             model.NodeID
	Zone           string
	Alive          bool
	Server         bool
	Draining       bool
	Decommissioned bool
	Disk           DiskUsage
	HasDisk        bool
}

// takesData: alive, a raft server, active (not draining or decommissioned), not full.
func (n *nodeInfo) takesData() bool {
	return n.Alive && n.Server && !n.Draining && !n.Decommissioned && !n.Disk.Full
}

// nodeInfos reads every node this node knows of: raft servers, gossip members, node
// records, disk reports.
func (c *Cluster) nodeInfos() (map[model.NodeID]*nodeInfo, error) {
	out := map[model.NodeID]*nodeInfo{}
	get := func(id model.NodeID) *nodeInfo {
		n := out[id]
		if n == nil {
			n = &nodeInfo{ID: id}
			out[id] = n
		}
		return n
	}
	self := get(c.cfg.NodeID)
	self.Alive, self.Zone = true, c.cfg.Meta.Zone
	if f := c.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			n := get(model.NodeID(s.ID))
			n.Server = true
			if c.members == nil {
				n.Alive = true // no gossip: trust the raft configuration
			}
		}
	}
	if c.members != nil {
		for _, m := range c.members.snapshot() {
			n := get(m.ID)
			if m.ID != c.cfg.NodeID {
				n.Alive, n.Zone = m.Alive, m.Meta.Zone
			}
		}
	}
	records, err := c.fsm.nodeRecords()
	if err != nil {
		return nil, err
	}
	for id, r := range records {
		n := get(id)
		n.Draining = r.State == model.NodeDraining
		n.Decommissioned = r.State == model.NodeDecommissioned
	}
	disks, err := c.Disks()
	if err != nil {
		return nil, err
	}
	for id, u := range disks {
		n := get(id)
		n.Disk, n.HasDisk = u, true
	}
	return out, nil
}

// score is a rendezvous (highest random weight) hash of key and node: a node's rank
// for a key changes only when that node comes or goes.
func score(key string, node model.NodeID) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(node))
	x := h.Sum64()
	// splitmix64 finalizer: FNV's low bits are poorly mixed for close keys
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// pickSpread picks up to n nodes among candidates for key: zones not yet used first
// (usedZones holds the zones already holding the data; "" never counts as a zone), then
// by rendezvous score. Deterministic.
func pickSpread(key string, candidates []*nodeInfo, n int, usedZones map[string]bool) []model.NodeID {
	zones := map[string]bool{}
	for z := range usedZones {
		zones[z] = true
	}
	left := append([]*nodeInfo(nil), candidates...)
	sort.Slice(left, func(i, j int) bool {
		si, sj := score(key, left[i].ID), score(key, left[j].ID)
		return si > sj || si == sj && left[i].ID < left[j].ID
	})
	var out []model.NodeID
	for len(out) < n && len(left) > 0 {
		best := 0
		for i, c := range left {
			if c.Zone != "" && !zones[c.Zone] {
				best = i
				break
			}
		}
		out = append(out, left[best].ID)
		if z := left[best].Zone; z != "" {
			zones[z] = true
		}
		left = append(left[:best], left[best+1:]...)
	}
	return out
}

// ReplicaNodes returns the nodes that hold hot replicas of the camera's open segments
// for its owner: HotReplicas of them (default 1) among the live active nodes that are
// not full, in a zone other than the owner's when there is one. The choice is a
// rendezvous hash of the camera over those nodes, so every node computes the same list
// from the same state, and it changes only for cameras whose replica node comes or goes.
// Empty when the camera has no owner or no other node can take data (a one-node
// cluster). The owner streams each fragment to these nodes (write path step 3).
func (c *Cluster) ReplicaNodes(camera model.CameraID) []model.NodeID {
	a, err := c.Assignment(camera)
	if err != nil || a.Node == "" {
		return nil
	}
	return c.ReplicasFor(camera, a.Node)
}

// ReplicasFor is ReplicaNodes for another writer of the camera: the incoming owner of a
// handover (Assignment.Next) or the secondary of a critical camera, which record too.
func (c *Cluster) ReplicasFor(camera model.CameraID, writer model.NodeID) []model.NodeID {
	if c.cfg.HotReplicas == 0 {
		return nil
	}
	infos, err := c.nodeInfos()
	if err != nil {
		c.logger.Warn("replica nodes: read nodes", slog.Any("error", err))
		return nil
	}
	return replicasFor(camera, writer, infos, c.cfg.HotReplicas)
}

func replicasFor(camera model.CameraID, writer model.NodeID, infos map[model.NodeID]*nodeInfo, n int) []model.NodeID {
	var cands []*nodeInfo
	for _, in := range infos {
		if in.ID != writer && in.takesData() {
			cands = append(cands, in)
		}
	}
	used := map[string]bool{}
	if w := infos[writer]; w != nil && w.Zone != "" {
		used[w.Zone] = true
	}
	return pickSpread("replica\x00"+string(camera), cands, n, used)
}

// PlaceStripe chooses where the shards of a k+m stripe go, given dataNodes, the nodes
// that already hold (or will hold) the first len(dataNodes) data segments (at most k,
// distinct). It returns the nodes for the other k+m−len(dataNodes) shards, in stripe
// order (the remaining data shards, then the m parity shards): live active nodes that
// are not full, none of dataNodes and each distinct, in zones not used yet when there
// are any, chosen at random in proportion to their free space (nodes that never
// reported count as the median). A cluster without enough such nodes is
// model.ErrNoSpace, saying how many it has; bad arguments are model.ErrInvalid.
func (c *Cluster) PlaceStripe(k, m int, dataNodes []model.NodeID) ([]model.NodeID, error) {
	infos, err := c.nodeInfos()
	if err != nil {
		return nil, fmt.Errorf("place stripe: read nodes: %w", err)
	}
	return placeStripe(k, m, dataNodes, infos, rand.Float64)
}

func placeStripe(k, m int, dataNodes []model.NodeID, infos map[model.NodeID]*nodeInfo, random func() float64) ([]model.NodeID, error) {
	switch {
	case k < 1:
		return nil, fmt.Errorf("place stripe: %w", model.Invalid("k", "must be at least 1, got %d", k))
	case m < 0:
		return nil, fmt.Errorf("place stripe: %w", model.Invalid("m", "must not be negative, got %d", m))
	case len(dataNodes) > k:
		return nil, fmt.Errorf("place stripe: %w", model.Invalid("data_nodes", "%d nodes for %d data shards", len(dataNodes), k))
	}
	taken := map[model.NodeID]bool{}
	used := map[string]bool{}
	for i, n := range dataNodes {
		if n == "" || taken[n] {
			return nil, fmt.Errorf("place stripe: %w", model.Invalid("data_nodes", "entry %d: %q is empty or named twice", i, n))
		}
		taken[n] = true
		if in := infos[n]; in != nil && in.Zone != "" {
			used[in.Zone] = true
		}
	}
	need := k + m - len(dataNodes)
	var cands []*nodeInfo
	var full, down []string
	for _, in := range infos {
		switch {
		case taken[in.ID]:
		case in.takesData():
			cands = append(cands, in)
		case in.Disk.Full && in.Alive:
			full = append(full, string(in.ID))
		default:
			down = append(down, string(in.ID))
		}
	}
	if len(cands) < need {
		sort.Strings(full)
		sort.Strings(down)
		return nil, fmt.Errorf("place stripe: a %d+%d stripe needs %d more distinct nodes besides %v, %d can take shards (full: %v; dead, draining or not in raft: %v): %w",
			k, m, need, dataNodes, len(cands), full, down, model.ErrNoSpace)
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].ID < cands[j].ID })
	// weights: free bytes; nodes without a report count as the median of the others
	var frees []int64
	for _, in := range cands {
		if in.HasDisk {
			frees = append(frees, in.Disk.FreeBytes)
		}
	}
	def := 1.0
	if len(frees) > 0 {
		sort.Slice(frees, func(i, j int) bool { return frees[i] < frees[j] })
		def = max(float64(frees[len(frees)/2]), 1)
	}
	weight := func(in *nodeInfo) float64 {
		if in.HasDisk {
			return max(float64(in.Disk.FreeBytes), 1)
		}
		return def
	}
	out := make([]model.NodeID, 0, need)
	for len(out) < need {
		pool := make([]*nodeInfo, 0, len(cands))
		for _, in := range cands {
			if in.Zone != "" && !used[in.Zone] {
				pool = append(pool, in)
			}
		}
		if len(pool) == 0 {
			pool = cands
		}
		total := 0.0
		for _, in := range pool {
			total += weight(in)
		}
		r, pick := random()*total, pool[len(pool)-1]
		for _, in := range pool {
			if r < weight(in) {
				pick = in
				break
			}
			r -= weight(in)
		}
		out = append(out, pick.ID)
		if pick.Zone != "" {
			used[pick.Zone] = true
		}
		for i, in := range cands {
			if in == pick {
				cands = append(cands[:i], cands[i+1:]...)
				break
			}
		}
	}
	return out, nil
}
