package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// clusterStatus is the answer of GET /v1/cluster/status (protojson: proto field names,
// 64-bit integers as strings, durations as "25s").
type clusterStatus struct {
	Nodes   []map[string]any `json:"nodes"`
	Version string           `json:"version"`
	Cameras float64          `json:"cameras"`
	Repair  *repairStatus    `json:"repair"`
}

type repairStatus struct {
	Nodes []struct {
		ID     string    `json:"id"`
		Reason string    `json:"reason"`
		Since  time.Time `json:"since"`
		Shards int       `json:"shards"`
		Left   int       `json:"left"`
		Done   int       `json:"done"`
	} `json:"nodes"`
	AtRisk []struct {
		Survivors int `json:"survivors"`
		Spare     int `json:"spare"`
		Stripes   int `json:"stripes"`
	} `json:"at_risk"`
	Unrecoverable  int         `json:"unrecoverable"`
	Stuck          int         `json:"stuck"`
	PendingShards  int         `json:"pending_shards"`
	PendingBytes   json.Number `json:"pending_bytes"`
	DoneShards     int         `json:"done_shards"`
	BytesPerSecond float64     `json:"bytes_per_second"`
	ETA            string      `json:"eta"`
}

// printClusterStatus prints the nodes (with their disk and scrub results) and a repair
// block: what is being rebuilt, how fast, and how exposed the footage is meanwhile.
func printClusterStatus(w io.Writer, st clusterStatus, now time.Time) {
	fmt.Fprintf(w, "version %s, %d cameras\n\n", st.Version, int(st.Cameras))
	for _, n := range st.Nodes {
		n["load"] = humanBits(num(n["load_bps"]))
		n["disk"] = diskCell(n["disk"])
		n["scrub"] = scrubCell(n["protection"])
	}
	printTable(w, st.Nodes, "id", "role", "state", "zone", "cameras", "load", "moving", "disk", "scrub", "http_addr")
	fmt.Fprintln(w)
	for _, line := range repairLines(st.Repair, now) {
		fmt.Fprintln(w, line)
	}
}

// diskCell shows a node's disk: "DISK FULL (1.0 GiB free of 50.0 GiB)", "12.0 GiB free of
// 50.0 GiB", or "-" when the node has not reported.
func diskCell(v any) string {
	d, ok := v.(map[string]any)
	if !ok {
		return "-"
	}
	s := humanBytes(num(d["free_bytes"])) + " free of " + humanBytes(num(d["total_bytes"]))
	if d["full"] == true {
		return "DISK FULL (" + s + ")"
	}
	return s
}

// scrubCell shows a node's scrub results since it started: "3 passes, ok" or "3 passes,
// 2 findings, 1 repaired"; "-" when the node did not answer.
func scrubCell(v any) string {
	p, ok := v.(map[string]any)
	if !ok {
		return "-"
	}
	passes, found, fixed := int64(num(p["scrub_passes"])), int64(num(p["scrub_findings"])), int64(num(p["scrub_repaired"]))
	s := plural(passes, "pass", "passes")
	if found == 0 {
		return s + ", ok"
	}
	return fmt.Sprintf("%s, %s, %d repaired", s, plural(found, "finding", "findings"), fixed)
}

// repairLines describes the repair: nothing to do, or what is rebuilt and the risk.
func repairLines(r *repairStatus, now time.Time) []string {
	if r == nil {
		return []string{"Repair: unknown (the node that answered could not read it)"}
	}
	risky := 0
	for _, a := range r.AtRisk {
		risky += a.Stripes
	}
	if r.PendingShards == 0 && risky == 0 && r.Unrecoverable == 0 && r.Stuck == 0 {
		return []string{"Repair: no repair pending, all stripes at full redundancy"}
	}
	out := []string{"Repair:"}
	var lost []string
	for _, n := range r.Nodes {
		lost = append(lost, fmt.Sprintf("%s (%s since %s)", n.ID, n.Reason, clock(n.Since, now)))
	}
	pending, _ := r.PendingBytes.Float64()
	line := fmt.Sprintf("  rebuilding %s lost on %s: %d done, %d left (%s)",
		plural(int64(r.DoneShards+r.PendingShards), "shard", "shards"), joinAnd(lost), r.DoneShards, r.PendingShards, humanBytes(pending))
	switch {
	case r.PendingShards == 0:
	case r.BytesPerSecond > 0 && r.ETA != "":
		eta, err := time.ParseDuration(r.ETA)
		if err != nil {
			eta = 0
		}
		line += fmt.Sprintf(", %s, ETA %s", humanRate(r.BytesPerSecond), humanDuration(eta))
	default:
		line += ", no progress measured yet"
	}
	out = append(out, line)
	var risk []string
	for _, a := range r.AtRisk {
		if a.Spare >= 0 {
			risk = append(risk, fmt.Sprintf("%d with %d spare", a.Stripes, a.Spare))
		}
	}
	if len(risk) == 0 {
		risk = append(risk, "none with shards to spare lost")
	}
	out = append(out, fmt.Sprintf("  stripes at risk: %s, %d unrecoverable", strings.Join(risk, ", "), r.Unrecoverable))
	if r.Unrecoverable > 0 {
		out = append(out, "  unrecoverable stripes have fewer than k shards left: their footage is lost unless a node being repaired comes back")
	}
	if r.Stuck > 0 {
		out = append(out, fmt.Sprintf("  %s cannot be repaired now (too few live shards, or no node can take the shard): retried as nodes come back or join",
			plural(int64(r.Stuck), "stripe", "stripes")))
	}
	return out
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func joinAnd(parts []string) string {
	switch len(parts) {
	case 0:
		return "no node"
	case 1:
		return parts[0]
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}

// clock shows a time of day in local time, with the date when it is not today.
func clock(t, now time.Time) string {
	t, now = t.Local(), now.Local()
	if t.YearDay() == now.YearDay() && t.Year() == now.Year() {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02 15:04:05")
}

// humanRate shows bytes per second in decimal units, as disks and networks are rated.
func humanRate(bps float64) string {
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.1f GB/s", bps/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.0f MB/s", bps/1e6)
	case bps >= 1e3:
		return fmt.Sprintf("%.0f kB/s", bps/1e3)
	}
	return fmt.Sprintf("%.0f B/s", bps)
}

// humanDuration shows "25 s", "4 min 10 s", "2 h 05 min".
func humanDuration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min %02d s", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%d h %02d min", int(d.Hours()), int(d.Minutes())%60)
}
