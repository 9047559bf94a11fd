// Package verify is the load-test verifier: after a run it reads, through the public API
// only (any node's REST and media endpoints), every camera's timeline, segment list and
// progressive MP4 exports, decodes the SEI tag (loadtest/sei) of every sample, and compares
// with what the fleet sent: frames expected, recorded, lost, duplicated, of another camera;
// each run of lost frames classified as explained by a timeline gap, dropped frames, or a
// hidden gap (missing footage the timeline does not show); the timeline's gaps with their
// causes; the interruption each injected fault caused (failover time); and catalog against
// data (every listed segment exports and holds this camera's tagged samples within its
// range; nothing is served outside the listed spans).
//
// Collect does the I/O (through a Source: API in production, fakes in tests); Analyze is
// pure and deterministic over its Input, so every rule is unit-tested on synthetic
// recordings.
//
// # Cost
//
// Each camera's window is downloaded once: exports are streamed into one buffer of
// exactly their Content-Length (or an unlinked temporary file above API.MemLimit), and
// the catalog check reads the listed segments from those samples — only a segment with
// nothing there is exported on its own (CollectOptions.ExportSegments restores the
// thorough double download). CollectEach hands each camera's Input over as soon as it is
// read, parallel cameras at once (default 2 × GOMAXPROCS), so memory is bounded by the
// workers, not the run. BenchmarkCollectAll measures it.
//
// # The independent check
//
// RunProbeCheck has ffprobe count the frames (or packets) of the export files the
// verifier parsed for a few cameras picked with a seed (PickCameras, CollectOptions.Keep)
// and compares: ffprobe's count with the samples parsed in the same files, and the
// distinct expected frames of the window those files hold (decoded from their SEI tags;
// the export also holds the keyframe lead-in before the window and the lead after it)
// with the verifier's recorded count.
//
// # What it must not do
//
// It never reads a node's data directory or imports node, gateway, storage or cluster: it
// sees exactly what a user of the API sees. ParseExport reads untrusted bytes and must not
// panic (FuzzParseExport). It does not decide pass or fail for a run (report does).
package verify
