package gateway

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	vigiev1 "github.com/vigie-vms/vigie/gateway/api/vigie/v1"
	"github.com/vigie-vms/vigie/model"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func tenantToPB(t model.Tenant) *vigiev1.Tenant {
	return &vigiev1.Tenant{
		Id:            string(t.ID),
		Name:          t.Name,
		RetentionDays: int32(t.RetentionDays),
		CameraQuota:   int32(t.CameraQuota),
		Contacts:      t.Contacts,
		CreateTime:    ts(t.CreatedAt),
		UpdateTime:    ts(t.UpdatedAt),
	}
}

func tenantFromPB(p *vigiev1.Tenant) model.Tenant {
	return model.Tenant{
		ID:            model.TenantID(p.GetId()),
		Name:          p.GetName(),
		RetentionDays: int(p.GetRetentionDays()),
		CameraQuota:   int(p.GetCameraQuota()),
		Contacts:      p.GetContacts(),
	}
}

// cameraToPB converts a camera for a response: the password never leaves the gateway.
func cameraToPB(c model.Camera) *vigiev1.Camera {
	return &vigiev1.Camera{
		Id:            string(c.ID),
		Tenant:        string(c.Tenant),
		Name:          c.Name,
		Location:      c.Location,
		Url:           c.URL,
		Username:      c.Username,
		HasPassword:   c.Password != "",
		Transport:     string(c.Transport),
		Ingest:        string(c.Ingest),
		Recording:     string(c.Recording),
		RetentionDays: int32(c.RetentionDays),
		Redundancy:    string(c.Redundancy),
		Tags:          c.Tags,
		CreateTime:    ts(c.CreatedAt),
		UpdateTime:    ts(c.UpdatedAt),
	}
}

func cameraFromPB(p *vigiev1.Camera) model.Camera {
	return model.Camera{
		ID:            model.CameraID(p.GetId()),
		Tenant:        model.TenantID(p.GetTenant()),
		Name:          p.GetName(),
		Location:      p.GetLocation(),
		URL:           p.GetUrl(),
		Username:      p.GetUsername(),
		Password:      p.GetPassword(),
		Transport:     model.Transport(p.GetTransport()),
		Ingest:        model.IngestMode(p.GetIngest()),
		Recording:     model.RecordingPolicy(p.GetRecording()),
		RetentionDays: int(p.GetRetentionDays()),
		Redundancy:    model.RedundancyClass(p.GetRedundancy()),
		Tags:          append([]string(nil), p.GetTags()...),
	}
}

func healthToPB(id model.CameraID, h model.CameraHealth, ok bool) *vigiev1.CameraHealth {
	if !ok {
		return &vigiev1.CameraHealth{CameraId: string(id), State: "unknown"}
	}
	out := &vigiev1.CameraHealth{
		CameraId:        string(id),
		State:           string(h.State),
		Codec:           h.Codec,
		LastFrame:       ts(h.LastFrame),
		Fps:             h.FPS,
		BitrateBps:      h.BitrateBps,
		PacketsReceived: h.PacketsReceived,
		PacketsLost:     h.PacketsLost,
		Reconnects:      h.Reconnects,
		LastError:       h.LastError,
		Since:           ts(h.Since),
	}
	if h.KeyframeInterval != 0 {
		out.KeyframeInterval = durationpb.New(h.KeyframeInterval)
	}
	return out
}

func segmentToPB(s model.Segment) *vigiev1.Segment {
	return &vigiev1.Segment{
		Id:        string(s.ID),
		CameraId:  string(s.Camera),
		Epoch:     s.Epoch,
		Node:      string(s.Node),
		Start:     ts(s.Start),
		End:       ts(s.End),
		Bytes:     s.Bytes,
		Fragments: int32(s.Fragments),
		CodecHash: s.CodecHash,
		Sealed:    s.Sealed,
	}
}

func nodeToPB(n model.NodeStatus) *vigiev1.Node {
	return &vigiev1.Node{
		Id:       string(n.ID),
		RaftAddr: n.RaftAddr,
		HttpAddr: n.HTTPAddr,
		Role:     n.Role,
		State:    n.State,
		Cameras:  int32(n.Cameras),
		GrpcAddr: n.GRPCAddr,
		RtspAddr: n.RTSPAddr,
		Zone:     n.Zone,
		LoadBps:  n.LoadBps,
		Moving:   int32(n.Moving),
	}
}
