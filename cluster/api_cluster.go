package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"time"

	"github.com/hashicorp/raft"

	"github.com/vigie-vms/vigie/model"
)

// ---- membership and node lifecycle ----

// Members lists every node this node knows of — raft servers, gossip members, nodes with
// a recorded state, nodes named by an assignment — sorted by id, with its role ("leader", "voter", "nonvoter", or ""
// before it joins raft), state (model.Node*), addresses and zone from its gossiped meta,
// the cameras it owns, their bitrate (unreported bitrates estimated as placement does) and
// how many cameras are moving to or from it. It reads local state only: on a follower it
// is as fresh as the last gossip and the last applied entry.
//
// To send an API call to the node that records a camera, look up Assignment(camera).Node
// here and use its HTTPAddr or GRPCAddr.
func (c *Cluster) Members() []model.NodeStatus {
	_, leader := c.raft.LeaderWithID()
	servers := map[model.NodeID]raft.Server{}
	if f := c.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			servers[model.NodeID(s.ID)] = s
		}
	}
	members := map[model.NodeID]member{}
	if c.members != nil {
		for _, m := range c.members.snapshot() {
			members[m.ID] = m
		}
	}
	records, err := c.fsm.nodeRecords()
	if err != nil {
		c.logger.Warn("members: read node records", slog.Any("error", err))
	}
	type stats struct {
		cameras, moving int
		load            float64
	}
	st := map[model.NodeID]*stats{}
	get := func(id model.NodeID) *stats {
		s := st[id]
		if s == nil {
			s = &stats{}
			st[id] = s
		}
		return s
	}
	cams, known, err := c.fsm.placementCameras()
	if err != nil {
		c.logger.Warn("members: read assignments", slog.Any("error", err))
	}
	estimateBitrates(cams, known)
	for _, cam := range cams {
		a := cam.A
		if a.Node == "" {
			continue
		}
		s := get(a.Node)
		s.cameras++
		s.load += cam.Bps
		if a.Next != "" {
			s.moving++
			get(a.Next).moving++
		}
	}
	ids := map[model.NodeID]bool{c.cfg.NodeID: true}
	for id := range servers {
		ids[id] = true
	}
	for id := range members {
		ids[id] = true
	}
	for id := range records {
		ids[id] = true
	}
	for id := range st { // named by an assignment (e.g. dead and forgotten by gossip)
		ids[id] = true
	}
	out := make([]model.NodeStatus, 0, len(ids))
	for id := range ids {
		m := members[id]
		srv, inRaft := servers[id]
		ns := model.NodeStatus{
			ID: id, RaftAddr: m.Meta.RaftAddr, HTTPAddr: m.Meta.HTTPAddr, GRPCAddr: m.Meta.GRPCAddr,
			RTSPAddr: m.Meta.RTSPAddr, Zone: m.Meta.Zone,
		}
		if id == c.cfg.NodeID {
			meta := c.cfg.Meta
			ns.HTTPAddr, ns.GRPCAddr, ns.RTSPAddr, ns.Zone = meta.HTTPAddr, meta.GRPCAddr, meta.RTSPAddr, meta.Zone
			ns.RaftAddr = string(c.transport.LocalAddr())
		}
		if inRaft {
			ns.RaftAddr = string(srv.Address)
			switch {
			case raft.ServerID(id) == leader:
				ns.Role = "leader"
			case srv.Suffrage == raft.Voter:
				ns.Role = "voter"
			default:
				ns.Role = "nonvoter"
			}
		}
		alive := id == c.cfg.NodeID || (c.members == nil && inRaft) || (c.members != nil && m.Alive)
		switch rec := records[id]; {
		case rec.State == model.NodeDecommissioned:
			ns.State = model.NodeDecommissioned
		case !alive:
			ns.State = model.NodeDead
		case rec.State == model.NodeDraining:
			ns.State = model.NodeDraining
		case !inRaft:
			ns.State = model.NodeJoining
		default:
			ns.State = model.NodeActive
		}
		if s := st[id]; s != nil {
			ns.Cameras, ns.LoadBps, ns.Moving = s.cameras, math.Round(s.load), s.moving
		}
		out = append(out, ns)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// knownNode reports whether id is a raft server, a gossip member or has a record.
func (c *Cluster) knownNode(id model.NodeID) bool {
	for _, m := range c.Members() {
		if m.ID == id {
			return true
		}
	}
	return false
}

// Drain marks a node draining: it gets no new cameras, and the leader hands each of its
// cameras over to another node, make-before-break (Assignment.Next), at most
// MaxMovesPerRound at a time. Draining an unknown node is model.ErrNotFound. Activate
// undoes it.
func (c *Cluster) Drain(ctx context.Context, node model.NodeID) error {
	if !c.knownNode(node) {
		return fmt.Errorf("drain node %q: %w", node, model.ErrNotFound)
	}
	if _, err := c.apply(ctx, command{Op: opSetNodeState, Node: node, State: model.NodeDraining, At: now()}); err != nil {
		return fmt.Errorf("drain node %q: %w", node, err)
	}
	return nil
}

// Activate returns a draining (or decommissioned) node to service: it may take cameras
// again and, when alive, rejoins raft.
func (c *Cluster) Activate(ctx context.Context, node model.NodeID) error {
	if _, err := c.apply(ctx, command{Op: opSetNodeState, Node: node, State: model.NodeActive, At: now()}); err != nil {
		return fmt.Errorf("activate node %q: %w", node, err)
	}
	return nil
}

// Decommission retires a node for good. It is refused with model.ErrInUse while the node
// owns cameras or is taking one over (drain it first and wait until Members shows it with
// no cameras). Otherwise the node is marked decommissioned (it is dropped as a secondary
// everywhere and never gets a camera again), and Decommission waits, within ctx, until the
// leader has removed it from the raft configuration (a decommissioned leader first hands
// leadership over).
func (c *Cluster) Decommission(ctx context.Context, node model.NodeID) error {
	if !c.knownNode(node) {
		return fmt.Errorf("decommission node %q: %w", node, model.ErrNotFound)
	}
	if _, err := c.apply(ctx, command{Op: opSetNodeState, Node: node, State: model.NodeDecommissioned, At: now()}); err != nil {
		return fmt.Errorf("decommission node %q: %w", node, err)
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		in := false
		if f := c.raft.GetConfiguration(); f.Error() == nil {
			for _, s := range f.Configuration().Servers {
				in = in || model.NodeID(s.ID) == node
			}
		}
		if !in {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("decommission node %q: marked decommissioned, but still a raft server: %w", node, ctx.Err())
		case <-t.C:
		}
	}
}

// ---- camera handovers and loads ----

// ConfirmRecording is called by the node named in a camera's Assignment.Next once it
// records the camera (make-before-break). The node becomes the owner with a new epoch;
// the former owner, seeing the change, stops. It returns the new assignment. A node that
// is no longer the camera's Next gets model.ErrStaleEpoch: it should stop recording the
// camera. Confirming a camera the node already owns returns its assignment.
func (c *Cluster) ConfirmRecording(ctx context.Context, camera model.CameraID, node model.NodeID) (model.Assignment, error) {
	res, err := c.apply(ctx, command{Op: opConfirmRecording, CameraID: camera, Node: node, At: now()})
	if err != nil {
		return model.Assignment{}, fmt.Errorf("confirm recording: %w", err)
	}
	return result[model.Assignment](res)
}

// reportThreshold: a bitrate within this fraction of the recorded one is not sent again.
const reportThreshold = 0.05

// ReportLoad records the bitrates (bits/s) that node measures for the cameras it records;
// the leader balances cameras by them. The node calls it every ~10 s with all its
// cameras: only those whose bitrate moved by more than 5 % since the recorded value go
// into the (single) raft command, so a steady cluster writes almost nothing. Cameras the
// node does not record are ignored.
func (c *Cluster) ReportLoad(ctx context.Context, node model.NodeID, bps map[model.CameraID]float64) error {
	var loads []cameraLoad
	c.fsm.mu.RLock()
	for cam, v := range bps {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			continue
		}
		if raw, ok, err := getRaw(c.fsm.db, loadKey(cam)); err == nil && ok {
			if old, err := decBitrate(raw); err == nil && math.Abs(v-old) <= reportThreshold*old {
				continue
			}
		}
		loads = append(loads, cameraLoad{Camera: cam, Bps: v})
	}
	c.fsm.mu.RUnlock()
	if len(loads) == 0 {
		return nil
	}
	sort.Slice(loads, func(i, j int) bool { return loads[i].Camera < loads[j].Camera })
	if _, err := c.apply(ctx, command{Op: opReportLoad, Node: node, Loads: loads}); err != nil {
		return fmt.Errorf("report load of node %q: %w", node, err)
	}
	return nil
}

// Bitrate returns the last bitrate reported for a camera (ok false when none was).
func (c *Cluster) Bitrate(camera model.CameraID) (float64, bool) {
	c.fsm.mu.RLock()
	defer c.fsm.mu.RUnlock()
	raw, ok, err := getRaw(c.fsm.db, loadKey(camera))
	if err != nil || !ok {
		return 0, false
	}
	v, err := decBitrate(raw)
	return v, err == nil
}

// ReconcileSegment stores footage a node recorded while cut off from the quorum, under
// an epoch that may have moved on since (CommitSegment refused it with ErrStaleEpoch).
// It is kept with Reconciled=true — evidence is never thrown away — unless it is in fact
// a valid commit of the current epoch; a segment already committed normally under the
// same id is left as it is (and returned). Overlaps with current footage are resolved at
// read time (the timeline prefers the current epoch). An epoch newer than the camera's is
// model.ErrInvalid. It returns the segment as stored.
func (c *Cluster) ReconcileSegment(ctx context.Context, seg model.Segment) (model.Segment, error) {
	res, err := c.apply(ctx, command{Op: opReconcileSegment, Segment: seg})
	if err != nil {
		return model.Segment{}, fmt.Errorf("reconcile segment: %w", err)
	}
	return result[model.Segment](res)
}

// Assignments returns the assignment of every camera (Node empty when it has no owner),
// sorted by camera id, from the local store. A node finds the cameras it must record
// here: those whose Node, Next or Secondary it is.
func (c *Cluster) Assignments() ([]model.Assignment, error) {
	cams, _, err := c.fsm.placementCameras()
	if err != nil {
		return nil, err
	}
	out := make([]model.Assignment, len(cams))
	for i, cam := range cams {
		out[i] = cam.A
	}
	return out, nil
}
