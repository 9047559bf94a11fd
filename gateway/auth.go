package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/vigie-vms/vigie/model"
)

// Roles known to the gateway.
const (
	RoleAdmin       = "admin"
	RoleOperator    = "operator"
	RoleTenantOp    = "tenant_operator"
	RoleRequisition = "requisition_officer"
	RoleAuditor     = "auditor"
)

// Caller is who makes a request, as the Authenticator established it.
type Caller struct {
	Name  string
	Roles []string
	// Tenant restricts a tenant operator to one tenant; empty for cluster-wide roles.
	Tenant model.TenantID
}

// HasRole reports whether the caller holds role.
func (c Caller) HasRole(role string) bool {
	for _, r := range c.Roles {
		if r == role {
			return true
		}
	}
	return false
}

// LocalAdmin is the caller of every request when Config.Authenticator is nil.
var LocalAdmin = Caller{Name: "local-admin", Roles: []string{RoleAdmin}}

type callerKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller put in ctx by the gateway's interceptors (and HTTP media
// handlers); ok is false outside a request.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// Authenticator turns a request's credentials into a Caller. authorization is the value of
// the "authorization" gRPC metadata or HTTP header ("Bearer <token>"), possibly empty. It
// returns an error wrapping ErrUnauthenticated when the credentials are missing or wrong.
type Authenticator interface {
	Authenticate(ctx context.Context, authorization string) (Caller, error)
}

// ErrUnauthenticated is returned (wrapped) by an Authenticator for missing or bad
// credentials; the gateway answers Unauthenticated (HTTP 401).
var ErrUnauthenticated = errors.New("unauthenticated")

// ErrPermissionDenied is returned (wrapped) by an Authorizer; the gateway answers
// PermissionDenied (HTTP 403).
var ErrPermissionDenied = errors.New("permission denied")

// Authorizer decides whether caller may run method (a full gRPC method name such as
// "/vigie.v1.CameraService/GetCamera", or "/media/v1/stream" and "/media/v1/export" for
// the HTTP media endpoints) with req (the request message; a MediaRequest for media). It
// returns nil to allow, or an error wrapping ErrPermissionDenied.
type Authorizer interface {
	Authorize(ctx context.Context, caller Caller, method string, req any) error
}

// MediaRequest is what the Authorizer and the Auditor see of an HTTP media request.
type MediaRequest struct {
	Camera     model.CameraID
	Start, End time.Time
}

// AuditRecord is one call as the Auditor sees it.
type AuditRecord struct {
	Time     time.Time
	Caller   Caller
	Peer     string
	Method   string
	Request  any
	Code     codes.Code
	Error    string
	Duration time.Duration
}

// Auditor records every call, allowed or not. Audit must not block for long: it runs on
// the request path.
type Auditor interface {
	Audit(ctx context.Context, rec AuditRecord)
}

// SlogAuditor logs audit records with a logger; it is the default Auditor.
type SlogAuditor struct{ Logger *slog.Logger }

// Audit logs rec.
func (a SlogAuditor) Audit(ctx context.Context, rec AuditRecord) {
	level := slog.LevelInfo
	if rec.Code != codes.OK {
		level = slog.LevelWarn
	}
	a.Logger.LogAttrs(ctx, level, "audit",
		slog.String("caller", rec.Caller.Name),
		slog.String("peer", rec.Peer),
		slog.String("method", rec.Method),
		slog.String("code", rec.Code.String()),
		slog.String("error", rec.Error),
		slog.Duration("duration", rec.Duration))
}

// authenticate runs the Authenticator on authorization.
func (g *Gateway) authenticate(ctx context.Context, authorization string) (Caller, error) {
	if g.cfg.Authenticator == nil {
		return LocalAdmin, nil
	}
	c, err := g.cfg.Authenticator.Authenticate(ctx, authorization)
	if err != nil {
		if !errors.Is(err, ErrUnauthenticated) {
			err = fmt.Errorf("%w: %w", ErrUnauthenticated, err)
		}
		return Caller{}, err
	}
	return c, nil
}

func (g *Gateway) authorize(ctx context.Context, c Caller, method string, req any) error {
	if g.cfg.Authorizer == nil {
		return nil
	}
	if err := g.cfg.Authorizer.Authorize(ctx, c, method, req); err != nil {
		if !errors.Is(err, ErrPermissionDenied) {
			err = fmt.Errorf("%w: %w", ErrPermissionDenied, err)
		}
		return err
	}
	return nil
}

func (g *Gateway) audit(ctx context.Context, start time.Time, c Caller, peerAddr, method string, req any, err error) {
	rec := AuditRecord{Time: start, Caller: c, Peer: peerAddr, Method: method, Request: req,
		Duration: g.now().Sub(start)}
	if err != nil {
		st := status.Convert(err)
		rec.Code, rec.Error = st.Code(), st.Message()
	}
	g.auditor.Audit(ctx, rec)
}

func metadataAuthorization(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("authorization"); len(v) > 0 {
		return v[0]
	}
	return ""
}

func peerAddr(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	// Calls that came through the REST mux carry the HTTP client's address.
	if v := md.Get("x-forwarded-for"); len(v) > 0 {
		return strings.TrimSpace(strings.Split(v[0], ",")[0])
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// unaryInterceptor is the one request path of every gRPC call, and so of every REST call
// (the REST mux dials the local gRPC listener): authenticate → authorize → validate and
// handle → map the error to a status → audit.
func (g *Gateway) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	start := g.now()
	caller, err := g.authenticate(ctx, metadataAuthorization(ctx))
	if err == nil {
		ctx = WithCaller(ctx, caller)
		err = g.authorize(ctx, caller, info.FullMethod, req)
		if err == nil {
			resp, err = handler(ctx, req)
		}
	}
	if err != nil {
		err = toStatus(err)
		resp = nil
	}
	g.audit(ctx, start, caller, peerAddr(ctx), info.FullMethod, req, err)
	return resp, err
}

type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s callerStream) Context() context.Context { return s.ctx }

// streamInterceptor is unaryInterceptor for streaming calls (none yet; ready for live).
func (g *Gateway) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	start := g.now()
	caller, err := g.authenticate(ctx, metadataAuthorization(ctx))
	if err == nil {
		ctx = WithCaller(ctx, caller)
		err = g.authorize(ctx, caller, info.FullMethod, nil)
		if err == nil {
			err = handler(srv, callerStream{ServerStream: ss, ctx: ctx})
		}
	}
	if err != nil {
		err = toStatus(err)
	}
	g.audit(ctx, start, caller, peerAddr(ctx), info.FullMethod, nil, err)
	return err
}
