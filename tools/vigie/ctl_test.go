package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeAPI answers like a node's REST API for the calls under test and records the bodies.
func fakeAPI(t *testing.T) (*httptest.Server, *[]string) {
	var bodies []string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/cameras", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		var cam map[string]any
		json.Unmarshal(b, &cam)
		if !strings.HasPrefix(cam["url"].(string), "rtsp://") && cam["ingest"] != "push" {
			w.WriteHeader(400)
			w.Write([]byte(`{"code":3,"message":"camera.url: must start with rtsp:// or rtsps://"}`))
			return
		}
		cam["ingest"] = "pull"
		json.NewEncoder(w).Encode(cam)
	})
	mux.HandleFunc("GET /media/v1/cameras/{id}/export.mp4", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100000")
		w.Write(bytes.Repeat([]byte("x"), 100000))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, &bodies
}

func TestCtlCameraCreateSendsTheCameraAndShowsAPIErrors(t *testing.T) {
	srv, bodies := fakeAPI(t)
	t.Setenv("VIGIE_SERVER", srv.URL)
	if err := runCtl([]string{"camera", "create", "cam-1", "--tenant", "lyon", "--url", "rtsp://10.0.0.1/stream", "--password", "s3cret", "--username", "admin"}); err != nil {
		t.Fatal(err)
	}
	var sent map[string]any
	json.Unmarshal([]byte((*bodies)[0]), &sent)
	if sent["id"] != "cam-1" || sent["tenant"] != "lyon" || sent["url"] != "rtsp://10.0.0.1/stream" || sent["password"] != "s3cret" {
		t.Errorf("sent %v", sent)
	}
	// A value-less flag before the id must not swallow the id.
	if err := runCtl([]string{"camera", "create", "--push", "cam-3", "--tenant", "lyon"}); err != nil {
		t.Fatal(err)
	}
	json.Unmarshal([]byte((*bodies)[1]), &sent)
	if sent["id"] != "cam-3" || sent["ingest"] != "push" {
		t.Errorf("camera create --push cam-3 sent %v", sent)
	}
	err := runCtl([]string{"camera", "create", "cam-2", "--tenant", "lyon", "--url", "http://x"})
	if err == nil || !strings.Contains(err.Error(), "camera.url: must start with rtsp://") || !strings.Contains(err.Error(), "Bad Request") {
		t.Errorf("API error shown as %v; want the API's message naming the field", err)
	}
}

func TestCtlExportWritesTheWholeFile(t *testing.T) {
	srv, _ := fakeAPI(t)
	out := filepath.Join(t.TempDir(), "x.mp4")
	err := runCtl([]string{"export", "cam-1", "--server", srv.URL, "--start", "2026-11-27T10:00:00Z", "--duration", "1m", "-o", out, "--quiet"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(out)
	if err != nil || st.Size() != 100000 {
		t.Fatalf("export file: %v, %v; want 100000 bytes", st, err)
	}
	if _, err := os.Stat(out + ".part"); !os.IsNotExist(err) {
		t.Error("the temporary .part file was left behind")
	}
}

func TestCtlUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cameras", "lst"}, `unknown command "cameras lst"`},
		{[]string{"export", "cam-1", "--start", "monday"}, "--start: \"monday\" is not a time"},
		{[]string{"export", "cam-1", "--start", "2026-11-27T10:00:00Z", "--end", "2026-11-27T09:00:00Z"}, "the range is empty"},
		{[]string{"export", "cam-1"}, "--start is required"},
	} {
		err := runCtl(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("vigie ctl %s: got %v, want an error containing %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

func TestParseRange(t *testing.T) {
	from, to, err := parseRange("2026-11-27T10:00:00Z", "", 90*time.Second, 0)
	if err != nil || to.Sub(from) != 90*time.Second {
		t.Errorf("start+duration: %s..%s, %v", from, to, err)
	}
	from, to, err = parseRange("", "", 0, time.Hour)
	if err != nil || to.Sub(from) != time.Hour || time.Since(to) > time.Minute {
		t.Errorf("--last 1h: %s..%s, %v", from, to, err)
	}
}
