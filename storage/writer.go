package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigie-vms/vigie/model"
)

// SegmentWriter appends fragments to one open segment. Append, Seal and Abort must not be
// called concurrently with each other; Info and readers may be used beside them.
type SegmentWriter struct {
	s    *Store
	key  segKey
	id   model.SegmentID
	path string
	f    segFile
	meta segMeta // unsealed record written by Create

	ioMu sync.Mutex // serialises Append, Seal, Abort and Close
	// Guarded by ioMu.
	nextSeq uint32
	// uncached: the file's bytes before this offset (a page boundary) were dropped from the
	// page cache once durable (dropCached).
	uncached int64
	// sums are the sealed checksums of the durable bytes, kept as they are appended.
	sums runningSums
	// done is set once the writer can no longer append: sealed, aborted, store closed, or
	// a failed fsync that left the file in an unknown state.
	done error

	mu     sync.Mutex // guards the fields below, read by Info and OpenReader
	frags  []fragRec  // durable fragments, in append (= time) order
	size   int64      // file size after the last durable fragment
	sealed *model.Segment
}

// ID returns the segment's id.
func (w *SegmentWriter) ID() model.SegmentID { return w.id }

// view returns Info and the durable fragments it counts, taken together.
func (w *SegmentWriter) view() (model.Segment, []fragRec) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.infoLocked(), w.frags[:len(w.frags):len(w.frags)]
}

// Info returns the segment as it is now: Start, End (end of the last durable fragment, or
// Start when there is none), Bytes, Fragments, CodecHash; Sealed false until Seal.
func (w *SegmentWriter) Info() model.Segment {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.infoLocked()
}

func (w *SegmentWriter) infoLocked() model.Segment {
	if w.sealed != nil {
		return *w.sealed
	}
	seg := w.s.segmentOf(w.key, w.meta)
	seg.Bytes = w.size
	seg.Fragments = len(w.frags)
	if n := len(w.frags); n > 0 {
		seg.End = time.Unix(0, w.frags[n-1].start+w.frags[n-1].duration).UTC()
	}
	return seg
}

// snapshot returns the durable fragments and file size (the slice is shared: fragments
// are never modified once appended).
func (w *SegmentWriter) snapshot() ([]fragRec, int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.frags[:len(w.frags):len(w.frags)], w.size
}

func (w *SegmentWriter) invalid(field, format string, args ...any) error {
	return fmt.Errorf("storage: segment %s: append: %w", w.id, model.Invalid(field, format, args...))
}

// Append writes one fragment at the end of the segment. When it returns nil the fragment
// is durable: its bytes were fsynced, then its index record committed with a synced batch.
// Fragments must come in time order (each starting after the previous one's start, none
// before the segment start). On any error the segment is left as it was before the call:
// bad input wraps model.ErrInvalid, a full disk model.ErrNoSpace, a superseded epoch
// model.ErrStaleEpoch.
func (w *SegmentWriter) Append(f model.Fragment) error {
	if err := w.s.enter(); err != nil {
		return fmt.Errorf("storage: segment %s: append: %w", w.id, err)
	}
	defer w.s.life.RUnlock()
	w.ioMu.Lock()
	defer w.ioMu.Unlock()
	if w.done != nil {
		return fmt.Errorf("storage: segment %s: append: %w", w.id, w.done)
	}
	if hi := w.s.highestEpoch(w.key.camera); hi > w.key.epoch {
		return fmt.Errorf("storage: segment %s: append under epoch %d, camera %q is now at epoch %d: %w",
			w.id, w.key.epoch, w.key.camera, hi, model.ErrStaleEpoch)
	}
	switch {
	case len(f.Data) == 0:
		return w.invalid("data", "is empty")
	case len(f.Data) > MaxFragmentSize:
		return w.invalid("data", "%d bytes, more than %d", len(f.Data), MaxFragmentSize)
	case f.Duration < 0 || int64(f.Duration) > maxDuration:
		return w.invalid("duration", "must be between 0 and %s, got %s", time.Duration(maxDuration), f.Duration)
	case f.Start.IsZero() || f.Start.UnixNano() < int64(w.key.start):
		return w.invalid("start", "%s is before the segment start %s", f.Start, w.key.startTime())
	}
	frags, off := w.snapshot()
	start := f.Start.UnixNano()
	if n := len(frags); n > 0 && start <= frags[n-1].start {
		return w.invalid("start", "%s is not after the previous fragment's start %s (fragments must be in time order)",
			f.Start.UTC(), time.Unix(0, frags[n-1].start).UTC())
	}

	n, err := w.f.WriteAt(f.Data, off)
	if err == nil && n != len(f.Data) {
		err = fmt.Errorf("short write (%d of %d bytes)", n, len(f.Data))
	}
	if err == nil {
		err = w.s.syncAppended(w.f)
		if err != nil {
			// After a failed fsync the page cache may not match the disk: stop appending.
			// Seal still works (it re-reads and verifies everything).
			err = w.rollback(off, err)
			w.done = fmt.Errorf("an earlier fsync failed, seal the segment: %w", err)
			return ioError(fmt.Sprintf("segment %s: sync fragment at offset %d", w.id, off), err)
		}
	}
	if err != nil {
		return ioError(fmt.Sprintf("segment %s: write fragment at offset %d", w.id, off), w.rollback(off, err))
	}

	if !w.s.cfg.NoSync {
		w.dropCached(off + int64(len(f.Data)))
	}
	sums, crc := w.sums.add(f.Data)
	rec := fragRec{offset: off, size: int64(len(f.Data)), start: start, duration: int64(f.Duration),
		keyframe: f.Keyframe, crc: crc}
	b := w.s.db.NewBatch()
	_ = b.Set(w.key.fragmentKey(w.nextSeq), encodeFrag(rec), nil)
	err = w.s.db.Apply(b, w.s.wopts)
	_ = b.Close()
	if err != nil {
		return ioError(fmt.Sprintf("segment %s: index fragment at offset %d", w.id, off), w.rollback(off, err))
	}
	w.nextSeq++
	w.sums = sums
	w.mu.Lock()
	w.frags = append(w.frags, rec)
	w.size = rec.end()
	w.mu.Unlock()
	w.s.mu.Lock()
	w.s.bytes += rec.size
	w.s.mu.Unlock()
	return nil
}

// rollback truncates the file back to size after a failed append and returns cause
// (joined with the truncate error, which also stops the writer).
func (w *SegmentWriter) rollback(size int64, cause error) error {
	w.uncached = min(w.uncached, size&^(pageSize-1)) // what is appended again is dropped again
	err := w.f.Truncate(size)
	if err == nil {
		err = w.s.syncFile(w.f)
	}
	if err != nil {
		w.done = fmt.Errorf("could not truncate back after a failed append (%v), seal the segment", err)
		w.s.log.Error("storage: rollback of failed append failed", slog.String("segment", string(w.id)),
			slog.Int64("offset", size), slog.Any("error", err), slog.Any("cause", cause))
		return errors.Join(cause, err)
	}
	return cause
}

// Seal finishes the segment: it records the per-block CRC-32Cs and the whole-file CRC-32C
// (Checksum), summed as the fragments were appended, and marks the segment sealed in the
// index; it reads nothing back. It returns the sealed segment. After a failed fsync or
// truncate (the file's state unknown), it re-reads the file instead, verifies every
// fragment against its checksum and computes the sums from the bytes: a fragment whose
// bytes no longer match their checksum is dropped from the index (and logged) rather
// than sealed in.
func (w *SegmentWriter) Seal() (model.Segment, error) {
	if err := w.s.enter(); err != nil {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.sealed != nil {
			return *w.sealed, nil
		}
		return model.Segment{}, fmt.Errorf("storage: segment %s: seal: %w", w.id, err)
	}
	defer w.s.life.RUnlock()
	w.ioMu.Lock()
	defer w.ioMu.Unlock()
	w.mu.Lock()
	sealed := w.sealed
	w.mu.Unlock()
	if sealed != nil {
		return *sealed, nil
	}
	if errors.Is(w.done, ErrClosed) || errors.Is(w.done, errAborted) {
		return model.Segment{}, fmt.Errorf("storage: segment %s: seal: %w", w.id, w.done)
	}
	entries := make([]fragEntry, len(w.frags))
	for i, r := range w.frags {
		entries[i] = fragEntry{seq: uint32(i), rec: r}
	}
	var res sealResult
	if w.done == nil && w.sums.size == w.size {
		// Every byte of the file is a durable append of this writer, checksummed as it was
		// written: nothing to verify, nothing to read back.
		blocks, whole := w.sums.final()
		res = sealResult{meta: sealedMeta(w.key, w.meta, entries, w.size, blocks, whole), kept: entries}
	} else {
		// A failed fsync or truncate left the file in an unknown state (or, never seen,
		// the sums do not cover the file): re-read it all.
		var err error
		if res, err = w.s.seal(w.key, w.meta, entries, w.f); err != nil {
			return model.Segment{}, err
		}
	}
	for _, d := range res.dropped {
		w.s.log.Error("storage: fragment dropped at seal", slog.String("segment", string(w.id)),
			slog.Int64("offset", d.rec.offset), slog.String("reason", d.reason))
	}
	if err := w.s.commitSeal(w.key, res); err != nil {
		return model.Segment{}, err
	}
	seg := w.s.segmentOf(w.key, res.meta)
	w.mu.Lock()
	w.sealed = &seg
	w.mu.Unlock()
	w.done = fmt.Errorf("segment is sealed")
	_ = w.f.Close()
	w.s.mu.Lock()
	delete(w.s.writers, w.id)
	w.s.bytes += res.meta.bytes - w.size
	w.s.mu.Unlock()
	w.s.log.Debug("storage: segment sealed", slog.String("segment", string(w.id)),
		slog.Int64("bytes", seg.Bytes), slog.Int("fragments", seg.Fragments))
	return seg, nil
}

var errAborted = errors.New("segment aborted")

// Abort removes the open segment: its index records and its file. Use it for a segment
// that will never hold footage (camera lost before the first fragment).
func (w *SegmentWriter) Abort() error {
	if err := w.s.enter(); err != nil {
		return fmt.Errorf("storage: segment %s: abort: %w", w.id, err)
	}
	defer w.s.life.RUnlock()
	mu := w.s.cameraLock(w.key.camera)
	mu.Lock()
	defer mu.Unlock()
	w.ioMu.Lock()
	defer w.ioMu.Unlock()
	if w.done != nil && (errors.Is(w.done, ErrClosed) || errors.Is(w.done, errAborted)) {
		return fmt.Errorf("storage: segment %s: abort: %w", w.id, w.done)
	}
	w.mu.Lock()
	sealed := w.sealed != nil
	w.mu.Unlock()
	if sealed {
		return fmt.Errorf("storage: segment %s: abort: segment is sealed, use Store.Delete", w.id)
	}
	w.done = errAborted
	_ = w.f.Close()
	if err := w.s.deleteSegment(w.key); err != nil {
		return err
	}
	w.s.mu.Lock()
	delete(w.s.writers, w.id)
	w.s.bytes -= w.size
	w.s.count--
	w.s.mu.Unlock()
	return nil
}

// closeFile stops the writer (the store is closing) without sealing.
func (w *SegmentWriter) closeFile(reason error) error {
	w.ioMu.Lock()
	defer w.ioMu.Unlock()
	if errors.Is(w.done, ErrClosed) || errors.Is(w.done, errAborted) {
		return nil
	}
	w.done = reason
	if err := w.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("storage: segment %s: close: %w", w.id, err)
	}
	return nil
}

// pageSize is the unit the page cache drops.
var pageSize = int64(os.Getpagesize())

// dropCached tells the kernel that the file's bytes before end, durable now, need not stay
// in the page cache (its whole pages only: the page holding end is appended to next).
// Footage is written once and rarely read soon after; kept cached, it would push out what
// is read (the index, recent playback) and every 4 KiB written would take a fresh page.
// On a VM whose host takes back free guest memory, a fresh page costs a host fault: in a
// profile of 600 cameras × 2 Mbit/s on one core, the copy into new pages was 22 % of the
// core, 3.5 % once written pages were dropped (and recycled at once).
func (w *SegmentWriter) dropCached(end int64) {
	to := end &^ (pageSize - 1)
	if to <= w.uncached {
		return
	}
	if sc, ok := w.f.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) {
				_ = unix.Fadvise(int(fd), w.uncached, to-w.uncached, unix.FADV_DONTNEED)
			})
		}
	}
	w.uncached = to
}
