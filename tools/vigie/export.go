package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

func ctlExport(c *ctl, fs flagSet, args []string) error {
	start := fs.String("start", "", "range start (RFC3339 or a time of day today, e.g. 14:05) (required)")
	end := fs.String("end", "", "range end")
	duration := fs.Duration("duration", 0, "range length, instead of --end")
	outPath := fs.String("o", "", "output file (default CAMERA_START.mp4)")
	quiet := fs.Bool("quiet", false, "no progress bar")
	cam, err := oneArg(fs, args, "camera id")
	if err != nil {
		return err
	}
	if *start == "" {
		return fmt.Errorf("--start is required")
	}
	if *end != "" && *duration != 0 {
		return fmt.Errorf("give --end or --duration, not both")
	}
	from, to, err := parseRange(*start, *end, *duration, 0)
	if err != nil {
		return err
	}
	if *outPath == "" {
		*outPath = fmt.Sprintf("%s_%s.mp4", cam, from.UTC().Format("20060102T150405Z"))
	}
	q := url.Values{"start": {from.Format(time.RFC3339Nano)}, "end": {to.Format(time.RFC3339Nano)}}
	u := strings.TrimRight(c.server, "/") + "/media/v1/cameras/" + url.PathEscape(cam) + "/export.mp4?" + q.Encode()
	resp, err := c.http.Get(u)
	if err != nil {
		return fmt.Errorf("cannot reach %s: %w (is a node running? set --server or VIGIE_SERVER)", c.server, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return apiError(resp.StatusCode, data)
	}
	// Write to a temporary name and rename at the end: an interrupted download never
	// leaves a file that looks complete.
	tmp := *outPath + ".part"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	var w io.Writer = f
	var bar *progressBar
	if !*quiet {
		bar = newProgressBar(os.Stderr, resp.ContentLength)
		w = io.MultiWriter(f, bar)
	}
	n, err := io.Copy(w, resp.Body)
	if bar != nil {
		bar.finish()
	}
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("download cut short: %d of %d bytes", n, resp.ContentLength)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("export %s: %w", cam, err)
	}
	if err := os.Rename(tmp, *outPath); err != nil {
		return err
	}
	fmt.Fprintf(c.out, "exported %s %s → %s to %s (%s)\n", cam, from.Format(time.RFC3339), to.Format(time.RFC3339), *outPath, humanBytes(float64(n)))
	return nil
}

// progressBar draws a one-line progress bar on a terminal as bytes are written through it.
type progressBar struct {
	w       io.Writer
	total   int64
	done    int64
	started time.Time
	last    time.Time
}

func newProgressBar(w io.Writer, total int64) *progressBar {
	return &progressBar{w: w, total: total, started: time.Now()}
}

func (p *progressBar) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if time.Since(p.last) >= 100*time.Millisecond {
		p.draw()
		p.last = time.Now()
	}
	return len(b), nil
}

func (p *progressBar) draw() {
	rate := float64(p.done) / max(time.Since(p.started).Seconds(), 0.001)
	if p.total <= 0 {
		fmt.Fprintf(p.w, "\r%s  %s/s   ", humanBytes(float64(p.done)), humanBytes(rate))
		return
	}
	const width = 30
	frac := float64(p.done) / float64(p.total)
	filled := int(frac * width)
	eta := time.Duration(float64(p.total-p.done)/max(rate, 1)) * time.Second / time.Second
	fmt.Fprintf(p.w, "\r[%s%s] %3.0f%%  %s / %s  %s/s  ETA %s   ", strings.Repeat("#", filled), strings.Repeat(".", width-filled),
		frac*100, humanBytes(float64(p.done)), humanBytes(float64(p.total)), humanBytes(rate), eta.Round(time.Second))
}

func (p *progressBar) finish() {
	p.draw()
	fmt.Fprintln(p.w)
}
