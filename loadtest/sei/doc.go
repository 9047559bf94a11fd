// Package sei encodes and decodes Vigie's frame tag: an H.264/H.265 SEI message that the
// simulated cameras (loadtest/simcam) put in every access unit, so that whoever receives
// the stream — a recorder, an exported MP4, a playback request — can tell which camera a
// frame came from, its frame number since the camera started, and when it was sent.
// The load-test verifier uses it to count lost, duplicated and reordered frames exactly and
// to measure end-to-end latency.
//
// # Wire format
//
// The tag is a user_data_unregistered SEI message (payloadType 5, H.264 Annex D.1.6 /
// H.265 Annex D.2.6) inside an SEI NAL unit: type 6 in H.264, prefix SEI type 39 in H.265.
// Its payload is
//
//	uuid     [16]byte  TagUUID, fixed, identifies the message as ours
//	magic    [2]byte   "VG"
//	version  uint8     1
//	camLen   uint8     length of the camera id (at most 255; longer ids are truncated)
//	camera   [camLen]byte
//	frame    uint64    big-endian, frame index since the camera started (0-based)
//	sentAt   int64     big-endian, Unix nanoseconds when the frame was handed to the network
//
// Encode functions return a complete NAL unit (header, emulation-prevention bytes,
// rbsp_trailing_bits) without a start code or length prefix. Decoders accept an SEI NAL
// unit that carries several SEI messages and find ours among them.
//
// # What it must not do
//
// Decoders read untrusted bytes (anything a camera or a file holds): they must never panic,
// never allocate more than the input's size, and must tell apart "not our SEI" (ok=false,
// no error: x264's own user-data SEI, for instance) from "our UUID but broken" (an error
// wrapping ErrMalformed). The package has no state and does no I/O, and imports nothing of
// ours.
package sei
