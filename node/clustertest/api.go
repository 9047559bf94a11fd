package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// API is a small client of one node's public REST and media endpoints, as an operator's
// tool would use them. Errors carry the status and the body of the answer.
type API struct {
	Base string
	HTTP *http.Client
}

func (a *API) client() *http.Client {
	if a.HTTP != nil {
		return a.HTTP
	}
	return &http.Client{Timeout: time.Minute}
}

// Do sends a request with an optional JSON body and decodes a 200 answer into out (when
// not nil). Another status is an error quoting the body.
func (a *API) Do(ctx context.Context, method, path string, body, out any) error {
	_, err := a.do(ctx, method, path, body, out)
	return err
}

func (a *API) do(ctx context.Context, method, path string, body, out any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.Base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := a.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	if res.StatusCode != http.StatusOK {
		return res.Header, &StatusError{Method: method, Path: path, Status: res.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	if out != nil {
		if raw, ok := out.(*[]byte); ok {
			*raw = b
			return res.Header, nil
		}
		if err := json.Unmarshal(b, out); err != nil {
			return res.Header, fmt.Errorf("%s %s: decode %.200s: %w", method, path, b, err)
		}
	}
	return res.Header, nil
}

// StatusError is an answer other than 200.
type StatusError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: status %d: %.300s", e.Method, e.Path, e.Status, e.Body)
}

// CameraSpec is a camera to register (the REST shape; empty fields are left out).
type CameraSpec struct {
	ID         string `json:"id"`
	Tenant     string `json:"tenant"`
	URL        string `json:"url"`
	Redundancy string `json:"redundancy,omitempty"`
}

// CreateTenant registers a tenant.
func (a *API) CreateTenant(ctx context.Context, id string) error {
	return a.Do(ctx, "POST", "/v1/tenants", map[string]any{"id": id, "name": "Test " + id}, nil)
}

// ImportCameras registers cameras in one request (all or none).
func (a *API) ImportCameras(ctx context.Context, cams []CameraSpec) error {
	return a.Do(ctx, "POST", "/v1/cameras:import", map[string]any{"cameras": cams}, nil)
}

// Drain asks the cluster to drain a node.
func (a *API) Drain(ctx context.Context, node string) error {
	return a.Do(ctx, "POST", "/v1/cluster/nodes/"+url.PathEscape(node)+":drain", map[string]any{}, nil)
}

// Span and Gap are a timeline's pieces.
type Span struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

type Gap struct {
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Cause  string    `json:"cause"`
	Detail string    `json:"detail"`
}

// Timeline is a camera's timeline as the REST API returns it.
type Timeline struct {
	Spans []Span `json:"spans"`
	Gaps  []Gap  `json:"gaps"`
}

func (tl Timeline) String() string {
	var b strings.Builder
	for _, s := range tl.Spans {
		fmt.Fprintf(&b, "\n  span %s → %s (%.1fs)", s.Start.Format("15:04:05.000"), s.End.Format("15:04:05.000"), s.End.Sub(s.Start).Seconds())
	}
	for _, g := range tl.Gaps {
		fmt.Fprintf(&b, "\n  gap  %s → %s (%.1fs) cause=%s detail=%q", g.Start.Format("15:04:05.000"), g.End.Format("15:04:05.000"), g.End.Sub(g.Start).Seconds(), g.Cause, g.Detail)
	}
	return b.String()
}

func rangeQuery(from, to time.Time) string {
	return url.Values{"start": {from.UTC().Format(time.RFC3339Nano)}, "end": {to.UTC().Format(time.RFC3339Nano)}}.Encode()
}

// Timeline returns camera's timeline over [from, to).
func (a *API) Timeline(ctx context.Context, camera string, from, to time.Time) (Timeline, error) {
	var tl Timeline
	err := a.Do(ctx, "GET", "/v1/cameras/"+url.PathEscape(camera)+"/timeline?"+rangeQuery(from, to), nil, &tl)
	return tl, err
}

// Health is a camera's health as the REST API returns it (a subset).
type Health struct {
	State     string `json:"state"`
	LastError string `json:"last_error"`
}

// Health returns camera's health.
func (a *API) Health(ctx context.Context, camera string) (Health, error) {
	var h Health
	err := a.Do(ctx, "GET", "/v1/cameras/"+url.PathEscape(camera)+"/health", nil, &h)
	return h, err
}

// Export downloads the MP4 export of [from, to) and returns it with the wall time of its
// first sample (X-Vigie-Start).
func (a *API) Export(ctx context.Context, camera string, from, to time.Time) ([]byte, time.Time, error) {
	var b []byte
	hdr, err := a.do(ctx, "GET", "/media/v1/cameras/"+url.PathEscape(camera)+"/export.mp4?"+rangeQuery(from, to), nil, &b)
	if err != nil {
		return nil, time.Time{}, err
	}
	origin, _ := time.Parse(time.RFC3339Nano, hdr.Get("X-Vigie-Start"))
	return b, origin, nil
}

// peer API (internal, served by every node): what the harness reads footage through.

type peerIndex struct {
	Segment   model.Segment        `json:"segment"`
	Init      []byte               `json:"init"`
	Fragments []model.FragmentInfo `json:"fragments"`
}

func (a *API) peerIndex(ctx context.Context, seg model.SegmentID) (peerIndex, error) {
	var idx peerIndex
	err := a.Do(ctx, "GET", "/internal/v1/segments/"+url.PathEscape(string(seg))+"/index", nil, &idx)
	return idx, err
}

func (a *API) peerFragment(ctx context.Context, seg model.SegmentID, fi model.FragmentInfo) ([]byte, error) {
	var b []byte
	q := url.Values{"offset": {strconv.FormatInt(fi.Offset, 10)}, "size": {strconv.FormatInt(fi.Size, 10)}}
	err := a.Do(ctx, "GET", "/internal/v1/segments/"+url.PathEscape(string(seg))+"/fragment?"+q.Encode(), nil, &b)
	return b, err
}

func (a *API) peerOpenSegments(ctx context.Context, camera string, from, to time.Time) ([]model.Segment, error) {
	var segs []model.Segment
	q := url.Values{"start": {from.UTC().Format(time.RFC3339Nano)}, "end": {to.UTC().Format(time.RFC3339Nano)}}
	err := a.Do(ctx, "GET", "/internal/v1/cameras/"+url.PathEscape(camera)+"/open-segments?"+q.Encode(), nil, &segs)
	return segs, err
}
