package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"
)

// The JSON shapes of the REST API that the tests read (a subset of the fields).

type span struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Bytes string    `json:"bytes"`
}

type gap struct {
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Cause  string    `json:"cause"`
	Detail string    `json:"detail"`
}

type timeline struct {
	Spans []span `json:"spans"`
	Gaps  []gap  `json:"gaps"`
}

type segment struct {
	ID        string    `json:"id"`
	Epoch     string    `json:"epoch"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	Bytes     string    `json:"bytes"`
	Fragments int       `json:"fragments"`
	Sealed    bool      `json:"sealed"`
}

type cameraJSON struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	URL    string `json:"url"`
	Ingest string `json:"ingest"`
}

// apiError is the body of an error answer: {"code","message"} from the REST API,
// {"error"} from the media endpoints.
type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Error   string `json:"error"`
}

func (e apiError) text() string { return e.Message + e.Error }

// do sends a request with an optional JSON body and returns the status and the body.
func do(t *testing.T, method, u string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, u, err)
	}
	return res.StatusCode, b
}

// mustDo is do that fails the test unless the status is want; it decodes the body into out
// when out is not nil.
func mustDo(t *testing.T, method, u string, body any, want int, out any) {
	t.Helper()
	code, b := do(t, method, u, body)
	if code != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, u, code, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, u, b, err)
		}
	}
}

func createTenant(t *testing.T, base, id string) {
	t.Helper()
	mustDo(t, "POST", base+"/v1/tenants", map[string]any{"id": id, "name": "E2E " + id}, http.StatusOK, nil)
}

func createCamera(t *testing.T, base string, cam map[string]any) {
	t.Helper()
	mustDo(t, "POST", base+"/v1/cameras", cam, http.StatusOK, nil)
}

func listCameras(t *testing.T, base string) []cameraJSON {
	t.Helper()
	var res struct {
		Cameras []cameraJSON `json:"cameras"`
	}
	mustDo(t, "GET", base+"/v1/cameras", nil, http.StatusOK, &res)
	return res.Cameras
}

func rangeQuery(start, end time.Time) string {
	return url.Values{"start": {start.UTC().Format(time.RFC3339Nano)}, "end": {end.UTC().Format(time.RFC3339Nano)}}.Encode()
}

func getTimeline(t *testing.T, base, cam string, start, end time.Time) timeline {
	t.Helper()
	var tl timeline
	mustDo(t, "GET", base+"/v1/cameras/"+cam+"/timeline?"+rangeQuery(start, end), nil, http.StatusOK, &tl)
	return tl
}

func listSegments(t *testing.T, base, cam string, start, end time.Time) []segment {
	t.Helper()
	var all []segment
	tok := ""
	for {
		q := rangeQuery(start, end)
		if tok != "" {
			q += "&page_token=" + url.QueryEscape(tok)
		}
		var res struct {
			Segments []segment `json:"segments"`
			Next     string    `json:"next_page_token"`
		}
		mustDo(t, "GET", base+"/v1/cameras/"+cam+"/segments?"+q, nil, http.StatusOK, &res)
		all = append(all, res.Segments...)
		if res.Next == "" {
			return all
		}
		tok = res.Next
	}
}

// download GETs u into the file path and returns the response headers; any status but
// 200 fails the test.
func download(t *testing.T, u, path string) http.Header {
	t.Helper()
	res, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s: status %d: %s", u, res.StatusCode, b)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(f, res.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("GET %s: body after %d bytes: %v", u, n, err)
	}
	return res.Header
}

// export downloads the MP4 export of [start, end) of cam into path.
func export(t *testing.T, base, cam string, start, end time.Time, path string) {
	t.Helper()
	download(t, base+"/media/v1/cameras/"+cam+"/export.mp4?"+rangeQuery(start, end), path)
}

func streamURL(base, cam string, start time.Time, d time.Duration) string {
	q := url.Values{"start": {start.UTC().Format(time.RFC3339Nano)}, "duration": {d.String()}}
	return base + "/media/v1/cameras/" + cam + "/stream.mp4?" + q.Encode()
}

// waitSpan polls cam's timeline until a span ends after `after`, and returns the timeline.
func waitSpan(t *testing.T, base, cam string, from, after time.Time, timeout time.Duration) timeline {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		tl := getTimeline(t, base, cam, from, time.Now().Add(time.Minute))
		for _, s := range tl.Spans {
			if s.End.After(after) {
				return tl
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("camera %s: no recorded span ending after %s within %s; timeline %+v", cam, after.Format(time.RFC3339Nano), timeout, tl)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func spanBytes(s span) int64 {
	n, _ := strconv.ParseInt(s.Bytes, 10, 64)
	return n
}

func (tl timeline) String() string {
	var b bytes.Buffer
	for _, s := range tl.Spans {
		fmt.Fprintf(&b, "\n  span %s → %s (%.1fs, %d bytes)", s.Start.Format("15:04:05.000"), s.End.Format("15:04:05.000"), s.End.Sub(s.Start).Seconds(), spanBytes(s))
	}
	for _, g := range tl.Gaps {
		fmt.Fprintf(&b, "\n  gap  %s → %s (%.1fs) cause=%s detail=%q", g.Start.Format("15:04:05.000"), g.End.Format("15:04:05.000"), g.End.Sub(g.Start).Seconds(), g.Cause, g.Detail)
	}
	return b.String()
}

// waitSettled polls cam's timeline until its last span is followed by a gap (the camera
// stopped and the node flushed and committed what it had), and returns the timeline.
func waitSettled(t *testing.T, base, cam string, from time.Time, timeout time.Duration) timeline {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		tl := getTimeline(t, base, cam, from, time.Now().Add(time.Minute))
		if n := len(tl.Spans); n > 0 {
			last := tl.Spans[n-1]
			for _, g := range tl.Gaps {
				if !g.Start.Before(last.End) {
					return tl
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("camera %s: the timeline did not settle (a span then a gap) within %s:%s", cam, timeout, tl)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
