// Package recbench is the recording macro-benchmark: how much CPU a Vigie node spends per
// camera-second of recording, compared in the same run with the least any recorder must
// spend (a bare gortsplib client that only receives and depacketizes the same streams),
// and how long playback takes to deliver its first byte.
//
// # What a run does
//
// For each fleet size N (Config.Cameras, 50 and 200 by default):
//
//  1. The fleet: a subprocess (the hidden "fleet" subcommand of the recbench binary,
//     RunFleet) pinned with taskset to Config.FleetCPU serves N simcam cameras looping a
//     2 Mbit/s 1280x720 25 fps H.264 clip (generated with ffmpeg, ClipArgs, unless
//     Config.ClipPath names one; simcam cannot scale a clip's bitrate itself).
//  2. Bare: a subprocess ("bare", RunBare) pinned to Config.MeasuredCPU opens N gortsplib
//     clients over RTSP/TCP and turns RTP into access units (rtph264), counting frames.
//     After Config.Warmup, its utime+stime (/proc/PID/stat) is read at both ends of a
//     Config.Window; the CPU divided by N × window is the cost in ms per camera-second.
//  3. Record: the real `vigie node` binary (built from ./tools/vigie, or Config.Vigie) with a
//     fresh data directory, pinned to the same core, records the same N cameras registered
//     through the REST API (POST /v1/tenants, POST /v1/cameras:import). Same warm-up and
//     window; frames come from GET /v1/cameras:health, bytes written from the data
//     directory.
//  4. Playback: while the node still records, Config.PlaybackRequests sequential
//     GET /media/v1/cameras/{id}/stream.mp4?start=T&duration=10s over several cameras and
//     start times; the time to the first body byte (median, p95, max) and to the end of
//     the body. (gateway's BenchmarkTimeline covers the catalog side with a full day of
//     segments.)
//  5. Optionally (Config.Perf), perf(1) samples the node for up to 10 s after the window
//     — the node exposes no pprof endpoint — and the flat report is kept.
//
// Both measured processes are Go programs pinned to one core, so the Go runtime sets
// GOMAXPROCS=1 for each: the figures are per core. The ratio record/bare is the headline
// (TargetRatio = 1.5); Report.Markdown renders a section for BENCHMARKS.md with the
// command, the machine (CPUs, CPU model, kernel, Go version, load average) and the date.
//
// # What makes a window suspect
//
// Measure.Problems lists it: the fleet skipped frames (its core was overloaded) or
// dropped packets for a slow reader (the measured process fell behind), sessions ended,
// cameras were not all recording, reconnections. The machine is shared: the load average
// at the start and the end is printed so a reader can judge.
//
// # What it must not do
//
// It touches only 127.0.0.1, only its own work directory, and only processes it started
// (by PID). Every wait has a deadline and every loop a bound: a stuck child is killed
// after its grace period. It imports simcam (the fleet) and model; it never imports node
// or gateway — it drives the real binary through its public API, as an operator would.
package recbench
