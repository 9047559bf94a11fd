package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigie-vms/vigie/loadtest/fleet"
	"github.com/vigie-vms/vigie/loadtest/simcam"
)

// benchCmd measures one core of fleet: it runs `fleet` in a child pinned to -cpu, plays
// every camera with a minimal RTSP/TCP reader in this process (pinned to the other CPUs),
// and reports frames sent, skipped and late, the lateness histogram and the child's CPU.
func benchCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("fleet-bench", flag.ContinueOnError)
	n := fs.Int("cameras", 1000, "cameras")
	bitrate := fs.Int("bitrate", 2_000_000, "clip bitrate in bit/s (0 = embedded ~1 Mbit/s)")
	duration := fs.Duration("duration", 60*time.Second, "measured window")
	warmup := fs.Duration("warmup", 5*time.Second, "time after every reader plays, before the window")
	cpu := fs.Int("cpu", 1, "CPU the fleet is pinned to with taskset (-1: not pinned)")
	codecs := fs.String("codecs", "H264", "codec mix, e.g. H264=3,H265=1")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the fleet child over the window to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Readers stay off the fleet's core.
	if *cpu >= 0 && runtime.NumCPU() > 1 {
		var set unix.CPUSet
		for c := range runtime.NumCPU() {
			if c != *cpu {
				set.Set(c)
			}
		}
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			fmt.Fprintf(os.Stderr, "warning: cannot keep the readers off CPU %d: %v\n", *cpu, err)
		}
	}
	self, err := selfCommand()
	if err != nil {
		return err
	}
	argv := append(append([]string(nil), self...), "fleet", "-cameras", strconv.Itoa(*n), "-bitrate", strconv.Itoa(*bitrate),
		"-addr", "127.0.0.1:0", "-control", "127.0.0.1:0", "-codecs", *codecs, "-log-level", "warn")
	if *cpu >= 0 {
		ts, err := exec.LookPath("taskset")
		if err != nil {
			return fmt.Errorf("taskset not found (util-linux): %w", err)
		}
		argv = append([]string{ts, "-c", strconv.Itoa(*cpu)}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start fleet: %w", err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }() //nolint:errcheck
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
	}()
	lines := bufio.NewScanner(stdout)
	ready := make(chan string, 1)
	go func() {
		for lines.Scan() {
			if l := lines.Text(); strings.HasPrefix(l, "ready ") {
				ready <- l
			}
		}
	}()
	var line string
	select {
	case line = <-ready:
	case <-time.After(3 * time.Minute): // clip generation included
		return errors.New("fleet did not report ready within 3 minutes")
	case <-ctx.Done():
		return ctx.Err()
	}
	var rtspAddrs []string
	var control string
	for _, f := range strings.Fields(line)[1:] {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "rtsp":
			rtspAddrs = strings.Split(v, ",")
		case "control":
			control = v
		}
	}
	cl := &fleet.Client{Base: control}
	cams, err := cl.Cameras(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("fleet pid %d on CPU %d: %d cameras on %v; opening readers…\n", cmd.Process.Pid, *cpu, len(cams), rtspAddrs)
	var received atomic.Uint64
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, c := range cams {
		addr, path := splitRTSP(c.URL)
		conn, br, err := rawPlay(addr, path)
		if err != nil {
			return fmt.Errorf("play %s: %w", c.URL, err)
		}
		conns = append(conns, conn)
		go func() {
			buf := make([]byte, 64<<10)
			for {
				m, err := br.Read(buf)
				received.Add(uint64(m))
				if err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(*warmup)
	st0, err := cl.Stats(ctx)
	if err != nil {
		return err
	}
	cpu0, _ := procCPU(cmd.Process.Pid)
	b0, t0 := received.Load(), time.Now()
	fmt.Printf("measuring %v…\n", *duration)
	profDone := make(chan error, 1)
	if *cpuProfile != "" {
		go func() { profDone <- fetchProfile(ctx, control, *duration, *cpuProfile) }()
	} else {
		profDone <- nil
	}
	select {
	case <-time.After(*duration):
	case <-ctx.Done():
		return ctx.Err()
	}
	st1, err := cl.Stats(ctx)
	if err != nil {
		return err
	}
	cpu1, _ := procCPU(cmd.Process.Pid)
	el := time.Since(t0)
	var late simcam.Lateness
	late.Counts = make([]uint64, len(st1.Lateness.Counts))
	for i := range late.Counts {
		late.Counts[i] = st1.Lateness.Counts[i] - st0.Lateness.Counts[i]
	}
	late.Max = st1.Lateness.Max
	frames := st1.FramesSent - st0.FramesSent
	expected := float64(len(cams)) * el.Seconds() * 25
	fmt.Printf("\nfleet-bench: %d cameras, clip %s, %v window, fleet pinned to CPU %d\n", len(cams), bitrateLabel(*bitrate), el.Round(time.Millisecond), *cpu)
	fmt.Printf("  readers playing        %d\n", st1.Readers)
	fmt.Printf("  frames sent            %d (%.0f expected at 25 fps, %.3f%%)\n", frames, expected, 100*float64(frames)/expected)
	fmt.Printf("  frames skipped         %d\n", st1.FramesSkipped-st0.FramesSkipped)
	fmt.Printf("  frames behind          %d at start, %d at end (due, not sent yet: the scheduler's backlog)\n", st0.FramesBehind, st1.FramesBehind)
	fmt.Printf("  frames late (> 40 ms)  %d\n", st1.LateFrames-st0.LateFrames)
	fmt.Printf("  packets dropped        %d (slow reader)\n", st1.PacketsDropped-st0.PacketsDropped)
	fmt.Printf("  lateness p50 ≤ %v, p99 ≤ %v, p99.9 ≤ %v, max (whole run) %v\n", late.Quantile(0.5), late.Quantile(0.99), late.Quantile(0.999), late.Max.Round(time.Microsecond))
	fmt.Printf("  lateness histogram     %s\n", histString(late))
	fmt.Printf("  received               %.1f Mbit/s per camera (%.0f Mbit/s total)\n", float64(received.Load()-b0)*8/el.Seconds()/float64(len(cams))/1e6, float64(received.Load()-b0)*8/el.Seconds()/1e6)
	fmt.Printf("  fleet CPU              %.1f%% of one core (%.3f ms per camera-second)\n", 100*(cpu1-cpu0).Seconds()/el.Seconds(), (cpu1-cpu0).Seconds()*1000/el.Seconds()/float64(len(cams)))
	fmt.Printf("  load average           %s\n", readLoad())
	if err := <-profDone; err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	if *cpuProfile != "" {
		fmt.Printf("  fleet CPU profile      %s (go tool pprof %s)\n", *cpuProfile, *cpuProfile)
	}
	return nil
}

// fetchProfile saves a CPU profile of the fleet process taken over d, through its control
// endpoint (net/http/pprof), to path.
func fetchProfile(ctx context.Context, control string, d time.Duration, path string) error {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", control, secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", req.URL, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func bitrateLabel(b int) string {
	if b == 0 {
		return "embedded ~1 Mbit/s"
	}
	return fmt.Sprintf("%.1f Mbit/s", float64(b)/1e6)
}

func histString(l simcam.Lateness) string {
	var parts []string
	for i, c := range l.Counts {
		label := "> " + simcam.LatenessBounds[len(simcam.LatenessBounds)-1].String()
		if i < len(simcam.LatenessBounds) {
			label = "≤" + simcam.LatenessBounds[i].String()
		}
		parts = append(parts, fmt.Sprintf("%s:%d", label, c))
	}
	return strings.Join(parts, " ")
}

func readLoad() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// procCPU returns utime+stime of pid.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond, nil
}

func splitRTSP(u string) (addr, path string) {
	rest := strings.TrimPrefix(u, "rtsp://")
	addr, path, _ = strings.Cut(rest, "/")
	return addr, path
}

// rawPlay plays camera with a minimal RTSP/TCP client (DESCRIBE, SETUP interleaved, PLAY)
// and returns a reader of the interleaved stream: the benchmark measures the server, not
// a client library.
func rawPlay(addr, camera string) (net.Conn, *bufio.Reader, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	tp := textproto.NewReader(br)
	url := "rtsp://" + addr + "/" + camera
	cseq := 0
	do := func(method, u string, extra ...string) (textproto.MIMEHeader, error) {
		cseq++
		req := fmt.Sprintf("%s %s RTSP/1.0\r\nCSeq: %d\r\n%s\r\n", method, u, cseq, strings.Join(extra, ""))
		if _, err := io.WriteString(conn, req); err != nil {
			return nil, err
		}
		status, err := tp.ReadLine()
		if err != nil {
			return nil, err
		}
		if !strings.HasPrefix(status, "RTSP/1.0 200") {
			return nil, fmt.Errorf("%s %s: %s", method, u, status)
		}
		hdr, err := tp.ReadMIMEHeader()
		if err != nil {
			return nil, err
		}
		if n, _ := strconv.Atoi(hdr.Get("Content-Length")); n > 0 {
			if _, err := io.CopyN(io.Discard, br, int64(n)); err != nil {
				return nil, err
			}
		}
		return hdr, nil
	}
	fail := func(err error) (net.Conn, *bufio.Reader, error) {
		conn.Close()
		return nil, nil, err
	}
	if _, err := do("DESCRIBE", url, "Accept: application/sdp\r\n"); err != nil {
		return fail(err)
	}
	hdr, err := do("SETUP", url+"/trackID=0", "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")
	if err != nil {
		return fail(err)
	}
	session, _, _ := strings.Cut(hdr.Get("Session"), ";")
	if _, err := do("PLAY", url+"/", "Session: "+session+"\r\n"); err != nil {
		return fail(err)
	}
	return conn, br, nil
}
