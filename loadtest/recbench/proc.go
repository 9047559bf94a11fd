package recbench

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of utime and stime in /proc/PID/stat (USER_HZ, 100 on every Linux
// architecture Go supports; `getconf CLK_TCK` prints it).
const userHZ = 100

// ProcSample is a process's cumulated CPU time and resident memory at one instant.
type ProcSample struct {
	At  time.Time
	CPU time.Duration // utime + stime, all threads, since the process started
	RSS int64         // bytes
}

// ReadProc samples /proc/PID. CPU has a resolution of 10 ms (USER_HZ); over a 20 s window
// of a process using a few hundred ms per second that is well under 1 %.
func ReadProc(pid int) (ProcSample, error) {
	at := time.Now()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcSample{}, fmt.Errorf("process %d: %w", pid, err)
	}
	ticks, err := parseStatCPU(stat)
	if err != nil {
		return ProcSample{}, fmt.Errorf("process %d: /proc/%d/stat: %w", pid, pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcSample{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return ProcSample{
		At:  at,
		CPU: time.Duration(ticks) * time.Second / userHZ,
		RSS: parseStatusKB(status, "VmRSS:") * 1024,
	}, nil
}

// parseStatCPU returns utime+stime (fields 14 and 15) of a /proc/PID/stat line. The
// command name (field 2) may hold spaces and parentheses: fields are counted after the
// last ')'.
func parseStatCPU(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no ')' in %q", truncate(stat, 80))
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime is field 14 → f[11], stime field 15 → f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("utime %q / stime %q are not numbers", f[11], f[12])
	}
	return u + s, nil
}

// parseStatusKB returns the value in kB of a /proc/PID/status line such as "VmRSS: 123 kB",
// or 0 when absent.
func parseStatusKB(status []byte, key string) int64 {
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// Machine describes where a run happened, for the report.
type Machine struct {
	CPUs      int    // runtime.NumCPU (what nproc prints)
	CPUModel  string // "model name" of /proc/cpuinfo
	Kernel    string
	GoVersion string
	// LoadBefore and LoadAfter are /proc/loadavg's first three fields at the start and end
	// of the whole run: the machine is shared, and a high load skews the figures.
	LoadBefore, LoadAfter string
}

// ReadMachine fills Machine from /proc; missing files leave fields empty.
func ReadMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadBefore: LoadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = cpuModel(b)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func cpuModel(cpuinfo []byte) string {
	for _, line := range strings.Split(string(cpuinfo), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// LoadAvg returns the 1, 5 and 15 minute load averages ("4.96 6.89 4.51"), or "" when
// /proc/loadavg cannot be read.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
