// Package simcam is the simulated camera fleet: one RTSP server (gortsplib) that serves
// one to thousands of camera paths, each streaming a committed test clip looped forever, at
// its real frame rate, with every frame tagged by an SEI (loadtest/sei) that names the
// camera, numbers the frame and stamps its send time. Recorders under test pull these
// cameras; the load-test verifier reads the tags back out of what was recorded to count
// lost frames and measure latency exactly.
//
// # What a camera sends
//
//   - Frame k (k = 0, 1, … since Start) is the clip's access unit k mod len(clip), with
//     the tag SEI {Camera: id, Frame: StartFrame+k, SentAt: now} inserted before its first
//     picture NAL unit. Clips start with an IDR and repeat their parameter sets before every
//     IDR, so each turn of the loop decodes; frame numbers and RTP timestamps
//     (k × 90000/FPS, from a random base) run on across turns, sequence numbers too.
//   - A camera is live whether or not anyone reads it: its frame counter advances with
//     the clock from Start. A reader that joins late gets the current frame (often mid-GOP:
//     its decoder waits for the next IDR, at most 2 s with the default clips), and
//     the tags tell it exactly which frames it missed.
//   - RTCP sender reports, at a reader's first frame and then every 10 s, map RTP time to
//     the frame's scheduled wall-clock time, so receivers get absolute time (NTP field
//     encoded as gortsplib v4 encodes it).
//   - Misbehaviour on demand (misbehave.go): SetStalled freezes a camera (session up,
//     nothing sent; numbering goes on); DropSessions closes its readers' sessions (a
//     reboot); InjectGarbage sends random RTP packets before the next frame; SetAltClip
//     switches to Config.AltClip (another resolution) at the next IDR. Stats carries a
//     lateness histogram of every frame sent against its schedule (FrameTime).
//
// # How it stays cheap for thousands of cameras
//
//   - One scheduler goroutine and one ticker for all cameras. Cameras are spread over
//     Phases slots of the frame interval so that the fleet does not send in one burst; a
//     due phase is written by Workers goroutines in parallel.
//   - The clip is packetized into RTP payloads once. gortsplib serves RTSP only
//     (DESCRIBE, SETUP, PLAY, sessions); the media bypass its ServerStream (direct.go):
//     per frame and camera the scheduler builds the interleaved RTP records once (the
//     ~60-byte SEI included) in a reused buffer, and writes them to each reader's TCP
//     connection in one non-blocking syscall. No allocation, no goroutine hop, one syscall
//     per frame and reader; simcam writes the RTCP sender reports itself. Measured (fleet-
//     bench, 1,000 cameras × 2 Mbit/s on one core): 0.47 ms CPU per camera-second, against
//     0.85 through gortsplib's per-packet path (a 1472-byte allocation, a queue hop to a
//     writer goroutine, a deadline update and a syscall per packet and reader); about
//     three quarters of what is left is the kernel's loopback TCP write. FlushInterval < 0
//     restores gortsplib's path, for comparison (BenchmarkCameras).
//   - A camera without reader skips all that (only its counters move).
//   - A slow reader never holds the scheduler: what its socket does not take waits in its
//     connection's backlog, written by a goroutine; past Config.WriteQueueSize packets'
//     worth, whole frames are dropped for that reader only (Stats.PacketsDropped).
//   - If the scheduler falls more than a second behind (the machine is overloaded), it
//     skips to the newest frame, logs a warning and counts the skipped frames in Stats: a
//     load test must treat a non-zero FramesSkipped as an invalid run.
//
// # What it must not do
//
// It serves only: no publishing (ANNOUNCE/RECORD), no UDP transport yet (TCP interleaved
// only), no authentication. It never blocks the scheduler on one slow reader (see above).
// It never loses a frame uncounted: over any window, frames due = FramesSent +
// FramesSkipped + frames of stalled cameras + the change in FramesBehind. It imports only
// model and sei of ours, and the embedded clips.
package simcam
