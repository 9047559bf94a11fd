// Package fleet serves a fleet of simulated cameras for load tests: N cameras, H.264 and
// H.265 mixed, from one process (one loadtest/simcam server per codec), at a chosen bit
// rate (clips generated once with ffmpeg and cached, or the embedded ~1 Mbit/s clips), with
// misbehaviour on demand: stall, dropped sessions (reconnect), garbage packets, resolution
// change at an IDR. The scenario runner hosts a Fleet in-process; `vigie-loadtest fleet`
// runs one on its own and exposes the same actions on a small HTTP control endpoint
// (Handler, Client).
//
// The fleet remembers what the verifier needs to tell a recorder's loss from a camera's
// silence: when each camera's frame 0 was due (frame k is due at Frame0 + k/FPS) and when
// it was stalled.
//
// # What it must not do
//
// It listens only where it is told (127.0.0.1 by default) and has no authentication: never
// expose the control endpoint beyond loopback. It never blocks its scheduler on a slow
// reader (simcam's rule). It imports simcam and model only.
package fleet
