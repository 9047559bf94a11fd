package e2e

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// vigieBin is the binary built by TestMain, or the one VIGIE_E2E_BIN names.
var vigieBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	if bin := os.Getenv("VIGIE_E2E_BIN"); bin != "" {
		// A binary built elsewhere (a release artefact, or while the tree does not build).
		vigieBin = bin
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "vigie-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	vigieBin = filepath.Join(dir, "vigie")
	start := time.Now()
	cmd := exec.Command("go", "build", "-o", vigieBin, "github.com/vigie-vms/vigie/tools/vigie")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: go build ./tools/vigie:", err)
		return 1
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "e2e: built %s in %s\n", vigieBin, time.Since(start).Round(time.Millisecond))
	}
	return m.Run()
}

// needTools skips the test when one of tools is not on PATH, or fails it when CI=true.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required (CI=true): %v", tool, err)
			}
			t.Skipf("skipped: %s not found on PATH (%v); install it (Debian: apt-get install ffmpeg) to run this test", tool, err)
		}
	}
}

// handedOut are the addresses freeAddr returned in this test process: a port nobody
// listens on yet may have been given to a node that has not bound it yet (a CI run saw
// one node's RTSP port given to the next node's gRPC: "bind: address already in use").
var handedOut = struct {
	sync.Mutex
	addrs map[string]bool
}{addrs: map[string]bool{}}

// freeAddr returns a 127.0.0.1 address with a port nobody listens on right now, and that
// it never returned before.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		a := ln.Addr().String()
		ln.Close()
		handedOut.Lock()
		fresh := !handedOut.addrs[a]
		handedOut.addrs[a] = true
		handedOut.Unlock()
		if fresh {
			return a
		}
	}
	t.Fatal("find a free port: 100 tries gave ports already handed out")
	return ""
}

// syncBuffer is a bytes.Buffer safe for a process writing while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// addrs are the listen addresses of one node; a restarted node keeps them (its Raft
// configuration names its own address).
type addrs struct {
	HTTP, GRPC, RTSP, Raft string
}

func freeAddrs(t *testing.T) addrs {
	return addrs{HTTP: freeAddr(t), GRPC: freeAddr(t), RTSP: freeAddr(t), Raft: freeAddr(t)}
}

func (a addrs) flags() []string {
	return []string{"--http-addr", a.HTTP, "--grpc-addr", a.GRPC, "--rtsp-addr", a.RTSP, "--raft-addr", a.Raft}
}

// proc is a vigie process started by a test.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	addrs  addrs
	dir    string // data dir (node) or working dir (demo)
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	err    error // Wait's result, valid after done
}

// startProc runs `vigie args...` in dir, its output captured; it is killed at the end of
// the test, and its output goes to the test log when the test failed.
func startProc(t *testing.T, name, dir string, a addrs, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, addrs: a, dir: dir, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(vigieBin, args...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s (pid %d) stdout:\n%s", p.name, p.cmd.Process.Pid, p.stdout.String())
			t.Logf("--- %s (pid %d) stderr:\n%s", p.name, p.cmd.Process.Pid, tail(p.stderr.String(), 200))
		}
	})
	return p
}

// startNode starts `vigie node` on dataDir with the given addresses and waits until its
// REST API answers.
func startNode(t *testing.T, name, dataDir string, a addrs, extra ...string) *proc {
	t.Helper()
	args := append([]string{"node", "--data-dir", dataDir, "--node-id", "e2e-1"}, a.flags()...)
	args = append(args, extra...)
	p := startProc(t, name, dataDir, a, args...)
	p.waitReady(30 * time.Second)
	return p
}

func (p *proc) base() string { return "http://" + p.addrs.HTTP }

// waitReady waits until GET /v1/cameras answers 200 (the cluster has a leader and the
// gateway listens).
func (p *proc) waitReady(timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.done:
			p.t.Fatalf("%s exited before it was ready: %v", p.name, p.err)
		default:
		}
		res, err := http.Get(p.base() + "/v1/cameras")
		if err == nil {
			io.Copy(io.Discard, res.Body) //nolint:errcheck
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s not ready after %s (last: %v)", p.name, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill sends SIGKILL (a crash: nothing is flushed) and waits for the process to be gone.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Kill() //nolint:errcheck
	<-p.done
}

// stop sends SIGTERM and waits (at most 20 s, then SIGKILL) for a graceful exit.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(os.Interrupt) //nolint:errcheck
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.t.Errorf("%s did not stop within 20s of SIGINT; killed", p.name)
		p.kill()
	}
}

// waitStdout waits until the process's stdout holds substr and returns the stdout.
func (p *proc) waitStdout(substr string, timeout time.Duration) string {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := p.stdout.String()
		if strings.Contains(out, substr) {
			return out
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited (%v) before printing %q", p.name, p.err, substr)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not print %q within %s", p.name, substr, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, lines int) string {
	ls := strings.Split(s, "\n")
	if len(ls) <= lines {
		return s
	}
	return fmt.Sprintf("[… %d lines cut …]\n%s", len(ls)-lines, strings.Join(ls[len(ls)-lines:], "\n"))
}

// logLines returns the lines of the process's stderr that contain substr.
func (p *proc) logLines(substr string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(p.stderr.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), substr) {
			out = append(out, sc.Text())
		}
	}
	return out
}

// run runs a command with a timeout and returns its combined output.
func run(ctx context.Context, t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
