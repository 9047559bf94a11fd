package model

import "errors"

// Sentinel errors shared across packages. Packages wrap them with context
// (fmt.Errorf("camera %q: %w", id, ErrNotFound)); the gateway maps them to gRPC codes and
// HTTP statuses with errors.Is.
var (
	// ErrNotFound: the tenant, camera, segment or range does not exist. (404)
	ErrNotFound = errors.New("not found")
	// ErrExists: an object with that id already exists. (409)
	ErrExists = errors.New("already exists")
	// ErrInUse: the object cannot be removed while others depend on it. (409/FailedPrecondition)
	ErrInUse = errors.New("in use")
	// ErrQuota: a tenant's quota would be exceeded. (429/ResourceExhausted)
	ErrQuota = errors.New("quota exceeded")
	// ErrStaleEpoch: a write carried an epoch older than the camera's current one (fencing). (409/FailedPrecondition)
	ErrStaleEpoch = errors.New("stale epoch")
	// ErrNotLeader: the write reached a node that cannot commit it. (503/Unavailable)
	ErrNotLeader = errors.New("not the cluster leader")
	// ErrCorrupt: stored bytes failed their checksum. (500/DataLoss)
	ErrCorrupt = errors.New("corrupt data")
	// ErrNoSpace: the disk is full; nothing was written. (507/ResourceExhausted)
	ErrNoSpace = errors.New("no space left")
)
