package gateway

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/vigie-vms/vigie/model"
)

// Request limits.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// MaxRange is the longest time range a timeline, segment list, stream or export covers.
	MaxRange = 31 * 24 * time.Hour
)

// pageSize checks a page_size: 0 means DefaultPageSize.
func pageSize(n int32) (int, error) {
	switch {
	case n == 0:
		return DefaultPageSize, nil
	case n < 0 || n > MaxPageSize:
		return 0, model.Invalid("page_size", "must be between 0 (default %d) and %d, got %d", DefaultPageSize, MaxPageSize, n)
	}
	return int(n), nil
}

// Page tokens are opaque to clients: base64url("v1|" + kind + "|" + key). kind stops a
// token of one list from being used on another.
func encodePageToken(kind, key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("v1|" + kind + "|" + key))
}

func decodePageToken(kind, tok string) (string, error) {
	if tok == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return "", model.Invalid("page_token", "is not a token returned as next_page_token")
	}
	parts := strings.SplitN(string(b), "|", 3)
	if len(parts) != 3 || parts[0] != "v1" || parts[1] != kind || parts[2] == "" {
		return "", model.Invalid("page_token", "is not a token returned as next_page_token by this list")
	}
	return parts[2], nil
}

// DefaultRange is the length of a timeline or segment list when the request gives no
// start: the last hour, which is what an operator opening a camera wants to see.
const DefaultRange = time.Hour

// timeRange checks a [start, end) range given as timestamps. A missing end means now; a
// missing start means DefaultRange before the end.
func timeRange(start, end *timestamppb.Timestamp, now time.Time) (time.Time, time.Time, error) {
	e := now
	if end != nil {
		if err := end.CheckValid(); err != nil {
			return time.Time{}, time.Time{}, model.Invalid("end", "is not a valid time: %v", err)
		}
		e = end.AsTime()
	}
	s := e.Add(-DefaultRange)
	if start != nil {
		if err := start.CheckValid(); err != nil {
			return time.Time{}, time.Time{}, model.Invalid("start", "is not a valid time: %v", err)
		}
		s = start.AsTime()
	}
	return s, e, checkRange(s, e, "end")
}

// checkRange checks that start < end and that the range is at most MaxRange; endField
// names the parameter blamed ("end" or "duration").
func checkRange(start, end time.Time, endField string) error {
	if !start.Before(end) {
		return model.Invalid(endField, "must be after start (start %s, end %s)", start.Format(time.RFC3339Nano), end.Format(time.RFC3339Nano))
	}
	if end.Sub(start) > MaxRange {
		return model.Invalid(endField, "range must not exceed 31 days, got %s", end.Sub(start))
	}
	return nil
}

// parseTimeParam parses a media time parameter: RFC 3339 or Unix milliseconds.
func parseTimeParam(field, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, model.Invalid(field, "is required (RFC 3339 time or Unix milliseconds)")
	}
	if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.UnixMilli(ms).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, model.Invalid(field, "%q is neither an RFC 3339 time nor Unix milliseconds", v)
	}
	return t, nil
}

// segmentKey orders segments in ListSegments pages: start then id.
func segmentKey(s model.Segment) string {
	return strconv.FormatInt(s.Start.UnixNano(), 10) + "/" + string(s.ID)
}

func parseSegmentKey(k string) (int64, model.SegmentID, error) {
	ns, id, ok := strings.Cut(k, "/")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || id == "" {
		return 0, "", model.Invalid("page_token", "is not a token returned as next_page_token by this list")
	}
	return n, model.SegmentID(id), nil
}
