package ingest

import "sync/atomic"

// Why ingest dropped a video frame (FramesDropped). A frame the camera sent and the node
// did not record is always counted under one of these, so a lossy camera is never silent.
const (
	// DropRTPLoss: whole frames whose RTP packets never arrived (a sequence-number gap:
	// a sender or network that dropped them, e.g. a camera whose send queue overflowed
	// because the node read too slowly). Estimated from the RTP timestamp jump over the
	// gap and the camera's frame interval.
	DropRTPLoss = "rtp_loss"
	// DropDepacketize: frames the depacketizer discarded, cut by a lost packet or
	// malformed.
	DropDepacketize = "depacketize"
	// DropWaitKeyframe: frames dropped after a codec parameter change, until the next
	// keyframe starts the new init section (the first keyframe of a session is not
	// counted: nothing decodable was missed before it).
	DropWaitKeyframe = "wait_keyframe"
)

// DropReasons lists the reasons of FramesDropped, in a stable order.
var DropReasons = []string{DropRTPLoss, DropDepacketize, DropWaitKeyframe}

var dropped [3]atomic.Uint64 // indexed like DropReasons

func dropIndex(reason string) int {
	for i, r := range DropReasons {
		if r == reason {
			return i
		}
	}
	return -1
}

// FramesDropped returns the video frames dropped by every camera of this process since it
// started, by reason (DropReasons); safe from any goroutine.
func FramesDropped() map[string]uint64 {
	out := make(map[string]uint64, len(DropReasons))
	for i, r := range DropReasons {
		out[r] = dropped[i].Load()
	}
	return out
}

// countDropped adds n dropped frames to the camera's health and the process totals.
func (h *health) countDropped(reason string, n uint64) {
	if n == 0 {
		return
	}
	h.dropped.Add(n)
	if i := dropIndex(reason); i >= 0 {
		dropped[i].Add(n)
	}
}
