package scenario

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigie-vms/vigie/loadtest/fleet"
)

// fleetAPI is what the runner needs of the fleet: a *fleet.Fleet in the runner's own
// process, or a fleetProc (the fleet in a child process, pinned to cameras.cpus).
type fleetAPI interface {
	Stats() fleet.Stats
	Camera(id string) (fleet.CameraState, bool)
	URL(id string) string
	Apply(id, action string, q url.Values) (map[string]int, error)
	Close()
}

// fleetProc runs `<FleetCommand> fleet …` in a child process pinned with taskset to
// cameras.cpus (GOMAXPROCS their number) and drives it through its control endpoint. The
// fleet then shares nothing with the runner but the core: not its Go scheduler, not its
// garbage collector, not the threads that poll the nodes' health.
type fleetProc struct {
	cmd  *exec.Cmd
	cl   *fleet.Client
	log  *slog.Logger
	logf *os.File
	done chan struct{}
	urls map[string]string

	mu        sync.Mutex
	last      fleet.Stats
	statsErr  bool
	cams      map[string]fleet.CameraState
	camsAt    time.Time
	closeOnce sync.Once
}

// codecArg turns cameras.codecs into the fleet command's -codecs, in the order
// cameraList uses (sorted names), so that both give every camera the same codec.
func codecArg(c Cameras) string {
	var names []string
	for k, w := range c.Codecs {
		if w > 0 {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	var parts []string
	for _, k := range names {
		parts = append(parts, fmt.Sprintf("%s=%d", k, c.Codecs[k]))
	}
	if len(parts) == 0 {
		return "H264"
	}
	return strings.Join(parts, ",")
}

// startFleetProc starts the child and waits until it serves cams (clip generation
// included, at most 3 minutes).
func startFleetProc(ctx context.Context, self []string, c Cameras, cams []fleet.Camera, cpus []int, clipDir, logPath string, log *slog.Logger) (*fleetProc, error) {
	ts, err := exec.LookPath("taskset")
	if err != nil {
		return nil, fmt.Errorf("fleet process: cameras.cpus needs taskset (util-linux): %w", err)
	}
	list := make([]string, len(cpus))
	for i, cpu := range cpus {
		list[i] = strconv.Itoa(cpu)
	}
	argv := append([]string{ts, "-c", strings.Join(list, ",")}, self...)
	argv = append(argv, "fleet", "-cameras", strconv.Itoa(len(cams)), "-prefix", c.Prefix,
		"-bitrate", strconv.Itoa(c.Bitrate), "-codecs", codecArg(c), "-addr", "127.0.0.1:0", "-control", "127.0.0.1:0", "-log-level", "warn")
	if c.Size != "" {
		argv = append(argv, "-size", c.Size)
	}
	if c.AltSize != "" {
		argv = append(argv, "-alt-size", c.AltSize)
	}
	if clipDir != "" {
		argv = append(argv, "-clip-dir", clipDir)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("fleet process: %w", err)
	}
	fmt.Fprintf(logf, "=== %s: %s\n", time.Now().UTC().Format(time.RFC3339), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(len(cpus)))
	cmd.Stderr = logf
	// Its own process group: a Ctrl-C at the terminal stops the runner's timed phase, not
	// the fleet, whose counters the runner still reads before stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("fleet process: start: %w", err)
	}
	p := &fleetProc{cmd: cmd, log: log, logf: logf, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l := sc.Text()
			if strings.HasPrefix(l, "ready ") {
				select {
				case ready <- l:
				default:
				}
			}
			fmt.Fprintln(logf, l)
		}
	}()
	var line string
	select {
	case line = <-ready:
	case <-p.done:
		p.Close()
		return nil, fmt.Errorf("fleet process exited before it was ready (see %s)", logPath)
	case <-time.After(3 * time.Minute):
		p.Close()
		return nil, fmt.Errorf("fleet process: not ready within 3 minutes (see %s)", logPath)
	case <-ctx.Done():
		p.Close()
		return nil, ctx.Err()
	}
	for _, f := range strings.Fields(line)[1:] {
		if k, v, _ := strings.Cut(f, "="); k == "control" {
			p.cl = &fleet.Client{Base: v}
		}
	}
	if p.cl == nil {
		p.Close()
		return nil, fmt.Errorf("fleet process: no control endpoint in %q", line)
	}
	states, err := p.cl.Cameras(ctx)
	if err != nil {
		p.Close()
		return nil, err
	}
	p.urls = map[string]string{}
	byID := map[string]fleet.CameraState{}
	for _, s := range states {
		byID[s.ID] = s
		p.urls[s.ID] = s.URL
	}
	var errs []error
	for _, cam := range cams {
		s, ok := byID[cam.ID]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("camera %s is not served", cam.ID))
		case cam.Codec != "" && s.Codec != cam.Codec:
			errs = append(errs, fmt.Errorf("camera %s is %s, want %s", cam.ID, s.Codec, cam.Codec))
		}
	}
	if len(states) != len(cams) {
		errs = append(errs, fmt.Errorf("%d cameras served, want %d", len(states), len(cams)))
	}
	if err := errors.Join(errs...); err != nil {
		p.Close()
		return nil, fmt.Errorf("fleet process: %w", err)
	}
	return p, nil
}

// Pid returns the child's process id.
func (p *fleetProc) Pid() int { return p.cmd.Process.Pid }

// Stats fetches the fleet's counters; on failure the last ones (logged once).
func (p *fleetProc) Stats() fleet.Stats {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := p.cl.Stats(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		if !p.statsErr {
			p.statsErr = true
			p.log.Warn("fleet process: stats", slog.Any("error", err))
		}
		return p.last
	}
	p.last = st
	return st
}

// Camera returns a camera's state, from one fetch of every camera (refreshed when older
// than a second: the runner asks for every camera in a row).
func (p *fleetProc) Camera(id string) (fleet.CameraState, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cams == nil || time.Since(p.camsAt) > time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		states, err := p.cl.Cameras(ctx)
		cancel()
		if err != nil {
			p.log.Warn("fleet process: cameras", slog.Any("error", err))
			if p.cams == nil {
				return fleet.CameraState{}, false
			}
		} else {
			p.cams, p.camsAt = map[string]fleet.CameraState{}, time.Now()
			for _, s := range states {
				p.cams[s.ID] = s
			}
		}
	}
	s, ok := p.cams[id]
	return s, ok
}

// URL returns a camera's RTSP URL ("" for an unknown id).
func (p *fleetProc) URL(id string) string { return p.urls[id] }

// Apply runs an action on the child (see fleet.Fleet.Apply); the counts are not returned.
func (p *fleetProc) Apply(id, action string, q url.Values) (map[string]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return nil, p.cl.Apply(ctx, id, action, q)
}

// Close stops the child (SIGINT, then SIGKILL after 10 s).
func (p *fleetProc) Close() {
	p.closeOnce.Do(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		p.logf.Close()
	})
}
