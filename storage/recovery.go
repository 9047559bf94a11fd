package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vigie-vms/vigie/model"
)

// RecoveryReport says what the startup check of Open did. Checked counts the segment
// records examined; Segments lists only those something was done to (and the files found
// without a record). An empty list means files and index agreed and nothing was open.
type RecoveryReport struct {
	Checked  int
	Segments []SegmentRecovery
	Took     time.Duration
}

// SegmentRecovery is what the startup check did to one segment (or one stray file).
type SegmentRecovery struct {
	// Segment is the segment's id; empty for a file whose name is not a segment id.
	Segment model.SegmentID
	// File is the segment file's path (before any quarantine).
	File string
	// TruncatedBytes is how many bytes were cut from the end of the file: a partial
	// fragment in flight, a fragment whose index record was never committed, garbage.
	TruncatedBytes int64
	// DroppedFragments counts index records dropped: pointing past the end of the file,
	// failing their checksum, or out of order.
	DroppedFragments int
	// Sealed is true when a segment left open was sealed with what could be kept.
	Sealed bool
	// Removed is true when the segment was deleted: nothing to keep (no complete fragment),
	// or a deletion interrupted by the crash was finished.
	Removed bool
	// IndexDropped is true when the segment's index records were removed because its file
	// is missing.
	IndexDropped bool
	// QuarantinedTo is where the file was moved when it could not be trusted or was not in
	// the index; empty when it was not quarantined.
	QuarantinedTo string
	// Reason says why, in words.
	Reason string
}

// Clean reports whether the startup check found nothing to do.
func (r RecoveryReport) Clean() bool { return len(r.Segments) == 0 }

// String summarises the report on one line, for a log.
func (r RecoveryReport) String() string {
	var sealed, quarantined, removed, dropped int
	var truncated int64
	for _, e := range r.Segments {
		truncated += e.TruncatedBytes
		switch {
		case e.QuarantinedTo != "":
			quarantined++
		case e.Removed:
			removed++
		case e.IndexDropped:
			dropped++
		case e.Sealed:
			sealed++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "storage startup check: %d segments checked", r.Checked)
	if r.Clean() {
		b.WriteString(", nothing to repair")
		return b.String()
	}
	fmt.Fprintf(&b, "; %d sealed, %d quarantined, %d removed, %d index-only dropped, %d bytes truncated:",
		sealed, quarantined, removed, dropped, truncated)
	for i, e := range r.Segments {
		if i > 0 {
			b.WriteString(";")
		}
		b.WriteString(" ")
		b.WriteString(e.String())
	}
	return b.String()
}

// String describes what was done to one segment.
func (e SegmentRecovery) String() string {
	name := string(e.Segment)
	if name == "" {
		name = e.File
	}
	var acts []string
	if e.TruncatedBytes > 0 {
		acts = append(acts, fmt.Sprintf("truncated %d bytes", e.TruncatedBytes))
	}
	if e.DroppedFragments > 0 {
		acts = append(acts, fmt.Sprintf("dropped %d fragments", e.DroppedFragments))
	}
	if e.Sealed {
		acts = append(acts, "sealed")
	}
	if e.Removed {
		acts = append(acts, "removed")
	}
	if e.IndexDropped {
		acts = append(acts, "index dropped")
	}
	if e.QuarantinedTo != "" {
		acts = append(acts, "quarantined to "+e.QuarantinedTo)
	}
	s := name + ": " + strings.Join(acts, ", ")
	if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	return s
}

// errInitCorrupt: the init section of a segment is missing or fails its checksum, so no
// byte of the segment can be served.
var errInitCorrupt = errors.New("init section missing or corrupt")

type droppedFrag struct {
	seq    uint32
	rec    fragRec
	reason string
}

type sealResult struct {
	meta      segMeta // sealed
	kept      []fragEntry
	dropped   []droppedFrag
	truncated int64
}

// seal verifies a segment file against its records and computes its sealed record: it
// keeps the fragments that lie wholly in the file, in order, and match their CRC; cuts the
// file after the last one kept and syncs it; computes per-block and whole-file CRC-32C.
// It does not write the index (commitSeal does). The error wraps errInitCorrupt when the
// init section cannot be trusted.
func (s *Store) seal(k segKey, m segMeta, entries []fragEntry, f segFile) (sealResult, error) {
	st, err := f.Stat()
	if err != nil {
		return sealResult{}, ioError(fmt.Sprintf("seal segment %s: stat", k.id()), err)
	}
	size := st.Size()
	if size < m.initLen {
		return sealResult{}, fmt.Errorf("%w: file is %d bytes, init section %d", errInitCorrupt, size, m.initLen)
	}
	buf := make([]byte, max(m.initLen, m.blockSize))
	if _, err := f.ReadAt(buf[:m.initLen], 0); err != nil {
		return sealResult{}, ioError(fmt.Sprintf("seal segment %s: read init", k.id()), err)
	}
	if crc32c(buf[:m.initLen]) != m.initCRC {
		return sealResult{}, fmt.Errorf("%w: init section fails its checksum", errInitCorrupt)
	}
	res := sealResult{meta: m}
	end, lastStart := m.initLen, int64(0)
	for _, e := range entries {
		r := e.rec
		var reason string
		switch {
		case r.offset < end:
			reason = fmt.Sprintf("fragment at offset %d overlaps the previous one (ends at %d)", r.offset, end)
		case r.end() > size:
			reason = fmt.Sprintf("fragment at offset %d needs bytes up to %d, file ends at %d", r.offset, r.end(), size)
		case r.start <= lastStart:
			reason = fmt.Sprintf("fragment at offset %d is out of time order", r.offset)
		default:
			if int64(cap(buf)) < r.size {
				buf = make([]byte, r.size)
			}
			if _, err := f.ReadAt(buf[:r.size], r.offset); err != nil {
				return sealResult{}, ioError(fmt.Sprintf("seal segment %s: read fragment at offset %d", k.id(), r.offset), err)
			}
			if crc32c(buf[:r.size]) != r.crc {
				reason = fmt.Sprintf("fragment at offset %d (%d bytes) fails its checksum", r.offset, r.size)
			}
		}
		if reason != "" {
			res.dropped = append(res.dropped, droppedFrag{seq: e.seq, rec: r, reason: reason})
			continue
		}
		res.kept = append(res.kept, e)
		end, lastStart = r.end(), r.start
	}
	if size > end {
		if err := f.Truncate(end); err != nil {
			return sealResult{}, ioError(fmt.Sprintf("seal segment %s: truncate to %d", k.id(), end), err)
		}
		res.truncated = size - end
	}
	if err := s.syncFile(f); err != nil {
		return sealResult{}, ioError(fmt.Sprintf("seal segment %s: sync", k.id()), err)
	}

	blocks := make([]uint32, 0, numBlocks(end, m.blockSize))
	var whole uint32
	block := buf[:m.blockSize]
	for off := int64(0); off < end; off += m.blockSize {
		n := min(m.blockSize, end-off)
		if _, err := f.ReadAt(block[:n], off); err != nil {
			return sealResult{}, ioError(fmt.Sprintf("seal segment %s: read block at %d", k.id(), off), err)
		}
		blocks = append(blocks, crc32c(block[:n]))
		whole = crc32.Update(whole, castagnoli, block[:n])
	}
	res.meta = sealedMeta(k, m, res.kept, end, blocks, whole)
	return res, nil
}

// sealedMeta returns the sealed record of a segment of end bytes holding the fragments
// kept, with its per-block and whole-file CRC-32C.
func sealedMeta(k segKey, m segMeta, kept []fragEntry, end int64, blocks []uint32, whole uint32) segMeta {
	sm := m
	sm.sealed = true
	sm.bytes = end
	sm.fragments = len(kept)
	sm.end = int64(k.start)
	if n := len(kept); n > 0 {
		sm.end = kept[n-1].rec.start + kept[n-1].rec.duration
	}
	sm.blocks = blocks
	sm.fileCRC = whole
	return sm
}

// commitSeal writes the sealed record and drops the records of dropped fragments, in one
// synced batch.
func (s *Store) commitSeal(k segKey, res sealResult) error {
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.Set(k.segmentKey(), encodeMeta(res.meta), nil)
	for _, d := range res.dropped {
		_ = b.Delete(k.fragmentKey(d.seq), nil)
	}
	if err := s.db.Apply(b, s.wopts); err != nil {
		return ioError(fmt.Sprintf("seal segment %s: index", k.id()), err)
	}
	return nil
}

// dropIndex removes every index record of a segment.
func (s *Store) dropIndex(k segKey) error {
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.Delete(k.segmentKey(), nil)
	p := k.fragmentPrefix()
	_ = b.DeleteRange(p, prefixEnd(p), nil)
	if err := s.db.Apply(b, s.wopts); err != nil {
		return ioError(fmt.Sprintf("segment %s: drop index", k.id()), err)
	}
	return nil
}

type pendingSeg struct {
	k    segKey
	m    segMeta
	size int64
}

// recover is the startup check: see doc.go, invariants 3 and 4.
func (s *Store) recover() error {
	// Highest epochs.
	lower := []byte{prefixEpoch}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		cam := model.CameraID(it.Key()[1:])
		v := it.Value()
		if len(v) != 8 || model.ValidateID("camera", string(cam)) != nil {
			_ = it.Close()
			return fmt.Errorf("epoch record %q: %w: %w", it.Key(), model.ErrCorrupt, errBadRecord)
		}
		s.epochs[cam] = binary.BigEndian.Uint64(v)
	}
	if err := it.Close(); err != nil {
		return err
	}

	// Deletions interrupted by a crash.
	lower = []byte{prefixTombstone}
	it, err = s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return err
	}
	var tombs []segKey
	for it.First(); it.Valid(); it.Next() {
		k, rest, err := parseSegKey(it.Key()[1:])
		if err != nil || len(rest) != 0 {
			_ = it.Close()
			return fmt.Errorf("tombstone key %q: %w: %w", it.Key(), model.ErrCorrupt, errBadKey)
		}
		tombs = append(tombs, k)
	}
	if err := it.Close(); err != nil {
		return err
	}
	for _, k := range tombs {
		if err := s.dropIndex(k); err != nil {
			return err
		}
		if err := s.finishDelete(k); err != nil {
			return err
		}
		s.addReport(SegmentRecovery{Segment: k.id(), File: s.segPath(k), Removed: true,
			Reason: "deletion interrupted by a crash, finished"})
	}

	// Segment records against files, one camera directory at a time.
	var (
		curCam   model.CameraID
		curFiles map[string]int64
		started  bool
		seen     = map[model.CameraID]bool{}
		orphans  []string
		open     []pendingSeg
		missing  []pendingSeg
		badSize  []pendingSeg
	)
	finishCam := func() {
		for name := range curFiles {
			orphans = append(orphans, filepath.Join(s.cameraDir(curCam), name))
		}
	}
	lower = []byte{prefixSegment}
	err = s.scanSegments(lower, prefixEnd(lower), func(k segKey, m segMeta) error {
		if !started || k.camera != curCam {
			if started {
				finishCam()
			}
			started, curCam, seen[k.camera] = true, k.camera, true
			var err error
			if curFiles, err = listFiles(s.cameraDir(k.camera)); err != nil {
				return err
			}
		}
		s.report.Checked++
		if k.epoch > s.epochs[k.camera] {
			s.epochs[k.camera] = k.epoch
		}
		size, ok := curFiles[k.fileName()]
		delete(curFiles, k.fileName())
		p := pendingSeg{k: k, m: m, size: size}
		switch {
		case !ok:
			missing = append(missing, p)
		case !m.sealed:
			open = append(open, p)
		case size != m.bytes:
			badSize = append(badSize, p)
		default:
			s.count++
			s.bytes += m.bytes
		}
		return nil
	})
	if err != nil {
		return err
	}
	if started {
		finishCam()
	}
	entries, err := os.ReadDir(s.segDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		path := filepath.Join(s.segDir, e.Name())
		if !e.IsDir() {
			orphans = append(orphans, path)
			continue
		}
		if seen[model.CameraID(e.Name())] {
			continue
		}
		files, err := listFiles(path)
		if err != nil {
			return err
		}
		for name := range files {
			orphans = append(orphans, filepath.Join(path, name))
		}
	}

	for _, p := range missing {
		if err := s.dropIndex(p.k); err != nil {
			return err
		}
		s.addReport(SegmentRecovery{Segment: p.k.id(), File: s.segPath(p.k), IndexDropped: true,
			Reason: "segment file is missing"})
	}
	for _, p := range badSize {
		s.quarantineSegment(p.k, fmt.Sprintf("sealed segment is %d bytes in the index but the file has %d", p.m.bytes, p.size), SegmentRecovery{})
	}
	for _, p := range open {
		if err := s.recoverOpen(p.k, p.m); err != nil {
			return err
		}
	}
	for _, path := range orphans {
		rep := SegmentRecovery{File: path}
		if k, err := parseSegmentID(model.SegmentID(strings.TrimSuffix(filepath.Base(path), ".seg"))); err == nil && strings.HasSuffix(path, ".seg") {
			rep.Segment = k.id()
		}
		rep.Reason = "file has no index record"
		dst, err := s.quarantine(path, rep.Reason)
		if err != nil {
			return fmt.Errorf("quarantine %s: %w", path, err)
		}
		rep.QuarantinedTo = dst
		s.addReport(rep)
	}
	return nil
}

// recoverOpen seals a segment left open by a crash, keeping the fragments that can be
// verified; a segment with nothing to keep is removed, one whose init cannot be trusted is
// quarantined.
func (s *Store) recoverOpen(k segKey, m segMeta) error {
	path := s.segPath(k)
	rep := SegmentRecovery{Segment: k.id(), File: path}
	entries, err := s.loadFrags(k)
	if err != nil {
		s.quarantineSegment(k, fmt.Sprintf("open segment with unreadable fragment records: %v", err), rep)
		return nil
	}
	f, err := s.openFile(path, os.O_RDWR, 0)
	if err != nil {
		s.quarantineSegment(k, fmt.Sprintf("open segment cannot be opened: %v", err), rep)
		return nil
	}
	res, err := s.seal(k, m, entries, f)
	_ = f.Close()
	if err != nil {
		s.quarantineSegment(k, fmt.Sprintf("open segment cannot be sealed: %v", err), rep)
		return nil
	}
	rep.TruncatedBytes = res.truncated
	rep.DroppedFragments = len(res.dropped)
	var why []string
	for _, d := range res.dropped {
		why = append(why, d.reason)
	}
	if len(res.kept) == 0 {
		if err := s.deleteSegment(k); err != nil {
			return err
		}
		rep.Removed = true
		why = append(why, "segment was open and holds no complete fragment")
		rep.Reason = strings.Join(why, "; ")
		s.addReport(rep)
		return nil
	}
	if err := s.commitSeal(k, res); err != nil {
		return err
	}
	rep.Sealed = true
	if res.truncated > 0 {
		why = append(why, fmt.Sprintf("cut %d bytes after the last verified fragment", res.truncated))
	}
	why = append(why, fmt.Sprintf("segment was open: sealed with %d fragments", len(res.kept)))
	rep.Reason = strings.Join(why, "; ")
	s.count++
	s.bytes += res.meta.bytes
	s.addReport(rep)
	return nil
}

// quarantineSegment moves a segment's file aside and drops its index records. Failures
// are logged and reported: the records are dropped anyway so nothing unverified is served.
func (s *Store) quarantineSegment(k segKey, reason string, rep SegmentRecovery) {
	rep.Segment, rep.File, rep.Reason = k.id(), s.segPath(k), reason
	if err := s.dropIndex(k); err != nil {
		rep.Reason += fmt.Sprintf("; dropping its index failed: %v", err)
	}
	dst, err := s.quarantine(rep.File, reason)
	if err != nil {
		rep.Reason += fmt.Sprintf("; moving it to quarantine failed: %v", err)
	} else {
		rep.QuarantinedTo = dst
	}
	s.addReport(rep)
}

func (s *Store) addReport(r SegmentRecovery) {
	s.report.Segments = append(s.report.Segments, r)
	s.log.Warn("storage: startup repair", slog.String("segment", string(r.Segment)), slog.String("file", r.File),
		slog.Int64("truncated_bytes", r.TruncatedBytes), slog.Int("dropped_fragments", r.DroppedFragments),
		slog.Bool("sealed", r.Sealed), slog.Bool("removed", r.Removed), slog.Bool("index_dropped", r.IndexDropped),
		slog.String("quarantined_to", r.QuarantinedTo), slog.String("reason", r.Reason))
}

// listFiles returns the regular files of dir (name → size); a missing dir is empty.
func listFiles(dir string) (map[string]int64, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]int64{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(entries))
	for _, e := range entries {
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[e.Name()] = info.Size()
	}
	return out, nil
}
