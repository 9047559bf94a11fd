package gateway

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	vigiev1 "github.com/vigie-vms/vigie/gateway/api/vigie/v1"
	"github.com/vigie-vms/vigie/model"
)

type tenantService struct {
	vigiev1.UnimplementedTenantServiceServer
	g *Gateway
}

// prefixField puts prefix before the field named by a *model.FieldError in err.
func prefixField(err error, prefix string) error {
	var fe *model.FieldError
	if errors.As(err, &fe) {
		return &model.FieldError{Field: prefix + fe.Field, Reason: fe.Reason}
	}
	return err
}

func (s *tenantService) CreateTenant(ctx context.Context, req *vigiev1.CreateTenantRequest) (*vigiev1.Tenant, error) {
	if req.GetTenant() == nil {
		return nil, model.Invalid("tenant", "is required")
	}
	t := tenantFromPB(req.GetTenant())
	t.Normalize()
	if err := t.Validate(); err != nil {
		return nil, prefixField(err, "tenant.")
	}
	out, err := s.g.cfg.Catalog.CreateTenant(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("create tenant %q: %w", t.ID, err)
	}
	return tenantToPB(out), nil
}

func (s *tenantService) GetTenant(ctx context.Context, req *vigiev1.GetTenantRequest) (*vigiev1.Tenant, error) {
	if err := model.ValidateID("id", req.GetId()); err != nil {
		return nil, err
	}
	t, err := s.g.cfg.Catalog.Tenant(model.TenantID(req.GetId()))
	if err != nil {
		return nil, fmt.Errorf("tenant %q: %w", req.GetId(), err)
	}
	return tenantToPB(t), nil
}

func (s *tenantService) ListTenants(ctx context.Context, req *vigiev1.ListTenantsRequest) (*vigiev1.ListTenantsResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	after, err := decodePageToken("tenants", req.GetPageToken())
	if err != nil {
		return nil, err
	}
	ts, err := s.g.cfg.Catalog.Tenants(model.TenantID(after), size+1)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	resp := &vigiev1.ListTenantsResponse{}
	if len(ts) > size {
		ts = ts[:size]
		resp.NextPageToken = encodePageToken("tenants", string(ts[size-1].ID))
	}
	for _, t := range ts {
		resp.Tenants = append(resp.Tenants, tenantToPB(t))
	}
	return resp, nil
}

// maskPaths returns the paths of an update mask; with no mask, the fields set (non-zero)
// in the given list of (path, set) pairs.
func maskPaths(mask *fieldmaskpb.FieldMask, set map[string]bool) []string {
	if len(mask.GetPaths()) > 0 {
		return mask.GetPaths()
	}
	var paths []string
	for p, ok := range set {
		if ok {
			paths = append(paths, p)
		}
	}
	return paths
}

func (s *tenantService) UpdateTenant(ctx context.Context, req *vigiev1.UpdateTenantRequest) (*vigiev1.Tenant, error) {
	in := req.GetTenant()
	if in == nil {
		return nil, model.Invalid("tenant", "is required")
	}
	if err := model.ValidateID("tenant.id", in.GetId()); err != nil {
		return nil, err
	}
	paths := maskPaths(req.GetUpdateMask(), map[string]bool{
		"name": in.Name != "", "retention_days": in.RetentionDays != 0,
		"camera_quota": in.CameraQuota != 0, "contacts": in.Contacts != "",
	})
	// Check the mask before reading anything, so a bad request fails the same whether or
	// not the tenant exists.
	for _, p := range paths {
		switch p {
		case "name", "retention_days", "camera_quota", "contacts", "id":
		case "create_time", "update_time":
			return nil, model.Invalid("update_mask", "%q is output only", p)
		default:
			return nil, model.Invalid("update_mask", "unknown tenant field %q", p)
		}
	}
	t, err := s.g.cfg.Catalog.Tenant(model.TenantID(in.GetId()))
	if err != nil {
		return nil, fmt.Errorf("tenant %q: %w", in.GetId(), err)
	}
	for _, p := range paths {
		switch p {
		case "name":
			t.Name = in.Name
		case "retention_days":
			t.RetentionDays = int(in.RetentionDays)
		case "camera_quota":
			t.CameraQuota = int(in.CameraQuota)
		case "contacts":
			t.Contacts = in.Contacts
		}
	}
	if err := t.Validate(); err != nil {
		return nil, prefixField(err, "tenant.")
	}
	out, err := s.g.cfg.Catalog.UpdateTenant(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("update tenant %q: %w", t.ID, err)
	}
	return tenantToPB(out), nil
}

func (s *tenantService) DeleteTenant(ctx context.Context, req *vigiev1.DeleteTenantRequest) (*emptypb.Empty, error) {
	if err := model.ValidateID("id", req.GetId()); err != nil {
		return nil, err
	}
	if err := s.g.cfg.Catalog.DeleteTenant(ctx, model.TenantID(req.GetId())); err != nil {
		return nil, fmt.Errorf("delete tenant %q: %w", req.GetId(), err)
	}
	return &emptypb.Empty{}, nil
}
