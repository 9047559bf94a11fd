package gateway

import (
	"context"
	"errors"
	"fmt"
	"google.golang.org/grpc"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// Catalog is the replicated catalog of tenants and cameras as the gateway consumes it.
// Writes take ctx and may block until committed; reads answer from the local replica and
// must not block. Implementations return model sentinel errors (model.ErrNotFound,
// model.ErrExists, *model.FieldError, ...) wrapped with context.
type Catalog interface {
	CreateTenant(ctx context.Context, t model.Tenant) (model.Tenant, error)
	UpdateTenant(ctx context.Context, t model.Tenant) (model.Tenant, error)
	DeleteTenant(ctx context.Context, id model.TenantID) error
	Tenant(id model.TenantID) (model.Tenant, error)
	// Tenants returns up to limit tenants with an id greater than after, sorted by id.
	Tenants(after model.TenantID, limit int) ([]model.Tenant, error)
	// CreateCameras registers every camera or none (atomic).
	CreateCameras(ctx context.Context, cams []model.Camera) ([]model.Camera, error)
	UpdateCamera(ctx context.Context, cam model.Camera) (model.Camera, error)
	DeleteCamera(ctx context.Context, id model.CameraID) error
	Camera(id model.CameraID) (model.Camera, error)
	// Cameras returns up to limit cameras (of tenant, or of every tenant when tenant is
	// empty) with an id greater than after, sorted by id.
	Cameras(tenant model.TenantID, after model.CameraID, limit int) ([]model.Camera, error)
}

// Recordings is the segment catalog and the segment bytes as the gateway consumes them.
type Recordings interface {
	// Segments returns the segments (sealed and open) of camera that overlap [from, to),
	// sorted by Start.
	Segments(camera model.CameraID, from, to time.Time) ([]model.Segment, error)
	Outages(camera model.CameraID, from, to time.Time) ([]model.Outage, error)
	Deletions(camera model.CameraID, from, to time.Time) ([]model.Deletion, error)
	// OpenSegment opens a segment's bytes wherever they live (local, remote, rebuilt).
	OpenSegment(ctx context.Context, seg model.Segment) (SegmentReader, error)
}

// SegmentReader reads one segment. It is used by one goroutine at a time.
type SegmentReader interface {
	Init() []byte                    // ftyp+moov of this segment
	Fragments() []model.FragmentInfo // sorted by Start
	// ReadFragment returns the verified bytes (moof+mdat) of fi, appended to dst[:0] when
	// dst is large enough.
	ReadFragment(fi model.FragmentInfo, dst []byte) ([]byte, error)
	Close() error
}

// Health reports the health of the cameras recorded in the cluster. It must not block.
type Health interface {
	CameraHealth(id model.CameraID) (model.CameraHealth, bool)
}

// ClusterInfo reports the nodes of the cluster (Status must not block) and changes their
// state.
type ClusterInfo interface {
	Status() []model.NodeStatus
	Drain(ctx context.Context, node model.NodeID) error
	Activate(ctx context.Context, node model.NodeID) error
	Decommission(ctx context.Context, node model.NodeID) error
}

// Config configures a Gateway. Catalog and Recordings are required; every other field has
// a usable zero value.
type Config struct {
	// GRPCAddr and HTTPAddr are the listen addresses (host:port; port 0 picks a free one).
	GRPCAddr string
	HTTPAddr string
	// GRPCListener and HTTPListener, when set, are used instead of binding the addresses
	// (the node binds them before the cluster starts, so it can announce the real ports).
	// The gateway owns them once Start succeeds.
	GRPCListener net.Listener
	HTTPListener net.Listener

	Catalog    Catalog
	Recordings Recordings
	// Health may be nil: every camera then reports state "unknown".
	Health Health
	// Holds may be nil: the legal-hold API then refuses every call.
	Holds Holds
	// Cluster may be nil: the status then lists no node.
	Cluster ClusterInfo
	// Protection may be nil: the status then shows no repair, disk or counters.
	Protection Protection

	// Authenticator identifies callers; nil means every caller is LocalAdmin.
	Authenticator Authenticator
	// Authorizer decides whether a caller may call a method; nil allows everything.
	Authorizer Authorizer
	// Auditor records every call; nil logs each call with Logger.
	Auditor Auditor

	// GRPCServices register extra gRPC services on the gRPC listener (the node's shard
	// transfer between nodes). They go through the same interceptors.
	GRPCServices []func(grpc.ServiceRegistrar)

	// Handlers are extra HTTP handlers served on the HTTP listener, by ServeMux pattern
	// (the node adds "GET /metrics"). They do not go through authentication.
	Handlers map[string]http.Handler

	// Version is reported by ClusterService.GetStatus.
	Version string
	// Logger receives the gateway's logs; nil means slog.Default().
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now. Tests set it.
	Now func() time.Time
}

// DefaultConfig returns a Config listening on 127.0.0.1 (gRPC on 7070, HTTP on 8080) with
// no catalog: the node fills Catalog and Recordings in.
func DefaultConfig() Config {
	return Config{
		GRPCAddr: "127.0.0.1:7070",
		HTTPAddr: "127.0.0.1:8080",
		Version:  "dev",
	}
}

// Validate reports every problem of the configuration at once, naming the option.
func (c Config) Validate() error {
	var errs []error
	for _, a := range []struct{ name, addr string }{{"grpc_addr", c.GRPCAddr}, {"http_addr", c.HTTPAddr}} {
		if a.addr == "" {
			errs = append(errs, model.Invalid(a.name, "is required (host:port)"))
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, model.Invalid(a.name, "%q is not host:port: %v", a.addr, err))
		}
	}
	if c.Catalog == nil {
		errs = append(errs, model.Invalid("catalog", "is required"))
	}
	if c.Recordings == nil {
		errs = append(errs, model.Invalid("recordings", "is required"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("gateway config: %w", errors.Join(errs...))
	}
	return nil
}
