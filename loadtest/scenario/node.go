package scenario

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Node states, as the progress line shows them.
const (
	StateNotStarted = "not-started"
	StateStarting   = "starting"
	StateUp         = "up"
	StateStopped    = "sigstop"
	StateKilled     = "killed"
	StateExited     = "exited"
)

// nodeProc is one `vigie node` process the runner manages.
type nodeProc struct {
	index   int
	id      string
	host    string
	addrs   map[string]string // http_addr, grpc_addr, rtsp_addr, raft_addr
	dataDir string
	logPath string
	http    *http.Client

	mu       sync.Mutex
	cmd      *exec.Cmd
	state    string
	exit     string // how the last process ended
	done     chan struct{}
	starts   int
	tmpfs    bool // a tmpfs is mounted on dataDir (full-disk fault)
	lastCPU  time.Duration
	lastAt   time.Time
	prevPIDs []int
}

func (n *nodeProc) base() string { return "http://" + n.addrs["http_addr"] }

func (n *nodeProc) State() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state
}

func (n *nodeProc) pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil || n.state == StateKilled || n.state == StateExited {
		return 0
	}
	return n.cmd.Process.Pid
}

// freePorts returns n distinct free TCP ports on host.
func freePorts(host string, n int) ([]string, error) {
	var out []string
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("free port on %s: %w (is %s a usable loopback address here?)", host, err, host)
		}
		lns = append(lns, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// errConflict marks a 409 answer: the object already exists (a retried create).
var errConflict = errors.New("already exists")

// expand replaces the placeholders of Nodes.Args (see there).
func expand(arg string, self *nodeProc, all []*nodeProc) string {
	if !strings.Contains(arg, "{") {
		return arg
	}
	vars := map[string]string{"i": strconv.Itoa(self.index), "node_id": self.id, "data_dir": self.dataDir}
	for k, v := range self.addrs {
		vars[k] = v
	}
	var pairs []string
	for k, v := range vars {
		pairs = append(pairs, "{"+k+"}", v)
	}
	for _, o := range all {
		ov := map[string]string{"node_id": o.id, "data_dir": o.dataDir}
		for k, v := range o.addrs {
			ov[k] = v
		}
		for k, v := range ov {
			pairs = append(pairs, fmt.Sprintf("{%s:%d}", k, o.index), v)
		}
	}
	for _, k := range []string{"node_id", "http_addr", "grpc_addr", "rtsp_addr", "raft_addr", "gossip_addr"} {
		var l []string
		for _, o := range all {
			if k == "node_id" {
				l = append(l, o.id)
			} else {
				l = append(l, o.addrs[k])
			}
		}
		pairs = append(pairs, "{all:"+k+"}", strings.Join(l, ","))
	}
	return strings.NewReplacer(pairs...).Replace(arg)
}

// start runs the node process (again, for a restart) and waits for its API.
func (n *nodeProc) start(ctx context.Context, bin string, sc *Scenario, all []*nodeProc) error {
	args := []string{"node", "--node-id", n.id, "--data-dir", n.dataDir,
		"--http-addr", n.addrs["http_addr"], "--grpc-addr", n.addrs["grpc_addr"],
		"--rtsp-addr", n.addrs["rtsp_addr"], "--raft-addr", n.addrs["raft_addr"]}
	if len(all) > 1 {
		// One cluster: every node gossips, shares the credentials key, and every node but
		// the first joins through the first.
		args = append(args, "--gossip-addr", n.addrs["gossip_addr"],
			"--secret-key-file", filepath.Join(filepath.Dir(filepath.Dir(n.dataDir)), "secret.key"))
		if n.index > 0 {
			args = append(args, "--seeds", all[0].addrs["gossip_addr"])
		}
	}
	for _, a := range sc.Nodes.Args {
		args = append(args, expand(a, n, all))
	}
	for _, a := range sc.Nodes.NodeArgs[n.index] {
		args = append(args, expand(a, n, all))
	}
	if err := os.MkdirAll(n.dataDir, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "\n=== %s: %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), sc.Nodes.Env...)
	cpuList := sc.Nodes.CPUs
	if cpuList == "" && sc.Cameras.CPUs != "" {
		// The runner may be pinned to the fleet's CPUs, and a child inherits its
		// affinity: give the node every CPU back.
		cpuList = fmt.Sprintf("0-%d", runtime.NumCPU()-1)
	}
	if cpuList != "" {
		// Pinned: taskset execs vigie (same PID); GOMAXPROCS matches the CPUs given.
		cpus, err := ParseCPUList(cpuList)
		if err != nil {
			logf.Close()
			return fmt.Errorf("node %d: nodes.cpus: %w", n.index, err)
		}
		ts, err := exec.LookPath("taskset")
		if err != nil {
			logf.Close()
			return fmt.Errorf("node %d: nodes.cpus needs taskset (util-linux): %w", n.index, err)
		}
		cmd = exec.Command(ts, append([]string{"-c", cpuList, bin}, args...)...)
		cmd.Env = append(os.Environ(), sc.Nodes.Env...)
		if sc.Nodes.CPUs != "" && !envHas(sc.Nodes.Env, "GOMAXPROCS") {
			cmd.Env = append(cmd.Env, "GOMAXPROCS="+strconv.Itoa(len(cpus)))
		}
		fmt.Fprintf(logf, "=== pinned to CPUs %s (taskset -c)\n", cpuList)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C in the terminal reaches the runner only, which then
	// stops the nodes itself, in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("node %d: start %s: %w", n.index, bin, err)
	}
	done := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.state, n.done = cmd, StateStarting, done
	n.starts++
	n.lastCPU, n.lastAt = 0, time.Time{}
	n.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		if n.state != StateKilled {
			n.state = StateExited
		}
		n.exit = fmt.Sprint(err)
		if err == nil {
			n.exit = "exit status 0"
		}
		n.mu.Unlock()
		close(done)
	}()
	deadline := time.Now().Add(sc.Nodes.StartTimeout.D())
	for {
		resp, err := n.http.Get(n.base() + "/v1/cluster/status")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				n.mu.Lock()
				if n.state == StateStarting {
					n.state = StateUp
				}
				n.mu.Unlock()
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("node %d (%s) exited (%s) before its API answered: see %s", n.index, n.id, n.exit, n.logPath)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %d (%s): API %s did not answer within %v (last error: %v): see %s", n.index, n.id, n.base(), sc.Nodes.StartTimeout.D(), err, n.logPath)
		}
	}
}

func envHas(env []string, key string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, key+"=") {
			return true
		}
	}
	return false
}

// signal sends sig to the node's process; state is the node's state afterwards.
func (n *nodeProc) signal(sig syscall.Signal, state string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.state == StateKilled || n.state == StateExited || n.state == StateNotStarted {
		return fmt.Errorf("node %d is %s: nothing to signal", n.index, n.state)
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("node %d: %v: %w", n.index, sig, err)
	}
	if state != "" {
		n.state = state
	}
	return nil
}

// stop ends the node: SIGCONT (if stopped), SIGTERM, SIGKILL after grace.
func (n *nodeProc) stop(grace time.Duration) {
	n.mu.Lock()
	cmd, done, state := n.cmd, n.done, n.state
	n.mu.Unlock()
	if cmd == nil || done == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	if state == StateStopped {
		_ = cmd.Process.Signal(syscall.SIGCONT)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

// call does one API request with a JSON body; out may be nil.
func (n *nodeProc) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		switch v := in.(type) {
		case string:
			body = strings.NewReader(v)
		default:
			b, err := json.Marshal(in)
			if err != nil {
				return err
			}
			body = bytes.NewReader(b)
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, n.base()+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		s := strings.TrimSpace(string(b))
		if len(s) > 300 {
			s = s[:300] + "…"
		}
		err := fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, s)
		if resp.StatusCode == http.StatusConflict {
			err = fmt.Errorf("%w (%w)", err, errConflict)
		}
		return err
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// healthSum is one node's view of camera health.
type healthSum struct {
	Cameras, Recording int
	BitrateBps         float64
	FirstError         string
	// PacketsLost and Reconnects add up the cameras' counters (cumulative).
	PacketsLost, Reconnects uint64
	// MaxLag is the age of the oldest last frame among recording cameras.
	MaxLag time.Duration
}

// u64s decodes protojson's uint64 (a string) or a plain number.
type u64s uint64

func (n *u64s) UnmarshalJSON(b []byte) error {
	v := strings.Trim(string(b), `"`)
	if v == "" || v == "null" {
		*n = 0
		return nil
	}
	x, err := strconv.ParseUint(v, 10, 64)
	*n = u64s(x)
	return err
}

// health sums GET /v1/cameras:health over every page.
func (n *nodeProc) health(ctx context.Context) (healthSum, error) {
	var sum healthSum
	tok := ""
	now := time.Now()
	for range 200 {
		var page struct {
			Health []struct {
				Camera      string    `json:"camera_id"`
				State       string    `json:"state"`
				BitrateBps  float64   `json:"bitrate_bps"`
				LastError   string    `json:"last_error"`
				LastFrame   time.Time `json:"last_frame"`
				PacketsLost u64s      `json:"packets_lost"`
				Reconnects  u64s      `json:"reconnects"`
			} `json:"health"`
			Next string `json:"next_page_token"`
		}
		q := url.Values{"page_size": {"1000"}}
		if tok != "" {
			q.Set("page_token", tok)
		}
		if err := n.call(ctx, http.MethodGet, "/v1/cameras:health?"+q.Encode(), nil, &page); err != nil {
			return sum, err
		}
		for _, h := range page.Health {
			sum.Cameras++
			sum.PacketsLost += uint64(h.PacketsLost)
			sum.Reconnects += uint64(h.Reconnects)
			if h.State == "recording" {
				sum.Recording++
				sum.BitrateBps += h.BitrateBps
				if !h.LastFrame.IsZero() {
					sum.MaxLag = max(sum.MaxLag, now.Sub(h.LastFrame))
				}
			} else if sum.FirstError == "" && h.LastError != "" {
				sum.FirstError = h.Camera + ": " + h.LastError
			}
		}
		if page.Next == "" {
			return sum, nil
		}
		tok = page.Next
	}
	return sum, fmt.Errorf("camera health: more than 200 pages")
}

// segmentFile picks a footage file to corrupt: a "*.seg" file under the data dir (not a
// quarantined one), preferring the largest of those not written for 2 s (sealed), else the
// largest. It never touches anything else (keys, catalog, Raft log).
func segmentFile(dir string) (string, int64, error) {
	var best, anyBest string
	var size, anySize int64
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".seg") || strings.Contains(p, "quarantine") {
			return nil
		}
		fi, err := d.Info()
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		if fi.Size() > anySize {
			anyBest, anySize = p, fi.Size()
		}
		if time.Since(fi.ModTime()) >= 2*time.Second && fi.Size() > size {
			best, size = p, fi.Size()
		}
		return nil
	})
	if err != nil {
		return "", 0, err
	}
	if best == "" {
		best, size = anyBest, anySize
	}
	if best == "" {
		return "", 0, fmt.Errorf("no segment file (*.seg) under %s", dir)
	}
	return best, size, nil
}

// droppedFramesMetric is the node's count of video frames it did not record
// (node/ingest.FramesDropped), summed over its reasons.
const droppedFramesMetric = "vigie_ingest_frames_dropped_total"

// framesDropped reads droppedFramesMetric from the node's /metrics (the sum over reasons).
// ok is false when the node does not export it (an older vigie).
func (n *nodeProc) framesDropped(ctx context.Context) (total uint64, ok bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.base()+"/metrics", nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := n.http.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseDropped(resp.Body)
}

// parseDropped sums the samples of droppedFramesMetric in a Prometheus text exposition.
func parseDropped(r io.Reader) (total uint64, ok bool, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, droppedFramesMetric) {
			continue
		}
		rest := line[len(droppedFramesMetric):]
		if rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue // another metric sharing the prefix
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, perr := strconv.ParseFloat(f[0], 64)
		if perr != nil {
			return 0, false, fmt.Errorf("metrics: %q: %w", line, perr)
		}
		total += uint64(v)
		ok = true
	}
	return total, ok, sc.Err()
}
