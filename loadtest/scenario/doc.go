// Package scenario is the load-test scenario runner: it reads a YAML scenario (nodes,
// cameras, duration, fault schedule), runs a simulated camera fleet (loadtest/fleet; in
// its own process when cameras.cpus pins it, else in the runner), spawns and configures real `vigie node` processes, registers the
// cameras through the public REST API, prints one progress line per second while it runs
// (elapsed/total, cameras recording per node from /v1/cameras:health, CPU and memory per
// node from /proc, the next fault), fires the faults on time, stops everything, and
// verifies every camera through the public API (loadtest/verify). The Result is rendered
// by loadtest/report.
//
// # Faults
//
// kill (SIGKILL), stop/cont (SIGSTOP/SIGCONT), restart (same data dir and addresses),
// add-node, drain and http (a request to a path given in the scenario, so a new API is
// data, not code), full-disk (a tmpfs mounted on the node's data dir before it starts,
// filled at the fault; root only, skipped with a message otherwise), flip-bytes (in the
// largest footage file of the node's data dir), and camera misbehaviour through the fleet:
// stall, drop (sessions), garbage (packets), resolution. Each fault becomes an Event with
// its result; a fault that cannot be carried out is "skipped: why" or "failed: why", and
// listed among Result.Failures — the run goes on.
//
// # Capacity search (ramp) and pinning
//
// A ramp section registers cameras step by step (add-cameras, through the API) and stops
// at the first step whose counters fail (cameras not recording, RTP packets lost, frames
// the node dropped — vigie_ingest_frames_dropped_total from /metrics —, reconnects, a
// camera's last frame too old, a health read that failed (the counters are blind then),
// the fleet late, or packets the fleet dropped for a node that did not read in time);
// after the run every step's window is verified frame by frame, from one download per
// camera, and Result.Ramp gives the highest clean step. nodes.cpus pins the node
// processes (taskset -c, GOMAXPROCS = the CPUs' number); cameras.cpus runs the fleet as a
// child process (Options.FleetCommand + " fleet", under taskset, GOMAXPROCS = the CPUs'
// number, driven through its control endpoint) and pins the runner's own threads to the
// same CPUs during the recording phase, giving them back for verification. The fleet is
// then independent of the runner's scheduler and garbage collector.
//
// # Verification
//
// Every camera through the API (loadtest/verify), then the ffprobe check of
// verify.ffprobe_check cameras on the exports the verifier kept (Result.Probe).
//
// # Multi-node
//
// Node arguments are a free-form list with placeholders ({raft_addr:0}, {all:raft_addr},
// …), so seeds and other cluster flags pass through without code. Every node's health is
// polled; verification reads from the first node that is up.
//
// # What it must not do
//
// It touches only loopback addresses (Validate refuses others), its own work directory,
// and processes it started (by PID; nodes run in their own process group so a terminal
// Ctrl-C reaches the runner, which stops them). Every wait is bounded: node start
// (StartTimeout), node stop (StopGrace, then SIGKILL), HTTP calls (timeouts). It uses
// only the public API and the vigie binary: it never imports node, gateway, cluster or
// storage.
package scenario
