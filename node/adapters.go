package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/vigie-vms/vigie/cluster"
	"github.com/vigie-vms/vigie/gateway"
	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/node/protect"
	"github.com/vigie-vms/vigie/node/replica"
	"github.com/vigie-vms/vigie/storage"
)

// recordings serves the gateway's view of footage: the catalog's sealed segments plus the
// segments this node is still writing (they reach the catalog when sealed), read from the
// local store.
type recordings struct {
	clu   *cluster.Cluster
	store *storage.Store
	rep   *replica.Receiver  // hot replicas held here; nil in tests without them
	prot  *protect.Protector // reads of striped segments (degraded when a holder is down); nil in tests
	self  model.NodeID
	peer  *peerClient  // nil: single node, no peers asked
	log   *slog.Logger // nil: slog.Default()
}

var _ gateway.Recordings = (*recordings)(nil)

func (r *recordings) Segments(camera model.CameraID, from, to time.Time) ([]model.Segment, error) {
	sealed, err := r.clu.Segments(camera, from, to)
	if err != nil {
		return nil, err
	}
	local, err := r.store.Segments(camera, from, to)
	if err != nil {
		return nil, err
	}
	local = append(local, r.remoteOpenSegments(camera, from, to)...)
	seen := make(map[model.SegmentID]int, len(sealed)+len(local)) // index in out
	for i, s := range sealed {
		seen[s.ID] = i
	}
	out := sealed
	added := false
	for _, s := range local {
		i, ok := seen[s.ID]
		switch {
		case !ok:
			seen[s.ID] = len(out)
			out = append(out, s)
			added = true
		case i >= len(sealed) && s.Fragments > out[i].Fragments:
			// Two uncommitted copies (the owner's, a hot replica's): the longer one.
			out[i] = s
		}
	}
	if added {
		sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	}
	return out, nil
}

func (r *recordings) Outages(camera model.CameraID, from, to time.Time) ([]model.Outage, error) {
	return r.clu.Outages(camera, from, to)
}

func (r *recordings) Deletions(camera model.CameraID, from, to time.Time) ([]model.Deletion, error) {
	return r.clu.Deletions(camera, from, to)
}

// remoteOpenSegments asks the other nodes recording the camera, in parallel, for the
// segments they are still writing or have sealed but not yet committed to the catalog. A
// busy node gets three tries of 3 s (an export that silently left out a live segment was
// seen at 2 s under a loaded verification); a node that still does not answer is skipped
// and logged: the timeline then shows its live edge late, not wrong.
func (r *recordings) remoteOpenSegments(camera model.CameraID, from, to time.Time) []model.Segment {
	if r.peer == nil {
		return nil
	}
	a, err := r.clu.Assignment(camera)
	if err != nil {
		return nil
	}
	var nodes []model.NodeID
	for _, node := range []model.NodeID{a.Node, a.Next, a.Secondary} {
		if node != "" && node != r.self && !slices.Contains(nodes, node) {
			nodes = append(nodes, node)
		}
	}
	// In parallel: a frozen node costs its tries once, not once per node asked.
	answers := make([][]model.Segment, len(nodes))
	var wg sync.WaitGroup
	for i, node := range nodes {
		wg.Go(func() {
			var segs []model.Segment
			var err error
			for try := 0; try < 3; try++ {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				segs, err = r.peer.openSegments(ctx, node, camera, from, to)
				cancel()
				if err == nil {
					answers[i] = segs
					return
				}
			}
			logger := r.log
			if logger == nil {
				logger = slog.Default()
			}
			logger.Warn("open segments of a peer: left out of the answer", slog.String("node", string(node)),
				slog.String("camera", string(camera)), slog.Any("error", err))
		})
	}
	wg.Wait()
	var out []model.Segment
	for _, segs := range answers {
		out = append(out, segs...)
	}
	return out
}

// OpenSegment opens a segment: from this node (its store or a hot replica it holds), else
// from the node that recorded it, else from a node holding a hot replica of it.
func (r *recordings) OpenSegment(ctx context.Context, seg model.Segment) (gateway.SegmentReader, error) {
	if seg.Node != "" && seg.Node != r.self && r.peer != nil {
		// The hot replica held here saves a network read when it has every fragment the
		// listing counted; one that lags (being caught up) is the last resort, not the
		// first: read from it, an export would end where the replica does.
		var lagging gateway.SegmentReader
		if r.rep != nil {
			if rd, err := r.rep.Store().OpenReader(seg.ID); err == nil {
				if len(rd.Fragments()) >= seg.Fragments {
					return rd, nil
				}
				lagging = rd
			}
		}
		rd, err := r.openElsewhere(ctx, seg)
		if err == nil {
			if lagging != nil {
				lagging.Close()
			}
			return rd, nil
		}
		if lagging != nil {
			return lagging, nil
		}
		return nil, err
	}
	if r.prot != nil {
		// A striped segment is read through its stripe: a corrupt block is rebuilt from
		// the other shards transparently.
		if _, striped, _ := r.clu.StripeOf(seg.ID); striped {
			return r.prot.OpenSegment(ctx, seg)
		}
	}
	rd, err := r.store.OpenReader(seg.ID)
	if errors.Is(err, model.ErrNotFound) && r.rep != nil {
		// A dead owner's segment this node adopted from its hot replica.
		if rrd, rerr := r.rep.Store().OpenReader(seg.ID); rerr == nil {
			return rrd, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("segment %s on node %s: %w", seg.ID, seg.Node, err)
	}
	return rd, nil
}

// openElsewhere opens a segment another node holds: from the node that recorded it, else
// from a node holding a hot replica of it, else from its stripe's shards.
func (r *recordings) openElsewhere(ctx context.Context, seg model.Segment) (gateway.SegmentReader, error) {
	rd, err := r.peer.openSegment(ctx, seg)
	if err == nil {
		return rd, nil
	}
	for _, holder := range r.clu.ReplicasFor(seg.Camera, seg.Node) {
		if holder == r.self {
			continue
		}
		alt := seg
		alt.Node = holder
		if rd, rerr := r.peer.openSegment(ctx, alt); rerr == nil {
			return rd, nil
		}
	}
	// The holder is down: rebuild the segment from any k shards of its stripe.
	if r.prot != nil {
		if rd, perr := r.prot.OpenSegment(ctx, seg); perr == nil {
			return rd, nil
		}
	}
	return nil, err
}

// clusterInfo is the cluster status as the gateway shows it, with what only the node
// knows (its HTTP address) filled in.
type clusterInfo struct{ n *Node }

func (c clusterInfo) Status() []model.NodeStatus {
	st := c.n.clu.Status()
	for i := range st {
		if st[i].ID == model.NodeID(c.n.cfg.NodeID) && st[i].HTTPAddr == "" {
			st[i].HTTPAddr = c.n.HTTPAddr()
		}
	}
	return st
}

// clusterHealth answers the health of any camera: from this node when it records it, else
// from the node that does. Other nodes' answers are fetched whole (every camera a node
// records, one request) and kept for healthCacheTTL, so listing the health of a thousand
// cameras costs one request per node, not one per camera.
type clusterHealth struct {
	n     *Node
	mu    sync.Mutex
	cache map[model.NodeID]healthPage
}

type healthPage struct {
	at  time.Time
	err error
	m   map[model.CameraID]model.CameraHealth
}

const healthCacheTTL = time.Second

func newClusterHealth(n *Node) *clusterHealth {
	return &clusterHealth{n: n, cache: map[model.NodeID]healthPage{}}
}

func (h *clusterHealth) CameraHealth(id model.CameraID) (model.CameraHealth, bool) {
	if hl, ok := h.n.cams.CameraHealth(id); ok {
		return hl, true
	}
	a, err := h.n.clu.Assignment(id)
	if err != nil || a.Node == "" || a.Node == model.NodeID(h.n.cfg.NodeID) {
		return model.CameraHealth{}, false
	}
	for _, m := range h.n.clu.Members() {
		if m.ID == a.Node && (m.State == model.NodeDead || m.State == model.NodeDecommissioned) {
			// Do not wait on a node known to be gone: the camera moves to a survivor soon.
			return model.CameraHealth{Camera: id, State: model.CameraDown, LastError: "owner node " + string(a.Node) + " is " + m.State + "; the camera is being moved to another node"}, true
		}
	}
	page := h.page(a.Node)
	if page.err != nil {
		return model.CameraHealth{Camera: id, State: model.CameraDown, LastError: "owner node " + string(a.Node) + " did not answer: " + page.err.Error()}, true
	}
	if hl, ok := page.m[id]; ok {
		return hl, true
	}
	return model.CameraHealth{Camera: id, State: model.CameraConnecting, LastError: "owner node " + string(a.Node) + " is starting to record it"}, true
}

// page returns a node's health page, fetching it when older than healthCacheTTL.
func (h *clusterHealth) page(node model.NodeID) healthPage {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p, ok := h.cache[node]; ok && time.Since(p.at) < healthCacheTTL {
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	hs, err := h.n.peer.allHealth(ctx, node)
	p := healthPage{at: time.Now(), err: err, m: make(map[model.CameraID]model.CameraHealth, len(hs))}
	for _, hl := range hs {
		p.m[hl.Camera] = hl
	}
	h.cache[node] = p
	return p
}

// peerAddr resolves a node to its HTTP address from the cluster's membership.
func (n *Node) peerAddr(id model.NodeID) (string, error) {
	if n.clu == nil {
		return "", fmt.Errorf("node %s: the cluster is closed: %w", id, model.ErrNotFound)
	}
	for _, st := range n.clu.Members() {
		if st.ID == id && st.HTTPAddr != "" {
			return st.HTTPAddr, nil
		}
	}
	return "", fmt.Errorf("node %s: no known HTTP address: %w", id, model.ErrNotFound)
}

// grpcPeerAddr resolves a node to its gRPC address (shard transfer).
func (n *Node) grpcPeerAddr(id model.NodeID) (string, error) {
	if n.clu == nil {
		return "", fmt.Errorf("node %s: the cluster is closed: %w", id, model.ErrNotFound)
	}
	for _, st := range n.clu.Members() {
		if st.ID == id && st.GRPCAddr != "" {
			return st.GRPCAddr, nil
		}
	}
	return "", fmt.Errorf("node %s: no known gRPC address: %w", id, model.ErrNotFound)
}

func (c clusterInfo) Drain(ctx context.Context, node model.NodeID) error {
	return c.n.clu.Drain(ctx, node)
}

func (c clusterInfo) Activate(ctx context.Context, node model.NodeID) error {
	return c.n.clu.Activate(ctx, node)
}

func (c clusterInfo) Decommission(ctx context.Context, node model.NodeID) error {
	return c.n.clu.Decommission(ctx, node)
}
