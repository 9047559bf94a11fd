package replica

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"net/http"
	"strconv"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// PathPrefix is where the receiver's endpoints live, beside the node's other internal
// peer endpoints.
const PathPrefix = "/internal/v1/replicas"

// Request headers. Times are Unix nanoseconds and durations nanoseconds, in decimal, so
// that a fragment's start survives the trip to the nanosecond (a segment id is built from
// its start in nanoseconds).
const (
	// HeaderOwner names the node that records the camera and sends the segment (create).
	HeaderOwner = "Vigie-Owner"
	// HeaderSeq is the fragment's position in the segment, from 0 (append).
	HeaderSeq = "Vigie-Seq"
	// HeaderStart is the fragment's start, Unix nanoseconds (append).
	HeaderStart = "Vigie-Start"
	// HeaderDuration is the fragment's duration in nanoseconds (append).
	HeaderDuration = "Vigie-Duration"
	// HeaderKeyframe is "1" when the fragment starts with a keyframe, else "0" (append).
	HeaderKeyframe = "Vigie-Keyframe"
	// HeaderCRC is the CRC-32C (Castagnoli) of the body, 8 hex digits (create, append):
	// the receiver refuses a body that does not match it.
	HeaderCRC = "Vigie-Crc32c"
)

// Error codes carried in an error answer's JSON body, so the sender can react without
// parsing messages.
const (
	codeInvalid    = "invalid"     // 400: malformed request; nothing changed
	codeNotFound   = "not_found"   // 404: no such replica segment
	codeStaleEpoch = "stale_epoch" // 409: the replica has seen a higher epoch for the camera
	codeSealed     = "sealed"      // 409: the replica segment exists but is sealed (replica restarted)
	codeGap        = "gap"         // 409: a fragment is missing before this one (Fragments says how many the replica holds)
	codeConflict   = "conflict"    // 409: a different fragment already holds this position, or a different init
	codeAdopted    = "adopted"     // 409: the replica adopted the segment as its own (owner declared gone); only the node drops it
	codeTooLarge   = "too_large"   // 413
	codeInternal   = "internal"    // 500: disk error, full disk, store closed
)

// status is the JSON body of every answer: on success the replica's state of the segment,
// on failure the error too.
type status struct {
	Segment model.SegmentID `json:"segment,omitempty"`
	// Fragments is the number of fragments the replica holds durably.
	Fragments int `json:"fragments"`
	// Duplicate is set when the fragment (or the segment, on create) was already there.
	Duplicate bool   `json:"duplicate,omitempty"`
	Sealed    bool   `json:"sealed,omitempty"`
	Error     string `json:"error,omitempty"`
	Code      string `json:"code,omitempty"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func formatCRC(c uint32) string { return fmt.Sprintf("%08x", c) }

// fragmentHeader is what an append request says about its body.
type fragmentHeader struct {
	seq      int
	start    time.Time
	duration time.Duration
	keyframe bool
	crc      uint32
	size     int64
}

// maxDuration bounds a fragment's duration (a sanity bound, far above a real fragment).
const maxDuration = time.Hour

// parseFragmentHeader reads and checks the headers of an append request. It reports every
// bad header at once, each naming the header.
func parseFragmentHeader(h http.Header, contentLength int64, maxSize int64) (fragmentHeader, error) {
	var fh fragmentHeader
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, model.Invalid(name, format, args...))
	}
	if v := h.Get(HeaderSeq); v == "" {
		bad(HeaderSeq, "is required")
	} else if n, err := strconv.ParseUint(v, 10, 31); err != nil {
		bad(HeaderSeq, "must be a whole number from 0, got %q", v)
	} else {
		fh.seq = int(n)
	}
	if v := h.Get(HeaderStart); v == "" {
		bad(HeaderStart, "is required")
	} else if n, err := strconv.ParseInt(v, 10, 64); err != nil || n <= 0 {
		bad(HeaderStart, "must be Unix nanoseconds after 1970, got %q", v)
	} else {
		fh.start = time.Unix(0, n).UTC()
	}
	if v := h.Get(HeaderDuration); v == "" {
		bad(HeaderDuration, "is required")
	} else if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 0 || time.Duration(n) > maxDuration {
		bad(HeaderDuration, "must be nanoseconds between 0 and %d, got %q", int64(maxDuration), v)
	} else {
		fh.duration = time.Duration(n)
	}
	switch v := h.Get(HeaderKeyframe); v {
	case "1":
		fh.keyframe = true
	case "0", "":
	default:
		bad(HeaderKeyframe, "must be 0 or 1, got %q", v)
	}
	if c, err := parseCRC(h.Get(HeaderCRC)); err != nil {
		errs = append(errs, err)
	} else {
		fh.crc = c
	}
	switch {
	case contentLength < 0:
		bad("Content-Length", "is required")
	case contentLength == 0:
		bad("Content-Length", "the fragment is empty")
	case contentLength > maxSize:
		bad("Content-Length", "%d bytes, more than the %d a fragment may hold", contentLength, maxSize)
	}
	fh.size = contentLength
	return fh, errors.Join(errs...)
}

func parseCRC(v string) (uint32, error) {
	if v == "" {
		return 0, model.Invalid(HeaderCRC, "is required (CRC-32C of the body, 8 hex digits)")
	}
	n, err := strconv.ParseUint(v, 16, 32)
	if err != nil || len(v) != 8 {
		return 0, model.Invalid(HeaderCRC, "must be 8 hex digits, got %q", v)
	}
	return uint32(n), nil
}

func writeStatus(w http.ResponseWriter, code int, st status) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(st)
}
