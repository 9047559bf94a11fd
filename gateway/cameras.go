package gateway

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/emptypb"

	vigiev1 "github.com/vigie-vms/vigie/gateway/api/vigie/v1"
	"github.com/vigie-vms/vigie/model"
)

type cameraService struct {
	vigiev1.UnimplementedCameraServiceServer
	g *Gateway
}

// prepareCamera fills defaults from the camera's tenant and validates it; field names in
// errors get prefix.
func (s *cameraService) prepareCamera(c *model.Camera, prefix string, tenants map[model.TenantID]model.Tenant) error {
	if err := model.ValidateID(prefix+"tenant", string(c.Tenant)); err != nil {
		return err
	}
	t, ok := tenants[c.Tenant]
	if !ok {
		var err error
		t, err = s.g.cfg.Catalog.Tenant(c.Tenant)
		if errors.Is(err, model.ErrNotFound) {
			return model.Invalid(prefix+"tenant", "no tenant %q: create it first", c.Tenant)
		}
		if err != nil {
			return fmt.Errorf("tenant %q: %w", c.Tenant, err)
		}
		if tenants != nil {
			tenants[c.Tenant] = t
		}
	}
	c.Normalize(t.RetentionDays)
	return prefixField(c.Validate(), prefix)
}

func (s *cameraService) CreateCamera(ctx context.Context, req *vigiev1.CreateCameraRequest) (*vigiev1.Camera, error) {
	if req.GetCamera() == nil {
		return nil, model.Invalid("camera", "is required")
	}
	c := cameraFromPB(req.GetCamera())
	if err := model.ValidateID("camera.id", string(c.ID)); err != nil {
		return nil, err
	}
	if err := s.prepareCamera(&c, "camera.", nil); err != nil {
		return nil, err
	}
	out, err := s.g.cfg.Catalog.CreateCameras(ctx, []model.Camera{c})
	if err != nil {
		return nil, fmt.Errorf("create camera %q: %w", c.ID, err)
	}
	if len(out) != 1 {
		return nil, fmt.Errorf("create camera %q: catalog returned %d cameras", c.ID, len(out))
	}
	return cameraToPB(out[0]), nil
}

func (s *cameraService) GetCamera(ctx context.Context, req *vigiev1.GetCameraRequest) (*vigiev1.Camera, error) {
	c, err := s.g.camera("id", req.GetId())
	if err != nil {
		return nil, err
	}
	return cameraToPB(c), nil
}

// camera validates id (named field) and looks the camera up.
func (g *Gateway) camera(field, id string) (model.Camera, error) {
	if err := model.ValidateID(field, id); err != nil {
		return model.Camera{}, err
	}
	// The catalog's errors already name the camera.
	return g.cfg.Catalog.Camera(model.CameraID(id))
}

// listCameras pages through cameras for ListCameras and ListCameraHealth.
func (g *Gateway) listCameras(kind, tenant string, ps int32, tok string) ([]model.Camera, string, error) {
	if tenant != "" {
		if err := model.ValidateID("tenant", tenant); err != nil {
			return nil, "", err
		}
	}
	size, err := pageSize(ps)
	if err != nil {
		return nil, "", err
	}
	after, err := decodePageToken(kind+"/"+tenant, tok)
	if err != nil {
		return nil, "", err
	}
	cams, err := g.cfg.Catalog.Cameras(model.TenantID(tenant), model.CameraID(after), size+1)
	if err != nil {
		return nil, "", fmt.Errorf("list cameras: %w", err)
	}
	next := ""
	if len(cams) > size {
		cams = cams[:size]
		next = encodePageToken(kind+"/"+tenant, string(cams[size-1].ID))
	}
	return cams, next, nil
}

func (s *cameraService) ListCameras(ctx context.Context, req *vigiev1.ListCamerasRequest) (*vigiev1.ListCamerasResponse, error) {
	cams, next, err := s.g.listCameras("cameras", req.GetTenant(), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &vigiev1.ListCamerasResponse{NextPageToken: next}
	for _, c := range cams {
		resp.Cameras = append(resp.Cameras, cameraToPB(c))
	}
	return resp, nil
}

var cameraFields = map[string]bool{
	"name": true, "location": true, "url": true, "username": true, "password": true,
	"transport": true, "ingest": true, "recording": true, "retention_days": true,
	"redundancy": true, "tags": true,
}

func (s *cameraService) UpdateCamera(ctx context.Context, req *vigiev1.UpdateCameraRequest) (*vigiev1.Camera, error) {
	in := req.GetCamera()
	if in == nil {
		return nil, model.Invalid("camera", "is required")
	}
	if err := model.ValidateID("camera.id", in.GetId()); err != nil {
		return nil, err
	}
	paths := maskPaths(req.GetUpdateMask(), map[string]bool{
		"name": in.Name != "", "location": in.Location != "", "url": in.Url != "",
		"username": in.Username != "", "password": in.Password != "",
		"transport": in.Transport != "", "ingest": in.Ingest != "", "recording": in.Recording != "",
		"retention_days": in.RetentionDays != 0, "redundancy": in.Redundancy != "",
		"tags": len(in.Tags) > 0, "tenant": in.Tenant != "",
	})
	for _, p := range paths {
		switch {
		case cameraFields[p], p == "id", p == "tenant":
		case p == "has_password" || p == "create_time" || p == "update_time":
			return nil, model.Invalid("update_mask", "%q is output only", p)
		default:
			return nil, model.Invalid("update_mask", "unknown camera field %q", p)
		}
	}
	c, err := s.g.camera("camera.id", in.GetId())
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		switch p {
		case "tenant":
			if model.TenantID(in.Tenant) != c.Tenant {
				return nil, model.Invalid("camera.tenant", "cannot be changed (is %q): delete and re-create the camera", c.Tenant)
			}
		case "name":
			c.Name = in.Name
		case "location":
			c.Location = in.Location
		case "url":
			c.URL = in.Url
		case "username":
			c.Username = in.Username
		case "password":
			c.Password = in.Password
		case "transport":
			c.Transport = model.Transport(in.Transport)
		case "ingest":
			c.Ingest = model.IngestMode(in.Ingest)
		case "recording":
			c.Recording = model.RecordingPolicy(in.Recording)
		case "retention_days":
			c.RetentionDays = int(in.RetentionDays)
		case "redundancy":
			c.Redundancy = model.RedundancyClass(in.Redundancy)
		case "tags":
			c.Tags = append([]string(nil), in.Tags...)
		}
	}
	if err := s.prepareCamera(&c, "camera.", nil); err != nil {
		return nil, err
	}
	out, err := s.g.cfg.Catalog.UpdateCamera(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("update camera %q: %w", c.ID, err)
	}
	return cameraToPB(out), nil
}

func (s *cameraService) DeleteCamera(ctx context.Context, req *vigiev1.DeleteCameraRequest) (*emptypb.Empty, error) {
	if err := model.ValidateID("id", req.GetId()); err != nil {
		return nil, err
	}
	if err := s.g.cfg.Catalog.DeleteCamera(ctx, model.CameraID(req.GetId())); err != nil {
		return nil, fmt.Errorf("delete camera %q: %w", req.GetId(), err)
	}
	return &emptypb.Empty{}, nil
}

// ImportCameras validates every camera first and registers them in one atomic catalog
// write: all or nothing.
func (s *cameraService) ImportCameras(ctx context.Context, req *vigiev1.ImportCamerasRequest) (*vigiev1.ImportCamerasResponse, error) {
	var cams []model.Camera
	var names []string // how errors name each camera
	switch {
	case len(req.GetCameras()) > 0 && req.GetCsv() != "":
		return nil, model.Invalid("csv", "set either cameras or csv, not both")
	case len(req.GetCameras()) > 0:
		for i, p := range req.GetCameras() {
			cams = append(cams, cameraFromPB(p))
			names = append(names, fmt.Sprintf("cameras[%d].", i))
		}
	case req.GetCsv() != "":
		var err error
		cams, names, err = parseCameraCSV(req.GetCsv())
		if err != nil {
			return nil, err
		}
	default:
		return nil, model.Invalid("cameras", "is empty: give a list of cameras or csv text")
	}
	seen := map[model.CameraID]string{}
	tenants := map[model.TenantID]model.Tenant{}
	for i := range cams {
		if err := model.ValidateID(names[i]+"id", string(cams[i].ID)); err != nil {
			return nil, err
		}
		if prev, dup := seen[cams[i].ID]; dup {
			return nil, model.Invalid(names[i]+"id", "%q is also given as %sid", cams[i].ID, prev)
		}
		seen[cams[i].ID] = names[i]
		if err := s.prepareCamera(&cams[i], names[i], tenants); err != nil {
			return nil, err
		}
	}
	out, err := s.g.cfg.Catalog.CreateCameras(ctx, cams)
	if err != nil {
		return nil, fmt.Errorf("import %d cameras (none registered): %w", len(cams), err)
	}
	resp := &vigiev1.ImportCamerasResponse{}
	for _, c := range out {
		resp.Cameras = append(resp.Cameras, cameraToPB(c))
	}
	return resp, nil
}

// parseCameraCSV reads CSV with a header row. Errors name the line and column, as
// "csv[line 3].url".
func parseCameraCSV(text string) ([]model.Camera, []string, error) {
	r := csv.NewReader(strings.NewReader(text))
	r.TrimLeadingSpace = true
	r.FieldsPerRecord = 0
	header, err := r.Read()
	if err != nil {
		return nil, nil, model.Invalid("csv", "cannot read the header row: %v", err)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		if !cameraFields[h] && h != "id" && h != "tenant" {
			return nil, nil, model.Invalid("csv", "unknown column %q in the header row", h)
		}
		if _, dup := col[h]; dup {
			return nil, nil, model.Invalid("csv", "column %q appears twice in the header row", h)
		}
		col[h] = i
	}
	for _, req := range []string{"id", "tenant"} {
		if _, ok := col[req]; !ok {
			return nil, nil, model.Invalid("csv", "the header row has no %q column", req)
		}
	}
	var cams []model.Camera
	var names []string
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			return nil, nil, model.Invalid("csv", "%v", err)
		}
		name := fmt.Sprintf("csv[line %d].", line)
		get := func(k string) string {
			if i, ok := col[k]; ok {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		c := model.Camera{
			ID: model.CameraID(get("id")), Tenant: model.TenantID(get("tenant")),
			Name: get("name"), Location: get("location"), URL: get("url"),
			Username: get("username"), Password: get("password"),
			Transport: model.Transport(get("transport")), Ingest: model.IngestMode(get("ingest")),
			Recording: model.RecordingPolicy(get("recording")), Redundancy: model.RedundancyClass(get("redundancy")),
		}
		if v := get("retention_days"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, nil, model.Invalid(name+"retention_days", "%q is not a number", v)
			}
			c.RetentionDays = n
		}
		if v := get("tags"); v != "" {
			for _, t := range strings.Split(v, ";") {
				if t = strings.TrimSpace(t); t != "" {
					c.Tags = append(c.Tags, t)
				}
			}
		}
		cams = append(cams, c)
		names = append(names, name)
	}
	if len(cams) == 0 {
		return nil, nil, model.Invalid("csv", "has a header row but no camera")
	}
	return cams, names, nil
}

func (s *cameraService) GetCameraHealth(ctx context.Context, req *vigiev1.GetCameraHealthRequest) (*vigiev1.CameraHealth, error) {
	c, err := s.g.camera("id", req.GetId())
	if err != nil {
		return nil, err
	}
	return s.g.health(c.ID), nil
}

func (g *Gateway) health(id model.CameraID) *vigiev1.CameraHealth {
	if g.cfg.Health == nil {
		return healthToPB(id, model.CameraHealth{}, false)
	}
	h, ok := g.cfg.Health.CameraHealth(id)
	return healthToPB(id, h, ok)
}

func (s *cameraService) ListCameraHealth(ctx context.Context, req *vigiev1.ListCameraHealthRequest) (*vigiev1.ListCameraHealthResponse, error) {
	cams, next, err := s.g.listCameras("health", req.GetTenant(), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &vigiev1.ListCameraHealthResponse{NextPageToken: next}
	for _, c := range cams {
		resp.Health = append(resp.Health, s.g.health(c.ID))
	}
	return resp, nil
}
