package recbench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// benchTenant owns the benchmark's cameras.
const benchTenant = "bench"

// ModuleRoot walks up from dir to the directory whose go.mod declares the Vigie module.
func ModuleRoot(dir string) (string, error) {
	for d := dir; ; {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
			bytes.Contains(b, []byte("module github.com/vigie-vms/vigie\n")) {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no Vigie go.mod above %s: run from the repository or pass -vigie BINARY", dir)
		}
		d = parent
	}
}

// BuildVigie builds ./tools/vigie of the module at root into out, within 5 minutes.
func BuildVigie(ctx context.Context, root, out string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("build vigie: go: %w (or pass -vigie BINARY)", ErrToolMissing)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "./tools/vigie")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./tools/vigie: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return nil
}

// freeAddrs returns n distinct 127.0.0.1 addresses with ports free right now. (A port can
// be taken again before the node binds it; the node then fails to start and says so.)
func freeAddrs(n int) ([]string, error) {
	var out []string
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		lns = append(lns, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// vigieNode is a `vigie node` process under measurement.
type vigieNode struct {
	*child
	base    string // http://127.0.0.1:port
	dataDir string
	http    *http.Client
}

// startVigie runs `vigie node` pinned to cpu with a fresh data directory, and waits (at
// most timeout) until its REST API answers.
func startVigie(ctx context.Context, bin, dataDir, logPath string, cpu int, noSync bool, timeout time.Duration) (*vigieNode, error) {
	addrs, err := freeAddrs(4)
	if err != nil {
		return nil, err
	}
	args := []string{bin, "node",
		"--data-dir", dataDir,
		"--http-addr", addrs[0], "--grpc-addr", addrs[1], "--rtsp-addr", addrs[2], "--raft-addr", addrs[3],
	}
	if noSync {
		args = append(args, "--no-sync")
	}
	c, err := startChild("vigie node", cpu, logPath, false, nil, args...)
	if err != nil {
		return nil, err
	}
	v := &vigieNode{child: c, base: "http://" + addrs[0], dataDir: dataDir, http: &http.Client{Timeout: 30 * time.Second}}
	deadline := time.Now().Add(timeout)
	for {
		var out json.RawMessage
		err := v.call(ctx, http.MethodGet, "/v1/tenants", nil, &out)
		if err == nil {
			return v, nil
		}
		select {
		case <-c.done:
			return nil, fmt.Errorf("vigie node exited (%v) before its API answered; see %s", c.err, logPath)
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			v.stop(10 * time.Second)
			return nil, fmt.Errorf("vigie node API at %s did not answer within %v: %w (see %s)", v.base, timeout, err, logPath)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// call does one REST request with a JSON body and decodes a JSON answer into out.
func (v *vigieNode) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, v.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := v.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, truncate(b, 300))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// register creates the bench tenant and imports the cameras (all or nothing), each
// pulling rtsp://fleetAddr/<id>.
func (v *vigieNode) register(ctx context.Context, fleetAddr string, ids []string) error {
	if err := v.call(ctx, http.MethodPost, "/v1/tenants", map[string]any{"id": benchTenant, "name": "Bench"}, nil); err != nil {
		return fmt.Errorf("create tenant: %w", err)
	}
	type cam struct {
		ID     string `json:"id"`
		Tenant string `json:"tenant"`
		URL    string `json:"url"`
	}
	cams := make([]cam, len(ids))
	for i, id := range ids {
		cams[i] = cam{ID: id, Tenant: benchTenant, URL: "rtsp://" + fleetAddr + "/" + id}
	}
	if err := v.call(ctx, http.MethodPost, "/v1/cameras:import", map[string]any{"cameras": cams}, nil); err != nil {
		return fmt.Errorf("import %d cameras: %w", len(ids), err)
	}
	return nil
}

// cameraHealth is the part of the REST CameraHealth the benchmark reads (protojson
// encodes uint64 as strings).
type cameraHealth struct {
	Camera          string  `json:"camera_id"`
	State           string  `json:"state"`
	FPS             float64 `json:"fps"`
	BitrateBps      float64 `json:"bitrate_bps"`
	PacketsReceived uint64  `json:"packets_received,string"`
	PacketsLost     uint64  `json:"packets_lost,string"`
	Reconnects      uint64  `json:"reconnects,string"`
	LastError       string  `json:"last_error"`
}

// HealthSum adds up the health of every camera.
type HealthSum struct {
	Cameras, Recording int
	FPS, BitrateBps    float64
	Packets, Lost      uint64
	Reconnects         uint64
	FirstError         string // one last_error, to show why a camera is not recording
}

// health lists every camera's health (paginated, at most 100 pages).
func (v *vigieNode) health(ctx context.Context) (HealthSum, error) {
	var sum HealthSum
	tok := ""
	for range 100 {
		var page struct {
			Health []cameraHealth `json:"health"`
			Next   string         `json:"next_page_token"`
		}
		q := url.Values{"tenant": {benchTenant}, "page_size": {"500"}}
		if tok != "" {
			q.Set("page_token", tok)
		}
		if err := v.call(ctx, http.MethodGet, "/v1/cameras:health?"+q.Encode(), nil, &page); err != nil {
			return sum, fmt.Errorf("camera health: %w", err)
		}
		for _, h := range page.Health {
			sum.Cameras++
			if h.State == "recording" {
				sum.Recording++
			} else if sum.FirstError == "" && h.LastError != "" {
				sum.FirstError = h.Camera + ": " + h.LastError
			}
			sum.FPS += h.FPS
			sum.BitrateBps += h.BitrateBps
			sum.Packets += h.PacketsReceived
			sum.Lost += h.PacketsLost
			sum.Reconnects += h.Reconnects
		}
		if page.Next == "" {
			return sum, nil
		}
		tok = page.Next
	}
	return sum, fmt.Errorf("camera health: more than 100 pages")
}

// waitRecording polls health until n cameras record, at most timeout.
func (v *vigieNode) waitRecording(ctx context.Context, n int, timeout time.Duration) (HealthSum, error) {
	deadline := time.Now().Add(timeout)
	for {
		h, err := v.health(ctx)
		if err == nil && h.Recording >= n {
			return h, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				return h, err
			}
			return h, fmt.Errorf("%d of %d cameras recording after %v (first error: %q)", h.Recording, n, timeout, h.FirstError)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// diskBytes sums the sizes of the files under dir (footage, catalog, logs of the store).
func diskBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// PlaybackSample is one stream.mp4 request.
type PlaybackSample struct {
	Camera    string
	Start     time.Time
	FirstByte time.Duration // request sent → first body byte
	Total     time.Duration // request sent → end of body
	Bytes     int64
	Err       string
}

// playback asks for stream.mp4 of camera from start for d and times the first body byte
// and the whole body.
func (v *vigieNode) playback(ctx context.Context, camera string, start time.Time, d time.Duration) PlaybackSample {
	s := PlaybackSample{Camera: camera, Start: start}
	q := url.Values{"start": {start.UTC().Format(time.RFC3339Nano)}, "duration": {d.String()}}
	u := v.base + "/media/v1/cameras/" + camera + "/stream.mp4?" + q.Encode()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		s.Err = err.Error()
		return s
	}
	t0 := time.Now()
	resp, err := v.http.Do(req)
	if err != nil {
		s.Err = err.Error()
		return s
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		s.Err = resp.Status + ": " + strings.TrimSpace(string(b))
		return s
	}
	one := make([]byte, 1)
	if _, err := io.ReadFull(resp.Body, one); err != nil {
		s.Err = "first byte: " + err.Error()
		return s
	}
	s.FirstByte = time.Since(t0)
	n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 512<<20))
	s.Total, s.Bytes = time.Since(t0), n+1
	if err != nil {
		s.Err = "body: " + err.Error()
	}
	return s
}

// PlaybackResult summarises the playback samples.
type PlaybackResult struct {
	Requests, Failed int
	FirstError       string
	// FirstByte and Total percentiles over the successful requests.
	FirstByteP50, FirstByteP95, FirstByteMax time.Duration
	TotalP50                                 time.Duration
	MeanBytes                                int64
	Duration                                 time.Duration // asked for per request
}

func summarisePlayback(samples []PlaybackSample, d time.Duration) PlaybackResult {
	r := PlaybackResult{Requests: len(samples), Duration: d}
	var fb, tot []time.Duration
	var bytes int64
	for _, s := range samples {
		if s.Err != "" {
			r.Failed++
			if r.FirstError == "" {
				r.FirstError = s.Camera + " at " + s.Start.UTC().Format(time.RFC3339) + ": " + s.Err
			}
			continue
		}
		fb = append(fb, s.FirstByte)
		tot = append(tot, s.Total)
		bytes += s.Bytes
	}
	if len(fb) > 0 {
		r.FirstByteP50, r.FirstByteP95, r.FirstByteMax = Percentile(fb, 50), Percentile(fb, 95), Percentile(fb, 100)
		r.TotalP50 = Percentile(tot, 50)
		r.MeanBytes = bytes / int64(len(fb))
	}
	return r
}

// Percentile returns the p-th percentile (nearest rank) of ds; 0 for none. ds is not
// modified.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(p/100*float64(len(s))+0.999999) - 1
	return s[max(0, min(rank, len(s)-1))]
}

// playbackPlan spreads n requests over cameras and start times between from and to (the
// recorded span minus the requested duration): camera i×step, start from + k×span/slots.
func playbackPlan(ids []string, n int, from, to time.Time) (cams []string, starts []time.Time) {
	if n == 0 || len(ids) == 0 || !to.After(from) {
		return nil, nil
	}
	slots := 3
	span := to.Sub(from)
	for i := range n {
		cams = append(cams, ids[(i*len(ids)/n+i/len(ids))%len(ids)])
		k := i % slots
		starts = append(starts, from.Add(time.Duration(int64(span)*int64(2*k+1)/int64(2*slots))))
	}
	return cams, starts
}

func itoa(n int) string { return strconv.Itoa(n) }
