package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/vigie-vms/vigie/cluster"
	"github.com/vigie-vms/vigie/gateway"
	"github.com/vigie-vms/vigie/model"
)

// The peer API is how nodes read each other's footage and health: any node answers any
// request, and the node that holds a segment serves its verified bytes. It is served on
// the HTTP listener under /internal/ (mutual TLS between nodes comes with the security
// issue; until then the listener binds to 127.0.0.1 by default).
const peerPrefix = "/internal/v1"

// peerIndex is a segment's init and fragment index, as served to peers.
type peerIndex struct {
	Segment   model.Segment        `json:"segment"`
	Init      []byte               `json:"init"`
	Fragments []model.FragmentInfo `json:"fragments"`
}

// peerHandlers are the node's internal endpoints.
func (n *Node) peerHandlers() map[string]http.Handler {
	return map[string]http.Handler{
		"GET " + peerPrefix + "/segments/{id}/index":        http.HandlerFunc(n.servePeerIndex),
		"GET " + peerPrefix + "/segments/{id}/fragment":     http.HandlerFunc(n.servePeerFragment),
		"GET " + peerPrefix + "/cameras/{id}/open-segments": http.HandlerFunc(n.servePeerOpenSegments),
		"GET " + peerPrefix + "/health":                     http.HandlerFunc(n.servePeerAllHealth),
		"POST " + peerPrefix + "/cluster/apply":             http.HandlerFunc(n.serveForwarded),
	}
}

func writePeerError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, model.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, model.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, model.ErrCorrupt):
		status = http.StatusUnprocessableEntity
	}
	http.Error(w, err.Error(), status)
}

func writePeerJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// localSegment is a segment this node can serve to peers.
type localSegment interface {
	Segment() model.Segment
	Init() []byte
	Fragments() []model.FragmentInfo
	ReadFragment(fi model.FragmentInfo, dst []byte) ([]byte, error)
	Close() error
}

// openLocal opens a segment this node holds: its own, a hot replica of another owner's,
// or a data segment shipped here as a stripe's shard.
func (n *Node) openLocal(ctx context.Context, id model.SegmentID) (localSegment, error) {
	rd, err := n.store.OpenReader(id)
	if err == nil {
		return rd, nil
	}
	if errors.Is(err, model.ErrNotFound) && n.rep != nil {
		if rd, rerr := n.rep.Store().OpenReader(id); rerr == nil {
			return rd, nil
		}
	}
	if errors.Is(err, model.ErrNotFound) && n.prot != nil {
		if seg, perr := n.prot.OpenLocal(ctx, id); perr == nil {
			return seg, nil
		}
	}
	return nil, err
}

func (n *Node) servePeerIndex(w http.ResponseWriter, r *http.Request) {
	rd, err := n.openLocal(r.Context(), model.SegmentID(r.PathValue("id")))
	if err != nil {
		writePeerError(w, err)
		return
	}
	defer rd.Close()
	writePeerJSON(w, peerIndex{Segment: rd.Segment(), Init: rd.Init(), Fragments: rd.Fragments()})
}

func (n *Node) servePeerFragment(w http.ResponseWriter, r *http.Request) {
	off, err1 := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	size, err2 := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
	if err1 != nil || err2 != nil {
		writePeerError(w, model.Invalid("offset", "offset and size must be whole numbers"))
		return
	}
	rd, err := n.openLocal(r.Context(), model.SegmentID(r.PathValue("id")))
	if err != nil {
		writePeerError(w, err)
		return
	}
	defer rd.Close()
	for _, fi := range rd.Fragments() {
		if fi.Offset == off && fi.Size == size {
			data, err := rd.ReadFragment(fi, nil)
			if err != nil {
				writePeerError(w, err)
				return
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.Write(data)
			return
		}
	}
	writePeerError(w, fmt.Errorf("segment %s: no fragment at offset %d size %d: %w", r.PathValue("id"), off, size, model.ErrNotFound))
}

func (n *Node) servePeerOpenSegments(w http.ResponseWriter, r *http.Request) {
	from, err1 := time.Parse(time.RFC3339Nano, r.URL.Query().Get("start"))
	to, err2 := time.Parse(time.RFC3339Nano, r.URL.Query().Get("end"))
	if err1 != nil || err2 != nil {
		writePeerError(w, model.Invalid("start", "start and end must be RFC 3339 times"))
		return
	}
	camera := model.CameraID(r.PathValue("id"))
	segs, err := n.store.Segments(camera, from, to)
	if err != nil {
		writePeerError(w, err)
		return
	}
	// Open segments, and sealed ones the catalog does not list yet: between its seal and
	// its commit (seconds when every camera of a node seals at once and the leader is
	// busy) a segment is in neither, and an export made then left it out — every frame
	// from its start to the end of the window.
	committed := map[model.SegmentID]bool{}
	if sealed, err := n.clu.Segments(camera, from, to); err == nil {
		for _, s := range sealed {
			committed[s.ID] = true
		}
	}
	open := segs[:0]
	for _, s := range segs {
		if !s.Sealed || !committed[s.ID] {
			open = append(open, s)
		}
	}
	if n.rep != nil {
		// Hot replicas of a dead owner's open segments: until they are adopted, this is
		// how the timeline sees them. Sealed replica copies are not listed: the owner
		// lists its own (a replica sealed by a restart of this node is a truncated copy).
		if more, err := n.rep.Store().Segments(camera, from, to); err == nil {
			for _, s := range more {
				if !s.Sealed {
					open = append(open, s)
				}
			}
		}
	}
	writePeerJSON(w, open)
}

func (n *Node) servePeerAllHealth(w http.ResponseWriter, r *http.Request) {
	writePeerJSON(w, n.cams.healthSnapshot())
}

// peerClient calls other nodes' peer API.
type peerClient struct {
	http *http.Client
	// addr resolves a node to its HTTP address.
	addr func(model.NodeID) (string, error)
}

func newPeerClient(addr func(model.NodeID) (string, error)) *peerClient {
	return &peerClient{http: &http.Client{Timeout: 30 * time.Second}, addr: addr}
}

func (p *peerClient) get(ctx context.Context, node model.NodeID, path string, q url.Values) (*http.Response, error) {
	addr, err := p.addr(node)
	if err != nil {
		return nil, err
	}
	u := "http://" + addr + peerPrefix + path
	if q != nil {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("node %s unreachable: %w", node, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		sentinel := errors.New("peer error")
		switch resp.StatusCode {
		case http.StatusNotFound:
			sentinel = model.ErrNotFound
		case http.StatusUnprocessableEntity:
			sentinel = model.ErrCorrupt
		case http.StatusBadRequest:
			sentinel = model.ErrInvalid
		}
		return nil, fmt.Errorf("node %s: %s: %w", node, string(msg), sentinel)
	}
	return resp, nil
}

func (p *peerClient) getJSON(ctx context.Context, node model.NodeID, path string, q url.Values, out any) error {
	resp, err := p.get(ctx, node, path, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

// openSegment opens a segment held by another node.
func (p *peerClient) openSegment(ctx context.Context, seg model.Segment) (gateway.SegmentReader, error) {
	var idx peerIndex
	if err := p.getJSON(ctx, seg.Node, "/segments/"+url.PathEscape(string(seg.ID))+"/index", nil, &idx); err != nil {
		return nil, err
	}
	return &remoteSegment{p: p, ctx: ctx, seg: seg, idx: idx}, nil
}

// remoteSegment reads a segment from the node that holds it; that node verifies the
// checksums of every byte it sends.
type remoteSegment struct {
	p   *peerClient
	ctx context.Context
	seg model.Segment
	idx peerIndex
}

func (r *remoteSegment) Init() []byte                    { return r.idx.Init }
func (r *remoteSegment) Fragments() []model.FragmentInfo { return r.idx.Fragments }
func (r *remoteSegment) Close() error                    { return nil }

func (r *remoteSegment) ReadFragment(fi model.FragmentInfo, dst []byte) ([]byte, error) {
	q := url.Values{"offset": {strconv.FormatInt(fi.Offset, 10)}, "size": {strconv.FormatInt(fi.Size, 10)}}
	resp, err := r.p.get(r.ctx, r.seg.Node, "/segments/"+url.PathEscape(string(r.seg.ID))+"/fragment", q)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	buf := dst[:0]
	if int64(cap(buf)) < fi.Size {
		buf = make([]byte, 0, fi.Size)
	}
	buf = buf[:fi.Size]
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		return nil, fmt.Errorf("segment %s from node %s: %w", r.seg.ID, r.seg.Node, err)
	}
	return buf, nil
}

// openSegments returns the segments another node is still writing for a camera.
func (p *peerClient) openSegments(ctx context.Context, node model.NodeID, camera model.CameraID, from, to time.Time) ([]model.Segment, error) {
	var segs []model.Segment
	q := url.Values{"start": {from.Format(time.RFC3339Nano)}, "end": {to.Format(time.RFC3339Nano)}}
	err := p.getJSON(ctx, node, "/cameras/"+url.PathEscape(string(camera))+"/open-segments", q, &segs)
	return segs, err
}

// allHealth asks a node for the health of every camera it records.
func (p *peerClient) allHealth(ctx context.Context, node model.NodeID) ([]model.CameraHealth, error) {
	var hs []model.CameraHealth
	err := p.getJSON(ctx, node, "/health", nil, &hs)
	return hs, err
}

// httpForwarder carries writes made on this node to the leader's internal endpoint.
type httpForwarder struct{ http *http.Client }

func newHTTPForwarder() *httpForwarder {
	return &httpForwarder{http: &http.Client{Timeout: 30 * time.Second}}
}

func (f *httpForwarder) Forward(ctx context.Context, leader model.NodeID, meta cluster.NodeMeta, payload []byte) ([]byte, error) {
	if meta.HTTPAddr == "" {
		return nil, fmt.Errorf("leader %s has no known HTTP address: %w", leader, model.ErrNotLeader)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+meta.HTTPAddr+peerPrefix+"/cluster/apply", bytes.NewReader(payload))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := f.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("leader %s unreachable: %v: %w", leader, err, model.ErrNotLeader)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("leader %s: %w", leader, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("leader %s: %s", leader, bytes.TrimSpace(body))
	}
	return body, nil
}

// serveForwarded applies a write forwarded by another node (this node is the leader). The
// answer, error included, is encoded by the cluster so the caller's errors.Is still works.
func (n *Node) serveForwarded(w http.ResponseWriter, r *http.Request) {
	payload, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out, err := n.clu.ApplyForwarded(r.Context(), payload)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(out)
}
