// Package depack turns the RTP packets of one H.264 (RFC 6184, packetization modes 0 and 1)
// or H.265 (RFC 7798, without DONL) video track into access units, with the same results as
// gortsplib's rtph264 and rtph265 decoders but without allocating per NAL unit.
//
// It exists because the ingest pipeline decodes every packet of every camera on one core:
// gortsplib's decoders allocate (and the runtime zeroes) a fresh buffer for every
// fragmented NAL unit, and the garbage collector then pays for it again. A Decoder copies
// each packet's payload, and appends each FU fragment, straight into one of two reused
// per-access-unit buffers, records NAL units as offsets, and turns them into sub-slices only
// when it returns an access unit.
//
// # Results alias the Decoder's buffers
//
// The NAL units returned by Decode (and the [][]byte holding them) belong to the Decoder and
// stay valid only until the next call of Decode: a caller that keeps an access unit longer
// must copy it. The returned slices are capped (len == cap), so appending to one never
// writes into the Decoder's buffer. The Decoder never keeps a reference to a packet's
// payload, so the caller may reuse its packet buffers as soon as Decode returns.
//
// # Same behaviour as gortsplib
//
// For every packet sequence Decode returns what gortsplib v4's Decoder.Decode returns —
// the same NAL unit bytes grouped into the same access units (marker bit; for H.264 also a
// timestamp change without marker, where Decode returns the previous access unit and keeps
// the new packet's NAL units), the same limits (mediacommon's MaxAccessUnitSize and
// MaxNALUsPerAccessUnit), the same FU sequence-number check, the same handling of H.264
// FU-A packets with both start and end bits, STAP-A padding, unsupported packet types and
// Annex-B wrapped NAL units — and the very same sentinel errors (rtph264.ErrMorePacketsNeeded,
// rtph264.ErrNonStartingPacketAndNoPrevious, their rtph265 twins, h264.ErrAnnexBNoNALUs), so
// callers' errors.Is checks keep working. Other errors carry their own, clearer, text.
// The package's tests compare both decoders packet by packet, on real clips, damaged streams
// and fuzzed input.
//
// # What it must not do
//
// It must not diverge from gortsplib (a change there is a change here, with the
// differential tests updated to the new version); it must not alias packet payloads; it
// must not allocate in the steady state; and it must not pin memory: a buffer that grew
// past 4 MiB for a one-off huge frame is dropped when it is next reused. A Decoder is not
// safe for concurrent use: one Decoder per track, called from one goroutine at a time.
package depack
