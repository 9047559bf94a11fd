package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// segKey identifies a segment inside the store: the parts its id is built from.
type segKey struct {
	camera model.CameraID
	start  uint64 // Unix nanoseconds of the segment start (> 0)
	epoch  uint64
}

// Index key prefixes (see doc.go).
const (
	prefixSegment   = 's'
	prefixFragment  = 'f'
	prefixEpoch     = 'e'
	prefixTombstone = 'd'
)

const segKeySuffixLen = 1 + 8 + 8 // 0x00 start epoch

// errBadKey is returned by the key parsers: the bytes are not a key this store wrote.
var errBadKey = errors.New("malformed index key")

func (k segKey) id() model.SegmentID {
	return model.SegmentID(fmt.Sprintf("%s.%016x.%d", k.camera, k.start, k.epoch))
}

func (k segKey) startTime() time.Time { return time.Unix(0, int64(k.start)).UTC() }

func (k segKey) fileName() string { return string(k.id()) + ".seg" }

// appendKey appends camera 0x00 start epoch to b.
func (k segKey) appendKey(b []byte) []byte {
	b = append(b, k.camera...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, k.start)
	return binary.BigEndian.AppendUint64(b, k.epoch)
}

func (k segKey) segmentKey() []byte {
	return k.appendKey(append(make([]byte, 0, 1+len(k.camera)+segKeySuffixLen), prefixSegment))
}

func (k segKey) tombstoneKey() []byte {
	return k.appendKey(append(make([]byte, 0, 1+len(k.camera)+segKeySuffixLen), prefixTombstone))
}

// fragmentPrefix is the prefix of every fragment record of the segment.
func (k segKey) fragmentPrefix() []byte {
	return k.appendKey(append(make([]byte, 0, 1+len(k.camera)+segKeySuffixLen+4), prefixFragment))
}

func (k segKey) fragmentKey(seq uint32) []byte {
	return binary.BigEndian.AppendUint32(k.fragmentPrefix(), seq)
}

// cameraPrefix is the prefix of every key of kind p for one camera.
func cameraPrefix(p byte, camera model.CameraID) []byte {
	b := append(make([]byte, 0, len(camera)+2), p)
	b = append(b, camera...)
	return append(b, 0)
}

func epochKey(camera model.CameraID) []byte {
	return append([]byte{prefixEpoch}, camera...)
}

// prefixEnd returns the smallest key greater than every key that starts with p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

// parseSegKey parses camera 0x00 start epoch (the key without its prefix byte) and returns
// what follows.
func parseSegKey(b []byte) (segKey, []byte, error) {
	i := 0
	for i < len(b) && b[i] != 0 {
		i++
	}
	if i == len(b) || len(b)-i < segKeySuffixLen {
		return segKey{}, nil, errBadKey
	}
	k := segKey{
		camera: model.CameraID(b[:i]),
		start:  binary.BigEndian.Uint64(b[i+1:]),
		epoch:  binary.BigEndian.Uint64(b[i+9:]),
	}
	if model.ValidateID("camera", string(k.camera)) != nil || k.start == 0 || k.start > maxStart {
		return segKey{}, nil, errBadKey
	}
	return k, b[i+segKeySuffixLen:], nil
}

// maxStart keeps start within int64 so it converts back to a time.
const maxStart = 1<<63 - 1

// NewSegmentID returns the id of the segment of camera recorded under epoch that starts at
// start. Start must be after 1970-01-01 UTC.
func NewSegmentID(camera model.CameraID, epoch uint64, start time.Time) (model.SegmentID, error) {
	k, err := newSegKey(camera, epoch, start)
	if err != nil {
		return "", err
	}
	return k.id(), nil
}

func newSegKey(camera model.CameraID, epoch uint64, start time.Time) (segKey, error) {
	if err := model.ValidateID("camera", string(camera)); err != nil {
		return segKey{}, err
	}
	if start.IsZero() || start.UnixNano() <= 0 {
		return segKey{}, model.Invalid("start", "must be after 1970-01-01 UTC, got %s", start)
	}
	return segKey{camera: camera, start: uint64(start.UnixNano()), epoch: epoch}, nil
}

// ParseSegmentID splits a segment id built by this package into its camera, start and
// epoch. It accepts only the canonical form, so equal segments have equal ids.
func ParseSegmentID(id model.SegmentID) (camera model.CameraID, start time.Time, epoch uint64, err error) {
	k, err := parseSegmentID(id)
	if err != nil {
		return "", time.Time{}, 0, err
	}
	return k.camera, k.startTime(), k.epoch, nil
}

func parseSegmentID(id model.SegmentID) (segKey, error) {
	bad := func(why string) error {
		return fmt.Errorf("segment id %q: %s (want <camera>.<start ns, 16 hex>.<epoch>): %w", id, why, model.ErrInvalid)
	}
	parts := strings.Split(string(id), ".")
	if len(parts) != 3 {
		return segKey{}, bad("not three dot-separated parts")
	}
	if model.ValidateID("camera", parts[0]) != nil {
		return segKey{}, bad("bad camera id")
	}
	if len(parts[1]) != 16 {
		return segKey{}, bad("start is not 16 hex digits")
	}
	start, err := strconv.ParseUint(parts[1], 16, 64)
	if err != nil || start == 0 || start > maxStart {
		return segKey{}, bad("bad start")
	}
	epoch, err := strconv.ParseUint(parts[2], 10, 64)
	if err != nil {
		return segKey{}, bad("bad epoch")
	}
	k := segKey{camera: model.CameraID(parts[0]), start: start, epoch: epoch}
	if k.id() != id { // upper-case hex, leading zeros, '+' …
		return segKey{}, bad("not in canonical form")
	}
	return k, nil
}
