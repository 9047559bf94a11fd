package clustertest

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"

	"github.com/vigie-vms/vigie/loadtest/sei"
	"github.com/vigie-vms/vigie/model"
)

// FPS is the frame rate of simcam's embedded clips: frame numbers convert to time with it.
const FPS = 25

// SegmentFrames is one segment of a camera's footage and the SEI frame numbers it holds.
type SegmentFrames struct {
	Segment model.Segment
	Frames  []uint64 // in recording order
	// Err is set when the segment could not be read (the node holding it is down).
	Err error
}

// Footage is everything recorded of a camera that the harness could find: the catalog's
// segments (sealed, reconciled) and the segments nodes are still writing, read from the
// node that holds each one.
type Footage struct {
	Camera   string
	Segments []SegmentFrames
}

// Footage reads camera's footage over [from, to): segments from the catalog of a running
// node plus every running node's open segments; each segment's fragments come from the
// node that holds it (peer API), and their samples' SEI tags give the frame numbers.
func (h *Cluster) Footage(ctx context.Context, camera string, from, to time.Time) (Footage, error) {
	f := Footage{Camera: camera}
	up := h.Up()
	if len(up) == 0 {
		return f, fmt.Errorf("footage of %s: no node is running", camera)
	}
	var segs []model.Segment
	seen := map[model.SegmentID]bool{}
	for _, nd := range up {
		c := nd.C()
		if c == nil {
			continue
		}
		cat, err := c.Segments(model.CameraID(camera), from, to)
		if err != nil {
			return f, fmt.Errorf("catalog of %s on %s: %w", camera, nd.ID, err)
		}
		for _, s := range cat {
			if !seen[s.ID] {
				seen[s.ID] = true
				segs = append(segs, s)
			}
		}
	}
	listed := len(segs) // the catalog's entries come first and win
	for _, nd := range up {
		open, err := nd.API().peerOpenSegments(ctx, camera, from, to)
		if err != nil {
			continue // stopped in between
		}
		for _, s := range open {
			if !seen[s.ID] {
				seen[s.ID] = true
				segs = append(segs, s)
				continue
			}
			// Two uncommitted copies (the recording node's, a hot replica's): the longer.
			for i := listed; i < len(segs); i++ {
				if segs[i].ID == s.ID && s.Fragments > segs[i].Fragments {
					segs[i] = s
				}
			}
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].Start.Before(segs[j].Start) })
	for _, s := range segs {
		sf := SegmentFrames{Segment: s}
		holder := h.ByID(s.Node)
		if holder == nil || holder.N() == nil {
			sf.Err = fmt.Errorf("segment %s: node %s is down", s.ID, s.Node)
		} else {
			sf.Frames, sf.Err = readSegmentFrames(ctx, holder.API(), s.ID)
		}
		f.Segments = append(f.Segments, sf)
	}
	return f, nil
}

func readSegmentFrames(ctx context.Context, a *API, id model.SegmentID) ([]uint64, error) {
	idx, err := a.peerIndex(ctx, id)
	if err != nil {
		return nil, err
	}
	h265 := false // simcam's default clip is H.264
	var out []uint64
	for _, fi := range idx.Fragments {
		data, err := a.peerFragment(ctx, id, fi)
		if err != nil {
			return out, err
		}
		for _, mdat := range boxes(data, "mdat") {
			for _, tag := range sei.ScanAVCC(mdat, h265) {
				out = append(out, tag.Frame)
			}
		}
	}
	return out, nil
}

// boxes returns the payloads of the top-level ISO BMFF boxes of type typ in b.
func boxes(b []byte, typ string) [][]byte {
	var out [][]byte
	for len(b) >= 8 {
		size := uint64(binary.BigEndian.Uint32(b))
		hdr := uint64(8)
		if size == 1 && len(b) >= 16 {
			size, hdr = binary.BigEndian.Uint64(b[8:]), 16
		}
		if size == 0 {
			size = uint64(len(b))
		}
		if size < hdr || size > uint64(len(b)) {
			break
		}
		if string(b[4:8]) == typ {
			out = append(out, b[hdr:size])
		}
		b = b[size:]
	}
	return out
}

// Frames is the sorted set of frame numbers found in every readable segment.
func (f Footage) Frames() []uint64 {
	set := map[uint64]bool{}
	for _, s := range f.Segments {
		for _, k := range s.Frames {
			set[k] = true
		}
	}
	out := make([]uint64, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// ByNode returns the frame numbers each node recorded (sorted, unique).
func (f Footage) ByNode() map[model.NodeID][]uint64 {
	out := map[model.NodeID][]uint64{}
	for _, s := range f.Segments {
		out[s.Segment.Node] = append(out[s.Segment.Node], s.Frames...)
	}
	for n, ks := range out {
		sort.Slice(ks, func(i, j int) bool { return ks[i] < ks[j] })
		out[n] = uniq(ks)
	}
	return out
}

// Unreadable returns the segments that could not be read.
func (f Footage) Unreadable() []SegmentFrames {
	var out []SegmentFrames
	for _, s := range f.Segments {
		if s.Err != nil {
			out = append(out, s)
		}
	}
	return out
}

func uniq(ks []uint64) []uint64 {
	out := ks[:0]
	for i, k := range ks {
		if i == 0 || k != ks[i-1] {
			out = append(out, k)
		}
	}
	return out
}

// Hole is a run of missing frame numbers: every frame strictly between After and Before.
type Hole struct{ After, Before uint64 }

// Frames is how many frames are missing.
func (h Hole) Frames() uint64 {
	if h.Before <= h.After+1 {
		return 0
	}
	return h.Before - h.After - 1
}

// Duration is the footage missing, at FPS (zero for no hole).
func (h Hole) Duration() time.Duration {
	return time.Duration(h.Frames()) * time.Second / FPS
}

// Coverage is what a sorted set of frame numbers says: its range, what is missing inside.
type Coverage struct {
	First, Last uint64
	Frames      int
	Missing     uint64
	Holes       []Hole
}

// Cover computes the coverage of sorted, unique frame numbers.
func Cover(frames []uint64) Coverage {
	var c Coverage
	if len(frames) == 0 {
		return c
	}
	c.First, c.Last, c.Frames = frames[0], frames[len(frames)-1], len(frames)
	for i := 1; i < len(frames); i++ {
		if frames[i] > frames[i-1]+1 {
			hole := Hole{After: frames[i-1], Before: frames[i]}
			c.Holes = append(c.Holes, hole)
			c.Missing += hole.Frames()
		}
	}
	return c
}

// Largest is the longest hole (zero Hole when there is none).
func (c Coverage) Largest() Hole {
	var best Hole
	for _, h := range c.Holes {
		if h.Frames() > best.Frames() {
			best = h
		}
	}
	return best
}

func (c Coverage) String() string {
	s := fmt.Sprintf("%d frames, numbers %d..%d", c.Frames, c.First, c.Last)
	if c.Missing > 0 {
		s += fmt.Sprintf(", %d missing in %d holes (largest %d..%d: %s)", c.Missing, len(c.Holes),
			c.Largest().After, c.Largest().Before, c.Largest().Duration())
	}
	return s
}

// ExportFrames returns the SEI frame numbers of the video samples of a progressive MP4
// (an export), in order.
func ExportFrames(data []byte) ([]uint64, error) {
	var p pmp4.Presentation
	if err := p.Unmarshal(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("parse MP4 (%d bytes): %w", len(data), err)
	}
	for _, tr := range p.Tracks {
		h265 := false
		switch tr.Codec.(type) {
		case *mp4.CodecH264:
		case *mp4.CodecH265:
			h265 = true
		default:
			continue
		}
		var out []uint64
		for i, s := range tr.Samples {
			payload, err := s.GetPayload()
			if err != nil {
				return out, fmt.Errorf("sample %d: %w", i, err)
			}
			for _, tag := range sei.ScanAVCC(payload, h265) {
				out = append(out, tag.Frame)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("no H.264 or H.265 track among %d tracks", len(p.Tracks))
}

// Percentile returns the p-th percentile (0..100, nearest rank) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p/100*float64(len(s)) + 0.5)
	if i < 1 {
		i = 1
	}
	if i > len(s) {
		i = len(s)
	}
	return s[i-1]
}
