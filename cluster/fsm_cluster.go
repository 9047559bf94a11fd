package cluster

import (
	"fmt"
	"math"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vigie-vms/vigie/model"
)

// State machine handlers of the multi-node cluster: placement decisions, handovers, node
// states, load reports and reconciled footage. The rules of fsm.go hold here too: no
// clock, no randomness, no I/O but the batch; check everything, then write.

// applySetAssignments applies the leader's placement decisions. A change whose
// precondition no longer holds is skipped (not an error): the assignment moved on since
// the leader read it, and its next round decides again. A change that would give a camera
// to a decommissioned node is skipped too (an operator's Force is refused). It returns the
// assignments it wrote (or, for a Force that changed nothing, the current one).
func applySetAssignments(b *pebble.Batch, changes []assignChange, at time.Time) ([]model.Assignment, error) {
	out := make([]model.Assignment, 0, len(changes))
	decommissioned := map[model.NodeID]bool{}
	isDecommissioned := func(n model.NodeID) (bool, error) {
		if n == "" {
			return false, nil
		}
		if v, ok := decommissioned[n]; ok {
			return v, nil
		}
		rec, ok, err := getNodeRecord(b, n)
		if err != nil {
			return false, err
		}
		v := ok && rec.State == model.NodeDecommissioned
		decommissioned[n] = v
		return v, nil
	}
	for _, ch := range changes {
		if _, err := getCamera(b, ch.Camera); err != nil {
			if ch.Force {
				return nil, err
			}
			continue // deleted since the leader read it
		}
		a, _, err := getAssignment(b, ch.Camera)
		if err != nil {
			return nil, err
		}
		if !ch.Force && (a.Epoch != ch.IfEpoch || a.Node != ch.IfNode || a.Next != ch.IfNext || a.Secondary != ch.IfSecondary) {
			continue
		}
		bad := model.NodeID("")
		for _, n := range []model.NodeID{ch.Node, ch.Next, ch.Secondary} {
			d, err := isDecommissioned(n)
			if err != nil {
				return nil, err
			}
			if d && n != a.Node && n != a.Next && n != a.Secondary {
				bad = n
			}
		}
		if bad != "" {
			if ch.Force {
				return nil, fmt.Errorf("camera %q: %w", ch.Camera, model.Invalid("node", "%q is decommissioned and cannot take cameras", bad))
			}
			continue
		}
		n := a
		n.Node, n.Next, n.Secondary = ch.Node, ch.Next, ch.Secondary
		if n.Next == n.Node {
			n.Next = ""
		}
		if n.Secondary == n.Node {
			n.Secondary = ""
		}
		if n.Node != a.Node {
			n.Epoch = a.Epoch + 1
			n.Since = at
		}
		if n.Node == "" {
			n.Next, n.Secondary = "", ""
		}
		if n != a {
			if err := b.Set(assignKey(ch.Camera), encAssignment(n), nil); err != nil {
				return nil, storeErr(err)
			}
		}
		out = append(out, n)
	}
	return out, nil
}

// applyConfirmRecording completes a make-before-break handover: node, the camera's Next,
// records it, so it becomes the owner with a new epoch (the former owner's writes are
// fenced from now on). Confirming a camera the node already owns is a no-op; any other
// node is refused with ErrStaleEpoch (the handover it was asked for is no longer under
// way: it should stop recording the camera).
func applyConfirmRecording(b *pebble.Batch, cam model.CameraID, node model.NodeID, at time.Time) (model.Assignment, error) {
	if node == "" {
		return model.Assignment{}, fmt.Errorf("confirm recording of camera %q: %w", cam, model.Invalid("node", "is required"))
	}
	if _, err := getCamera(b, cam); err != nil {
		return model.Assignment{}, err
	}
	a, _, err := getAssignment(b, cam)
	if err != nil {
		return a, err
	}
	if a.Node == node {
		return a, nil
	}
	if a.Next != node {
		return a, fmt.Errorf("camera %q: node %q is not taking it over (owner %q, next %q, epoch %d); stop recording it: %w",
			cam, node, a.Node, a.Next, a.Epoch, model.ErrStaleEpoch)
	}
	a.Node, a.Next = node, ""
	a.Epoch++
	a.Since = at
	if a.Secondary == node {
		a.Secondary = ""
	}
	return a, storeErr(b.Set(assignKey(cam), encAssignment(a), nil))
}

// applySetNodeState records an operator's decision about a node. "active" removes the
// record. "decommissioned" is refused (ErrInUse) while the node owns a camera or is taking
// one over; it also clears the node from every Secondary, so no camera keeps counting on it.
func applySetNodeState(b *pebble.Batch, node model.NodeID, state string, at time.Time) error {
	if node == "" {
		return model.Invalid("node", "is required")
	}
	rec, ok, err := getNodeRecord(b, node)
	if err != nil {
		return err
	}
	switch state {
	case model.NodeActive:
		if !ok {
			return nil
		}
		return storeErr(b.Delete(nodeKey(node), nil))
	case model.NodeDraining:
		if ok && rec.State == model.NodeDecommissioned {
			return fmt.Errorf("node %q is decommissioned; it cannot be drained: %w", node, model.ErrInvalid)
		}
	case model.NodeDecommissioned:
		var owned, incoming int
		var example model.CameraID
		var secondaries []model.Assignment
		err := scan(b, prefixAssign, prefixEnd(prefixAssign), func(_, v []byte) (bool, error) {
			a, err := decAssignment(v)
			if err != nil {
				return false, err
			}
			switch {
			case a.Node == node:
				owned++
				if example == "" {
					example = a.Camera
				}
			case a.Next == node:
				incoming++
				if example == "" {
					example = a.Camera
				}
			case a.Secondary == node:
				secondaries = append(secondaries, a)
			}
			return true, nil
		})
		if err != nil {
			return storeErr(err)
		}
		if owned+incoming > 0 {
			return fmt.Errorf("node %q still owns %d cameras and is taking over %d (for example %q); drain it and wait until its cameras have moved, then decommission it: %w",
				node, owned, incoming, example, model.ErrInUse)
		}
		for _, a := range secondaries {
			a.Secondary = ""
			if err := b.Set(assignKey(a.Camera), encAssignment(a), nil); err != nil {
				return storeErr(err)
			}
		}
	default:
		return fmt.Errorf("node %q: %w", node, model.Invalid("state", "must be %q, %q or %q, got %q",
			model.NodeActive, model.NodeDraining, model.NodeDecommissioned, state))
	}
	if ok && rec.State == state {
		return nil
	}
	return storeErr(b.Set(nodeKey(node), encNodeRecord(nodeRecord{ID: node, State: state, Since: at}), nil))
}

// applyReportLoad records the bitrates a node measured for the cameras it records. A
// camera the node does not record (any more), or a bitrate that is not a finite
// non-negative number, is skipped. It returns how many were recorded.
func applyReportLoad(b *pebble.Batch, node model.NodeID, loads []cameraLoad) (int, error) {
	n := 0
	for _, l := range loads {
		if math.IsNaN(l.Bps) || math.IsInf(l.Bps, 0) || l.Bps < 0 {
			continue
		}
		a, ok, err := getAssignment(b, l.Camera)
		if err != nil {
			return n, err
		}
		if !ok || (a.Node != node && a.Next != node && a.Secondary != node) {
			continue
		}
		if _, err := getCamera(b, l.Camera); err != nil {
			continue // deleted; its assignment record stays
		}
		if err := b.Set(loadKey(l.Camera), encBitrate(l.Bps), nil); err != nil {
			return n, storeErr(err)
		}
		n++
	}
	return n, nil
}

// applyReconcileSegment stores footage that a node recorded while it could not reach the
// quorum, under an epoch that may no longer be current. It is kept with Reconciled=true
// (unless it is in fact a valid commit of the current epoch), and it never replaces an
// entry that was committed normally: the same id already committed is left as it is.
// It returns the segment as stored.
func applyReconcileSegment(b *pebble.Batch, s model.Segment) (model.Segment, error) {
	if err := checkSegment(s); err != nil {
		return s, fmt.Errorf("segment %q: %w", s.ID, err)
	}
	a, ok, err := getAssignment(b, s.Camera)
	if err != nil {
		return s, err
	}
	if !ok {
		if _, err := getCamera(b, s.Camera); err != nil {
			return s, fmt.Errorf("segment %q: %w", s.ID, err)
		}
	}
	if s.Epoch > a.Epoch {
		return s, fmt.Errorf("segment %q of camera %q: %w", s.ID, s.Camera,
			model.Invalid("epoch", "%d is newer than the camera's epoch %d", s.Epoch, a.Epoch))
	}
	if key, ok, err := getRaw(b, segIDKey(s.ID)); err != nil {
		return s, storeErr(err)
	} else if ok {
		old, err := getSegmentByKey(b, key)
		if err != nil {
			return s, err
		}
		if old.Camera == s.Camera && !old.Reconciled {
			return old, nil // committed normally: never replaced by reconciled footage
		}
	}
	s.Reconciled = s.Epoch != a.Epoch || !mayWrite(a, s.Node)
	return s, putSegment(b, s)
}

func getNodeRecord(r pebble.Reader, id model.NodeID) (nodeRecord, bool, error) {
	v, ok, err := getRaw(r, nodeKey(id))
	if err != nil || !ok {
		return nodeRecord{}, false, storeErr(err)
	}
	rec, err := decNodeRecord(v)
	return rec, err == nil, err
}
