// Package e2e holds the end-to-end tests of Vigie: they build the real `vigie` binary once
// (TestMain), start `vigie node` and `vigie demo` processes on free 127.0.0.1 ports with
// their own temporary data directories, feed them with real peers (ffmpeg publishing over
// RTSP, the simulated cameras of loadtest/simcam pulled by the node), and check what a
// user cares about with real tools: ffprobe frame counts, ffmpeg decoding without an error,
// and the SEI tags (loadtest/sei) read back out of the exported MP4 files to prove that no
// frame is missing, that seeking lands on a keyframe, and how many frames a kill -9 costs.
//
// # Running
//
//	go test ./tools/e2e/                 # everything, about two minutes on 2 cores
//	go test -short ./tools/e2e/          # skips the longest tests (crash, demo, H.265 push)
//	go test ./tools/e2e/ -run Crash -v   # one test, with its measured figures in the log
//
// VIGIE_E2E_BIN=/path/to/vigie tests that binary instead of building one (a release
// artefact, or a binary kept while the tree does not build).
//
// The tests need ffmpeg and ffprobe on PATH; without them they skip with the reason,
// except when CI=true, where a missing tool fails the test.
//
// # What it must not do
//
// It has no production code and nothing imports it. The tests never use fixed ports (every
// address flag is given a free port, so a running `vigie demo` is not disturbed), never
// run node processes in parallel (the machine is small), and kill every process they start,
// on failure too. They talk to the node only as a user would: REST, media HTTP, RTSP.
package e2e
