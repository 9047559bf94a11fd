package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// Finding is one problem the scrubber found.
type Finding struct {
	// Segment is set when a segment is at fault, Shard (Stripe non-empty) when a shard is.
	Segment model.SegmentID
	Shard   ShardID
	// Offset is the start of the first bad block, -1 when not a block's fault (missing
	// file, wrong size, whole-file checksum).
	Offset int64
	// Err wraps model.ErrCorrupt (bytes do not match their checksums) or model.ErrNotFound
	// (file gone).
	Err error
}

// ScrubStats sums up one pass.
type ScrubStats struct {
	Segments, Shards int
	Bytes            int64
	Findings         int
	Took             time.Duration
}

// Scrub re-verifies every sealed segment and every shard the store holds — size, each
// block's CRC-32C, the whole-file CRC-32C — reading at most rateBytesPerSec (0: as fast as
// the disk goes), and calls report (from Scrub's goroutine) for each problem found: the
// node logs and counts it, and repairs it from the stripe (Rebuild, then RepairShard or
// RepairSegment). Open segments, and objects deleted while the pass runs, are skipped.
// One call is one pass; the node runs passes in a loop so everything is re-read well
// within the retention period. It returns ctx's error when cancelled.
func (s *Store) Scrub(ctx context.Context, rateBytesPerSec int64, report func(Finding)) (ScrubStats, error) {
	start := time.Now()
	var st ScrubStats
	lim := &limiter{rate: rateBytesPerSec}
	segs, err := s.All()
	if err != nil {
		return st, err
	}
	shards, err := s.Shards()
	if err != nil {
		return st, err
	}
	found := func(f Finding) {
		st.Findings++
		var ce *CorruptError
		f.Offset = -1
		if errors.As(f.Err, &ce) && ce.Length > 0 {
			f.Offset = ce.Offset
		}
		s.log.Warn("storage: scrub found a problem", slog.String("segment", string(f.Segment)),
			slog.String("shard", shardName(f.Shard)), slog.Int64("offset", f.Offset), slog.Any("error", f.Err))
		if report != nil {
			report(f)
		}
	}
	for _, seg := range segs {
		if !seg.Sealed {
			continue
		}
		r, err := s.OpenSegmentShard(seg.ID)
		if err != nil {
			if errors.Is(err, model.ErrNotFound) && !errors.Is(err, errFileGone) {
				continue // deleted meanwhile
			}
			found(Finding{Segment: seg.ID, Err: err})
			continue
		}
		n, err := r.verifyAll(ctx, lim)
		_ = r.Close()
		st.Bytes += n
		st.Segments++
		if ctx.Err() != nil {
			st.Took = time.Since(start)
			return st, ctx.Err()
		}
		if err != nil {
			found(Finding{Segment: seg.ID, Err: err})
		}
	}
	for _, sh := range shards {
		r, err := s.OpenShard(sh.ID)
		if err != nil {
			if errors.Is(err, model.ErrNotFound) && !errors.Is(err, errFileGone) {
				continue
			}
			found(Finding{Shard: sh.ID, Err: err})
			continue
		}
		n, err := r.verifyAll(ctx, lim)
		_ = r.Close()
		st.Bytes += n
		st.Shards++
		if ctx.Err() != nil {
			st.Took = time.Since(start)
			return st, ctx.Err()
		}
		if err != nil {
			found(Finding{Shard: sh.ID, Err: err})
		}
	}
	st.Took = time.Since(start)
	s.log.Info("storage: scrub pass done", slog.Int("segments", st.Segments), slog.Int("shards", st.Shards),
		slog.Int64("bytes", st.Bytes), slog.Int("findings", st.Findings), slog.Duration("took", st.Took))
	return st, nil
}

func shardName(id ShardID) string {
	if id.Stripe == "" {
		return ""
	}
	return id.String()
}

// RepairSegment rewrites a local sealed segment's file from rebuilt bytes (Rebuild of its
// stripe's data shard), after the scrubber or a read found it corrupt or missing. The
// bytes must match the block checksums recorded when the segment was sealed — a rebuild is
// byte-identical — otherwise nothing is replaced and the error wraps model.ErrCorrupt. The
// replacement is atomic: temporary file, fsync, rename over the bad file, directory fsync.
func (s *Store) RepairSegment(ctx context.Context, id model.SegmentID, r io.Reader) error {
	k, err := parseSegmentID(id)
	if err != nil {
		return fmt.Errorf("storage: repair segment: %w", err)
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.life.RUnlock()
	mu := s.cameraLock(k.camera) // no Delete meanwhile
	mu.Lock()
	defer mu.Unlock()
	m, err := s.getMeta(k)
	if err != nil {
		return fmt.Errorf("storage: repair: %w", err)
	}
	if !m.sealed {
		return fmt.Errorf("storage: repair segment %s: it is open; only sealed segments belong to stripes: %w", id, model.ErrInUse)
	}
	final := s.segPath(k)
	if err := os.MkdirAll(s.cameraDir(k.camera), 0o755); err != nil {
		return ioError(fmt.Sprintf("repair segment %s", id), err)
	}
	tmp := final + ".repair"
	f, err := s.openFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return ioError(fmt.Sprintf("repair segment %s: create %s", id, tmp), err)
	}
	sum, err := s.copyBlocks(ctx, f, r, m.bytes, m.blockSize, "segment "+string(id))
	if err == nil {
		if err = s.syncFile(f); err != nil {
			err = ioError(fmt.Sprintf("repair segment %s: sync", id), err)
		}
	}
	if err == nil {
		for i, c := range m.blocks {
			if sum.blocks[i] != c {
				err = &CorruptError{Object: "segment " + string(id), Offset: int64(i) * m.blockSize,
					Length: min(m.blockSize, m.bytes-int64(i)*m.blockSize),
					Reason: "of the repair differs from the block sealed: rebuilt from bad shards? nothing replaced"}
				break
			}
		}
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = ioError(fmt.Sprintf("repair segment %s: close", id), cerr)
	}
	if err == nil {
		if rerr := os.Rename(tmp, final); rerr != nil {
			err = ioError(fmt.Sprintf("repair segment %s: rename into place", id), rerr)
		}
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := s.syncDir(s.cameraDir(k.camera)); err != nil {
		return ioError(fmt.Sprintf("repair segment %s: sync directory", id), err)
	}
	s.log.Info("storage: segment repaired", slog.String("segment", string(id)), slog.Int64("bytes", m.bytes))
	return nil
}
