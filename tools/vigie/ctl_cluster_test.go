package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// statusJSON is a /v1/cluster/status answer as the gateway writes it (protojson).
const statusJSON = `{
 "version": "1.4.0", "cameras": 12,
 "nodes": [
  {"id": "n1", "role": "leader", "state": "active", "cameras": 6, "load_bps": 24000000, "moving": 0, "http_addr": "10.0.0.1:8080",
   "disk": {"free_bytes": "13194139533", "total_bytes": "53687091200", "full": false},
   "protection": {"scrub_passes": "3", "scrub_findings": "0", "scrub_repaired": "0"}},
  {"id": "n2", "role": "voter", "state": "active", "cameras": 6, "load_bps": 24000000, "moving": 0, "http_addr": "10.0.0.2:8080",
   "disk": {"free_bytes": "1073741824", "total_bytes": "53687091200", "full": true},
   "protection": {"scrub_passes": "1", "scrub_findings": "2", "scrub_repaired": "1"}},
  {"id": "n4", "role": "voter", "state": "dead", "cameras": 0, "load_bps": 0, "moving": 0, "http_addr": "10.0.0.4:8080", "disk": null, "protection": null}
 ],
 "repair": {
  "nodes": [{"id": "n4", "reason": "dead", "since": "SINCE", "shards": 37, "left": 25, "done": 12}],
  "at_risk": [{"survivors": 5, "spare": 1, "stripes": 3}],
  "unrecoverable": 0, "stuck": 0, "pending_shards": 25, "pending_bytes": "1288490188", "done_shards": 12,
  "bytes_per_second": 48000000, "eta": "25s"
 }
}`

func renderStatus(t *testing.T, js string, now time.Time) string {
	t.Helper()
	var st clusterStatus
	if err := json.Unmarshal([]byte(js), &st); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	printClusterStatus(&b, st, now)
	return b.String()
}

func TestCtlClusterStatusShowsRepairAndFullDisks(t *testing.T) {
	now := time.Now()
	since := now.Add(-3 * time.Minute).Truncate(time.Second)
	out := renderStatus(t, strings.Replace(statusJSON, "SINCE", since.UTC().Format(time.RFC3339), 1), now)
	t.Logf("\n%s", out)
	// Table cells are compared with their padding collapsed.
	var flat []string
	for _, l := range strings.Split(out, "\n") {
		flat = append(flat, strings.Join(strings.Fields(l), " "))
	}
	flatOut := strings.Join(flat, "\n")
	for _, want := range []string{
		"version 1.4.0, 12 cameras",
		"n1 leader active - 6 24.0 Mbit/s 0 12.3 GiB free of 50.0 GiB 3 passes, ok 10.0.0.1:8080",
		"n2 voter active - 6 24.0 Mbit/s 0 DISK FULL (1.0 GiB free of 50.0 GiB) 1 pass, 2 findings, 1 repaired 10.0.0.2:8080",
		"n4 voter dead - 0 0 bit/s 0 - - 10.0.0.4:8080", // did not answer: no disk, no scrub
		"Repair:\nrebuilding 37 shards lost on n4 (dead since " + since.Local().Format("15:04:05") + "): 12 done, 25 left (1.2 GiB), 48 MB/s, ETA 25 s\n",
		"stripes at risk: 3 with 1 spare, 0 unrecoverable\n",
	} {
		if !strings.Contains(flatOut, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestCtlClusterStatusRepairStates(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 10, 0, 0, time.Local)
	for _, tc := range []struct {
		name, repair string
		want         []string
	}{
		{"nothing to repair", `{"nodes":[],"at_risk":[],"unrecoverable":0,"stuck":0,"pending_shards":0,"pending_bytes":"0","done_shards":0,"bytes_per_second":0,"eta":null}`,
			[]string{"Repair: no repair pending, all stripes at full redundancy"}},
		{"no repair section", `null`, []string{"Repair: unknown"}},
		{"just started: no rate yet; two nodes; stuck and unrecoverable stripes",
			`{"nodes":[{"id":"n4","reason":"dead","since":"2025-03-01T12:03:01Z","shards":30},{"id":"n5","reason":"decommissioned","since":"2025-02-28T09:00:00Z","shards":10}],
			  "at_risk":[{"survivors":1,"spare":-1,"stripes":1},{"survivors":4,"spare":0,"stripes":2},{"survivors":5,"spare":1,"stripes":3}],
			  "unrecoverable":1,"stuck":1,"pending_shards":40,"pending_bytes":"2048","done_shards":0,"bytes_per_second":0,"eta":null}`,
			[]string{
				"rebuilding 40 shards lost on n4 (dead since " + time.Date(2025, 3, 1, 12, 3, 1, 0, time.UTC).Local().Format("15:04:05") + ") and n5 (decommissioned since " +
					time.Date(2025, 2, 28, 9, 0, 0, 0, time.UTC).Local().Format("2006-01-02 15:04:05") + "): 0 done, 40 left (2.0 KiB), no progress measured yet",
				"stripes at risk: 2 with 0 spare, 3 with 1 spare, 1 unrecoverable",
				"their footage is lost unless a node being repaired comes back",
				"1 stripe cannot be repaired now",
			}},
		{"everything rebuilt: long ETA formats", `{"nodes":[{"id":"n4","reason":"dead","since":"2025-03-01T12:03:01Z","shards":3}],"at_risk":[{"survivors":5,"spare":1,"stripes":1}],
			"pending_shards":1,"pending_bytes":"5000000000","done_shards":2,"bytes_per_second":1000000,"eta":"5000s"}`,
			[]string{"2 done, 1 left (4.7 GiB), 1 MB/s, ETA 1 h 23 min"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := renderStatus(t, `{"version":"v","cameras":0,"nodes":[],"repair":`+tc.repair+`}`, now)
			for _, want := range tc.want {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}
