package gateway

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// TestRESTClusterStatusShowsRepairDisksAndCounters checks what an operator reads in the
// cluster status while a dead node's shards are rebuilt: the node being repaired and its
// progress, the stripes at risk (fewest spare first), the rate and ETA, a full disk, and a
// node's scrub counters; a node that did not answer has no counters (null, not zeros).
func TestRESTClusterStatusShowsRepairDisksAndCounters(t *testing.T) {
	since := time.Date(2025, 3, 1, 12, 3, 1, 0, time.UTC)
	prot := fakeProtection{
		Repair: &RepairStatus{
			Nodes:         []RepairNode{{ID: "n4", Reason: "dead", Since: since, Shards: 37, Left: 25, Done: 12}},
			AtRisk:        []StripesAtRisk{{Survivors: 5, Spare: 1, Stripes: 3}, {Survivors: 4, Spare: 0, Stripes: 2}},
			PendingShards: 25, PendingBytes: 1288490188, DoneShards: 12,
			BytesPerSecond: 48e6, ETA: 25 * time.Second,
		},
		Disks:    map[model.NodeID]DiskUsage{"n1": {FreeBytes: 1 << 30, TotalBytes: 100 << 30, Full: true}},
		Counters: map[model.NodeID]ProtectionCounters{"n1": {ScrubPasses: 3, ScrubFindings: 2, ScrubRepaired: 2, RepairsDone: 12, DegradedReads: 7}},
	}
	g := startGateway(t, newFakeCatalog(), &fakeRecordings{}, func(c *Config) {
		c.Cluster = fakeCluster{{ID: "n1", Role: "leader", State: "active"}, {ID: "n2", Role: "voter", State: "active"}}
		c.Protection = prot
	})
	c := restClient{t, "http://" + g.HTTPAddr()}
	st := c.ok("GET", "/v1/cluster/status", "")
	got, _ := json.Marshal(st["repair"])
	want := `{"at_risk":[{"spare":0,"stripes":2,"survivors":4},{"spare":1,"stripes":3,"survivors":5}],"bytes_per_second":48000000,"done_shards":12,"eta":"25s",` +
		`"nodes":[{"done":12,"id":"n4","left":25,"reason":"dead","shards":37,"since":"2025-03-01T12:03:01Z"}],"pending_bytes":"1288490188","pending_shards":25,"stuck":0,"unrecoverable":0}`
	if string(got) != want {
		t.Errorf("repair:\n got  %s\n want %s", got, want)
	}
	nodes := st["nodes"].([]any)
	n1, n2 := nodes[0].(map[string]any), nodes[1].(map[string]any)
	if d, _ := json.Marshal(n1["disk"]); string(d) != `{"free_bytes":"1073741824","full":true,"total_bytes":"107374182400"}` {
		t.Errorf("n1 disk: %s", d)
	}
	p := n1["protection"].(map[string]any)
	if p["scrub_passes"] != "3" || p["scrub_findings"] != "2" || p["scrub_repaired"] != "2" || p["repairs_done"] != "12" || p["degraded_reads"] != "7" {
		t.Errorf("n1 counters: %v", p)
	}
	if n2["disk"] != nil || n2["protection"] != nil {
		t.Errorf("n2 reported nothing, yet shows disk %v counters %v; want null", n2["disk"], n2["protection"])
	}

	// Without a Protection, the status has no repair section.
	g2 := startGateway(t, newFakeCatalog(), &fakeRecordings{}, func(c *Config) { c.Cluster = fakeCluster{{ID: "n1"}} })
	if st := (restClient{t, "http://" + g2.HTTPAddr()}).ok("GET", "/v1/cluster/status", ""); st["repair"] != nil {
		t.Errorf("repair without a provider: %v, want null", st["repair"])
	}
}
