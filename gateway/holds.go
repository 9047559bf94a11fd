package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	vigiev1 "github.com/vigie-vms/vigie/gateway/api/vigie/v1"
	"github.com/vigie-vms/vigie/model"
)

// Holds is what the gateway needs to manage legal holds (nil: the hold API answers
// Unimplemented).
type Holds interface {
	CreateHold(ctx context.Context, h model.Hold) (model.Hold, error)
	ReleaseHold(ctx context.Context, id model.HoldID, by string) (model.Hold, error)
	Holds(camera model.CameraID, includeReleased bool) ([]model.Hold, error)
}

type holdService struct {
	vigiev1.UnimplementedHoldServiceServer
	g *Gateway
}

func (s *holdService) holds() (Holds, error) {
	if s.g.cfg.Holds == nil {
		return nil, model.Invalid("hold", "legal holds are not available on this node")
	}
	return s.g.cfg.Holds, nil
}

func (s *holdService) CreateHold(ctx context.Context, req *vigiev1.CreateHoldRequest) (*vigiev1.Hold, error) {
	hs, err := s.holds()
	if err != nil {
		return nil, err
	}
	in := req.GetHold()
	if in == nil {
		return nil, model.Invalid("hold", "is required")
	}
	if in.GetCreatedBy() != "" || in.GetCreateTime() != nil || in.GetReleaseTime() != nil || in.GetReleasedBy() != "" {
		return nil, model.Invalid("hold", "created_by, create_time, release_time and released_by are set by the server")
	}
	caller, _ := CallerFrom(ctx)
	h := model.Hold{
		ID: model.HoldID(in.GetId()), CaseRef: in.GetCaseRef(),
		CreatedBy: caller.Name, CreatedAt: s.g.now(),
	}
	if h.ID == "" {
		var b [8]byte
		rand.Read(b[:])
		h.ID = model.HoldID("hold-" + hex.EncodeToString(b[:]))
	} else if err := model.ValidateID("hold.id", string(h.ID)); err != nil {
		return nil, err
	}
	for _, c := range in.GetCameraIds() {
		h.Cameras = append(h.Cameras, model.CameraID(c))
	}
	if in.GetStart() != nil {
		h.Start = in.GetStart().AsTime()
	}
	if in.GetEnd() != nil {
		h.End = in.GetEnd().AsTime()
	}
	if in.GetUntil() != nil {
		h.Until = in.GetUntil().AsTime()
	}
	if err := h.Validate(); err != nil {
		if fe, ok := err.(*model.FieldError); ok {
			return nil, model.Invalid("hold."+fe.Field, "%s", fe.Reason)
		}
		return nil, err
	}
	for _, c := range h.Cameras {
		if _, err := s.g.camera("hold.camera_ids", string(c)); err != nil {
			return nil, err
		}
	}
	out, err := hs.CreateHold(ctx, h)
	if err != nil {
		return nil, err
	}
	return holdToPB(out, s.g.now()), nil
}

func (s *holdService) ListHolds(ctx context.Context, req *vigiev1.ListHoldsRequest) (*vigiev1.ListHoldsResponse, error) {
	hs, err := s.holds()
	if err != nil {
		return nil, err
	}
	if c := req.GetCameraId(); c != "" {
		if err := model.ValidateID("camera_id", c); err != nil {
			return nil, err
		}
	}
	list, err := hs.Holds(model.CameraID(req.GetCameraId()), req.GetIncludeReleased())
	if err != nil {
		return nil, err
	}
	resp := &vigiev1.ListHoldsResponse{}
	for _, h := range list {
		resp.Holds = append(resp.Holds, holdToPB(h, s.g.now()))
	}
	return resp, nil
}

func (s *holdService) ReleaseHold(ctx context.Context, req *vigiev1.ReleaseHoldRequest) (*vigiev1.Hold, error) {
	hs, err := s.holds()
	if err != nil {
		return nil, err
	}
	if err := model.ValidateID("id", req.GetId()); err != nil {
		return nil, err
	}
	caller, _ := CallerFrom(ctx)
	out, err := hs.ReleaseHold(ctx, model.HoldID(req.GetId()), caller.Name)
	if err != nil {
		return nil, err
	}
	return holdToPB(out, s.g.now()), nil
}

func holdToPB(h model.Hold, now time.Time) *vigiev1.Hold {
	out := &vigiev1.Hold{
		Id: string(h.ID), Start: ts(h.Start), End: ts(h.End), CaseRef: h.CaseRef,
		CreatedBy: h.CreatedBy, CreateTime: ts(h.CreatedAt), ReleasedBy: h.ReleasedBy,
		Active: h.Active(now),
	}
	for _, c := range h.Cameras {
		out.CameraIds = append(out.CameraIds, string(c))
	}
	if !h.Until.IsZero() {
		out.Until = ts(h.Until)
	}
	if !h.ReleasedAt.IsZero() {
		out.ReleaseTime = ts(h.ReleasedAt)
	}
	return out
}
