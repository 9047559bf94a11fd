package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"net/http"
	"net/http/pprof"

	"github.com/vigie-vms/vigie/gateway"
	"github.com/vigie-vms/vigie/node/protect"

	"github.com/vigie-vms/vigie/model"
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

// configureGateway adds what the gateway serves for the node beyond the API: the
// Prometheus metrics of this node (Go runtime, process, camera health).
func configureGateway(cfg *gateway.Config, n *Node) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), newHealthCollector(n.cams), newProtectCollector(n))
	cfg.Handlers = n.peerHandlers()
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
		"repairs": st.RepairsDone, "repairB": st.RepairBytes, "findings": st.ScrubFindings, "repaired": st.ScrubRepaired} {
		ch <- prometheus.MustNewConstMetric(c.descs[key], prometheus.CounterValue, float64(v))
	}
	if c.n.repSend != nil {
		ch <- prometheus.MustNewConstMetric(c.descs["replicaKO"], prometheus.CounterValue, float64(c.n.repSend.Metrics().Failures))
	}
}
