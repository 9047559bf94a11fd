package recbench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The fleet and bare subprocesses speak a line protocol on stdin/stdout:
//
//	child → parent:  "ready <detail>"            once, when serving / connected
//	parent → child:  "stats"                     any number of times
//	child → parent:  one JSON object per "stats"
//	parent closes stdin                          the child shuts down and exits 0
//
// Logs go to stderr, which the parent sends to a file of the work directory.
const (
	lineReady = "ready"
	lineStats = "stats"
)

// serveControl answers "stats" lines on in with stats() encoded as JSON on out until in
// ends (the parent closed it) or ctx is done.
func serveControl(ctx context.Context, in io.Reader, out io.Writer, stats func() any) error {
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			select {
			case lines <- strings.TrimSpace(sc.Text()):
			case <-ctx.Done():
				return
			}
		}
	}()
	enc := json.NewEncoder(out)
	for {
		select {
		case <-ctx.Done():
			return nil
		case l, ok := <-lines:
			if !ok {
				return nil
			}
			if l != lineStats {
				return fmt.Errorf("control: unknown request %q, want %q", l, lineStats)
			}
			if err := enc.Encode(stats()); err != nil {
				return fmt.Errorf("control: %w", err)
			}
		}
	}
}

// child is a subprocess started by the benchmark, optionally pinned to one core.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{}
	err   error // set before done is closed
}

// pinned returns argv run on one core with taskset, or argv itself when cpu < 0.
func pinned(cpu int, argv []string) ([]string, error) {
	if cpu < 0 {
		return argv, nil
	}
	ts, err := exec.LookPath("taskset")
	if err != nil {
		return nil, fmt.Errorf("pin to CPU %d: taskset: %w (install util-linux, or pass -no-pin)", cpu, ErrToolMissing)
	}
	return append([]string{ts, "-c", strconv.Itoa(cpu)}, argv...), nil
}

// startChild runs argv (pinned to cpu unless cpu < 0) with stderr, and stdout too when
// !protocol, appended to logPath. taskset execs the program, so the child's PID is the
// measured process's.
func startChild(name string, cpu int, logPath string, protocol bool, env []string, argv ...string) (*child, error) {
	argv, err := pinned(cpu, argv)
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = logf
	cmd.Env = append(os.Environ(), env...)
	c := &child{name: name, cmd: cmd, lines: make(chan string, 16), done: make(chan struct{})}
	var stdout io.ReadCloser
	if protocol {
		if c.stdin, err = cmd.StdinPipe(); err != nil {
			logf.Close()
			return nil, err
		}
		if stdout, err = cmd.StdoutPipe(); err != nil {
			logf.Close()
			return nil, err
		}
	} else {
		cmd.Stdout = logf
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, strings.Join(argv, " "), err)
	}
	if stdout != nil {
		go func() {
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				c.lines <- sc.Text()
			}
			close(c.lines)
		}()
	}
	go func() {
		c.err = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// line returns the child's next stdout line, waiting at most timeout.
func (c *child) line(ctx context.Context, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case l, ok := <-c.lines:
		if !ok {
			<-c.done
			return "", fmt.Errorf("%s exited (%v) before answering; see its log", c.name, c.err)
		}
		return l, nil
	case <-t.C:
		return "", fmt.Errorf("%s did not answer within %v", c.name, timeout)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// ready waits for the "ready" line and returns what follows it.
func (c *child) ready(ctx context.Context, timeout time.Duration) (string, error) {
	l, err := c.line(ctx, timeout)
	if err != nil {
		return "", err
	}
	detail, ok := strings.CutPrefix(l, lineReady)
	if !ok {
		return "", fmt.Errorf("%s: first line %q, want %q", c.name, l, lineReady)
	}
	return strings.TrimSpace(detail), nil
}

// stats asks for and decodes one stats object.
func (c *child) stats(ctx context.Context, v any) error {
	if _, err := io.WriteString(c.stdin, lineStats+"\n"); err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	l, err := c.line(ctx, 10*time.Second)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(l), v); err != nil {
		return fmt.Errorf("%s: stats %q: %w", c.name, truncate([]byte(l), 200), err)
	}
	return nil
}

// stop ends the child: protocol children get their stdin closed, others SIGTERM; after
// grace the process is killed. It returns the exit error of a child that did not exit
// cleanly (a kill is not an error: the caller asked for the end).
func (c *child) stop(grace time.Duration) error {
	select {
	case <-c.done:
		return c.exitErr()
	default:
	}
	if c.stdin != nil {
		c.stdin.Close()
	} else {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
		return c.exitErr()
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("%s did not exit within %v and was killed", c.name, grace)
	}
}

func (c *child) exitErr() error {
	if c.err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(c.err, &ee) {
		return fmt.Errorf("%s: %w", c.name, c.err)
	}
	return c.err
}
