package gateway

import (
	"context"
	"fmt"
	"sort"

	vigiev1 "github.com/vigie-vms/vigie/gateway/api/vigie/v1"
	"github.com/vigie-vms/vigie/model"
)

type recordingService struct {
	vigiev1.UnimplementedRecordingServiceServer
	g *Gateway
}

func (s *recordingService) GetTimeline(ctx context.Context, req *vigiev1.GetTimelineRequest) (*vigiev1.Timeline, error) {
	if err := model.ValidateID("camera_id", req.GetCameraId()); err != nil {
		return nil, err
	}
	start, end, err := timeRange(req.GetStart(), req.GetEnd(), s.g.now())
	if err != nil {
		return nil, err
	}
	cam, err := s.g.camera("camera_id", req.GetCameraId())
	if err != nil {
		return nil, err
	}
	rec := s.g.cfg.Recordings
	in := TimelineInput{Camera: cam, Start: start, End: end, Now: s.g.now()}
	if in.Segments, err = rec.Segments(cam.ID, start, end); err != nil {
		return nil, fmt.Errorf("camera %q: segments: %w", cam.ID, err)
	}
	if in.Outages, err = rec.Outages(cam.ID, start, end); err != nil {
		return nil, fmt.Errorf("camera %q: outages: %w", cam.ID, err)
	}
	if in.Deletions, err = rec.Deletions(cam.ID, start, end); err != nil {
		return nil, fmt.Errorf("camera %q: deletions: %w", cam.ID, err)
	}
	tl := BuildTimeline(in)
	out := &vigiev1.Timeline{CameraId: string(cam.ID), Start: ts(tl.Start), End: ts(tl.End)}
	for _, sp := range tl.Spans {
		out.Spans = append(out.Spans, &vigiev1.Span{Start: ts(sp.Start), End: ts(sp.End), Bytes: sp.Bytes})
	}
	for _, gp := range tl.Gaps {
		out.Gaps = append(out.Gaps, &vigiev1.Gap{Start: ts(gp.Start), End: ts(gp.End), Cause: string(gp.Cause), Detail: gp.Detail})
	}
	return out, nil
}

func (s *recordingService) ListSegments(ctx context.Context, req *vigiev1.ListSegmentsRequest) (*vigiev1.ListSegmentsResponse, error) {
	if err := model.ValidateID("camera_id", req.GetCameraId()); err != nil {
		return nil, err
	}
	start, end, err := timeRange(req.GetStart(), req.GetEnd(), s.g.now())
	if err != nil {
		return nil, err
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	kind := "segments/" + req.GetCameraId()
	tok, err := decodePageToken(kind, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	cam, err := s.g.camera("camera_id", req.GetCameraId())
	if err != nil {
		return nil, err
	}
	segs, err := s.g.cfg.Recordings.Segments(cam.ID, start, end)
	if err != nil {
		return nil, fmt.Errorf("camera %q: segments: %w", cam.ID, err)
	}
	i := 0
	if tok != "" {
		ns, id, err := parseSegmentKey(tok)
		if err != nil {
			return nil, err
		}
		// Segments are sorted by Start; the token is (Start, ID) of the last one returned.
		i = sort.Search(len(segs), func(i int) bool { return segs[i].Start.UnixNano() >= ns })
		for j := i; j < len(segs) && segs[j].Start.UnixNano() == ns; j++ {
			if segs[j].ID == id {
				i = j + 1
				break
			}
		}
	}
	segs = segs[i:]
	resp := &vigiev1.ListSegmentsResponse{}
	if len(segs) > size {
		segs = segs[:size]
		resp.NextPageToken = encodePageToken(kind, segmentKey(segs[size-1]))
	}
	for _, sg := range segs {
		resp.Segments = append(resp.Segments, segmentToPB(sg))
	}
	return resp, nil
}

type clusterService struct {
	vigiev1.UnimplementedClusterServiceServer
	g *Gateway
}

func (s *clusterService) GetStatus(ctx context.Context, req *vigiev1.GetStatusRequest) (*vigiev1.ClusterStatus, error) {
	out := &vigiev1.ClusterStatus{Version: s.g.cfg.Version}
	if s.g.cfg.Cluster == nil {
		return out, nil
	}
	var prot ProtectionStatus
	if s.g.cfg.Protection != nil {
		pctx, cancel := context.WithTimeout(ctx, protectionTimeout)
		prot = s.g.cfg.Protection.ProtectionStatus(pctx)
		cancel()
		out.Repair = repairToPB(prot.Repair)
	}
	for _, n := range s.g.cfg.Cluster.Status() {
		pn := nodeToPB(n)
		d, ok := prot.Disks[n.ID]
		pn.Disk = diskToPB(d, ok)
		c, ok := prot.Counters[n.ID]
		pn.Protection = countersToPB(c, ok)
		out.Nodes = append(out.Nodes, pn)
		out.Cameras += int32(n.Cameras)
	}
	return out, nil
}

// nodeAction validates a node id, applies a change of state and returns the node as it is
// then.
func (s *clusterService) nodeAction(ctx context.Context, id string, do func(ClusterInfo, context.Context, model.NodeID) error) (*vigiev1.Node, error) {
	if err := model.ValidateID("id", id); err != nil {
		return nil, err
	}
	if s.g.cfg.Cluster == nil {
		return nil, fmt.Errorf("node %q: %w", id, model.ErrNotFound)
	}
	if err := do(s.g.cfg.Cluster, ctx, model.NodeID(id)); err != nil {
		return nil, err
	}
	for _, n := range s.g.cfg.Cluster.Status() {
		if string(n.ID) == id {
			return nodeToPB(n), nil
		}
	}
	return &vigiev1.Node{Id: id}, nil
}

func (s *clusterService) DrainNode(ctx context.Context, req *vigiev1.NodeRequest) (*vigiev1.Node, error) {
	return s.nodeAction(ctx, req.GetId(), ClusterInfo.Drain)
}

func (s *clusterService) ActivateNode(ctx context.Context, req *vigiev1.NodeRequest) (*vigiev1.Node, error) {
	return s.nodeAction(ctx, req.GetId(), ClusterInfo.Activate)
}

func (s *clusterService) DecommissionNode(ctx context.Context, req *vigiev1.NodeRequest) (*vigiev1.Node, error) {
	return s.nodeAction(ctx, req.GetId(), ClusterInfo.Decommission)
}
