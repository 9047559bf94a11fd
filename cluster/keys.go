package cluster

import (
	"encoding/binary"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// Key layout of the FSM's Pebble store. Identifiers of tenants and cameras cannot hold a
// 0x00 byte (model.ValidateID), so "{id}\x00" ends an id without ambiguity; times are 8
// bytes big-endian with the sign bit flipped, so byte order is time order.
//
//	m/applied                          → 8 bytes BE: index of the last applied raft entry
//	t/{tenant}                         → tenant
//	c/{camera}                         → camera (password sealed)
//	tc/{tenant}\x00{camera}            → (empty) cameras of a tenant
//	a/{camera}                         → assignment (kept after the camera is deleted, node cleared, so epochs never go back)
//	s/{camera}\x00{start}{segment id}  → segment
//	si/{segment id}                    → the s/ key of that segment
//	sm/{camera}                        → longest segment duration ever committed for the camera (bounds range-scan lookback)
//	o/{camera}\x00{start}              → outage
//	d/{camera}\x00{start}{segment id}  → deletion record (start of the deleted footage)
//	n/{node}                           → node record (draining, decommissioned)
//	l/{camera}                         → the camera's last reported bitrate (bits/s)
//	p/{stripe}                         → stripe
//	ps/{segment id}                    → id of the stripe that protects the segment
//	pn/{node}\x00{stripe}              → (empty) stripes with a shard on the node
//	pu/{node}\x00{start}{segment id}   → copy of the segment: sealed segments of the node not yet in a stripe
//	h/{hold}                           → legal hold
//	hc/{camera}\x00{hold}              → (empty) holds naming the camera
//	nd/{node}                          → the node's last disk report (free, total, full)
//	nr/{node}                          → repair mark: the node's shards are to be rebuilt elsewhere
//	m/index-v3                         → (empty) the pu/ index has been built for this store
var (
	keyApplied      = []byte("m/applied")
	prefixTenant    = []byte("t/")
	prefixCamera    = []byte("c/")
	prefixTenantCam = []byte("tc/")
	prefixAssign    = []byte("a/")
	prefixSegment   = []byte("s/")
	prefixSegmentID = []byte("si/")
	prefixSegMax    = []byte("sm/")
	prefixOutage    = []byte("o/")
	prefixDeletion  = []byte("d/")
	prefixNode      = []byte("n/")
	prefixLoad      = []byte("l/")

	prefixStripe     = []byte("p/")
	prefixSegStripe  = []byte("ps/")
	prefixNodeStripe = []byte("pn/")
	prefixUnstriped  = []byte("pu/")
	prefixHold       = []byte("h/")
	prefixCameraHold = []byte("hc/")
	prefixDisk       = []byte("nd/")
	prefixRepair     = []byte("nr/")
	keyIndexV3       = []byte("m/index-v3")
)

func stripeKey(id model.StripeID) []byte     { return join(prefixStripe, []byte(id)) }
func segStripeKey(id model.SegmentID) []byte { return join(prefixSegStripe, []byte(id)) }
func nodeStripePrefix(n model.NodeID) []byte { return join(prefixNodeStripe, []byte(n), []byte{0}) }
func nodeStripeKey(n model.NodeID, id model.StripeID) []byte {
	return join(nodeStripePrefix(n), []byte(id))
}
func unstripedPrefix(n model.NodeID) []byte { return join(prefixUnstriped, []byte(n), []byte{0}) }
func unstripedKey(s model.Segment) []byte {
	return append(appendTime(unstripedPrefix(s.Node), s.Start), s.ID...)
}
func holdKey(id model.HoldID) []byte           { return join(prefixHold, []byte(id)) }
func cameraHoldPrefix(c model.CameraID) []byte { return join(prefixCameraHold, []byte(c), []byte{0}) }
func cameraHoldKey(c model.CameraID, id model.HoldID) []byte {
	return join(cameraHoldPrefix(c), []byte(id))
}
func diskKey(n model.NodeID) []byte   { return join(prefixDisk, []byte(n)) }
func repairKey(n model.NodeID) []byte { return join(prefixRepair, []byte(n)) }

func nodeKey(id model.NodeID) []byte   { return join(prefixNode, []byte(id)) }
func loadKey(id model.CameraID) []byte { return join(prefixLoad, []byte(id)) }

func join(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	k := make([]byte, 0, n+9)
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}

func tenantKey(id model.TenantID) []byte { return join(prefixTenant, []byte(id)) }
func cameraKey(id model.CameraID) []byte { return join(prefixCamera, []byte(id)) }
func assignKey(id model.CameraID) []byte { return join(prefixAssign, []byte(id)) }
func segMaxKey(id model.CameraID) []byte { return join(prefixSegMax, []byte(id)) }
func segIDKey(id model.SegmentID) []byte { return join(prefixSegmentID, []byte(id)) }

func tenantCamPrefix(t model.TenantID) []byte { return join(prefixTenantCam, []byte(t), []byte{0}) }
func tenantCamKey(t model.TenantID, c model.CameraID) []byte {
	return join(tenantCamPrefix(t), []byte(c))
}

// cameraPrefix is "{prefix}{camera}\x00": every key of one camera in a time-ordered table.
func cameraPrefix(prefix []byte, c model.CameraID) []byte {
	return join(prefix, []byte(c), []byte{0})
}

func appendTime(k []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(k, uint64(t.UnixNano())^(1<<63))
}

func timeKey(prefix []byte, c model.CameraID, t time.Time) []byte {
	return appendTime(cameraPrefix(prefix, c), t)
}

func segmentKey(s model.Segment) []byte {
	return append(timeKey(prefixSegment, s.Camera, s.Start), s.ID...)
}

func deletionKey(x model.Deletion) []byte {
	return append(timeKey(prefixDeletion, x.Camera, x.Start), x.Segment...)
}

func outageKey(o model.Outage) []byte { return timeKey(prefixOutage, o.Camera, o.Start) }

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

// after returns the first key strictly after prefix+id (for "ids > after" pagination).
func afterKey(prefix []byte, id string) []byte {
	return append(join(prefix, []byte(id)), 0)
}
