package node

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigie-vms/vigie/cluster"
	"github.com/vigie-vms/vigie/gateway"
	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/node/ingest"
	"github.com/vigie-vms/vigie/node/protect"
)

// healthCollector exports the health of every camera this node records as Prometheus
// metrics, read at scrape time (nothing is updated on the ingest hot path).
type healthCollector struct {
	cams *cameraManager

	up, fps, bitrate, keyint, lastFrame, received, lost, reconnects *prometheus.Desc
}

func newHealthCollector(cams *cameraManager) *healthCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("vigie_camera_"+name, help, []string{"camera"}, nil)
	}
	return &healthCollector{
		cams:       cams,
		up:         d("recording", "1 when the camera is being recorded, 0 otherwise."),
		fps:        d("fps", "Frames per second received."),
		bitrate:    d("bitrate_bits_per_second", "Bitrate received."),
		keyint:     d("keyframe_interval_seconds", "Time between keyframes."),
		lastFrame:  d("last_frame_timestamp_seconds", "Wall time of the last frame received."),
		received:   d("rtp_packets_received_total", "RTP packets received."),
		lost:       d("rtp_packets_lost_total", "RTP packets lost."),
		reconnects: d("reconnects_total", "Reconnections to the camera."),
	}
}

func (c *healthCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.fps, c.bitrate, c.keyint, c.lastFrame, c.received, c.lost, c.reconnects} {
		ch <- d
	}
}

func (c *healthCollector) Collect(ch chan<- prometheus.Metric) {
	for _, h := range c.cams.healthSnapshot() {
		cam := string(h.Camera)
		up := 0.0
		if h.State == model.CameraRecording {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, cam)
		ch <- prometheus.MustNewConstMetric(c.fps, prometheus.GaugeValue, h.FPS, cam)
		ch <- prometheus.MustNewConstMetric(c.bitrate, prometheus.GaugeValue, h.BitrateBps, cam)
		ch <- prometheus.MustNewConstMetric(c.keyint, prometheus.GaugeValue, h.KeyframeInterval.Seconds(), cam)
		if !h.LastFrame.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.lastFrame, prometheus.GaugeValue, float64(h.LastFrame.UnixNano())/1e9, cam)
		}
		ch <- prometheus.MustNewConstMetric(c.received, prometheus.CounterValue, float64(h.PacketsReceived), cam)
		ch <- prometheus.MustNewConstMetric(c.lost, prometheus.CounterValue, float64(h.PacketsLost), cam)
		ch <- prometheus.MustNewConstMetric(c.reconnects, prometheus.CounterValue, float64(h.Reconnects), cam)
	}
}

// ingestDropCollector exports ingest.FramesDropped: vigie_ingest_frames_dropped_total by
// reason, every video frame a camera sent that this node did not record (a lossy camera is
// never silent; the scale load test fails a step on it).
type ingestDropCollector struct{ desc *prometheus.Desc }

func newIngestDropCollector() *ingestDropCollector {
	return &ingestDropCollector{desc: prometheus.NewDesc("vigie_ingest_frames_dropped_total",
		"Video frames received (or known sent, from an RTP sequence gap) but not recorded, by reason: "+
			strings.Join(ingest.DropReasons, ", ")+".", []string{"reason"}, nil)}
}

func (c *ingestDropCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *ingestDropCollector) Collect(ch chan<- prometheus.Metric) {
	counts := ingest.FramesDropped()
	for _, r := range ingest.DropReasons {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(counts[r]), r)
	}
}

// configureGateway adds what the gateway serves for the node beyond the API: the
// Prometheus metrics of this node (Go runtime, process, camera health, erasure coding,
// repair and disk), and the protection status of the cluster (repair progress, disks,
// every node's counters) for ClusterService.GetStatus.
func configureGateway(cfg *gateway.Config, n *Node) {
	if n.repairMon == nil {
		n.repairMon = newRepairMonitor(n.clu, n.log.With(slog.String("component", "repair-monitor")))
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), newHealthCollector(n.cams), newIngestDropCollector(), newProtectCollector(n),
		newRepairCollector(n.repairMon, n.clu, model.NodeID(n.cfg.NodeID)))
	cfg.Handlers = n.peerHandlers()
	cfg.Handlers["GET "+peerPrefix+"/protect"] = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writePeerJSON(w, n.ProtectStats()) })
	cfg.Protection = &protection{n: n}
	for pattern, h := range n.rep.Handlers() {
		cfg.Handlers[pattern] = h
	}
	cfg.Handlers["GET /metrics"] = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	if n.cfg.Pprof {
		cfg.Handlers["/debug/pprof/"] = http.HandlerFunc(pprof.Index)
		cfg.Handlers["/debug/pprof/cmdline"] = http.HandlerFunc(pprof.Cmdline)
		cfg.Handlers["/debug/pprof/profile"] = http.HandlerFunc(pprof.Profile)
		cfg.Handlers["/debug/pprof/symbol"] = http.HandlerFunc(pprof.Symbol)
		cfg.Handlers["/debug/pprof/trace"] = http.HandlerFunc(pprof.Trace)
	}
	cfg.Version = version
}

// ProtectStats are the node's erasure-coding counters (stripes made, degraded reads,
// repairs, scrub findings).
func (n *Node) ProtectStats() protect.Stats {
	if n.prot == nil {
		return protect.Stats{}
	}
	return n.prot.Stats()
}

// protectCollector exports ProtectStats as Prometheus counters, read at scrape time.
type protectCollector struct {
	n     *Node
	descs map[string]*prometheus.Desc
}

func newProtectCollector(n *Node) *protectCollector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc("vigie_"+name, help, nil, nil) }
	return &protectCollector{n: n, descs: map[string]*prometheus.Desc{
		"stripes":   d("stripes_made_total", "Stripes this node made and committed."),
		"shipped":   d("eastwest_stripe_bytes_total", "Bytes sent to other nodes to build stripes."),
		"degraded":  d("degraded_reads_total", "Segment reads that needed a reconstruction."),
		"repairs":   d("repairs_total", "Shards rebuilt by this node."),
		"repairB":   d("repair_bytes_total", "Bytes rebuilt by this node."),
		"findings":  d("scrub_findings_total", "Corrupt or missing blocks found by the scrubber."),
		"repaired":  d("scrub_repaired_total", "Scrub findings repaired."),
		"passes":    d("scrub_passes_total", "Complete scrub passes over this node's store."),
		"repairKO":  d("repairs_failed_total", "Shard repairs this node attempted that failed (retried)."),
		"degradedB": d("degraded_bytes_total", "Bytes served by reconstruction."),
		"shardKO":   d("shard_errors_total", "Shard reads that failed and were worked around."),
		"replicaKO": d("replica_failures_total", "Fragments a hot replica did not acknowledge."),
	}}
}

func (c *protectCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *protectCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.n.ProtectStats()
	for key, v := range map[string]int64{"stripes": st.StripesMade, "shipped": st.ShippedBytes, "degraded": st.DegradedReads,
		"repairs": st.RepairsDone, "repairB": st.RepairBytes, "findings": st.ScrubFindings, "repaired": st.ScrubRepaired,
		"passes": st.ScrubPasses, "repairKO": st.RepairsFailed, "degradedB": st.DegradedBytes, "shardKO": st.ShardErrors} {
		ch <- prometheus.MustNewConstMetric(c.descs[key], prometheus.CounterValue, float64(v))
	}
	if c.n.repSend != nil {
		ch <- prometheus.MustNewConstMetric(c.descs["replicaKO"], prometheus.CounterValue, float64(c.n.repSend.Metrics().Failures))
	}
}

// ---- repair progress, stripes at risk, disks ----

// protectionSource is what the repair monitor, the protection status and the metrics read
// of the cluster (the local replica of the catalog; none of these calls blocks on peers).
type protectionSource interface {
	RepairStatus() (cluster.RepairReport, error)
	StripesOn(node model.NodeID, limit int) ([]model.StripeID, error)
	Stripe(id model.StripeID) (model.Stripe, error)
	Disks() (map[model.NodeID]cluster.DiskUsage, error)
}

// repairSampleInterval is how often the node samples the repair state; the rate is
// measured over repairRateWindow.
const (
	repairSampleInterval = 5 * time.Second
	repairRateWindow     = 2 * time.Minute
)

// repairMonitor samples the repair state (RepairStatus plus the stripes at risk by spare
// shards) and measures the repair rate from how fast the pending bytes go down. Readers
// get the last sample, refreshed when older than repairSampleInterval; run keeps
// sampling so the rate is known when someone asks.
type repairMonitor struct {
	src protectionSource
	log *slog.Logger

	mu      sync.Mutex
	last    gateway.RepairStatus
	lastAt  time.Time
	lastErr error
	// samples of the pending bytes under one set of marked nodes, oldest first.
	samples []repairSample
	marks   string
}

type repairSample struct {
	at      time.Time
	pending int64
}

func newRepairMonitor(src protectionSource, log *slog.Logger) *repairMonitor {
	return &repairMonitor{src: src, log: log}
}

// run samples every repairSampleInterval until ctx ends.
func (m *repairMonitor) run(ctx context.Context) {
	t := time.NewTicker(repairSampleInterval)
	defer t.Stop()
	for {
		m.status(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// status returns the repair state, sampling it again when the last sample is older than
// repairSampleInterval. ok is false when the catalog could not be read.
func (m *repairMonitor) status(now time.Time) (gateway.RepairStatus, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.lastAt.IsZero() && now.Sub(m.lastAt) < repairSampleInterval && now.Sub(m.lastAt) >= 0 {
		return m.last, m.lastErr == nil
	}
	m.lastAt = now
	r, err := m.sample()
	if err != nil {
		if m.lastErr == nil {
			m.log.Warn("repair status", slog.Any("error", err))
		}
		m.lastErr = err
		return gateway.RepairStatus{}, false
	}
	m.lastErr = nil
	m.observe(now, &r)
	m.last = r
	return r, true
}

// sample reads the repair report and breaks the stripes at risk down by spare shards
// (survivors − k): the report counts them by survivors only, and k differs between
// redundancy classes.
func (m *repairMonitor) sample() (gateway.RepairStatus, error) {
	rep, err := m.src.RepairStatus()
	if err != nil {
		return gateway.RepairStatus{}, err
	}
	out := gateway.RepairStatus{
		Unrecoverable: rep.Unrecoverable, Stuck: rep.Stuck,
		PendingShards: rep.Pending, PendingBytes: rep.BytesPending, DoneShards: rep.Done,
	}
	marked := map[model.NodeID]bool{}
	for _, n := range rep.Nodes {
		out.Nodes = append(out.Nodes, gateway.RepairNode{ID: n.ID, Reason: n.Reason, Since: n.Since, Shards: n.Shards, Left: n.Left, Done: n.Done})
		marked[n.ID] = true
	}
	if len(marked) == 0 {
		return out, nil
	}
	type key struct{ survivors, spare int }
	risk := map[key]int{}
	seen := map[model.StripeID]bool{}
	for id := range marked {
		ids, err := m.src.StripesOn(id, 0)
		if err != nil {
			return gateway.RepairStatus{}, err
		}
		for _, sid := range ids {
			if seen[sid] {
				continue
			}
			seen[sid] = true
			st, err := m.src.Stripe(sid)
			if err != nil {
				continue // deleted since (retention): not at risk any more
			}
			survivors := 0
			for _, sh := range st.Shards {
				if !marked[sh.Node] {
					survivors++
				}
			}
			risk[key{survivors, survivors - st.K}]++
		}
	}
	for k, n := range risk {
		out.AtRisk = append(out.AtRisk, gateway.StripesAtRisk{Survivors: k.survivors, Spare: k.spare, Stripes: n})
	}
	sort.Slice(out.AtRisk, func(i, j int) bool {
		a, b := out.AtRisk[i], out.AtRisk[j]
		if a.Spare != b.Spare {
			return a.Spare < b.Spare
		}
		return a.Survivors < b.Survivors
	})
	return out, nil
}

// observe records the pending bytes of a sample and sets the rate and ETA from the
// samples of the last repairRateWindow. The measure starts over when the set of marked
// nodes changes or the pending bytes grow (new work: the old samples say nothing of it).
func (m *repairMonitor) observe(now time.Time, r *gateway.RepairStatus) {
	ids := make([]string, len(r.Nodes))
	for i, n := range r.Nodes {
		ids[i] = string(n.ID)
	}
	marks := strings.Join(ids, ",")
	if marks != m.marks || (len(m.samples) > 0 && r.PendingBytes > m.samples[len(m.samples)-1].pending) {
		m.samples = m.samples[:0]
		m.marks = marks
	}
	m.samples = append(m.samples, repairSample{at: now, pending: r.PendingBytes})
	for len(m.samples) > 2 && now.Sub(m.samples[0].at) > repairRateWindow {
		m.samples = m.samples[1:]
	}
	if r.PendingBytes == 0 || len(m.samples) < 2 {
		return
	}
	first, last := m.samples[0], m.samples[len(m.samples)-1]
	dt := last.at.Sub(first.at).Seconds()
	if dt <= 0 || first.pending <= last.pending {
		return
	}
	r.BytesPerSecond = float64(first.pending-last.pending) / dt
	r.ETA = time.Duration(float64(r.PendingBytes) / r.BytesPerSecond * float64(time.Second)).Round(time.Second)
	if r.ETA <= 0 {
		r.ETA = time.Second
	}
}

// protection is the gateway's Protection: the repair state from the monitor, every
// node's disk from the catalog, and every node's counters (this node's directly, the
// others' from their peer API, concurrently, until ctx ends).
type protection struct{ n *Node }

func (p *protection) ProtectionStatus(ctx context.Context) gateway.ProtectionStatus {
	n := p.n
	out := gateway.ProtectionStatus{Disks: map[model.NodeID]gateway.DiskUsage{}, Counters: map[model.NodeID]gateway.ProtectionCounters{}}
	if r, ok := n.repairMon.status(time.Now()); ok {
		out.Repair = &r
	}
	clu := n.clu
	if clu == nil {
		return out
	}
	if disks, err := clu.Disks(); err == nil {
		for id, d := range disks {
			out.Disks[id] = gateway.DiskUsage{FreeBytes: d.FreeBytes, TotalBytes: d.TotalBytes, Full: d.Full}
		}
	}
	self := model.NodeID(n.cfg.NodeID)
	out.Counters[self] = countersFromStats(n.ProtectStats())
	if n.peer == nil {
		return out
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range clu.Members() {
		if m.ID == self || m.State == model.NodeDead || m.State == model.NodeDecommissioned {
			continue
		}
		wg.Add(1)
		go func(id model.NodeID) {
			defer wg.Done()
			var st protect.Stats
			if err := n.peer.getJSON(ctx, id, "/protect", nil, &st); err != nil {
				return
			}
			mu.Lock()
			out.Counters[id] = countersFromStats(st)
			mu.Unlock()
		}(m.ID)
	}
	wg.Wait()
	return out
}

func countersFromStats(st protect.Stats) gateway.ProtectionCounters {
	return gateway.ProtectionCounters{
		StripesMade: st.StripesMade, RepairsDone: st.RepairsDone, RepairsFailed: st.RepairsFailed, RepairBytes: st.RepairBytes,
		DegradedReads: st.DegradedReads, DegradedBytes: st.DegradedBytes, ShardErrors: st.ShardErrors,
		ScrubPasses: st.ScrubPasses, ScrubFindings: st.ScrubFindings, ScrubRepaired: st.ScrubRepaired,
	}
}

// repairCollector exports the repair state of the cluster (every node exports the same
// values: aggregate with max) and this node's disk report.
type repairCollector struct {
	mon  *repairMonitor
	src  protectionSource
	self model.NodeID

	nodes, pendingShards, pendingBytes, doneShards, stuck, rate, eta, atRisk, unrecoverable *prometheus.Desc
	diskFull, diskFree, diskTotal                                                           *prometheus.Desc
}

func newRepairCollector(mon *repairMonitor, src protectionSource, self model.NodeID) *repairCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("vigie_"+name, help, labels, nil)
	}
	return &repairCollector{
		mon: mon, src: src, self: self,
		nodes:         d("repair_nodes", "Nodes whose shards are being rebuilt elsewhere (dead past the repair grace, or decommissioned)."),
		pendingShards: d("repair_pending_shards", "Shards lost on those nodes still to rebuild."),
		pendingBytes:  d("repair_pending_bytes", "Bytes of the shards still to rebuild."),
		doneShards:    d("repair_done_shards", "Shards rebuilt since the nodes were marked (goes back to 0 when a marked node returns)."),
		stuck:         d("repair_stuck_stripes", "Stripes that cannot be repaired now (not enough live sources, or no node can take the shard)."),
		rate:          d("repair_bytes_per_second", "Repair rate measured over the last minutes (0 while no progress is seen)."),
		eta:           d("repair_eta_seconds", "Time left to rebuild the pending bytes at the measured rate (absent while unknown)."),
		atRisk:        d("stripes_at_risk", "Stripes that lost shards, by the shards they can still lose (spare = surviving shards - k).", "spare"),
		unrecoverable: d("stripes_unrecoverable", "Stripes with fewer than k surviving shards: footage lost unless a marked node comes back."),
		diskFull:      d("disk_full", "1 when this node is below its disk reserve and takes no new data."),
		diskFree:      d("disk_free_bytes", "Free bytes on the file system holding this node's segments and shards (last report)."),
		diskTotal:     d("disk_total_bytes", "Size of that file system (last report)."),
	}
}

func (c *repairCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.nodes, c.pendingShards, c.pendingBytes, c.doneShards, c.stuck, c.rate, c.eta, c.atRisk, c.unrecoverable, c.diskFull, c.diskFree, c.diskTotal} {
		ch <- d
	}
}

func (c *repairCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if r, ok := c.mon.status(time.Now()); ok {
		gauge(c.nodes, float64(len(r.Nodes)))
		gauge(c.pendingShards, float64(r.PendingShards))
		gauge(c.pendingBytes, float64(r.PendingBytes))
		gauge(c.doneShards, float64(r.DoneShards))
		gauge(c.stuck, float64(r.Stuck))
		gauge(c.rate, r.BytesPerSecond)
		if r.ETA > 0 {
			gauge(c.eta, r.ETA.Seconds())
		}
		bySpare := map[int]int{0: 0} // spare="0" is always there, for alerts
		for _, a := range r.AtRisk {
			if a.Spare >= 0 {
				bySpare[a.Spare] += a.Stripes
			}
		}
		for spare, n := range bySpare {
			gauge(c.atRisk, float64(n), strconv.Itoa(spare))
		}
		gauge(c.unrecoverable, float64(r.Unrecoverable))
	}
	if disks, err := c.src.Disks(); err == nil {
		if d, ok := disks[c.self]; ok {
			full := 0.0
			if d.Full {
				full = 1
			}
			gauge(c.diskFull, full)
			gauge(c.diskFree, float64(d.FreeBytes))
			gauge(c.diskTotal, float64(d.TotalBytes))
		}
	}
}
