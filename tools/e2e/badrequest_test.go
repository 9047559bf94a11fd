package e2e

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestBadRequests sends requests a person gets wrong to the real binary: each answers 400
// (or 404) with a message naming the field to fix, and changes nothing.
func TestBadRequests(t *testing.T) {
	n := startNode(t, "node", t.TempDir(), freeAddrs(t))
	base := n.base()
	createTenant(t, base, "t1")
	createCamera(t, base, map[string]any{"id": "good-1", "tenant": "t1", "ingest": "push"})
	camsBefore := listCameras(t, base)

	now := time.Now().UTC()
	q := func(start, end time.Time) string { return rangeQuery(start, end) }
	cases := []struct {
		name   string
		method string
		path   string
		body   any
		status int
		names  string // the message must contain this
	}{
		{"camera with a URL that is not RTSP", "POST", "/v1/cameras",
			map[string]any{"id": "bad-1", "tenant": "t1", "url": "http://example.com/stream"}, 400, "url"},
		{"camera with a URL that is not a URL", "POST", "/v1/cameras",
			map[string]any{"id": "bad-2", "tenant": "t1", "url": "rtsp://[::1"}, 400, "url"},
		{"camera with a bad id", "POST", "/v1/cameras",
			map[string]any{"id": "Bad Id!", "tenant": "t1", "url": "rtsp://127.0.0.1:1/x"}, 400, "id"},
		{"camera in a tenant that does not exist", "POST", "/v1/cameras",
			map[string]any{"id": "bad-3", "tenant": "nobody", "url": "rtsp://127.0.0.1:1/x"}, 0, "tenant"},
		{"export with start after end", "GET", "/media/v1/cameras/good-1/export.mp4?" + q(now, now.Add(-time.Minute)), nil, 400, "end"},
		{"export without end", "GET", "/media/v1/cameras/good-1/export.mp4?start=" + now.Format(time.RFC3339), nil, 400, "end"},
		{"stream with a bad duration", "GET", "/media/v1/cameras/good-1/stream.mp4?start=" + now.Format(time.RFC3339) + "&duration=ten", nil, 400, "duration"},
		{"timeline with a bad start", "GET", "/v1/cameras/good-1/timeline?start=yesterday&end=" + now.Format(time.RFC3339), nil, 400, "start"},
		{"export of an unknown camera", "GET", "/media/v1/cameras/nope/export.mp4?" + q(now.Add(-time.Minute), now), nil, 404, "nope"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := do(t, c.method, base+c.path, c.body)
			var e apiError
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("status %d, body is not a JSON error: %q", code, body)
			}
			if c.status != 0 && code != c.status || c.status == 0 && (code < 400 || code >= 500) {
				t.Errorf("status %d, want %d: %s", code, c.status, body)
			}
			if !strings.Contains(e.text(), c.names) {
				t.Errorf("message %q does not name %q", e.text(), c.names)
			}
			t.Logf("%d %s", code, e.text())
		})
	}

	if after := listCameras(t, base); !reflect.DeepEqual(after, camsBefore) {
		t.Errorf("the camera list changed after refused requests:\nbefore %+v\nafter  %+v", camsBefore, after)
	}
	if code, _ := do(t, "GET", base+"/v1/cameras/bad-1", nil); code != http.StatusNotFound {
		t.Errorf("GET /v1/cameras/bad-1 after a refused create: status %d, want 404", code)
	}
}
