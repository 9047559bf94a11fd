package cluster

import (
	"context"
	"log/slog"
	"sort"
	"time"

	"github.com/hashicorp/raft"

	"github.com/vigie-vms/vigie/model"
)

// The leader's duties, run by one goroutine on every node that acts only while its node
// leads: (1) reconcile gossip membership with the raft configuration (add new nodes,
// choose voters, remove dead and decommissioned servers), (2) placement (see plan), (3)
// repair marks (repair.go). They react at once to gossip events and applied changes, and
// run every ReconcileInterval.

// leaderMemory is what the leader remembers between rounds; it is reset when leadership
// is lost (a new leader starts its own clocks, which only delays timeouts).
type leaderMemory struct {
	nextSince    map[model.CameraID]nextSeen
	missingSince map[model.NodeID]time.Time
	// voterAddedAt: a server added this round is promoted in a later round, once it has
	// had time to receive the log.
	addedAt map[model.NodeID]time.Time
	// full: the nodes last seen with a full disk (a change is logged once).
	full map[model.NodeID]bool
}

type nextSeen struct {
	node  model.NodeID
	since time.Time
}

func newLeaderMemory() *leaderMemory {
	return &leaderMemory{
		nextSince:    map[model.CameraID]nextSeen{},
		missingSince: map[model.NodeID]time.Time{},
		addedAt:      map[model.NodeID]time.Time{},
		full:         map[model.NodeID]bool{},
	}
}

func (c *Cluster) leaderLoop() {
	defer close(c.loopDone)
	tick := time.NewTicker(c.cfg.ReconcileInterval)
	defer tick.Stop()
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	minGap := max(c.cfg.ReconcileInterval/10, 5*time.Millisecond)
	var mem *leaderMemory
	var last time.Time
	for {
		select {
		case <-c.loopStop:
			return
		case <-tick.C:
		case <-c.fsm.kick:
		case <-c.memberKick:
		case <-wake.C:
		}
		if !c.IsLeader() {
			mem = nil
			continue
		}
		if mem == nil {
			mem = newLeaderMemory()
		}
		if d := time.Since(last); d < minGap {
			// coalesce bursts of kicks into one round
			select {
			case <-c.loopStop:
				return
			case <-time.After(minGap - d):
			}
		}
		now := time.Now()
		last = now
		c.reconcileRaft(now, mem)
		var at time.Time
		if c.cfg.ManageCameras {
			at = c.reconcilePlacement(now, mem)
		}
		if r := c.reconcileRepair(now, mem); !r.IsZero() && (at.IsZero() || r.Before(at)) {
			at = r
		}
		if !at.IsZero() {
			wake.Reset(max(time.Until(at), time.Millisecond))
		}
	}
}

func (c *Cluster) kickMembers() {
	select {
	case c.memberKick <- struct{}{}:
	default:
	}
}

// ---- raft membership ----

// voterTarget is how many voters a cluster of n live servers keeps: 3 from 3 nodes, 5
// from 6, else 1 (two voters would only add a way to lose the quorum). 5 from 6, not 7:
// from 6 nodes footage is striped 4+2 and survives any 2 lost nodes, so the catalog must
// too (with 3 voters, losing 2 of them stops failover and repair).
func voterTarget(n int) int {
	switch {
	case n >= 6:
		return 5
	case n >= 3:
		return 3
	}
	return 1
}

// reconcileRaft makes the raft configuration follow membership: at most a few changes
// per round, each waited for.
func (c *Cluster) reconcileRaft(now time.Time, mem *leaderMemory) {
	if c.members == nil {
		return
	}
	f := c.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	servers := map[model.NodeID]raft.Server{}
	for _, s := range f.Configuration().Servers {
		servers[model.NodeID(s.ID)] = s
	}
	records, err := c.fsm.nodeRecords()
	if err != nil {
		c.logger.Warn("leader: read node records", slog.Any("error", err))
		return
	}
	members := map[model.NodeID]member{}
	for _, m := range c.members.snapshot() {
		members[m.ID] = m
	}
	timeout := c.cfg.ApplyTimeout
	self := c.cfg.NodeID
	change := func(what string, id model.NodeID, fut raft.Future) bool {
		if err := fut.Error(); err != nil {
			c.logger.Warn("leader: raft configuration change failed", slog.String("change", what), slog.String("peer", string(id)), slog.Any("error", err))
			return false
		}
		c.logger.Info("leader: raft configuration changed", slog.String("change", what), slog.String("peer", string(id)))
		return true
	}

	// decommissioned servers leave the configuration; a decommissioned leader hands over
	for id := range servers {
		if records[id].State != model.NodeDecommissioned {
			continue
		}
		if id == self {
			if len(servers) > 1 {
				change("transfer leadership (decommissioned)", id, c.raft.LeadershipTransfer())
			}
			return
		}
		if !change("remove decommissioned", id, c.raft.RemoveServer(raft.ServerID(id), 0, timeout)) {
			return
		}
		delete(servers, id)
	}

	// liveness of the servers; dead ones past DeadServerGrace are removed
	alive := func(id model.NodeID) bool {
		if id == self {
			return true
		}
		m, ok := members[id]
		return ok && m.Alive
	}
	for id := range servers {
		if alive(id) {
			delete(mem.missingSince, id)
			continue
		}
		since := members[id].DeadSince
		if since.IsZero() {
			if mem.missingSince[id].IsZero() {
				mem.missingSince[id] = now
			}
			since = mem.missingSince[id]
		}
		if now.Sub(since) >= c.cfg.DeadServerGrace {
			if !change("remove dead", id, c.raft.RemoveServer(raft.ServerID(id), 0, timeout)) {
				return
			}
			delete(servers, id)
		}
	}

	// new members join as non-voters
	ids := make([]model.NodeID, 0, len(members))
	for id := range members {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		m := members[id]
		if _, ok := servers[id]; ok || !m.Alive || m.Meta.RaftAddr == "" || records[id].State == model.NodeDecommissioned {
			continue
		}
		if !change("add non-voter", id, c.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(m.Meta.RaftAddr), 0, timeout)) {
			return
		}
		servers[id] = raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(m.Meta.RaftAddr), Suffrage: raft.Nonvoter}
		mem.addedAt[id] = now
	}

	// voters: keep the live ones, promote non-voters up to the target (zones first)
	var liveVoters, candidates []model.NodeID
	deadVoters := 0
	live := 0
	for id, s := range servers {
		if !alive(id) {
			if s.Suffrage == raft.Voter {
				deadVoters++
			}
			continue
		}
		live++
		switch s.Suffrage {
		case raft.Voter:
			liveVoters = append(liveVoters, id)
		case raft.Nonvoter:
			if at, ok := mem.addedAt[id]; ok && now.Sub(at) < c.cfg.ReconcileInterval {
				continue // just added: let it catch up first
			}
			if records[id].State == model.NodeDraining {
				continue
			}
			candidates = append(candidates, id)
		}
	}
	target := voterTarget(live)
	zones := map[string]int{}
	for _, id := range liveVoters {
		zones[members[id].Meta.Zone]++
	}
	for len(liveVoters) < target && len(candidates) > 0 {
		sort.Slice(candidates, func(i, j int) bool {
			zi, zj := zones[members[candidates[i]].Meta.Zone], zones[members[candidates[j]].Meta.Zone]
			if zi != zj {
				return zi < zj
			}
			return candidates[i] < candidates[j]
		})
		id := candidates[0]
		candidates = candidates[1:]
		if !change("promote to voter", id, c.raft.AddVoter(raft.ServerID(id), servers[id].Address, 0, timeout)) {
			return
		}
		liveVoters = append(liveVoters, id)
		zones[members[id].Meta.Zone]++
	}
	// more live voters than needed (the cluster shrank): demote, never while a voter is
	// dead, never below 3, never the leader; the most crowded zone first
	if deadVoters == 0 && target >= 3 && len(liveVoters) > target {
		sort.Slice(liveVoters, func(i, j int) bool {
			zi, zj := zones[members[liveVoters[i]].Meta.Zone], zones[members[liveVoters[j]].Meta.Zone]
			if zi != zj {
				return zi > zj
			}
			return liveVoters[i] > liveVoters[j]
		})
		for _, id := range liveVoters {
			if id == self {
				continue
			}
			change("demote to non-voter", id, c.raft.DemoteVoter(raft.ServerID(id), 0, timeout))
			break
		}
	}
}

// ---- placement ----

// reconcilePlacement reads the state, plans and applies the changes as set-assignments
// commands (at most 2,000 changes each). It returns when it wants to run again.
func (c *Cluster) reconcilePlacement(now time.Time, mem *leaderMemory) time.Time {
	cams, known, err := c.fsm.placementCameras()
	if err != nil {
		c.logger.Warn("leader: read cameras for placement", slog.Any("error", err))
		return time.Time{}
	}
	estimateBitrates(cams, known)
	nodes, err := c.nodeView(now, mem, cams)
	if err != nil {
		c.logger.Warn("leader: read nodes for placement", slog.Any("error", err))
		return time.Time{}
	}
	nextSince := make(map[model.CameraID]time.Time, len(mem.nextSince))
	seen := make(map[model.CameraID]nextSeen, len(mem.nextSince))
	for _, cam := range cams {
		if cam.A.Next == "" {
			continue
		}
		s, ok := mem.nextSince[cam.ID]
		if !ok || s.node != cam.A.Next {
			s = nextSeen{node: cam.A.Next, since: now}
		}
		seen[cam.ID] = s
		nextSince[cam.ID] = s.since
	}
	mem.nextSince = seen
	out := plan(placementInput{
		Now: now, Cameras: cams, Nodes: nodes,
		DeadGrace: c.cfg.DeadNodeGrace, HandoverTimeout: c.cfg.HandoverTimeout,
		MaxMoves: c.cfg.MaxMovesPerRound, Tolerance: c.cfg.RebalanceTolerance,
		NextSince: nextSince,
	})
	if out.Unplaced > 0 {
		c.logger.Warn("leader: cameras without an eligible node", slog.Int("cameras", out.Unplaced))
	}
	if len(out.Changes) == 0 {
		return out.WakeAt
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ApplyTimeout)
	defer cancel()
	owners, handovers := 0, 0
	for _, ch := range out.Changes {
		if ch.Node != ch.IfNode {
			owners++
		}
		if ch.Next != "" && ch.Next != ch.IfNext {
			handovers++
		}
	}
	applied := 0
	for start := 0; start < len(out.Changes); start += 2000 {
		chunk := out.Changes[start:min(start+2000, len(out.Changes))]
		res, err := c.applyLocal(ctx, command{Op: opSetAssignments, Changes: chunk, At: now.UTC().Round(0)})
		if err != nil {
			c.logger.Warn("leader: apply placement", slog.Any("error", err))
			return out.WakeAt
		}
		if as, ok := res.([]model.Assignment); ok {
			applied += len(as)
		}
	}
	c.logger.Info("leader: placement",
		slog.Int("changes", len(out.Changes)), slog.Int("applied", applied),
		slog.Int("owner_changes", owners), slog.Int("handovers_started", handovers),
		slog.Duration("took", time.Since(now)))
	return out.WakeAt
}

// nodeView builds placement's view of every node that matters: raft servers, gossip
// members, nodes with a record, and nodes named by an assignment.
func (c *Cluster) nodeView(now time.Time, mem *leaderMemory, cams []placeCamera) (map[model.NodeID]*placeNode, error) {
	records, err := c.fsm.nodeRecords()
	if err != nil {
		return nil, err
	}
	disks, err := c.Disks()
	if err != nil {
		return nil, err
	}
	servers := map[model.NodeID]bool{}
	if f := c.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			servers[model.NodeID(s.ID)] = true
		}
	}
	members := map[model.NodeID]member{}
	if c.members != nil {
		for _, m := range c.members.snapshot() {
			members[m.ID] = m
		}
	}
	nodes := map[model.NodeID]*placeNode{}
	add := func(id model.NodeID) {
		if id == "" || nodes[id] != nil {
			return
		}
		n := &placeNode{ID: id, Weight: 1}
		m, known := members[id]
		switch {
		case id == c.cfg.NodeID:
			n.Alive = true
		case c.members == nil:
			n.Alive = servers[id] // no gossip: trust the raft configuration
		default:
			n.Alive = known && m.Alive
		}
		if !n.Alive {
			n.DeadSince = m.DeadSince
			if n.DeadSince.IsZero() {
				if mem.missingSince[id].IsZero() {
					mem.missingSince[id] = now
				}
				n.DeadSince = mem.missingSince[id]
			}
		}
		n.Zone = m.Meta.Zone
		if m.Meta.CapacityBps > 0 {
			n.Weight = float64(m.Meta.CapacityBps)
		}
		rec := records[id]
		n.Draining = rec.State == model.NodeDraining
		n.Decommissioned = rec.State == model.NodeDecommissioned
		n.Eligible = n.Alive && servers[id] && !n.Draining && !n.Decommissioned
		n.Full = disks[id].Full
		nodes[id] = n
	}
	add(c.cfg.NodeID)
	for id := range servers {
		add(id)
	}
	for id := range members {
		add(id)
	}
	for id := range records {
		add(id)
	}
	for _, cam := range cams {
		add(cam.A.Node)
		add(cam.A.Next)
		add(cam.A.Secondary)
	}
	c.logFullDisks(mem, nodes, disks, cams)
	// weights: capacities only if every eligible node states one
	all := true
	for _, n := range nodes {
		if n.Eligible && n.Weight == 1 {
			all = false
		}
	}
	if !all {
		for _, n := range nodes {
			n.Weight = 1
		}
	}
	return nodes, nil
}

// logFullDisks logs, once per change, a node whose disk report turns full (a warning:
// its cameras are being moved away) and one that reports free space again.
func (c *Cluster) logFullDisks(mem *leaderMemory, nodes map[model.NodeID]*placeNode, disks map[model.NodeID]DiskUsage, cams []placeCamera) {
	roomy := 0
	for _, n := range nodes {
		if n.Eligible && !n.Full {
			roomy++
		}
	}
	ids := make([]model.NodeID, 0, len(nodes))
	for id := range nodes {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		n := nodes[id]
		switch {
		case n.Full && n.Alive && !mem.full[id]:
			mem.full[id] = true
			owned := 0
			for _, cam := range cams {
				if cam.A.Node == id {
					owned++
				}
			}
			what := "its cameras move to nodes with free space"
			if roomy == 0 {
				what = "every node is full: cameras stay where they are"
			}
			d := disks[id]
			c.logger.Warn("leader: node disk full: it gets no new cameras, replicas or shards, and "+what,
				slog.String("peer", string(id)), slog.Int64("free_bytes", d.FreeBytes), slog.Int64("total_bytes", d.TotalBytes),
				slog.Int("cameras", owned), slog.Int("nodes_with_space", roomy))
		case !n.Full && mem.full[id]:
			delete(mem.full, id)
			d := disks[id]
			c.logger.Info("leader: node disk has free space again: it takes cameras again",
				slog.String("peer", string(id)), slog.Int64("free_bytes", d.FreeBytes), slog.Int64("total_bytes", d.TotalBytes))
		}
	}
}

// ---- reads for the leader and Members ----

// nodeRecords returns every node record.
func (f *fsm) nodeRecords() (map[model.NodeID]nodeRecord, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := map[model.NodeID]nodeRecord{}
	err := scan(f.db, prefixNode, prefixEnd(prefixNode), func(_, v []byte) (bool, error) {
		r, err := decNodeRecord(v)
		if err != nil {
			return false, err
		}
		out[r.ID] = r
		return true, nil
	})
	return out, err
}

// placementCameras returns every camera with its assignment and reported bitrate
// (known[i] false when none was reported), sorted by id.
func (f *fsm) placementCameras() ([]placeCamera, []bool, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var cams []placeCamera
	err := scan(f.db, prefixCamera, prefixEnd(prefixCamera), func(_, v []byte) (bool, error) {
		sc, err := decCamera(v)
		if err != nil {
			return false, err
		}
		cams = append(cams, placeCamera{ID: sc.ID, Critical: sc.Redundancy == model.RedundancyCritical})
		return true, nil
	})
	if err != nil {
		return nil, nil, err
	}
	known := make([]bool, len(cams))
	// assignments and loads are keyed by camera id like cameras: merge in one pass each
	i := 0
	err = scan(f.db, prefixAssign, prefixEnd(prefixAssign), func(k, v []byte) (bool, error) {
		id := model.CameraID(k[len(prefixAssign):])
		for i < len(cams) && cams[i].ID < id {
			i++
		}
		if i < len(cams) && cams[i].ID == id {
			a, err := decAssignment(v)
			if err != nil {
				return false, err
			}
			cams[i].A = a
		}
		return true, nil
	})
	if err != nil {
		return nil, nil, err
	}
	i = 0
	err = scan(f.db, prefixLoad, prefixEnd(prefixLoad), func(k, v []byte) (bool, error) {
		id := model.CameraID(k[len(prefixLoad):])
		for i < len(cams) && cams[i].ID < id {
			i++
		}
		if i < len(cams) && cams[i].ID == id {
			bps, err := decBitrate(v)
			if err != nil {
				return false, err
			}
			cams[i].Bps, known[i] = bps, true
		}
		return true, nil
	})
	for i := range cams {
		cams[i].A.Camera = cams[i].ID
	}
	return cams, known, err
}
