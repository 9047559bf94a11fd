// Package ingest turns camera streams into fragmented MP4: it pulls cameras over RTSP
// (Puller), accepts streams pushed with RTSP ANNOUNCE/RECORD (Server), depacketizes RTP,
// segments the access units into an init section plus fMP4 fragments, and keeps each
// camera's health.
//
// # Flow
//
//	RTSP (gortsplib client or server session)
//	  → pipeline: RTP → access units (video: our depack package, the same access units
//	    as gortsplib's rtph264/rtph265 without allocating; audio: gortsplib's decoders),
//	    timestamps (rtptime.GlobalDecoder2), DTS (mediacommon DTS extractors),
//	    wall clock (RTCP sender reports, else receive time + PTS progression)
//	  → segmenter: parameter-set tracking, init sections, moof+mdat fragments
//	  → Sink (the caller's: storage's open segment)
//
// The pipeline and the segmenter need no network: tests, fuzzers and benchmarks feed them
// RTP packets directly.
//
// # What is recorded
//
// One video track (H.264 or H.265; the first usable one of the session description) and
// every supported audio track (MPEG-4 audio, G.711 stored as 16-bit LPCM, Opus, LPCM), all in
// the same fMP4. Audio is never a reason to fail: an unsupported or broken audio track is
// skipped and logged once. A stream without a usable video track fails with ErrNoVideo,
// whose message lists what the stream offered; the Puller then retries every MaxBackoff.
//
// Every NAL unit of a picture is kept, SEI included (the load tester counts frames through
// SEI). Access units that carry no picture (a lone SPS/PPS/SEI with its own timestamp) are
// not samples: their parameter sets are still adopted.
//
// # Init sections and fragments
//
// Nothing is written before the parameter sets are known (from the SDP or in-band) and a
// random access point (IDR for H.264, IRAP for H.265) arrives. An in-band parameter set that
// differs from the current one (new SPS/PPS/VPS, resolution change) closes the fragment in
// progress; the next random access point starts a new init section (Sink.WriteInit) before
// any further fragment. Malformed parameter sets are ignored (the previous ones stay) and
// logged once.
//
// A fragment ends before the next keyframe or when adding the next frame would make it
// longer than FragmentMax (1 s by default), whichever comes first. Fragment.Keyframe tells
// that the fragment starts with a random access point; Fragment.Start is the wall-clock
// time of its first video sample, Fragment.Duration the sum of its video sample durations.
// Within one init section each track's tfdt is continuous: it is the media time since the
// init started, in the track's timescale (90 kHz for video, the sample rate for audio); a
// timestamp jump (gap > 10 s or going backwards) gives the last sample the previous frame
// duration and closes the fragment, so the timeline stays continuous and the wall clock
// re-anchors. At the end of a session the fragment in progress is flushed, its last sample
// given the previous frame duration.
//
// Wall-clock time comes from the RTCP sender reports when the sender sends them; until then
// (and for senders that never do) it is the receive time of the first frame plus the PTS
// progression, re-anchored when the two drift more than 5 s apart. When the first sender
// report arrives the times may step by the camera's clock offset.
//
// # Frames not recorded
//
// Every video frame a camera sent that ingest does not record is counted, per camera and
// per process (FramesDropped, by reason: DropRTPLoss — whole frames lost in an RTP
// sequence gap, estimated from the timestamp jump and the frame interval; DropDepacketize
// — frames cut by a lost packet or malformed; DropWaitKeyframe — frames waiting for a
// keyframe after a parameter change). node exports the totals as
// vigie_ingest_frames_dropped_total{reason}. Frames before a session's first keyframe
// are not counted: nothing decodable was missed.
//
// # Concurrency and cost
//
// Sink calls are sequential per camera and made from the RTSP reader goroutine: a slow sink
// slows that camera's reading (TCP back-pressure), ingest never buffers more than one
// fragment. Health is read without blocking ingest (atomics and a mutex taken once per
// fragment). Video is depacketized into reused buffers (depack), and a fragment's moof+mdat
// headers are built by this package in room reserved in front of the video samples (not by
// mediacommon's Part.Marshal, which allocates the whole mdat), so a fragment reaches the sink
// without its samples being copied again; the remaining per-packet allocation is gortsplib's
// (each interleaved frame read from the connection).
//
// # What this package must not do
//
// It imports only model (and its own depack) of Vigie's packages; it never writes to disk or talks to the
// cluster, and it never decides which cameras to record: node tells it (Puller per owned
// camera, Server.Publisher for pushes).
package ingest
