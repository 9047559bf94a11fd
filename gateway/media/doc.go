// Package media turns stored fMP4 segments into what the gateway serves: a continuous
// fragmented MP4 stream whose timestamps start at zero (Rebaser), and a progressive MP4
// for exports (Export).
//
// Segments are written by the segmenter with one init section (ftyp+moov) each and
// fragments (moof+mdat) whose decode times (tfdt) continue the camera's own clock. A
// stream or export spans several segments, so tfdt is rewritten: each fragment is placed
// at its wall-clock start minus the stream's start, converted to each track's timescale
// (within a segment the original spacing of the fragments is kept exactly). Gaps in the
// recording therefore remain gaps in media time; players hold the last frame.
//
// This package parses untrusted bytes (a corrupted or hostile segment) and must never
// panic on them; it does no I/O and knows nothing of HTTP, the catalog or storage.
package media
