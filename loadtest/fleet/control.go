package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// The control endpoint (Handler) lets a runner in another process drive the fleet:
//
//	GET  /v1/stats                                   → Stats
//	GET  /v1/cameras                                 → []CameraState
//	POST /v1/cameras/{id}/stall?on=true|false
//	POST /v1/cameras/{id}/drop                       → {"sessions": n}
//	POST /v1/cameras/{id}/garbage?packets=N
//	POST /v1/cameras/{id}/resolution?alt=true|false
//	GET  /debug/pprof/...                            → net/http/pprof (e.g. profile?seconds=30)
//
// {id} "_all" applies the action to every camera. Errors are {"error": "..."} with 404
// for an unknown camera and 400 for a bad parameter. Serve it on 127.0.0.1 only: it has no
// authentication.

// Handler returns the control endpoint.
func (f *Fleet) Handler() http.Handler {
	mux := http.NewServeMux()
	// Profiles of the fleet process (fleet-bench -cpuprofile fetches one of the window).
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, f.Stats()) })
	mux.HandleFunc("GET /v1/cameras", func(w http.ResponseWriter, r *http.Request) {
		var out []CameraState
		for _, id := range f.IDs() {
			c, _ := f.Camera(id)
			out = append(out, c)
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /v1/cameras/{id}/{action}", func(w http.ResponseWriter, r *http.Request) {
		res, err := f.Apply(r.PathValue("id"), r.PathValue("action"), r.URL.Query())
		if err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, model.ErrNotFound) {
				code = http.StatusNotFound
			}
			writeJSON(w, code, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	return mux
}

// Actions Apply knows.
const (
	ActionStall      = "stall"
	ActionDrop       = "drop"
	ActionGarbage    = "garbage"
	ActionResolution = "resolution"
)

// AllCameras as an id applies an action to every camera.
const AllCameras = "_all"

// Apply runs action on camera id (or AllCameras) with the control endpoint's parameters
// (on, packets, alt). It returns {"cameras": n, "sessions": m}.
func (f *Fleet) Apply(id, action string, q url.Values) (map[string]int, error) {
	ids := []string{id}
	if id == AllCameras {
		ids = f.IDs()
	}
	boolParam := func(name string, def bool) (bool, error) {
		v := q.Get(name)
		if v == "" {
			return def, nil
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, model.Invalid(name, "%q is not true or false", v)
		}
		return b, nil
	}
	res := map[string]int{"cameras": 0, "sessions": 0}
	for _, id := range ids {
		var err error
		switch action {
		case ActionStall:
			var on bool
			if on, err = boolParam("on", true); err == nil {
				err = f.Stall(id, on)
			}
		case ActionDrop:
			var n int
			n, err = f.Drop(id)
			res["sessions"] += n
		case ActionGarbage:
			n := 10
			if v := q.Get("packets"); v != "" {
				if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 1000 {
					return res, model.Invalid("packets", "%q, want 1 to 1000", v)
				}
			}
			err = f.Garbage(id, n)
		case ActionResolution:
			var alt bool
			if alt, err = boolParam("alt", true); err == nil {
				err = f.SetResolution(id, alt)
			}
		default:
			return res, model.Invalid("action", "%q, want %s, %s, %s or %s", action, ActionStall, ActionDrop, ActionGarbage, ActionResolution)
		}
		if err != nil {
			return res, err
		}
		res["cameras"]++
	}
	return res, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Client drives a fleet's control endpoint from another process.
type Client struct {
	Base string // http://127.0.0.1:port
	HTTP *http.Client
}

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.Base, "/")+path, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("fleet control: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fleet control: %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// Stats fetches the fleet's Stats.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	return st, c.do(ctx, http.MethodGet, "/v1/stats", &st)
}

// Cameras fetches every camera's state.
func (c *Client) Cameras(ctx context.Context) ([]CameraState, error) {
	var out []CameraState
	return out, c.do(ctx, http.MethodGet, "/v1/cameras", &out)
}

// Apply runs an action remotely (see Fleet.Apply).
func (c *Client) Apply(ctx context.Context, id, action string, q url.Values) error {
	p := "/v1/cameras/" + url.PathEscape(id) + "/" + action
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return c.do(ctx, http.MethodPost, p, nil)
}
