package cluster

import (
	"fmt"
	"math"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// valueVersion is the first byte of every value stored in Pebble. A change of layout
// bumps it and the decoders keep reading the older versions:
//
//	1: the first layout.
//	2: an assignment adds Since, Next and Secondary; a segment adds Reconciled. Other
//	   values are laid out as in 1.
//	3: new kinds of values — stripes, holds, disk reports, repair marks (they are never
//	   read at an older version); the layouts of version 2 are unchanged.
const valueVersion = 3

// minValueVersion is the oldest value layout the decoders read.
const minValueVersion = 1

// storedCamera is a camera as the catalog holds it: the password is never in clear, only
// sealed (AES-256-GCM) in Secret. Camera.Password is always empty here.
type storedCamera struct {
	model.Camera
	Secret []byte
}

func (e *encoder) tenant(t model.Tenant) {
	e.str(string(t.ID))
	e.str(t.Name)
	e.int(t.RetentionDays)
	e.int(t.CameraQuota)
	e.str(t.Contacts)
	e.time(t.CreatedAt)
	e.time(t.UpdatedAt)
}

func (d *decoder) tenant() model.Tenant {
	return model.Tenant{
		ID:            model.TenantID(d.str()),
		Name:          d.str(),
		RetentionDays: d.int(),
		CameraQuota:   d.int(),
		Contacts:      d.str(),
		CreatedAt:     d.time(),
		UpdatedAt:     d.time(),
	}
}

func (e *encoder) camera(c storedCamera) {
	e.str(string(c.ID))
	e.str(string(c.Tenant))
	e.str(c.Name)
	e.str(c.Location)
	e.str(c.URL)
	e.str(c.Username)
	e.bytes(c.Secret)
	e.str(string(c.Transport))
	e.str(string(c.Ingest))
	e.str(string(c.Recording))
	e.int(c.RetentionDays)
	e.str(string(c.Redundancy))
	e.strs(c.Tags)
	e.time(c.CreatedAt)
	e.time(c.UpdatedAt)
}

func (d *decoder) camera() storedCamera {
	var c storedCamera
	c.ID = model.CameraID(d.str())
	c.Tenant = model.TenantID(d.str())
	c.Name = d.str()
	c.Location = d.str()
	c.URL = d.str()
	c.Username = d.str()
	c.Secret = d.bytes()
	c.Transport = model.Transport(d.str())
	c.Ingest = model.IngestMode(d.str())
	c.Recording = model.RecordingPolicy(d.str())
	c.RetentionDays = d.int()
	c.Redundancy = model.RedundancyClass(d.str())
	c.Tags = d.strs()
	c.CreatedAt = d.time()
	c.UpdatedAt = d.time()
	return c
}

func (e *encoder) segment(s model.Segment) {
	e.str(string(s.ID))
	e.str(string(s.Camera))
	e.uvarint(s.Epoch)
	e.str(string(s.Node))
	e.time(s.Start)
	e.time(s.End)
	e.varint(s.Bytes)
	e.int(s.Fragments)
	e.str(s.CodecHash)
	e.u32(s.Checksum)
	e.boolean(s.Sealed)
}

func (d *decoder) segment() model.Segment { return d.segmentCached(nil) }

// strCache remembers the last strings decoded for fields that repeat from one entry to
// the next of a range scan (camera, node, codec), so a scan of 43,200 segments does not
// allocate them 43,200 times.
type strCache struct{ camera, node, codec string }

// cachedStr decodes a string, reusing *prev when the bytes are equal.
func (d *decoder) cachedStr(prev *string) string {
	b := d.raw()
	if prev == nil {
		return string(b)
	}
	if string(b) != *prev { // this comparison does not allocate
		*prev = string(b)
	}
	return *prev
}

func (d *decoder) segmentCached(c *strCache) model.Segment {
	var cam, node, codec *string
	if c != nil {
		cam, node, codec = &c.camera, &c.node, &c.codec
	}
	return model.Segment{
		ID:        model.SegmentID(d.str()),
		Camera:    model.CameraID(d.cachedStr(cam)),
		Epoch:     d.uvarint(),
		Node:      model.NodeID(d.cachedStr(node)),
		Start:     d.time(),
		End:       d.time(),
		Bytes:     d.varint(),
		Fragments: d.int(),
		CodecHash: d.cachedStr(codec),
		Checksum:  d.u32(),
		Sealed:    d.boolean(),
	}
}

func (e *encoder) outage(o model.Outage) {
	e.str(string(o.Camera))
	e.time(o.Start)
	e.time(o.End)
	e.str(string(o.Cause))
	e.str(o.Detail)
}

func (d *decoder) outage() model.Outage {
	return model.Outage{
		Camera: model.CameraID(d.str()),
		Start:  d.time(),
		End:    d.time(),
		Cause:  model.GapCause(d.str()),
		Detail: d.str(),
	}
}

func (e *encoder) deletion(x model.Deletion) {
	e.str(string(x.Segment))
	e.str(string(x.Camera))
	e.time(x.Start)
	e.time(x.End)
	e.varint(x.Bytes)
	e.str(x.Reason)
	e.time(x.At)
}

func (d *decoder) deletion() model.Deletion {
	return model.Deletion{
		Segment: model.SegmentID(d.str()),
		Camera:  model.CameraID(d.str()),
		Start:   d.time(),
		End:     d.time(),
		Bytes:   d.varint(),
		Reason:  d.str(),
		At:      d.time(),
	}
}

func (e *encoder) assignment(a model.Assignment) {
	e.str(string(a.Camera))
	e.str(string(a.Node))
	e.uvarint(a.Epoch)
	// version 2
	e.time(a.Since)
	e.str(string(a.Next))
	e.str(string(a.Secondary))
}

func (d *decoder) assignment() model.Assignment {
	a := model.Assignment{
		Camera: model.CameraID(d.str()),
		Node:   model.NodeID(d.str()),
		Epoch:  d.uvarint(),
	}
	if d.ver >= 2 {
		a.Since = d.time()
		a.Next = model.NodeID(d.str())
		a.Secondary = model.NodeID(d.str())
	}
	return a
}

// nodeRecord is what the replicated state knows of a node beyond gossip: the state an
// operator put it in (draining, decommissioned). A node without a record is active once
// it is a raft server.
type nodeRecord struct {
	ID    model.NodeID
	State string
	Since time.Time
}

func (e *encoder) nodeRecord(n nodeRecord) {
	e.str(string(n.ID))
	e.str(n.State)
	e.time(n.Since)
}

func (d *decoder) nodeRecord() nodeRecord {
	return nodeRecord{ID: model.NodeID(d.str()), State: d.str(), Since: d.time()}
}

// value helpers: version byte + body.

func encodeValue(body func(e *encoder)) []byte {
	e := encoder{b: make([]byte, 0, 96)}
	e.u8(valueVersion)
	body(&e)
	return e.b
}

func valueDecoder(b []byte, what string) (*decoder, error) {
	d := &decoder{b: b}
	v := d.u8()
	if d.err == nil && (v < minValueVersion || v > valueVersion) {
		return nil, fmt.Errorf("%w %s: unknown value version %d", errDecode, what, v)
	}
	if d.err != nil {
		return nil, fmt.Errorf("%s: %w", what, d.err)
	}
	d.ver = v
	return d, nil
}

func decodeValue[T any](b []byte, what string, read func(d *decoder) T) (T, error) {
	var zero T
	d, err := valueDecoder(b, what)
	if err != nil {
		return zero, err
	}
	v := read(d)
	if err := d.end(); err != nil {
		return zero, fmt.Errorf("%s: %w (%w)", what, err, model.ErrCorrupt)
	}
	return v, nil
}

func encTenant(t model.Tenant) []byte {
	return encodeValue(func(e *encoder) { e.tenant(t) })
}
func decTenant(b []byte) (model.Tenant, error) {
	return decodeValue(b, "tenant", (*decoder).tenant)
}
func encCamera(c storedCamera) []byte {
	return encodeValue(func(e *encoder) { e.camera(c) })
}
func decCamera(b []byte) (storedCamera, error) {
	return decodeValue(b, "camera", (*decoder).camera)
}

// A stored segment is the command layout plus, from version 2, Reconciled (commands
// never carry it: the state machine decides it).
func encSegment(s model.Segment) []byte {
	return encodeValue(func(e *encoder) { e.segment(s); e.boolean(s.Reconciled) })
}
func decSegment(b []byte) (model.Segment, error) {
	return decodeValue(b, "segment", (*decoder).storedSegment)
}

func (d *decoder) storedSegment() model.Segment { return d.storedSegmentCached(nil) }

func (d *decoder) storedSegmentCached(c *strCache) model.Segment {
	s := d.segmentCached(c)
	if d.ver >= 2 {
		s.Reconciled = d.boolean()
	}
	return s
}
func encNodeRecord(n nodeRecord) []byte {
	return encodeValue(func(e *encoder) { e.nodeRecord(n) })
}
func decNodeRecord(b []byte) (nodeRecord, error) {
	return decodeValue(b, "node", (*decoder).nodeRecord)
}
func encBitrate(bps float64) []byte {
	return encodeValue(func(e *encoder) { e.uvarint(math.Float64bits(bps)) })
}
func decBitrate(b []byte) (float64, error) {
	return decodeValue(b, "bitrate", func(d *decoder) float64 { return math.Float64frombits(d.uvarint()) })
}
func encOutage(o model.Outage) []byte {
	return encodeValue(func(e *encoder) { e.outage(o) })
}
func decOutage(b []byte) (model.Outage, error) {
	return decodeValue(b, "outage", (*decoder).outage)
}
func encDeletion(x model.Deletion) []byte {
	return encodeValue(func(e *encoder) { e.deletion(x) })
}
func decDeletion(b []byte) (model.Deletion, error) {
	return decodeValue(b, "deletion", (*decoder).deletion)
}
func encAssignment(a model.Assignment) []byte {
	return encodeValue(func(e *encoder) { e.assignment(a) })
}
func decAssignment(b []byte) (model.Assignment, error) {
	return decodeValue(b, "assignment", (*decoder).assignment)
}
func encDuration(d time.Duration) []byte {
	return encodeValue(func(e *encoder) { e.dur(d) })
}
func decDuration(b []byte) (time.Duration, error) {
	return decodeValue(b, "duration", (*decoder).dur)
}

// ---- commands (raft log entries) ----

// commandVersion is the first byte of every command in the raft log.
const commandVersion = 1

type op byte

const (
	opCreateTenant op = iota + 1
	opUpdateTenant
	opDeleteTenant
	opCreateCameras
	opUpdateCamera
	opDeleteCamera
	opAssign
	opCommitSegment
	opDeleteSegments
	opRecordOutage
	opSetAssignments
	opConfirmRecording
	opSetNodeState
	opReportLoad
	opReconcileSegment
	opCommitStripe
	opDeleteStripe
	opUpdateShard
	opCreateHold
	opReleaseHold
	opReportDisk
	opSetRepair
	opMax // first unused value
)

func (o op) String() string {
	switch o {
	case opCreateTenant:
		return "create-tenant"
	case opUpdateTenant:
		return "update-tenant"
	case opDeleteTenant:
		return "delete-tenant"
	case opCreateCameras:
		return "create-cameras"
	case opUpdateCamera:
		return "update-camera"
	case opDeleteCamera:
		return "delete-camera"
	case opAssign:
		return "assign"
	case opCommitSegment:
		return "commit-segment"
	case opDeleteSegments:
		return "delete-segments"
	case opRecordOutage:
		return "record-outage"
	case opSetAssignments:
		return "set-assignments"
	case opConfirmRecording:
		return "confirm-recording"
	case opSetNodeState:
		return "set-node-state"
	case opReportLoad:
		return "report-load"
	case opReconcileSegment:
		return "reconcile-segment"
	case opCommitStripe:
		return "commit-stripe"
	case opDeleteStripe:
		return "delete-stripe"
	case opUpdateShard:
		return "update-shard"
	case opCreateHold:
		return "create-hold"
	case opReleaseHold:
		return "release-hold"
	case opReportDisk:
		return "report-disk"
	case opSetRepair:
		return "set-repair"
	}
	return fmt.Sprintf("op(%d)", byte(o))
}

// command is one state change. Only the fields of its Op are encoded. Everything the FSM
// needs (timestamps, sealed passwords) is inside: applying it reads nothing else but the
// store.
type command struct {
	Op         op
	Tenant     model.Tenant      // create/update tenant
	TenantID   model.TenantID    // delete tenant
	Cameras    []storedCamera    // create cameras (n), update camera (1)
	CameraID   model.CameraID    // delete camera, assign
	Node       model.NodeID      // assign
	Segment    model.Segment     // commit segment
	SegmentIDs []model.SegmentID // delete segments
	Reason     string            // delete segments
	At         time.Time         // delete segments, delete camera: when (set caller-side)
	Outage     model.Outage      // record outage
	Changes    []assignChange    // set assignments
	State      string            // set node state
	Loads      []cameraLoad      // report load
	Stripe     model.Stripe      // commit stripe
	StripeID   model.StripeID    // delete stripe, update shard
	Index      int               // update shard: which shard
	Shard      model.StripeShard // update shard: where it is now (Node: where it was)
	Hold       model.Hold        // create hold; release hold (ID, ReleasedAt, ReleasedBy)
	Disk       DiskUsage         // report disk
}

// assignChange is one decision of the leader's placement: the camera's owner, incoming
// owner (Next) and Secondary become Node, Next, Secondary, provided the assignment is still
// what the leader saw (IfNode, IfNext, IfSecondary, IfEpoch); otherwise the change is
// skipped (something else changed it since, the next round decides again). Force skips
// that check (an operator's Assign). A change of Node moves the epoch on.
type assignChange struct {
	Camera                      model.CameraID
	Force                       bool
	IfEpoch                     uint64
	IfNode, IfNext, IfSecondary model.NodeID
	Node, Next, Secondary       model.NodeID
}

// cameraLoad is a camera's measured bitrate, in bits per second.
type cameraLoad struct {
	Camera model.CameraID
	Bps    float64
}

func encodeCommand(c command) []byte {
	e := encoder{b: make([]byte, 0, 128)}
	e.u8(commandVersion)
	e.u8(byte(c.Op))
	switch c.Op {
	case opCreateTenant, opUpdateTenant:
		e.tenant(c.Tenant)
	case opDeleteTenant:
		e.str(string(c.TenantID))
	case opCreateCameras, opUpdateCamera:
		e.uvarint(uint64(len(c.Cameras)))
		for _, cam := range c.Cameras {
			e.camera(cam)
		}
	case opDeleteCamera:
		e.str(string(c.CameraID))
		e.time(c.At)
	case opAssign:
		e.str(string(c.CameraID))
		e.str(string(c.Node))
	case opCommitSegment:
		e.segment(c.Segment)
	case opDeleteSegments:
		e.uvarint(uint64(len(c.SegmentIDs)))
		for _, id := range c.SegmentIDs {
			e.str(string(id))
		}
		e.str(c.Reason)
		e.time(c.At)
	case opRecordOutage:
		e.outage(c.Outage)
	case opSetAssignments:
		e.time(c.At)
		e.uvarint(uint64(len(c.Changes)))
		for _, ch := range c.Changes {
			e.str(string(ch.Camera))
			e.boolean(ch.Force)
			e.uvarint(ch.IfEpoch)
			e.str(string(ch.IfNode))
			e.str(string(ch.IfNext))
			e.str(string(ch.IfSecondary))
			e.str(string(ch.Node))
			e.str(string(ch.Next))
			e.str(string(ch.Secondary))
		}
	case opConfirmRecording:
		e.str(string(c.CameraID))
		e.str(string(c.Node))
		e.time(c.At)
	case opSetNodeState:
		e.str(string(c.Node))
		e.str(c.State)
		e.time(c.At)
	case opReportLoad:
		e.str(string(c.Node))
		e.uvarint(uint64(len(c.Loads)))
		for _, l := range c.Loads {
			e.str(string(l.Camera))
			e.uvarint(math.Float64bits(l.Bps))
		}
	case opReconcileSegment:
		e.segment(c.Segment)
	case opCommitStripe:
		e.stripe(c.Stripe)
	case opDeleteStripe:
		e.str(string(c.StripeID))
		e.str(c.Reason)
		e.time(c.At)
	case opUpdateShard:
		e.str(string(c.StripeID))
		e.int(c.Index)
		e.str(string(c.Node))
		e.str(string(c.Shard.Node))
		e.str(string(c.Shard.Segment))
		e.varint(c.Shard.Bytes)
		e.u32(c.Shard.Checksum)
	case opCreateHold:
		e.hold(c.Hold)
	case opReleaseHold:
		e.str(string(c.Hold.ID))
		e.str(c.Hold.ReleasedBy)
		e.time(c.Hold.ReleasedAt)
	case opReportDisk:
		e.str(string(c.Node))
		e.disk(c.Disk)
	case opSetRepair:
		e.str(string(c.Node))
		e.str(c.Reason)
		e.time(c.At)
	}
	return e.b
}

// decodeCommand parses a raft log entry. It never panics; any malformed input is an
// error wrapping errDecode.
func decodeCommand(b []byte) (command, error) {
	d := &decoder{b: b}
	v := d.u8()
	if d.err != nil {
		return command{}, d.err
	}
	if v != commandVersion {
		return command{}, fmt.Errorf("%w: unknown command version %d", errDecode, v)
	}
	c := command{Op: op(d.u8())}
	switch c.Op {
	case opCreateTenant, opUpdateTenant:
		c.Tenant = d.tenant()
	case opDeleteTenant:
		c.TenantID = model.TenantID(d.str())
	case opCreateCameras, opUpdateCamera:
		n := d.listLen(15) // an encoded camera takes at least 15 bytes
		if n > 0 {
			c.Cameras = make([]storedCamera, n)
			for i := range c.Cameras {
				c.Cameras[i] = d.camera()
			}
		}
		if d.err == nil && c.Op == opUpdateCamera && n != 1 {
			d.fail("update-camera needs exactly one camera")
		}
	case opDeleteCamera:
		c.CameraID = model.CameraID(d.str())
		c.At = d.time()
	case opAssign:
		c.CameraID = model.CameraID(d.str())
		c.Node = model.NodeID(d.str())
	case opCommitSegment:
		c.Segment = d.segment()
	case opDeleteSegments:
		n := d.listLen(1)
		if n > 0 {
			c.SegmentIDs = make([]model.SegmentID, n)
			for i := range c.SegmentIDs {
				c.SegmentIDs[i] = model.SegmentID(d.str())
			}
		}
		c.Reason = d.str()
		c.At = d.time()
	case opRecordOutage:
		c.Outage = d.outage()
	case opSetAssignments:
		c.At = d.time()
		n := d.listLen(10) // an encoded change takes at least 10 bytes
		if n > 0 {
			c.Changes = make([]assignChange, n)
			for i := range c.Changes {
				ch := &c.Changes[i]
				ch.Camera = model.CameraID(d.str())
				ch.Force = d.boolean()
				ch.IfEpoch = d.uvarint()
				ch.IfNode = model.NodeID(d.str())
				ch.IfNext = model.NodeID(d.str())
				ch.IfSecondary = model.NodeID(d.str())
				ch.Node = model.NodeID(d.str())
				ch.Next = model.NodeID(d.str())
				ch.Secondary = model.NodeID(d.str())
			}
		}
	case opConfirmRecording:
		c.CameraID = model.CameraID(d.str())
		c.Node = model.NodeID(d.str())
		c.At = d.time()
	case opSetNodeState:
		c.Node = model.NodeID(d.str())
		c.State = d.str()
		c.At = d.time()
	case opReportLoad:
		c.Node = model.NodeID(d.str())
		n := d.listLen(2)
		if n > 0 {
			c.Loads = make([]cameraLoad, n)
			for i := range c.Loads {
				c.Loads[i] = cameraLoad{Camera: model.CameraID(d.str()), Bps: math.Float64frombits(d.uvarint())}
			}
		}
	case opReconcileSegment:
		c.Segment = d.segment()
	case opCommitStripe:
		c.Stripe = d.stripe()
	case opDeleteStripe:
		c.StripeID = model.StripeID(d.str())
		c.Reason = d.str()
		c.At = d.time()
	case opUpdateShard:
		c.StripeID = model.StripeID(d.str())
		c.Index = d.int()
		c.Node = model.NodeID(d.str())
		c.Shard = model.StripeShard{Node: model.NodeID(d.str()), Segment: model.SegmentID(d.str()), Bytes: d.varint(), Checksum: d.u32()}
	case opCreateHold:
		c.Hold = d.hold()
	case opReleaseHold:
		c.Hold = model.Hold{ID: model.HoldID(d.str()), ReleasedBy: d.str(), ReleasedAt: d.time()}
	case opReportDisk:
		c.Node = model.NodeID(d.str())
		c.Disk = d.disk()
	case opSetRepair:
		c.Node = model.NodeID(d.str())
		c.Reason = d.str()
		c.At = d.time()
	default:
		if d.err == nil {
			return command{}, fmt.Errorf("%w: unknown command op %d", errDecode, byte(c.Op))
		}
	}
	if err := d.end(); err != nil {
		return command{}, fmt.Errorf("command %s: %w", c.Op, err)
	}
	return c, nil
}
