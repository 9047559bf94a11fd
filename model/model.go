package model

import (
	"time"
)

// TenantID names a tenant (a commune, or the metropolis itself).
type TenantID string

// CameraID names a camera, unique across the cluster.
type CameraID string

// NodeID names a node of the cluster.
type NodeID string

// SegmentID names one segment: a contiguous run of fragments of one camera that share one
// init section. It is opaque outside storage, which builds it.
type SegmentID string

// MaxRetentionDays is the legal maximum retention for video-protection footage in France
// (CNIL): 30 days unless seized for a procedure.
const MaxRetentionDays = 30

// Tenant is a commune or the metropolis: the unit of access control and of quotas.
type Tenant struct {
	ID   TenantID `json:"id"`
	Name string   `json:"name"`
	// RetentionDays is the default retention of the tenant's cameras (1..MaxRetentionDays).
	RetentionDays int `json:"retention_days"`
	// CameraQuota is the highest number of cameras the tenant may register; 0 means no limit.
	CameraQuota int       `json:"camera_quota"`
	Contacts    string    `json:"contacts,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Transport is the RTSP transport used to pull a camera.
type Transport string

// Transports.
const (
	TransportTCP Transport = "tcp"
	TransportUDP Transport = "udp"
)

// IngestMode tells whether Vigie pulls the camera or the camera (or an encoder) pushes to
// Vigie with RTSP ANNOUNCE/RECORD.
type IngestMode string

// Ingest modes.
const (
	IngestPull IngestMode = "pull"
	IngestPush IngestMode = "push"
)

// RecordingPolicy says when a camera is recorded.
type RecordingPolicy string

// Recording policies.
const (
	RecordContinuous RecordingPolicy = "continuous"
	RecordOff        RecordingPolicy = "off"
)

// RedundancyClass selects how much a camera's footage is protected.
type RedundancyClass string

// Redundancy classes.
const (
	RedundancyStandard RedundancyClass = "standard"
	RedundancyCritical RedundancyClass = "critical"
)

// Camera is a registered camera and its recording policy.
type Camera struct {
	ID       CameraID `json:"id"`
	Tenant   TenantID `json:"tenant"`
	Name     string   `json:"name"`
	Location string   `json:"location,omitempty"`
	// URL is the rtsp:// address Vigie pulls from (IngestPull). Credentials are not part of
	// it: they live in Username and Password.
	URL      string `json:"url,omitempty"`
	Username string `json:"username,omitempty"`
	// Password is held in clear only in memory; the catalog stores it encrypted.
	Password      string          `json:"password,omitempty"`
	Transport     Transport       `json:"transport"`
	Ingest        IngestMode      `json:"ingest"`
	Recording     RecordingPolicy `json:"recording"`
	RetentionDays int             `json:"retention_days"`
	Redundancy    RedundancyClass `json:"redundancy"`
	Tags          []string        `json:"tags,omitempty"`
	CreatedAt     time.Time       `json:"created_at"`
	UpdatedAt     time.Time       `json:"updated_at"`
}

// Assignment says which node owns (records) a camera, and since which epoch. The epoch
// increases at every change of owner; every storage write and catalog commit carries it.
type Assignment struct {
	Camera CameraID `json:"camera"`
	Node   NodeID   `json:"node"`
	Epoch  uint64   `json:"epoch"`
	// Since is when the current owner got the camera (set by the leader, caller-side).
	Since time.Time `json:"since"`
	// Next is the node taking the camera over in a planned move (drain, rebalance):
	// it records alongside the owner until it confirms it is recording, then becomes the
	// owner with Epoch+1 (make-before-break). Empty when no move is under way.
	Next NodeID `json:"next,omitempty"`
	// Secondary is the second node that records a camera of redundancy class critical,
	// at the same epoch; empty for standard cameras.
	Secondary NodeID `json:"secondary,omitempty"`
}

// FragmentInfo locates one fragment (moof+mdat) inside a segment's bytes.
type FragmentInfo struct {
	// Offset is the byte offset of the fragment from the start of the segment file (the
	// init section comes first, so the first fragment's offset is the init's length).
	Offset int64 `json:"offset"`
	Size   int64 `json:"size"`
	// Start is the wall-clock time of the fragment's first video sample.
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration"`
	// Keyframe is true when the fragment starts with a random access point.
	Keyframe bool `json:"keyframe"`
}

// End is the wall-clock time just after the fragment's last sample.
func (f FragmentInfo) End() time.Time { return f.Start.Add(f.Duration) }

// Fragment is one fMP4 fragment produced by the segmenter: moof+mdat bytes with the wall
// time they cover.
type Fragment struct {
	Start    time.Time
	Duration time.Duration
	Keyframe bool
	Data     []byte
}

// Segment is a catalog entry: where and when a contiguous run of a camera's footage lives.
type Segment struct {
	ID     SegmentID `json:"id"`
	Camera CameraID  `json:"camera"`
	Epoch  uint64    `json:"epoch"`
	// Node is the node that holds the segment's bytes.
	Node  NodeID    `json:"node"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Bytes int64     `json:"bytes"`
	// Fragments is the number of fragments in the segment.
	Fragments int `json:"fragments"`
	// CodecHash identifies the init section (codec parameters) the segment was written with.
	CodecHash string `json:"codec_hash"`
	// Checksum is the CRC-32C of the whole segment file, set when sealed.
	Checksum uint32 `json:"checksum"`
	// Sealed is false while the segment is still being written.
	Sealed bool `json:"sealed"`
	// Reconciled marks footage recorded under an epoch that was no longer current (a node
	// cut off by a partition kept recording): kept as evidence, and preferred less than
	// footage of the current epoch where both overlap.
	Reconciled bool `json:"reconciled,omitempty"`
}

// Overlaps reports whether the segment covers any instant of [from, to).
func (s Segment) Overlaps(from, to time.Time) bool {
	return s.Start.Before(to) && s.End.After(from)
}

// GapCause explains why a stretch of a camera's timeline holds no footage.
type GapCause string

// Gap causes, as shown to operators.
const (
	GapCameraUnreachable GapCause = "camera_unreachable"
	GapNoOwner           GapCause = "no_owner"
	GapNodeFailover      GapCause = "node_failover"
	GapRetention         GapCause = "retention"
	GapNoRecordingPolicy GapCause = "no_recording_policy"
	GapNodeDown          GapCause = "node_down"
	GapUnknown           GapCause = "unknown"
)

// Outage is a stretch of time during which a camera was not recorded, with its cause. The
// recorder commits one when it knows why it could not record (camera unreachable, node
// restart); End is zero while the outage lasts.
type Outage struct {
	Camera CameraID  `json:"camera"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Cause  GapCause  `json:"cause"`
	Detail string    `json:"detail,omitempty"`
}

// Deletion records that a segment was deleted, when, and why (retention, operator).
type Deletion struct {
	Segment SegmentID `json:"segment"`
	Camera  CameraID  `json:"camera"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Bytes   int64     `json:"bytes"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
}

// CameraState is the recording state of a camera on its owner node.
type CameraState string

// Camera states.
const (
	CameraConnecting CameraState = "connecting"
	CameraRecording  CameraState = "recording"
	CameraDown       CameraState = "down"
	CameraDisabled   CameraState = "disabled"
	CameraWaiting    CameraState = "waiting" // push camera waiting for its publisher
)

// CameraHealth is what the maintenance team sees of a camera.
type CameraHealth struct {
	Camera           CameraID      `json:"camera"`
	State            CameraState   `json:"state"`
	Codec            string        `json:"codec,omitempty"`
	LastFrame        time.Time     `json:"last_frame"`
	FPS              float64       `json:"fps"`
	BitrateBps       float64       `json:"bitrate_bps"`
	KeyframeInterval time.Duration `json:"keyframe_interval"`
	PacketsReceived  uint64        `json:"packets_received"`
	PacketsLost      uint64        `json:"packets_lost"`
	Reconnects       uint64        `json:"reconnects"`
	LastError        string        `json:"last_error,omitempty"`
	Since            time.Time     `json:"since"`
}

// Node states.
const (
	NodeJoining        = "joining"
	NodeActive         = "active"
	NodeDraining       = "draining"
	NodeDecommissioned = "decommissioned"
	NodeDead           = "dead"
)

// NodeStatus is one node as `vigie ctl cluster status` shows it.
type NodeStatus struct {
	ID       NodeID `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
	GRPCAddr string `json:"grpc_addr,omitempty"`
	RTSPAddr string `json:"rtsp_addr,omitempty"`
	Zone     string `json:"zone,omitempty"`
	// Role is "leader", "voter" or "nonvoter".
	Role string `json:"role"`
	// State is one of the Node* states.
	State   string `json:"state"`
	Cameras int    `json:"cameras"`
	// LoadBps is the bitrate of the cameras the node records.
	LoadBps float64 `json:"load_bps,omitempty"`
	// Moving is the number of cameras being handed over to or from this node.
	Moving int `json:"moving,omitempty"`
}

// StripeID names a stripe: k data segments and m parity shards computed over them.
type StripeID string

// StripeShard is one shard of a stripe and where it lives.
type StripeShard struct {
	// Node holds the shard.
	Node NodeID `json:"node"`
	// Segment is the data segment this shard is (data shards only; empty for parity):
	// the shard's bytes are the segment file itself.
	Segment SegmentID `json:"segment,omitempty"`
	// Bytes is the stored size: the segment's size for a data shard, ShardSize for parity.
	Bytes int64 `json:"bytes"`
	// Checksum is the CRC-32C of the stored bytes.
	Checksum uint32 `json:"checksum"`
}

// Stripe protects k sealed segments with m parity shards (Reed–Solomon), placed on k+m
// distinct nodes: any k shards rebuild every segment of the stripe byte for byte.
type Stripe struct {
	ID StripeID `json:"id"`
	K  int      `json:"k"`
	M  int      `json:"m"`
	// ShardSize is the largest data segment's size; shorter segments count as padded
	// with zeros.
	ShardSize int64 `json:"shard_size"`
	// Shards lists the K data shards (in stripe order) then the M parity shards.
	Shards    []StripeShard `json:"shards"`
	CreatedAt time.Time     `json:"created_at"`
}

// HoldID names a legal hold.
type HoldID string

// Hold is a legal hold (evidence lock): the footage of its cameras in [Start, End) is kept
// past retention until the hold is released or expires.
type Hold struct {
	ID      HoldID     `json:"id"`
	Cameras []CameraID `json:"cameras"`
	Start   time.Time  `json:"start"`
	End     time.Time  `json:"end"`
	// CaseRef is the judicial procedure the footage is seized for.
	CaseRef   string    `json:"case_ref"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	// Until is when the hold expires by itself; zero: until released.
	Until time.Time `json:"until"`
	// ReleasedAt and ReleasedBy are set when the hold is released (the record stays).
	ReleasedAt time.Time `json:"released_at"`
	ReleasedBy string    `json:"released_by,omitempty"`
}

// Active reports whether the hold protects footage at time now.
func (h Hold) Active(now time.Time) bool {
	return h.ReleasedAt.IsZero() && (h.Until.IsZero() || now.Before(h.Until))
}

// Covers reports whether the hold, when active at now, protects footage of camera in
// [from, to).
func (h Hold) Covers(camera CameraID, from, to, now time.Time) bool {
	if !h.Active(now) || !h.Start.Before(to) || !h.End.After(from) {
		return false
	}
	for _, c := range h.Cameras {
		if c == camera {
			return true
		}
	}
	return false
}

// Validate reports the first problem of a new hold, naming the field.
func (h *Hold) Validate() error {
	if len(h.Cameras) == 0 {
		return Invalid("cameras", "at least one camera is required")
	}
	for i, c := range h.Cameras {
		if err := ValidateID("cameras", string(c)); err != nil {
			return Invalid("cameras", "entry %d: %s", i+1, err.(*FieldError).Reason)
		}
	}
	if h.Start.IsZero() {
		return Invalid("start", "is required")
	}
	if !h.Start.Before(h.End) {
		return Invalid("end", "must be after start")
	}
	if len(h.CaseRef) == 0 {
		return Invalid("case_ref", "is required: the procedure the footage is seized for")
	}
	if !h.Until.IsZero() && !h.Until.After(h.CreatedAt) {
		return Invalid("until", "must be in the future")
	}
	return nil
}
