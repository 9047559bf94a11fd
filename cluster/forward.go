package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/vigie-vms/vigie/model"
)

// Forwarder carries a write made on a follower to the leader. The node implements it over
// HTTP (a POST of payload to an internal path of leaderMeta.HTTPAddr, whose handler calls
// the leader's ApplyForwarded and answers its bytes). Forward returns the leader's answer
// bytes unchanged, or an error when the leader could not be reached or answered no bytes.
//
// Forward must honour ctx. It is called from any goroutine that writes.
type Forwarder interface {
	Forward(ctx context.Context, leader model.NodeID, leaderMeta NodeMeta, payload []byte) ([]byte, error)
}

// Forwarded payloads and answers are self-contained bytes:
//
//	payload = "VF" version(1) command            (command as in the raft log)
//	answer  = "VR" version(1) index(uvarint) status(0 ok|1 error) body
//	  ok:    kind(1) value                         (kinds below)
//	  error: sentinel(1) message field? reason?    (sentinel index in forwardSentinels+1,
//	                                                0 = none; FieldError kept apart)
const (
	forwardMagic   = "VF"
	answerMagic    = "VR"
	forwardVersion = 1
)

// forwardSentinels are the errors whose identity survives the trip: errors.Is on the
// caller side works for each of them.
var forwardSentinels = []error{
	model.ErrNotFound, model.ErrExists, model.ErrInUse, model.ErrQuota, model.ErrStaleEpoch,
	model.ErrNotLeader, model.ErrCorrupt, model.ErrNoSpace, model.ErrInvalid,
	context.DeadlineExceeded, context.Canceled,
}

// result kinds
const (
	resNil byte = iota
	resTenant
	resCameras
	resCamera
	resAssignment
	resAssignments
	resInt
	resSegment
	resStripe
	resHold
)

func encodeForward(cmd []byte) []byte {
	b := make([]byte, 0, len(cmd)+3)
	b = append(b, forwardMagic...)
	b = append(b, forwardVersion)
	return append(b, cmd...)
}

func decodeForward(p []byte) (command, error) {
	if len(p) < 3 || string(p[:2]) != forwardMagic {
		return command{}, fmt.Errorf("%w: not a forwarded write", errDecode)
	}
	if p[2] != forwardVersion {
		return command{}, fmt.Errorf("%w: forwarded write version %d, this node speaks %d", errDecode, p[2], forwardVersion)
	}
	return decodeCommand(p[3:])
}

// encodeAnswer encodes the result or the error of a command, and the raft index it was
// applied at (0 if it never reached the log), so the follower can wait until it has
// applied it too before answering its caller.
func encodeAnswer(res any, index uint64, err error) []byte {
	e := encoder{b: make([]byte, 0, 64)}
	e.b = append(e.b, answerMagic...)
	e.u8(forwardVersion)
	e.uvarint(index)
	if err != nil {
		e.u8(1)
		code := byte(0)
		for i, s := range forwardSentinels {
			if errors.Is(err, s) {
				code = byte(i + 1)
				break
			}
		}
		e.u8(code)
		e.str(err.Error())
		var fe *model.FieldError
		if errors.As(err, &fe) {
			e.boolean(true)
			e.str(fe.Field)
			e.str(fe.Reason)
		} else {
			e.boolean(false)
		}
		return e.b
	}
	e.u8(0)
	switch v := res.(type) {
	case nil:
		e.u8(resNil)
	case model.Tenant:
		e.u8(resTenant)
		e.tenant(v)
	case []storedCamera:
		e.u8(resCameras)
		e.uvarint(uint64(len(v)))
		for _, c := range v {
			e.camera(c)
		}
	case storedCamera:
		e.u8(resCamera)
		e.camera(v)
	case model.Assignment:
		e.u8(resAssignment)
		e.assignment(v)
	case []model.Assignment:
		e.u8(resAssignments)
		e.uvarint(uint64(len(v)))
		for _, a := range v {
			e.assignment(a)
		}
	case int:
		e.u8(resInt)
		e.int(v)
	case model.Segment:
		e.u8(resSegment)
		e.segment(v)
		e.boolean(v.Reconciled)
	case model.Stripe:
		e.u8(resStripe)
		e.stripe(v)
	case model.Hold:
		e.u8(resHold)
		e.hold(v)
	default:
		// every result type of the state machine is listed above
		return encodeAnswer(nil, index, fmt.Errorf("cannot encode a result of type %T", res))
	}
	return e.b
}

// remoteError is an error answered by the leader: its message, and the sentinel (and
// field error) it wrapped there, so errors.Is and errors.As work here too.
type remoteError struct {
	msg      string
	sentinel error
	field    *model.FieldError
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() []error {
	var out []error
	if e.field != nil {
		out = append(out, e.field)
	}
	if e.sentinel != nil {
		out = append(out, e.sentinel)
	}
	return out
}

// decodeAnswer parses the leader's answer. The bytes come from the network: bad bytes
// are an error, never a panic.
func decodeAnswer(b []byte) (any, uint64, error) {
	res, idx, err := decodeAnswerBody(b)
	if err != nil {
		var re *remoteError
		if !errors.As(err, &re) {
			idx = 0
		}
	}
	return res, idx, err
}

func decodeAnswerBody(b []byte) (any, uint64, error) {
	if len(b) < 5 || string(b[:2]) != answerMagic {
		return nil, 0, fmt.Errorf("%w: not an answer to a forwarded write", errDecode)
	}
	if b[2] != forwardVersion {
		return nil, 0, fmt.Errorf("%w: answer version %d, this node speaks %d", errDecode, b[2], forwardVersion)
	}
	d := &decoder{b: b[3:], ver: valueVersion}
	index := d.uvarint()
	status := d.u8()
	if status == 1 {
		re := &remoteError{}
		code := d.u8()
		re.msg = d.str()
		if d.boolean() {
			re.field = &model.FieldError{Field: d.str(), Reason: d.str()}
		}
		if err := d.end(); err != nil {
			return nil, 0, fmt.Errorf("answer: %w", err)
		}
		if code > 0 && int(code) <= len(forwardSentinels) {
			re.sentinel = forwardSentinels[code-1]
		}
		return nil, index, re
	}
	if status != 0 {
		return nil, 0, fmt.Errorf("%w: answer status %d", errDecode, status)
	}
	var res any
	switch kind := d.u8(); kind {
	case resNil:
	case resTenant:
		res = d.tenant()
	case resCameras:
		n := d.listLen(15)
		cams := make([]storedCamera, n)
		for i := range cams {
			cams[i] = d.camera()
		}
		res = cams
	case resCamera:
		res = d.camera()
	case resAssignment:
		res = d.assignment()
	case resAssignments:
		n := d.listLen(3)
		as := make([]model.Assignment, n)
		for i := range as {
			as[i] = d.assignment()
		}
		res = as
	case resInt:
		res = d.int()
	case resSegment:
		s := d.segment()
		s.Reconciled = d.boolean()
		res = s
	case resStripe:
		res = d.stripe()
	case resHold:
		res = d.hold()
	default:
		if d.err == nil {
			return nil, 0, fmt.Errorf("%w: answer kind %d", errDecode, kind)
		}
	}
	if err := d.end(); err != nil {
		return nil, 0, fmt.Errorf("answer: %w", err)
	}
	return res, index, nil
}

// ApplyForwarded applies a write that a follower forwarded (the payload its Forwarder
// was given) and returns the answer bytes to send back, which carry either the result or
// the error of the write. The error return is for a payload that is not a forwarded
// write at all (answer HTTP 400); everything else, including "I am not the leader any
// more" (model.ErrNotLeader, after which the follower retries), travels in the bytes.
func (c *Cluster) ApplyForwarded(ctx context.Context, payload []byte) ([]byte, error) {
	cmd, err := decodeForward(payload)
	if err != nil {
		return nil, fmt.Errorf("apply forwarded write: %w: %w", err, model.ErrInvalid)
	}
	res, idx, err := c.applyLocalIndex(ctx, cmd)
	return encodeAnswer(res, idx, err), nil
}

// MemForwarder is an in-memory Forwarder: a registry of the nodes of one process, by id.
// Tests and single-process demos use it; the node uses HTTP.
type MemForwarder struct {
	mu    sync.RWMutex
	nodes map[model.NodeID]*Cluster
}

// NewMemForwarder returns an empty registry.
func NewMemForwarder() *MemForwarder {
	return &MemForwarder{nodes: map[model.NodeID]*Cluster{}}
}

// Register makes c reachable under its node id (replacing a former instance).
func (f *MemForwarder) Register(c *Cluster) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes[c.cfg.NodeID] = c
}

// Unregister makes the node unreachable (it crashed or was cut off).
func (f *MemForwarder) Unregister(id model.NodeID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.nodes, id)
}

// Forward implements Forwarder.
func (f *MemForwarder) Forward(ctx context.Context, leader model.NodeID, _ NodeMeta, payload []byte) ([]byte, error) {
	f.mu.RLock()
	c := f.nodes[leader]
	f.mu.RUnlock()
	if c == nil {
		return nil, fmt.Errorf("node %q is not reachable", leader)
	}
	return c.ApplyForwarded(ctx, payload)
}
