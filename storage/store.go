package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vigie-vms/vigie/model"
)

// ErrClosed is returned by every call on a closed Store, and by a SegmentWriter whose
// Store was closed.
var ErrClosed = errors.New("storage: store closed")

// Store is a node's local segment store. It is safe for concurrent use; each
// SegmentWriter must be used by one goroutine at a time (readers may run beside it).
type Store struct {
	cfg           Config
	log           *slog.Logger
	db            *pebble.DB
	wopts         *pebble.WriteOptions
	segDir        string
	shardDir      string
	quarantineDir string
	report        RecoveryReport

	// openFile opens segment files for writing; tests replace it to inject disk errors.
	openFile func(name string, flag int, perm fs.FileMode) (segFile, error)
	// statfs reports free and total bytes of the store's filesystem; tests replace it.
	statfs func(dir string) (free, total int64, err error)

	// life is held shared by every operation that touches the index or the files, and
	// exclusively by Close, so Close waits for operations in flight and none starts after.
	life   sync.RWMutex
	closed bool // guarded by life
	// camLocks serialise, per camera (hashed), Create, Delete, Abort and RepairSegment:
	// a camera's epoch check and its persistence are atomic, and a segment is not deleted
	// twice. Cameras do not wait for each other: a store-wide lock held across the syncs
	// of Create queued hundreds of cameras opening segments at once for tens of seconds
	// (their RTSP reads stalled and frames were dropped). Never held by Append.
	camLocks [256]sync.Mutex

	// appendSync makes appended fragments durable in rounds shared by every camera (nil
	// with NoSync); syncDirF is the directory handle its syncfs uses.
	appendSync *syncGroup
	syncDirF   *os.File

	mu      sync.Mutex // guards the fields below; never held across I/O
	writers map[model.SegmentID]*SegmentWriter
	epochs  map[model.CameraID]uint64 // highest epoch seen per camera (also in the index)
	bytes   int64
	count   int

	shardBusy  map[ShardID]bool // shards being written, repaired or deleted
	shardBytes int64
	shardCount int
}

// enter starts an operation: it fails when the store is closed, otherwise the caller must
// call s.life.RUnlock() when done.
func (s *Store) enter() error {
	s.life.RLock()
	if s.closed {
		s.life.RUnlock()
		return ErrClosed
	}
	return nil
}

// Open opens the store under cfg.Dir, creating it if needed, and runs the startup check
// (see RecoveryReport) before returning. After Open, no segment is open: every segment left
// open by a crash or an unclean shutdown has been sealed, quarantined or removed.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("storage: config: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Store{
		cfg:           cfg,
		log:           cfg.Logger,
		segDir:        filepath.Join(cfg.Dir, "segments"),
		shardDir:      filepath.Join(cfg.Dir, "shards"),
		quarantineDir: filepath.Join(cfg.Dir, "quarantine"),
		openFile:      osOpenFile,
		statfs:        statfs,
		shardBusy:     make(map[ShardID]bool),
		writers:       make(map[model.SegmentID]*SegmentWriter),
		epochs:        make(map[model.CameraID]uint64),
		wopts:         pebble.Sync,
	}
	if cfg.NoSync {
		s.wopts = pebble.NoSync
	}
	for _, d := range []string{s.segDir, s.shardDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("storage: create %s: %w", d, err)
		}
	}
	if !cfg.NoSync {
		do, d, err := syncfsOf(s.segDir)
		if err != nil {
			return nil, fmt.Errorf("storage: open %s: %w", s.segDir, err)
		}
		s.appendSync, s.syncDirF = &syncGroup{do: do}, d
	}
	db, err := pebble.Open(filepath.Join(cfg.Dir, "index"), &pebble.Options{
		Logger: pebbleLogger{cfg.Logger.With(slog.String("component", "pebble"))},
	})
	if err != nil {
		if s.syncDirF != nil {
			_ = s.syncDirF.Close()
		}
		return nil, fmt.Errorf("storage: open index in %s: %w", cfg.Dir, err)
	}
	s.db = db
	start := time.Now()
	err = s.recover()
	if err == nil {
		err = s.recoverShards()
	}
	if err != nil {
		_ = db.Close()
		if s.syncDirF != nil {
			_ = s.syncDirF.Close()
		}
		return nil, fmt.Errorf("storage: startup check of %s: %w", cfg.Dir, err)
	}
	s.report.Took = time.Since(start)
	if s.report.Clean() {
		s.log.Info("storage: opened", slog.String("dir", cfg.Dir), slog.Int("segments", s.count),
			slog.Int64("bytes", s.bytes), slog.Int("shards", s.shardCount), slog.Duration("check", s.report.Took))
	} else {
		s.log.Warn("storage: opened after repairs", slog.String("dir", cfg.Dir), slog.Int("segments", s.count),
			slog.Int64("bytes", s.bytes), slog.String("report", s.report.String()))
	}
	return s, nil
}

// Close closes the store. Segments still open stay open on disk (unsealed): the next Open
// seals them and reports it, so a node shutting down cleanly seals its writers first.
func (s *Store) Close() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.mu.Lock()
	writers := make([]*SegmentWriter, 0, len(s.writers))
	for _, w := range s.writers {
		writers = append(writers, w)
	}
	s.mu.Unlock()
	var errs []error
	for _, w := range writers {
		if err := w.closeFile(ErrClosed); err != nil {
			errs = append(errs, err)
		}
	}
	if s.syncDirF != nil {
		_ = s.syncDirF.Close()
	}
	if err := s.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("storage: close index: %w", err))
	}
	return errors.Join(errs...)
}

// RecoveryReport says what the startup check of Open did.
func (s *Store) RecoveryReport() RecoveryReport { return s.report }

// Create opens a new segment of camera, recorded under epoch, whose init section is init
// and which starts at start. The init section is written and synced, and the segment
// recorded in the index, before Create returns.
//
// Fencing: an epoch lower than the highest already seen for the camera (persisted across
// restarts) is refused with an error wrapping model.ErrStaleEpoch. A segment with the same
// camera, start and epoch already existing is refused with model.ErrExists.
func (s *Store) Create(camera model.CameraID, epoch uint64, init []byte, start time.Time) (*SegmentWriter, error) {
	k, err := newSegKey(camera, epoch, start)
	if err != nil {
		return nil, fmt.Errorf("storage: create segment: %w", err)
	}
	if len(init) == 0 || len(init) > MaxFragmentSize {
		return nil, fmt.Errorf("storage: create segment of camera %q: %w", camera,
			model.Invalid("init", "must be 1 to %d bytes, got %d", MaxFragmentSize, len(init)))
	}
	id := k.id()

	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.life.RUnlock()
	// The camera's lock covers the epoch check and its persistence, so two Creates cannot
	// both pass the fence.
	mu := s.cameraLock(camera)
	mu.Lock()
	defer mu.Unlock()
	s.mu.Lock()
	hi := s.epochs[camera]
	_, open := s.writers[id]
	s.mu.Unlock()
	if epoch < hi {
		return nil, fmt.Errorf("storage: create segment of camera %q with epoch %d: camera is at epoch %d: %w", camera, epoch, hi, model.ErrStaleEpoch)
	}
	if open {
		return nil, fmt.Errorf("storage: segment %s: %w", id, model.ErrExists)
	}
	if _, err := s.getMeta(k); err == nil {
		return nil, fmt.Errorf("storage: segment %s: %w", id, model.ErrExists)
	} else if !errors.Is(err, model.ErrNotFound) {
		return nil, err
	}

	dir := s.cameraDir(camera)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, ioError(fmt.Sprintf("create directory of camera %q", camera), err)
		}
		if err := s.syncDir(s.segDir); err != nil {
			return nil, ioError("sync segments directory", err)
		}
	}
	path := s.segPath(k)
	f, err := s.openFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("storage: segment %s: file %s already exists (quarantined at next start if not indexed): %w", id, path, model.ErrExists)
		}
		return nil, ioError(fmt.Sprintf("create segment %s", id), err)
	}
	fail := func(what string, err error) (*SegmentWriter, error) {
		_ = f.Close()
		_ = os.Remove(path)
		return nil, ioError(fmt.Sprintf("create segment %s: %s", id, what), err)
	}
	if n, err := f.WriteAt(init, 0); err != nil || n != len(init) {
		if err == nil {
			err = fmt.Errorf("short write (%d of %d bytes)", n, len(init))
		}
		return fail("write init", err)
	}
	if err := s.syncFile(f); err != nil {
		return fail("sync", err)
	}
	if err := s.syncDir(dir); err != nil {
		return fail("sync directory", err)
	}
	sum := sha256.Sum256(init)
	m := segMeta{initLen: int64(len(init)), initCRC: crc32c(init), blockSize: int64(s.cfg.BlockSize)}
	copy(m.codecHash[:], sum[:])
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.Set(k.segmentKey(), encodeMeta(m), nil)
	if epoch > hi {
		_ = b.Set(epochKey(camera), binary.BigEndian.AppendUint64(nil, epoch), nil)
	}
	if err := s.db.Apply(b, s.wopts); err != nil {
		return fail("index", err)
	}
	w := &SegmentWriter{s: s, key: k, id: id, path: path, f: f, meta: m, size: m.initLen}
	w.sums, _ = runningSums{blockSize: m.blockSize}.add(init)
	s.mu.Lock()
	s.epochs[camera] = max(s.epochs[camera], epoch)
	s.writers[id] = w
	s.bytes += m.initLen
	s.count++
	s.mu.Unlock()
	s.log.Debug("storage: segment created", slog.String("segment", string(id)), slog.Uint64("epoch", epoch))
	return w, nil
}

// cameraLock returns the lock of camera's segment creations and deletions (shared with
// the cameras whose id hashes alike).
func (s *Store) cameraLock(camera model.CameraID) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(camera))
	return &s.camLocks[h.Sum32()%uint32(len(s.camLocks))]
}

// highestEpoch returns the highest epoch seen for camera.
func (s *Store) highestEpoch(camera model.CameraID) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epochs[camera]
}

func (s *Store) getMeta(k segKey) (segMeta, error) {
	v, closer, err := s.db.Get(k.segmentKey())
	if errors.Is(err, pebble.ErrNotFound) {
		return segMeta{}, fmt.Errorf("storage: segment %s: %w", k.id(), model.ErrNotFound)
	}
	if err != nil {
		return segMeta{}, fmt.Errorf("storage: segment %s: read index: %w", k.id(), err)
	}
	defer closer.Close()
	m, err := decodeMeta(v)
	if err != nil {
		return segMeta{}, fmt.Errorf("storage: segment %s: %w: %w", k.id(), model.ErrCorrupt, err)
	}
	return m, nil
}

// segmentOf builds the catalog view of a sealed (or, with its live values, open) segment.
func (s *Store) segmentOf(k segKey, m segMeta) model.Segment {
	seg := model.Segment{
		ID:        k.id(),
		Camera:    k.camera,
		Epoch:     k.epoch,
		Node:      s.cfg.NodeID,
		Start:     k.startTime(),
		End:       k.startTime(),
		Bytes:     m.initLen,
		CodecHash: fmt.Sprintf("%x", m.codecHash),
		Sealed:    m.sealed,
	}
	if m.sealed {
		seg.End = time.Unix(0, m.end).UTC()
		seg.Bytes = m.bytes
		seg.Fragments = m.fragments
		seg.Checksum = m.fileCRC
	}
	return seg
}

// lookup returns the current state of a segment: the live one when it is open.
func (s *Store) lookup(k segKey, m segMeta) model.Segment {
	if !m.sealed {
		s.mu.Lock()
		w := s.writers[k.id()]
		s.mu.Unlock()
		if w != nil {
			return w.Info()
		}
	}
	return s.segmentOf(k, m)
}

// Segment returns one local segment; the error wraps model.ErrNotFound when the store does
// not hold it.
func (s *Store) Segment(id model.SegmentID) (model.Segment, error) {
	k, err := parseSegmentID(id)
	if err != nil {
		return model.Segment{}, fmt.Errorf("storage: %w", err)
	}
	if err := s.enter(); err != nil {
		return model.Segment{}, err
	}
	defer s.life.RUnlock()
	m, err := s.getMeta(k)
	if err != nil {
		return model.Segment{}, err
	}
	return s.lookup(k, m), nil
}

// scanSegments calls fn for every segment record in [lower, upper), in key order.
func (s *Store) scanSegments(lower, upper []byte, fn func(k segKey, m segMeta) error) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("storage: scan index: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		k, rest, err := parseSegKey(it.Key()[1:])
		if err != nil || len(rest) != 0 {
			_ = it.Close()
			return fmt.Errorf("storage: index key %q: %w: %w", it.Key(), model.ErrCorrupt, errBadKey)
		}
		m, err := decodeMeta(it.Value())
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("storage: segment %s: %w: %w", k.id(), model.ErrCorrupt, err)
		}
		if err := fn(k, m); err != nil {
			_ = it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("storage: scan index: %w", err)
	}
	return nil
}

// Segments returns the local segments of camera that overlap [from, to), open ones
// included (Sealed false, End at the end of their last durable fragment), sorted by Start.
//
// It scans the camera's segment records that start before to; at one segment every ten
// minutes that is a few thousand records for thirty days.
func (s *Store) Segments(camera model.CameraID, from, to time.Time) ([]model.Segment, error) {
	if err := model.ValidateID("camera", string(camera)); err != nil {
		return nil, fmt.Errorf("storage: segments: %w", err)
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.life.RUnlock()
	lower := cameraPrefix(prefixSegment, camera)
	upper := prefixEnd(lower)
	if n := to.UnixNano(); !to.IsZero() && n > 0 {
		upper = binary.BigEndian.AppendUint64(append([]byte(nil), lower...), uint64(n))
	} else {
		return nil, nil // to is not after 1970: nothing can start before it
	}
	var out []model.Segment
	err := s.scanSegments(lower, upper, func(k segKey, m segMeta) error {
		if seg := s.lookup(k, m); seg.Overlaps(from, to) {
			out = append(out, seg)
		}
		return nil
	})
	return out, err
}

// All returns every local segment, open ones included, sorted by camera then Start. The
// node reconciles it with the catalog at startup.
func (s *Store) All() ([]model.Segment, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.life.RUnlock()
	var out []model.Segment
	lower := []byte{prefixSegment}
	err := s.scanSegments(lower, prefixEnd(lower), func(k segKey, m segMeta) error {
		out = append(out, s.lookup(k, m))
		return nil
	})
	return out, err
}

// loadFrags returns the fragment records of a segment in append order.
func (s *Store) loadFrags(k segKey) ([]fragEntry, error) {
	p := k.fragmentPrefix()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, fmt.Errorf("storage: segment %s: scan fragments: %w", k.id(), err)
	}
	defer it.Close()
	var out []fragEntry
	for it.First(); it.Valid(); it.Next() {
		key := it.Key()
		if len(key) != len(p)+4 || !bytes.HasPrefix(key, p) {
			return nil, fmt.Errorf("storage: segment %s: fragment key %q: %w: %w", k.id(), key, model.ErrCorrupt, errBadKey)
		}
		seq := binary.BigEndian.Uint32(key[len(p):])
		f, err := decodeFrag(it.Value())
		if err != nil {
			return nil, fmt.Errorf("storage: segment %s: fragment %d: %w: %w", k.id(), seq, model.ErrCorrupt, err)
		}
		out = append(out, fragEntry{seq: seq, rec: f})
	}
	return out, it.Error()
}

// fragEntry is a fragment record with its sequence number in the segment.
type fragEntry struct {
	seq uint32
	rec fragRec
}

// Delete removes a segment: its index records, then its file. Deleting an open segment is
// refused (model.ErrInUse); an unknown one wraps model.ErrNotFound. A crash in the middle is
// finished by the next Open. Readers already open keep reading the deleted bytes.
func (s *Store) Delete(id model.SegmentID) error {
	k, err := parseSegmentID(id)
	if err != nil {
		return fmt.Errorf("storage: delete: %w", err)
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.life.RUnlock()
	mu := s.cameraLock(k.camera)
	mu.Lock()
	defer mu.Unlock()
	s.mu.Lock()
	_, open := s.writers[id]
	s.mu.Unlock()
	if open {
		return fmt.Errorf("storage: delete segment %s: it is open for writing; seal it first: %w", id, model.ErrInUse)
	}
	m, err := s.getMeta(k)
	if err != nil {
		return fmt.Errorf("storage: delete: %w", err)
	}
	if err := s.deleteSegment(k); err != nil {
		return err
	}
	s.mu.Lock()
	s.bytes -= m.bytes
	s.count--
	s.mu.Unlock()
	s.log.Info("storage: segment deleted", slog.String("segment", string(id)), slog.Int64("bytes", m.bytes))
	return nil
}

// deleteSegment drops the index records of a segment and a tombstone in one synced batch,
// removes the file, then the tombstone.
func (s *Store) deleteSegment(k segKey) error {
	b := s.db.NewBatch()
	_ = b.Delete(k.segmentKey(), nil)
	p := k.fragmentPrefix()
	_ = b.DeleteRange(p, prefixEnd(p), nil)
	_ = b.Set(k.tombstoneKey(), nil, nil)
	err := s.db.Apply(b, s.wopts)
	_ = b.Close()
	if err != nil {
		return ioError(fmt.Sprintf("delete segment %s: index", k.id()), err)
	}
	return s.finishDelete(k)
}

func (s *Store) finishDelete(k segKey) error {
	path := s.segPath(k)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return ioError(fmt.Sprintf("delete segment %s: remove %s (finished at next start)", k.id(), path), err)
	}
	if err := s.syncDir(filepath.Dir(path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return ioError(fmt.Sprintf("delete segment %s: sync directory (finished at next start)", k.id()), err)
	}
	if err := s.db.Delete(k.tombstoneKey(), pebble.NoSync); err != nil {
		return ioError(fmt.Sprintf("delete segment %s: drop tombstone", k.id()), err)
	}
	return nil
}

// Usage returns the bytes and number of segments held (open ones included; quarantined
// files excluded).
func (s *Store) Usage() (bytes int64, segments int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes, s.count
}

// pebbleLogger sends Pebble's logs to slog.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) { p.l.Debug(fmt.Sprintf(format, args...)) }
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg)
	panic("pebble: " + msg)
}
