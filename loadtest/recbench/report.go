package recbench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

func (r Result) measures() []*Measure {
	var out []*Measure
	for _, m := range []*Measure{r.Bare, r.Record} {
		if m != nil {
			out = append(out, m)
		}
	}
	return out
}

func ratioText(r Result, m *Measure) string {
	switch {
	case m == r.Bare:
		return "1.00"
	case r.Ratio > 0:
		return fmt.Sprintf("%.2f", r.Ratio)
	}
	return "–"
}

func mib(b int64) string { return fmt.Sprintf("%.0f", float64(b)/(1<<20)) }

// WriteTable writes the figures as an aligned text table, then the playback times and
// any problem.
func (rep *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "cameras\tprocess\tCPU ms/cam-s\t× bare\tframes/s (want)\tRTP pkts/s\tlost\tRSS MiB\twritten Mbit/s/cam\tfleet ms/cam-s")
	for _, r := range rep.Results {
		for _, m := range r.measures() {
			disk := "–"
			if m.DiskBitsPerCamSec > 0 {
				disk = fmt.Sprintf("%.2f", m.DiskBitsPerCamSec/1e6)
			}
			fmt.Fprintf(tw, "%d\t%s\t%.3f\t%s\t%.0f (%.0f)\t%.0f\t%d\t%s\t%s\t%.3f\n",
				r.Cameras, m.Process, m.MsPerCamSec, ratioText(r, m), m.FramesPerSec, m.ExpectedFPS,
				m.PacketsPerSec, m.Lost, mib(m.RSS), disk, m.FleetMsPerCamSec)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rep.Results {
		if p := r.Playback; p != nil {
			fmt.Fprintf(w, "playback at %d cameras: %s\n", r.Cameras, p.text())
		}
		for _, m := range r.measures() {
			for _, pr := range m.Problems {
				fmt.Fprintf(w, "warning: %d cameras, %s: %s\n", r.Cameras, m.Process, pr)
			}
		}
		if r.PerfReport != "" {
			fmt.Fprintf(w, "perf report of the node at %d cameras: %s\n", r.Cameras, r.PerfReport)
		}
	}
	for _, v := range rep.Verdicts() {
		fmt.Fprintln(w, v)
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func (p PlaybackResult) text() string {
	if p.Requests == 0 {
		return fmt.Sprintf("skipped: less than %v recorded after the warm-up (lengthen -window)", p.Duration)
	}
	s := fmt.Sprintf("first byte median %s, p95 %s, max %s; whole %v range median %s (%.1f MB); %d requests",
		ms(p.FirstByteP50), ms(p.FirstByteP95), ms(p.FirstByteMax), p.Duration, ms(p.TotalP50), float64(p.MeanBytes)/1e6, p.Requests)
	if p.Failed > 0 {
		s += fmt.Sprintf(", %d FAILED (first: %s)", p.Failed, p.FirstError)
	}
	return s
}

// Verdicts compares each fleet size with TargetRatio, one sentence each.
func (rep *Report) Verdicts() []string {
	var out []string
	for _, r := range rep.Results {
		if r.Ratio == 0 {
			continue
		}
		if r.Ratio <= TargetRatio {
			out = append(out, fmt.Sprintf("%d cameras: recording costs %.2f× the bare receive: target ≤ %.1f× met.", r.Cameras, r.Ratio, TargetRatio))
		} else {
			out = append(out, fmt.Sprintf("%d cameras: recording costs %.2f× the bare receive: target ≤ %.1f× MISSED by %.0f %% (%.3f ms per camera-second over the %.3f allowed).",
				r.Cameras, r.Ratio, TargetRatio, (r.Ratio/TargetRatio-1)*100, r.Record.MsPerCamSec, TargetRatio*r.Bare.MsPerCamSec))
		}
	}
	return out
}

// Markdown renders the run as a section to paste or append to BENCHMARKS.md: the
// command, the machine, the settings, the table, playback times, problems and verdicts.
func (rep *Report) Markdown() string {
	var b strings.Builder
	c := rep.Config
	m := rep.Machine
	fmt.Fprintf(&b, "### recbench, %s\n\n", rep.Date.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- Command: `%s`\n", rep.Command)
	fmt.Fprintf(&b, "- Machine: %d CPUs (nproc), %s, Linux %s, %s; load average (1/5/15 min) %s at the start, %s at the end\n",
		m.CPUs, m.CPUModel, m.Kernel, m.GoVersion, m.LoadBefore, m.LoadAfter)
	fmt.Fprintf(&b, "- Streams: %s, %d fps, %.2f Mbit/s, keyframe every %.1f s, pulled over RTSP/TCP on 127.0.0.1 from simcam\n",
		rep.Clip.Codec, rep.Clip.FPS, rep.Clip.Bitrate/1e6, gopSeconds(rep.Clip))
	pin := fmt.Sprintf("measured process on CPU %d, simulated cameras on CPU %d (taskset; Go sets GOMAXPROCS=1 from the affinity)", c.MeasuredCPU, c.FleetCPU)
	if c.NoPin {
		pin = "unpinned"
	}
	sync := "fsync on (as shipped)"
	if c.NoSync {
		sync = "--no-sync"
	}
	fmt.Fprintf(&b, "- Method: %s; warm-up %v then a %v window; CPU = utime+stime from /proc/PID/stat; vigie node %s\n\n", pin, c.Warmup, c.Window, sync)
	b.WriteString("| cameras | measured process | CPU ms per camera-second | × bare | frames/s (expected) | RTP packets/s | lost | RSS MiB | written Mbit/s per camera | fleet CPU ms per camera-second |\n")
	b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.Results {
		for _, ms := range r.measures() {
			disk := "–"
			if ms.DiskBitsPerCamSec > 0 {
				disk = fmt.Sprintf("%.2f", ms.DiskBitsPerCamSec/1e6)
			}
			fmt.Fprintf(&b, "| %d | %s | **%.3f** | %s | %.0f (%.0f) | %.0f | %d | %s | %s | %.3f |\n",
				r.Cameras, ms.Process, ms.MsPerCamSec, ratioText(r, ms), ms.FramesPerSec, ms.ExpectedFPS,
				ms.PacketsPerSec, ms.Lost, mib(ms.RSS), disk, ms.FleetMsPerCamSec)
		}
	}
	b.WriteString("\n")
	for _, r := range rep.Results {
		if p := r.Playback; p != nil {
			fmt.Fprintf(&b, "- Playback (`GET /media/v1/cameras/{id}/stream.mp4?start=T&duration=%v`, sequential, while the node records %d cameras): %s\n",
				p.Duration, r.Cameras, p.text())
		}
	}
	for _, r := range rep.Results {
		for _, ms := range r.measures() {
			for _, pr := range ms.Problems {
				fmt.Fprintf(&b, "- Warning (%d cameras, %s): %s\n", r.Cameras, ms.Process, pr)
			}
		}
	}
	for _, v := range rep.Verdicts() {
		fmt.Fprintf(&b, "- %s\n", v)
	}
	return b.String()
}

func gopSeconds(ci ClipInfo) float64 {
	if ci.Keyframes == 0 || ci.FPS == 0 {
		return 0
	}
	return float64(ci.Frames) / float64(ci.Keyframes) / float64(ci.FPS)
}

// AppendMarkdown appends Markdown() to the file at path (created if missing), preceded by
// a blank line.
func (rep *Report) AppendMarkdown(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("append report: %w", err)
	}
	if _, err := io.WriteString(f, "\n"+rep.Markdown()); err != nil {
		f.Close()
		return fmt.Errorf("append report to %s: %w", path, err)
	}
	return f.Close()
}
