package cluster

import (
	"math"
	"sort"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// Placement: the leader's decisions about which node records which camera. plan is a
// pure function of what the leader reads (cameras, assignments, bitrates, node records,
// gossip) and of the leader's own memory (when a handover started), so it is tested and
// benchmarked without a cluster. Its decisions are applied as one set-assignments
// command whose every change is conditional on the assignment being unchanged since.

// defaultBitrate is the bitrate assumed for a camera nobody reported yet, when no camera
// has a report either (else the median of the reports is used).
const defaultBitrate = 2e6

// placeNode is a node as placement sees it.
type placeNode struct {
	ID     model.NodeID
	Zone   string
	Weight float64 // share of the load it should carry (capacity, or 1)
	// Eligible: alive, a raft server, not draining or decommissioned: it may take cameras.
	Eligible bool
	Alive    bool
	// DeadSince: when it was declared dead or first seen missing (zero while alive).
	DeadSince      time.Time
	Draining       bool
	Decommissioned bool
	// Full: the node's disk is below its reserve (DiskUsage.Full). It gets no new
	// cameras, and its cameras are handed over to nodes that are not full, make-before-
	// break as from a draining node, without touching its admin state. When every
	// eligible node is full, cameras stay where they are. Once it reports free space
	// again, rebalancing gives it cameras again.
	Full bool

	load float64
}

// placeCamera is a camera with its assignment and (estimated) bitrate.
type placeCamera struct {
	ID       model.CameraID
	Critical bool
	Bps      float64
	A        model.Assignment
}

type placementInput struct {
	Now             time.Time
	Cameras         []placeCamera // sorted by id
	Nodes           map[model.NodeID]*placeNode
	DeadGrace       time.Duration
	HandoverTimeout time.Duration
	MaxMoves        int
	Tolerance       float64
	// NextSince: when the leader first saw the camera's current Next (handover start).
	NextSince map[model.CameraID]time.Time
}

type placementOutput struct {
	Changes []assignChange
	// WakeAt is the earliest time a pending decision falls due (a dead node's grace or
	// a handover's timeout ends); zero when none.
	WakeAt time.Time
	// Unplaced counts cameras that need an owner and found no eligible node.
	Unplaced int
}

// plan decides the changes. Rules, in order:
//
//  1. A camera whose owner is gone (none, decommissioned, not a raft server, or dead
//     for DeadGrace) gets a new owner at once: its Next or its Secondary if eligible
//     (they are already recording it), else the least loaded eligible node. Cameras
//     are placed largest bitrate first (LPT), so placement is balanced from the start.
//  2. A Next that is no longer eligible, or has not confirmed within HandoverTimeout,
//     is replaced by another node (or dropped).
//  3. A critical camera keeps a Secondary on another eligible node, in another zone when
//     there is one; a standard camera has none.
//  4. A draining owner's cameras get a Next (make-before-break), then the most and
//     least loaded nodes are evened out while any node is outside mean ± Tolerance.
//     Planned moves (4) start at most MaxMoves at a time, counting those under way.
//
// A full node (disk below its reserve: recording still works there, shards do not) is
// avoided everywhere as long as some eligible node is not full: it is never chosen as
// owner, Next or Secondary, a Next or Secondary on it is replaced, and its cameras leave
// it like a draining node's (rule 4, make-before-break, within MaxMoves), so they are
// recorded elsewhere before its disk runs out. Rebalancing counts only the nodes that
// are not full, so a node that reports free space again gets cameras back through it.
// When every eligible node is full, nothing moves on that account: a camera that needs
// an owner still gets one (the least loaded full node; recording into the reserve beats
// not recording), and the others stay where they are.
func plan(in placementInput) placementOutput {
	var out placementOutput
	wake := func(t time.Time) {
		if t.After(in.Now) && (out.WakeAt.IsZero() || t.Before(out.WakeAt)) {
			out.WakeAt = t
		}
	}
	eligible := make([]*placeNode, 0, len(in.Nodes))
	for _, n := range in.Nodes {
		n.load = 0
		if n.Eligible {
			eligible = append(eligible, n)
		}
	}
	sort.Slice(eligible, func(i, j int) bool { return eligible[i].ID < eligible[j].ID })
	// roomy: the eligible nodes whose disk is not full, the only ones given cameras
	// while there is one.
	roomy := make([]*placeNode, 0, len(eligible))
	for _, n := range eligible {
		if !n.Full {
			roomy = append(roomy, n)
		}
	}
	isEligible := func(id model.NodeID) bool {
		n := in.Nodes[id]
		return n != nil && n.Eligible
	}
	// avoid: an eligible node that is full while another one is not.
	avoid := func(id model.NodeID) bool {
		n := in.Nodes[id]
		return n != nil && n.Eligible && n.Full && len(roomy) > 0
	}
	// takes: the node may be given a camera (or keep an incoming one).
	takes := func(id model.NodeID) bool { return isEligible(id) && !avoid(id) }
	// leaving: the owner's cameras are handed over (make-before-break).
	leaving := func(n *placeNode) bool { return n.Alive && (n.Draining || avoid(n.ID)) }
	// gone: the owner cannot keep the camera; pending: it is dead but within grace.
	gone := func(id model.NodeID) (bool, bool) {
		if id == "" {
			return true, false
		}
		n := in.Nodes[id]
		switch {
		case n == nil || n.Decommissioned:
			return true, false
		case n.Alive && !n.Eligible && !n.Draining:
			return true, false // alive but not a raft server (removed, or never added)
		case !n.Alive:
			due := n.DeadSince.Add(in.DeadGrace)
			if !in.Now.Before(due) {
				return true, false
			}
			wake(due)
			return false, true
		}
		return false, false
	}
	ratio := func(n *placeNode) float64 { return n.load / n.Weight }
	leastLoaded := func(exclude ...model.NodeID) *placeNode {
		var best *placeNode
	next:
		for _, n := range roomy {
			for _, x := range exclude {
				if n.ID == x {
					continue next
				}
			}
			if best == nil || ratio(n) < ratio(best) || (ratio(n) == ratio(best) && n.ID < best.ID) {
				best = n
			}
		}
		return best
	}
	addLoad := func(id model.NodeID, bps float64) {
		if n := in.Nodes[id]; n != nil {
			n.load += bps
		}
	}

	// Work on copies; record the loads of what stays.
	work := make([]model.Assignment, len(in.Cameras))
	needOwner := make([]int, 0)
	for i, c := range in.Cameras {
		a := c.A
		a.Camera = c.ID
		work[i] = a
		if g, _ := gone(a.Node); g {
			needOwner = append(needOwner, i)
			continue
		}
		if a.Next != "" && isEligible(a.Next) {
			addLoad(a.Next, c.Bps)
		} else {
			addLoad(a.Node, c.Bps)
		}
		if a.Secondary != "" && c.Critical {
			addLoad(a.Secondary, c.Bps)
		}
	}

	// 1. owners for cameras that have none (largest first).
	sort.SliceStable(needOwner, func(x, y int) bool { return in.Cameras[needOwner[x]].Bps > in.Cameras[needOwner[y]].Bps })
	for _, i := range needOwner {
		c, a := in.Cameras[i], &work[i]
		var to *placeNode
		switch {
		case a.Next != "" && takes(a.Next):
			to = in.Nodes[a.Next]
		case a.Secondary != "" && takes(a.Secondary):
			to = in.Nodes[a.Secondary]
		default:
			to = leastLoaded()
		}
		if to == nil {
			// every eligible node is full: an owner that records into its reserve (and
			// again once space returns) beats none
			to = leastLoadedOf(eligible, ratio)
		}
		if to == nil {
			out.Unplaced++
			continue
		}
		if a.Secondary == to.ID {
			a.Secondary = ""
		} else if a.Secondary != "" && c.Critical {
			addLoad(a.Secondary, c.Bps)
		}
		to.load += c.Bps
		a.Node, a.Next = to.ID, ""
	}

	// 2 and 3: repair handovers and secondaries.
	inFlight := 0
	for i, c := range in.Cameras {
		a := &work[i]
		owner := in.Nodes[a.Node]
		if owner == nil || !(owner.Eligible || owner.Draining && owner.Alive) {
			continue // unplaced, or owner dead within grace: leave it as it is
		}
		if a.Next != "" {
			since, seen := in.NextSince[c.ID]
			timedOut := seen && in.Now.Sub(since) >= in.HandoverTimeout
			if seen && !timedOut {
				wake(since.Add(in.HandoverTimeout))
			}
			if !takes(a.Next) || timedOut {
				old := a.Next
				a.Next = ""
				if isEligible(old) {
					in.Nodes[old].load -= c.Bps
				}
				if to := leastLoaded(a.Node, old, a.Secondary); to != nil && (timedOut || leaving(owner)) {
					a.Next = to.ID
					to.load += c.Bps
				} else {
					owner.load += c.Bps
				}
			}
		}
		if a.Next != "" {
			inFlight++
		}
		if !c.Critical {
			a.Secondary = ""
			continue
		}
		if a.Secondary != "" {
			if a.Secondary != a.Node && a.Secondary != a.Next {
				if takes(a.Secondary) {
					continue
				}
				if avoid(a.Secondary) && pickSecondary(roomy, in.Nodes, a.Node, a.Next, ratio) == nil {
					continue // full, but no other node can record it: it stays
				}
				if g, pending := gone(a.Secondary); !g && pending {
					continue
				}
			}
			if n := in.Nodes[a.Secondary]; n != nil {
				n.load -= c.Bps
			}
		}
		a.Secondary = ""
		to := pickSecondary(roomy, in.Nodes, a.Node, a.Next, ratio)
		if to == nil && len(roomy) == 0 {
			to = pickSecondary(eligible, in.Nodes, a.Node, a.Next, ratio)
		}
		if to != nil {
			a.Secondary = to.ID
			to.load += c.Bps
		}
	}

	// 4. planned moves: drain (and leave full nodes), then rebalance.
	budget := in.MaxMoves - inFlight
	for i, c := range in.Cameras {
		if budget <= 0 {
			break
		}
		a := &work[i]
		n := in.Nodes[a.Node]
		if a.Node == "" || n == nil || !leaving(n) || a.Next != "" {
			continue
		}
		if to := leastLoaded(a.Node, a.Secondary); to != nil {
			a.Next = to.ID
			to.load += c.Bps
			budget--
		}
	}
	if budget > 0 && len(roomy) > 1 {
		rebalance(in, work, roomy, ratio, budget)
	}

	for i, c := range in.Cameras {
		a, b := c.A, work[i]
		if a.Node == b.Node && a.Next == b.Next && a.Secondary == b.Secondary {
			continue
		}
		out.Changes = append(out.Changes, assignChange{
			Camera: c.ID, IfEpoch: a.Epoch, IfNode: a.Node, IfNext: a.Next, IfSecondary: a.Secondary,
			Node: b.Node, Next: b.Next, Secondary: b.Secondary,
		})
	}
	return out
}

// leastLoadedOf returns the least loaded of nodes (ties: the smallest id), nil if none.
func leastLoadedOf(nodes []*placeNode, ratio func(*placeNode) float64) *placeNode {
	var best *placeNode
	for _, n := range nodes {
		if best == nil || ratio(n) < ratio(best) || (ratio(n) == ratio(best) && n.ID < best.ID) {
			best = n
		}
	}
	return best
}

// pickSecondary: one of candidates other than the owner and the incoming owner, in
// another zone than the owner's when one exists, least loaded first.
func pickSecondary(candidates []*placeNode, nodes map[model.NodeID]*placeNode, owner, next model.NodeID, ratio func(*placeNode) float64) *placeNode {
	zone := ""
	if n := nodes[owner]; n != nil {
		zone = n.Zone
	}
	var best *placeNode
	bestOther := false
	for _, n := range candidates {
		if n.ID == owner || n.ID == next {
			continue
		}
		other := zone == "" || n.Zone != zone
		switch {
		case best == nil,
			other && !bestOther,
			other == bestOther && (ratio(n) < ratio(best) || ratio(n) == ratio(best) && n.ID < best.ID):
			best, bestOther = n, other
		}
	}
	return best
}

// rebalance moves cameras (by giving them a Next) from the most to the least loaded
// of nodes (the eligible nodes that are not full) while a node is outside mean ±
// tolerance and a move improves it.
func rebalance(in placementInput, work []model.Assignment, nodes []*placeNode, ratio func(*placeNode) float64, budget int) {
	byNode := map[model.NodeID][]int{}
	for i := range work {
		a := &work[i]
		if a.Next == "" && a.Node != "" {
			byNode[a.Node] = append(byNode[a.Node], i)
		}
	}
	var total, weight float64
	for _, n := range nodes {
		total += n.load
		weight += n.Weight
	}
	if total == 0 {
		return
	}
	mean := total / weight
	for ; budget > 0; budget-- {
		hi, lo := nodes[0], nodes[0]
		for _, n := range nodes {
			if ratio(n) > ratio(hi) || ratio(n) == ratio(hi) && n.ID < hi.ID {
				hi = n
			}
			if ratio(n) < ratio(lo) || ratio(n) == ratio(lo) && n.ID < lo.ID {
				lo = n
			}
		}
		if ratio(hi) <= mean*(1+in.Tolerance) && ratio(lo) >= mean*(1-in.Tolerance) {
			return
		}
		// the camera of hi whose move to lo leaves the two closest
		best, bestGap := -1, math.Abs(ratio(hi)-ratio(lo))
		for _, i := range byNode[hi.ID] {
			a := &work[i]
			if a.Next != "" || a.Secondary == lo.ID {
				continue
			}
			b := in.Cameras[i].Bps
			gap := math.Abs((hi.load-b)/hi.Weight - (lo.load+b)/lo.Weight)
			if gap < bestGap || gap == bestGap && best >= 0 && in.Cameras[i].ID < in.Cameras[best].ID {
				best, bestGap = i, gap
			}
		}
		if best < 0 {
			return
		}
		work[best].Next = lo.ID
		b := in.Cameras[best].Bps
		hi.load -= b
		lo.load += b
	}
}

// estimateBitrates fills in the bitrate of cameras nobody reported: the median of the
// reported ones, or defaultBitrate.
func estimateBitrates(cams []placeCamera, known []bool) {
	var vals []float64
	for i, c := range cams {
		if known[i] {
			vals = append(vals, c.Bps)
		}
	}
	est := defaultBitrate
	if len(vals) > 0 {
		sort.Float64s(vals)
		est = vals[len(vals)/2]
		if len(vals)%2 == 0 {
			est = (vals[len(vals)/2-1] + vals[len(vals)/2]) / 2
		}
	}
	for i := range cams {
		if !known[i] {
			cams[i].Bps = est
		}
	}
}
