package report

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/vigie-vms/vigie/loadtest/scenario"
	"github.com/vigie-vms/vigie/loadtest/verify"
)

// maxRows bounds the rows of the gap chart and camera table: cameras with problems first.
const maxRows = 200

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"}

// HTML writes the self-contained page.
func HTML(out io.Writer, res *scenario.Result) error {
	w := bufio.NewWriter(out)
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	sc := res.Scenario
	s := res.Summary
	ok, why := Verdict(res)
	p(`<!doctype html><html><head><meta charset="utf-8"><title>Vigie load test: %s</title><style>
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.pass{color:#1a7f37;font-weight:bold}.fail{color:#c00;font-weight:bold}
svg{background:#fff;border:1px solid #eee}.small{font-size:12px;color:#666}
</style></head><body>`, esc(sc.Name))
	p(`<h1>Vigie load test: %s</h1><p>%s</p>`, esc(sc.Name), esc(sc.Description))
	if ok {
		p(`<p class="pass">PASS</p>`)
	} else {
		p(`<p class="fail">FAIL</p><ul>`)
		for _, y := range why {
			p(`<li>%s</li>`, esc(y))
		}
		p(`</ul>`)
	}
	p(`<table><tr><th class="l">nodes</th><td>%d</td><th class="l">cameras</th><td>%d</td><th class="l">duration</th><td>%v</td><th class="l">started</th><td>%s</td></tr>`,
		sc.Nodes.Count, sc.Cameras.Count, sc.Duration.D(), res.Started.Format(time.RFC3339))
	p(`<tr><th class="l">frames expected</th><td>%d</td><th class="l">recorded</th><td>%d (%.3f%%)</td><th class="l">lost</th><td>%d</td><th class="l">duplicated</th><td>%d</td></tr>`,
		s.Expected, s.Recorded, pct(s.Recorded, s.Expected), s.Lost, s.Duplicated)
	p(`<tr><th class="l">timeline gaps</th><td>%d</td><th class="l">hidden gaps</th><td>%d</td><th class="l">dropped frames</th><td>%d</td><th class="l">outside spans</th><td>%d</td></tr>`,
		s.Gaps, s.HiddenGaps, s.Dropped, s.Outside)
	p(`<tr><th class="l">failovers</th><td>%d</td><th class="l">p50 / p95 / max</th><td>%v / %v / %v</td><th class="l">latency p50 / max</th><td>%v / %v</td><th class="l">fleet late / skipped</th><td>%d / %d</td></tr></table>`,
		s.Failovers, s.FailoverP50.Round(time.Millisecond), s.FailoverP95.Round(time.Millisecond), s.FailoverMax.Round(time.Millisecond),
		s.LatencyP50.Round(time.Millisecond), s.LatencyMax.Round(time.Millisecond), res.Fleet.LateFrames, res.Fleet.FramesSkipped)

	if rr := res.Ramp; rr != nil {
		p(`<h2>Ramp (capacity search)</h2><p>Highest clean step: <b>%d cameras</b>`, rr.HighestClean)
		if rr.Target > 0 {
			p(` (target %d)`, rr.Target)
		}
		if rr.Stopped != "" {
			p(`; stopped at %s`, esc(rr.Stopped))
		}
		p(`</p><table><tr><th>step</th><th>cameras</th><th>recording</th><th>packets lost</th><th>frames dropped (node)</th><th>reconnects</th><th>max lag</th><th>health reads failed</th><th>fleet late / skipped / dropped pkts</th><th>fleet CPU</th><th>node CPU</th><th>ingest Mbit/s</th><th>frames expected</th><th>lost</th><th class="l">verdict</th></tr>`)
		for _, s := range rr.Steps {
			v := `<span class="pass">clean</span>`
			if !s.Clean {
				v = `<span class="fail">not clean</span> ` + esc(strings.Join(s.Why, "; "))
			}
			dropped := "?"
			if s.FramesDropped >= 0 {
				dropped = fmt.Sprint(s.FramesDropped)
			}
			p(`<tr><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%s</td><td>%d</td><td>%v</td><td>%d / %d</td><td>%d / %d / %d</td><td>%.0f%%</td><td>%.0f%%</td><td>%.0f</td><td>%d</td><td>%d</td><td class="l">%s</td></tr>`,
				s.Index, s.Cameras, s.Recording, s.PacketsLost, dropped, s.Reconnects, s.MaxLag.Round(time.Millisecond), s.HealthErrors, s.Samples,
				s.FleetLate, s.FleetSkipped, s.FleetDropped, s.FleetCPU*100, s.NodeCPU*100, s.IngestBps/1e6, s.Expected, s.Lost, v)
		}
		p(`</table>`)
	}
	if pc := res.Probe; pc != nil {
		p(`<h2>Independent check: ffprobe</h2>`)
		if pc.Skipped != "" {
			p(`<p class="fail">Skipped: %s</p>`, esc(pc.Skipped))
		} else {
			p(`<p class="small">%d cameras picked at random (seed %d); ffprobe counts the %s of the very export files the verifier parsed. The export starts at the keyframe at or before the window and runs past it: "outside" are the samples whose SEI tag is not an expected frame of the window.</p>`, len(pc.Cameras), pc.Seed, pc.Mode)
			p(`<table><tr><th class="l">camera</th><th>ffprobe</th><th>parsed</th><th>outside window</th><th>ffprobe in window</th><th>window frames</th><th>verifier recorded</th><th class="l">verdict</th></tr>`)
			for _, c := range pc.Cameras {
				v := `<span class="pass">agree</span>`
				if !c.Agree {
					v = `<span class="fail">disagree</span> ` + esc(c.Why)
				}
				p(`<tr><td class="l">%s</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td class="l">%s</td></tr>`,
					esc(c.Camera), c.FFprobe, c.Parsed, c.Outside, c.FFprobe-c.Outside, c.WindowFrames, c.Recorded, v)
			}
			p(`</table>`)
		}
	}
	p(`<h2>Gaps per camera</h2><p class="small">Red: hidden gap (missing, timeline shows none). Orange: dropped frames. Grey: loss under a timeline gap. Light band: timeline gap. Dashed lines: faults. Window verified: the white area.</p>`)
	gapChart(w, res)
	p(`<h2>Failover time distribution</h2>`)
	failoverChart(w, res)
	p(`<h2>CPU per node (cores)</h2>`)
	nodeChart(w, res, func(n scenario.NodeSample) float64 { return n.CPU }, "%.2f")
	p(`<h2>Memory per node (RSS, MiB)</h2>`)
	nodeChart(w, res, func(n scenario.NodeSample) float64 { return float64(n.RSS) / (1 << 20) }, "%.0f")
	p(`<h2>Ingest rate per node (Mbit/s, from camera health)</h2>`)
	nodeChart(w, res, func(n scenario.NodeSample) float64 { return n.IngestBps / 1e6 }, "%.0f")
	p(`<h2>Cameras recording per node</h2>`)
	nodeChart(w, res, func(n scenario.NodeSample) float64 { return float64(n.Recording) }, "%.0f")

	p(`<h2>Events</h2><table><tr><th>elapsed</th><th class="l">what</th><th class="l">result</th></tr>`)
	for _, e := range res.Events {
		p(`<tr><td>%v</td><td class="l">%s</td><td class="l">%s</td></tr>`, e.Elapsed, esc(e.What), esc(e.Result))
	}
	p(`</table><h2>Cameras</h2><table><tr><th class="l">camera</th><th>expected</th><th>recorded</th><th>lost</th><th>dup</th><th>gaps</th><th>hidden</th><th>segments</th><th>latency p50</th><th class="l">problems</th></tr>`)
	for _, c := range worstCameras(res.Cameras, maxRows) {
		prob := ""
		if len(c.Problems) > 0 {
			prob = c.Problems[0]
			if len(c.Problems) > 1 {
				prob += fmt.Sprintf(" (+%d more)", len(c.Problems)-1)
			}
		}
		p(`<tr><td class="l">%s</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%v</td><td class="l">%s</td></tr>`,
			esc(c.Camera), c.Expected, c.Recorded, c.Lost, c.Duplicated, len(c.Gaps), c.HiddenGaps, c.Segments, c.LatencyP50.Round(time.Millisecond), esc(prob))
	}
	p(`</table>`)
	if len(res.Cameras) > maxRows {
		p(`<p class="small">%d more cameras in report.json.</p>`, len(res.Cameras)-maxRows)
	}
	p(`<p class="small">Load average at start / end: %s / %s. Vigie binary: %s. Work directory: %s.</p></body></html>`,
		esc(res.Load[0]), esc(res.Load[1]), esc(res.Vigie), esc(res.Dir))
	return w.Flush()
}

// gapChart draws one row per camera (the worst first) over the run.
func gapChart(w io.Writer, res *scenario.Result) {
	if res.Registered.IsZero() || res.Ended.IsZero() || len(res.Cameras) == 0 {
		fmt.Fprint(w, `<p class="small">No verified camera.</p>`)
		return
	}
	cams := worstCameras(res.Cameras, maxRows)
	const left, width = 110, 1000
	rowH := 8
	if len(cams) <= 60 {
		rowH = 13 // room for the camera names
	}
	t0, t1 := res.Registered, res.Ended
	span := t1.Sub(t0).Seconds()
	x := func(t time.Time) float64 {
		return left + math.Max(0, math.Min(1, t.Sub(t0).Seconds()/span))*width
	}
	rows := len(cams) * rowH
	h := rows + 60
	fmt.Fprintf(w, `<svg width="%d" height="%d" font-size="10">`, left+width+20, h)
	// outside the window: shaded
	fmt.Fprintf(w, `<rect x="%d" y="0" width="%.1f" height="%d" fill="#f3f3f3"/>`, left, x(res.Window.Start)-left, rows)
	fmt.Fprintf(w, `<rect x="%.1f" y="0" width="%.1f" height="%d" fill="#f3f3f3"/>`, x(res.Window.End), left+width-x(res.Window.End), rows)
	for i, c := range cams {
		y := i * rowH
		if len(cams) <= 60 {
			fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="end">%s</text>`, left-4, y+rowH-1, esc(c.Camera))
		}
		for _, g := range c.Gaps {
			fmt.Fprintf(w, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="#cfcfe8"><title>%s gap %v %s</title></rect>`,
				x(g.Start), y, math.Max(1, x(g.Start.Add(g.Length))-x(g.Start)), rowH-1, esc(c.Camera), g.Length.Round(time.Millisecond), esc(g.Cause))
		}
		for _, r := range c.LossRuns {
			col := map[string]string{verify.LossHiddenGap: "#d62728", verify.LossDropped: "#ff7f0e", verify.LossGap: "#777"}[r.Kind]
			fmt.Fprintf(w, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s: %s, %d frames from %d (%v) %s</title></rect>`,
				x(r.Start), y+1, math.Max(1.5, x(r.Start.Add(r.Duration))-x(r.Start)), rowH-3, col, esc(c.Camera), r.Kind, r.Frames, r.FirstFrame, r.Duration, esc(r.Cause))
		}
	}
	k := 0
	for _, e := range res.Events {
		if e.At.Before(t0) {
			continue
		}
		ly := rows + 10 + (k%4)*10 // staggered labels
		k++
		fmt.Fprintf(w, `<line x1="%.1f" x2="%.1f" y1="0" y2="%d" stroke="#000" stroke-dasharray="3,3"><title>%s</title></line>`, x(e.At), x(e.At), ly-8, esc(e.What))
		fmt.Fprintf(w, `<text x="%.1f" y="%d" font-size="9">%s</text>`, x(e.At)+2, ly, esc(trunc(e.What, 28)))
	}
	axis(w, left, width, h-8, span)
	fmt.Fprint(w, `</svg>`)
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// axis draws second ticks along y.
func axis(w io.Writer, left, width, y int, span float64) {
	step := niceStep(span / 10)
	for t := 0.0; t <= span+1e-9; t += step {
		xx := float64(left) + t/span*float64(width)
		fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>`, xx, y, (time.Duration(t) * time.Second).String())
	}
}

func niceStep(v float64) float64 {
	for _, s := range []float64{1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600} {
		if s >= v {
			return s
		}
	}
	return 7200
}

// failoverChart draws a histogram of failover interruptions.
func failoverChart(w io.Writer, res *scenario.Result) {
	var ds []time.Duration
	for _, c := range res.Cameras {
		for _, f := range c.Failovers {
			if f.Interruption > 0 {
				ds = append(ds, f.Interruption)
			}
		}
	}
	if len(ds) == 0 {
		fmt.Fprint(w, `<p class="small">No fault interrupted a camera (or no fault was injected).</p>`)
		return
	}
	maxD := verify.Percentile(ds, 100)
	bins := 20
	width := maxD / time.Duration(bins)
	if width <= 0 {
		width = time.Millisecond
	}
	counts := make([]int, bins+1)
	for _, d := range ds {
		counts[min(int(d/width), bins)]++
	}
	top := 0
	for _, c := range counts {
		top = max(top, c)
	}
	const W, H, left = 800, 200, 40
	bw := float64(W-left) / float64(bins+1)
	fmt.Fprintf(w, `<svg width="%d" height="%d" font-size="10">`, W+20, H+40)
	for i, c := range counts {
		bh := float64(H) * float64(c) / float64(top)
		fmt.Fprintf(w, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#1f77b4"><title>%v–%v: %d</title></rect>`,
			float64(left)+float64(i)*bw, float64(H)-bh, bw-1, bh, width*time.Duration(i), width*time.Duration(i+1), c)
		if i%4 == 0 {
			fmt.Fprintf(w, `<text x="%.1f" y="%d" fill="#555">%v</text>`, float64(left)+float64(i)*bw, H+14, (width * time.Duration(i)).Round(time.Millisecond))
		}
	}
	fmt.Fprintf(w, `<text x="2" y="10" fill="#555">%d</text><text x="%d" y="%d" fill="#555">interruption per camera and fault (%d)</text></svg>`, top, left, H+32, len(ds))
}

// nodeChart draws one line per node of v over the run.
func nodeChart(w io.Writer, res *scenario.Result, v func(scenario.NodeSample) float64, format string) {
	const W, H, left = 900, 160, 50
	var top, span float64
	for _, n := range res.Nodes {
		for _, s := range n.Samples {
			top = math.Max(top, v(s))
			span = math.Max(span, s.Elapsed.Seconds())
		}
	}
	if span == 0 {
		fmt.Fprint(w, `<p class="small">No sample.</p>`)
		return
	}
	if top == 0 {
		top = 1
	}
	fmt.Fprintf(w, `<svg width="%d" height="%d" font-size="10">`, W+140, H+30)
	fmt.Fprintf(w, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#999"/><text x="2" y="10" fill="#555">`+format+`</text><text x="2" y="%d" fill="#555">0</text>`, left, W, H, H, top, H)
	for i, n := range res.Nodes {
		col := palette[i%len(palette)]
		fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="`, col)
		for _, s := range n.Samples {
			if s.State == scenario.StateNotStarted {
				continue
			}
			fmt.Fprintf(w, "%.1f,%.1f ", left+s.Elapsed.Seconds()/span*(W-left), H-v(s)/top*H)
		}
		fmt.Fprintf(w, `"/><text x="%d" y="%d" fill="%s">%s</text>`, W+8, 12+14*i, col, esc(n.ID))
	}
	axis(w, left, W-left, H+20, span)
	fmt.Fprint(w, `</svg>`)
}
