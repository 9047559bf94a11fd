package node

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigie-vms/vigie/cluster"
	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/node/protect"
)

// noDiskReports is a protect catalog that drops the node's disk reports.
type noDiskReports struct{ protect.Catalog }

func (noDiskReports) ReportDisk(context.Context, model.NodeID, cluster.DiskUsage) error { return nil }

// fakeProtectionSource is a catalog with stripes, repair marks and disk reports.
type fakeProtectionSource struct {
	report  cluster.RepairReport
	stripes map[model.StripeID]model.Stripe
	disks   map[model.NodeID]cluster.DiskUsage
}

func (f *fakeProtectionSource) RepairStatus() (cluster.RepairReport, error) { return f.report, nil }

func (f *fakeProtectionSource) StripesOn(node model.NodeID, _ int) ([]model.StripeID, error) {
	var out []model.StripeID
	for id, st := range f.stripes {
		for _, sh := range st.Shards {
			if sh.Node == node {
				out = append(out, id)
			}
		}
	}
	return out, nil
}

func (f *fakeProtectionSource) Stripe(id model.StripeID) (model.Stripe, error) {
	st, ok := f.stripes[id]
	if !ok {
		return model.Stripe{}, model.ErrNotFound
	}
	return st, nil
}

func (f *fakeProtectionSource) Disks() (map[model.NodeID]cluster.DiskUsage, error) {
	return f.disks, nil
}

func stripeOn(id string, k int, nodes ...model.NodeID) model.Stripe {
	st := model.Stripe{ID: model.StripeID(id), K: k, M: len(nodes) - k}
	for _, n := range nodes {
		st.Shards = append(st.Shards, model.StripeShard{Node: n, Bytes: 1 << 20})
	}
	return st
}

// scrape serves the registry's /metrics and returns every sample line by name{labels}.
func scrape(t *testing.T, h http.Handler) map[string]string {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	return scrapeURL(t, srv.URL)
}

func scrapeURL(t *testing.T, url string) map[string]string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			out[line[:i]] = line[i+1:]
		}
	}
	return out
}

// TestRepairMetrics: while the shards of two dead nodes are rebuilt, /metrics tells how
// many shards and bytes are pending, how fast they go, the stripes at risk by spare
// shards (k differs between stripes), the unrecoverable ones, and that this node's disk
// is full.
func TestRepairMetrics(t *testing.T) {
	since := time.Date(2025, 3, 1, 12, 3, 1, 0, time.UTC)
	src := &fakeProtectionSource{
		report: cluster.RepairReport{
			Nodes: []cluster.RepairNode{
				{ID: "n4", Reason: "dead", Since: since, Shards: 10, Left: 3, Done: 7},
				{ID: "n5", Reason: "decommissioned", Since: since, Shards: 2, Left: 2},
			},
			AtRisk: map[int]int{5: 2, 2: 1, 1: 1}, Unrecoverable: 1, Stuck: 1,
			Pending: 5, BytesPending: 1000e6, Done: 7,
		},
		stripes: map[model.StripeID]model.Stripe{
			"s1": stripeOn("s1", 4, "n1", "n2", "n3", "n4", "n6", "n7"), // 5 left, 1 spare
			"s2": stripeOn("s2", 2, "n4", "n1", "n2"),                   // 2 left, 0 spare
			"s3": stripeOn("s3", 2, "n4", "n5", "n1"),                   // 1 left: unrecoverable
			"s4": stripeOn("s4", 4, "n1", "n2", "n3", "n5", "n6", "n7"), // 5 left, 1 spare
			"s5": stripeOn("s5", 2, "n1", "n2", "n3"),                   // untouched
		},
		disks: map[model.NodeID]cluster.DiskUsage{"n1": {FreeBytes: 5 << 30, TotalBytes: 100 << 30, Full: true}, "n2": {FreeBytes: 1, TotalBytes: 2}},
	}
	mon := newRepairMonitor(src, slog.New(slog.NewTextHandler(io.Discard, nil)))
	now := time.Now()
	if r, ok := mon.status(now.Add(-10 * time.Second)); !ok || r.BytesPerSecond != 0 || r.ETA != 0 {
		t.Fatalf("first sample: %+v %v; want no rate yet", r, ok)
	}
	src.report.BytesPending, src.report.Pending, src.report.Done = 520e6, 3, 9
	r, ok := mon.status(now)
	if !ok || r.BytesPerSecond != 48e6 || r.ETA != 11*time.Second {
		t.Fatalf("second sample: rate %v ETA %v; want 48 MB/s and 11 s (520 MB left)", r.BytesPerSecond, r.ETA)
	}
	if got := fmt.Sprint(r.AtRisk); got != "[{1 -1 1} {2 0 1} {5 1 2}]" {
		t.Errorf("at risk (survivors spare stripes): %s", got)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(newRepairCollector(mon, src, "n1"))
	m := scrape(t, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	for name, want := range map[string]string{
		"vigie_repair_nodes":                  "2",
		"vigie_repair_pending_shards":         "3",
		"vigie_repair_pending_bytes":          "5.2e+08",
		"vigie_repair_done_shards":            "9",
		"vigie_repair_stuck_stripes":          "1",
		"vigie_repair_bytes_per_second":       "4.8e+07",
		"vigie_repair_eta_seconds":            "11",
		`vigie_stripes_at_risk{spare="0"}`:    "1",
		`vigie_stripes_at_risk{spare="1"}`:    "2",
		"vigie_stripes_unrecoverable":         "1",
		"vigie_disk_full":                     "1",
		"vigie_disk_free_bytes":               "5.36870912e+09",
		"vigie_disk_total_bytes":              "1.073741824e+11",
		`vigie_stripes_at_risk{spare="-1"}`:   "",
		`vigie_stripes_at_risk{spare="2"}`:    "",
		`vigie_repair_eta_seconds{spare="0"}`: "",
	} {
		if m[name] != want {
			t.Errorf("%s = %q, want %q", name, m[name], want)
		}
	}

	// A third node dies: the new work resets the measure (rate unknown, no ETA).
	src.report.Nodes = append(src.report.Nodes, cluster.RepairNode{ID: "n6", Reason: "dead", Since: since})
	src.report.BytesPending = 900e6
	if r, _ := mon.status(now.Add(10 * time.Second)); r.BytesPerSecond != 0 || r.ETA != 0 {
		t.Errorf("after a new mark: rate %v ETA %v; want unknown", r.BytesPerSecond, r.ETA)
	}
}

// TestNodeMetricsAndStatusShowDiskAndRepair starts a real node: /metrics carries the
// repair gauges (nothing pending), the scrub counters, and the disk gauges once the node
// reported its disk full; the cluster status shows the same, and the node's counters.
func TestNodeMetricsAndStatusShowDiskAndRepair(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	// The test reports the disk itself: the node's own (real, not full) reports are dropped.
	cfg.Inject.Protect = func(c *protect.Config) { c.Catalog = noDiskReports{c.Catalog} }
	n := startNode(t, cfg)
	defer n.Close()
	self := model.NodeID(n.cfg.NodeID)
	if err := n.Cluster().ReportDisk(context.Background(), self, cluster.DiskUsage{FreeBytes: 1 << 30, TotalBytes: 50 << 30, Full: true}); err != nil {
		t.Fatal(err)
	}
	base := "http://" + n.HTTPAddr()
	var m map[string]string
	waitFor(t, "the disk report in /metrics", 10*time.Second, func() bool {
		m = scrapeURL(t, base+"/metrics")
		return m["vigie_disk_full"] == "1"
	})
	for name, want := range map[string]string{
		"vigie_disk_free_bytes":            "1.073741824e+09",
		"vigie_repair_pending_shards":      "0",
		"vigie_repair_pending_bytes":       "0",
		"vigie_stripes_unrecoverable":      "0",
		`vigie_stripes_at_risk{spare="0"}`: "0",
		"vigie_scrub_findings_total":       "0",
		"vigie_scrub_repaired_total":       "0",
	} {
		if got, ok := m[name]; !ok || got != want {
			t.Errorf("%s = %q (present %v), want %q", name, got, ok, want)
		}
	}
	if _, ok := m["vigie_scrub_passes_total"]; !ok {
		t.Error("vigie_scrub_passes_total missing")
	}

	// The peer endpoint other nodes read this node's counters from.
	var st protect.Stats
	if err := n.peer.getJSON(context.Background(), self, "/protect", nil, &st); err != nil || st.ScrubFindings != 0 {
		t.Errorf("peer /protect: %+v, %v", st, err)
	}

	resp, err := http.Get(base + "/v1/cluster/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`"full":true`, `"free_bytes":"1073741824"`, `"scrub_passes":`, `"repair":{`, `"pending_shards":0`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("cluster status lacks %s:\n%s", want, body)
		}
	}
}
