package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cockroachdb/pebble/v2"

	"github.com/vigie-vms/vigie/model"
)

// errFileGone is wrapped (with model.ErrNotFound) when an indexed file is missing.
var errFileGone = errors.New("file missing")

// ShardInfo describes a shard held by the store.
type ShardInfo struct {
	ID ShardID
	// Bytes is the shard's stored size.
	Bytes int64
	// Checksum is the CRC-32C of the whole shard.
	Checksum uint32
	// BlockSize is the size of the blocks its per-block checksums cover.
	BlockSize int64
}

func (s *Store) shardPath(id ShardID) string { return filepath.Join(s.shardDir, id.fileName()) }

func (s *Store) getShardMeta(id ShardID) (shardMeta, error) {
	v, closer, err := s.db.Get(id.key())
	if errors.Is(err, pebble.ErrNotFound) {
		return shardMeta{}, fmt.Errorf("storage: shard %s: %w", id, model.ErrNotFound)
	}
	if err != nil {
		return shardMeta{}, fmt.Errorf("storage: shard %s: read index: %w", id, err)
	}
	defer closer.Close()
	m, err := decodeShardMeta(v)
	if err != nil {
		return shardMeta{}, fmt.Errorf("storage: shard %s: %w: %w", id, model.ErrCorrupt, err)
	}
	return m, nil
}

// FreeBytes returns the bytes free for the store on its filesystem and the filesystem's
// size.
func (s *Store) FreeBytes() (free, total int64, err error) {
	free, total, err = s.statfs(s.cfg.Dir)
	if err != nil {
		return 0, 0, fmt.Errorf("storage: free space of %s: %w", s.cfg.Dir, err)
	}
	return free, total, nil
}

// Full reports whether the store has less than Config.MinFreeBytes free: placement must
// not send it new shards (PutShard refuses them) and the node should say so. Recording
// (Create/Append) is not refused on that account: it stops only when the disk is truly full.
func (s *Store) Full() bool {
	free, _, err := s.statfs(s.cfg.Dir)
	return err != nil || free < s.cfg.MinFreeBytes
}

func statfs(dir string) (free, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

// PutShard stores a shard: size bytes read from r (a parity shard, or a data segment
// received from another node). It returns nil only once the shard is durable: written to
// a temporary file, fsynced, renamed into place, the directory fsynced, then indexed with a
// synced batch, per-block CRC-32Cs included. expect, when given, is the CRC-32C the whole
// shard must have (the stripe's catalog entry); a mismatch stores nothing and wraps
// model.ErrCorrupt.
//
// On any error nothing is left behind: r ending early or running long wraps
// model.ErrInvalid; ctx done returns its error; a full disk, or less than
// Config.MinFreeBytes left after the shard, wraps model.ErrNoSpace; a shard already stored
// wraps model.ErrExists, one being written by another call model.ErrInUse.
func (s *Store) PutShard(ctx context.Context, id ShardID, r io.Reader, size int64, expect ...uint32) error {
	return s.putShard(ctx, id, r, size, expect, false)
}

// RepairShard rewrites a local shard from rebuilt bytes (see Rebuild) after a corrupt or
// lost file. The bytes must match the block checksums recorded when the shard was first
// stored (a rebuild is byte-identical), otherwise nothing is replaced and the error wraps
// model.ErrCorrupt; the replacement is atomic (rename over the bad file). A shard the
// index does not know is stored as by PutShard.
func (s *Store) RepairShard(ctx context.Context, id ShardID, r io.Reader, size int64, expect ...uint32) error {
	return s.putShard(ctx, id, r, size, expect, true)
}

func (s *Store) putShard(ctx context.Context, id ShardID, r io.Reader, size int64, expect []uint32, repair bool) error {
	op := "put"
	if repair {
		op = "repair"
	}
	if err := id.Validate(); err != nil {
		return fmt.Errorf("storage: %s shard: %w", op, err)
	}
	if size < 0 || size > maxFileSize {
		return fmt.Errorf("storage: %s shard %s: %w", op, id, model.Invalid("size", "must be between 0 and %d, got %d", int64(maxFileSize), size))
	}
	if len(expect) > 1 {
		return fmt.Errorf("storage: %s shard %s: %w", op, id, model.Invalid("checksum", "at most one expected checksum, got %d", len(expect)))
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.life.RUnlock()
	s.mu.Lock()
	busy := s.shardBusy[id]
	if !busy {
		s.shardBusy[id] = true
	}
	s.mu.Unlock()
	if busy {
		return fmt.Errorf("storage: %s shard %s: another transfer of it is under way: %w", op, id, model.ErrInUse)
	}
	defer func() {
		s.mu.Lock()
		delete(s.shardBusy, id)
		s.mu.Unlock()
	}()

	old, err := s.getShardMeta(id)
	exists := err == nil
	switch {
	case err != nil && !errors.Is(err, model.ErrNotFound):
		return err
	case exists && !repair:
		return fmt.Errorf("storage: put shard %s: %w", id, model.ErrExists)
	case exists && old.size != size:
		return fmt.Errorf("storage: repair shard %s: %w", id, model.Invalid("size", "shard was stored with %d bytes, repair brings %d", old.size, size))
	}
	if !exists {
		free, _, err := s.statfs(s.cfg.Dir)
		if err != nil {
			return ioError(fmt.Sprintf("put shard %s: free space", id), err)
		}
		if free-size < s.cfg.MinFreeBytes {
			return fmt.Errorf("storage: put shard %s of %d bytes: %d bytes free, %d must stay free (storage.min_free_bytes): %w",
				id, size, free, s.cfg.MinFreeBytes, model.ErrNoSpace)
		}
	}

	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	final := s.shardPath(id)
	tmp := final + ".tmp-" + hex.EncodeToString(suffix[:])
	f, err := s.openFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return ioError(fmt.Sprintf("%s shard %s: create %s", op, id, tmp), err)
	}
	removeTmp := func() { _ = f.Close(); _ = os.Remove(tmp) }
	blockSize := int64(s.cfg.BlockSize)
	if exists {
		blockSize = old.blockSize
	}
	sum, err := s.copyBlocks(ctx, f, r, size, blockSize, "shard "+id.String())
	if err == nil {
		err = s.syncFile(f)
		if err != nil {
			err = ioError(fmt.Sprintf("%s shard %s: sync", op, id), err)
		}
	}
	if err == nil && len(expect) == 1 && sum.fileCRC != expect[0] {
		err = fmt.Errorf("storage: %s shard %s: received bytes have crc32c %08x, the stripe records %08x: %w", op, id, sum.fileCRC, expect[0], model.ErrCorrupt)
	}
	if err == nil && exists {
		for i, c := range old.blocks {
			if sum.blocks[i] != c {
				err = &CorruptError{Object: "shard " + id.String(), Offset: int64(i) * blockSize, Length: min(blockSize, size-int64(i)*blockSize),
					Reason: "of the repair differs from the block first stored: rebuilt from bad shards? nothing replaced"}
				break
			}
		}
	}
	if err != nil {
		removeTmp()
		return err
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return ioError(fmt.Sprintf("%s shard %s: close", op, id), err)
	}
	if err := os.Rename(tmp, final); err != nil {
		_ = os.Remove(tmp)
		return ioError(fmt.Sprintf("%s shard %s: rename into place", op, id), err)
	}
	if err := s.syncDir(s.shardDir); err != nil {
		if !exists {
			_ = os.Remove(final)
		}
		return ioError(fmt.Sprintf("%s shard %s: sync directory", op, id), err)
	}
	if exists {
		s.log.Info("storage: shard repaired", slog.String("shard", id.String()), slog.Int64("bytes", size))
		return nil
	}
	m := shardMeta{size: size, blockSize: blockSize, fileCRC: sum.fileCRC, blocks: sum.blocks}
	if err := s.db.Set(id.key(), encodeShardMeta(m), s.wopts); err != nil {
		_ = os.Remove(final)
		return ioError(fmt.Sprintf("put shard %s: index", id), err)
	}
	s.mu.Lock()
	s.shardBytes += size
	s.shardCount++
	s.mu.Unlock()
	s.log.Debug("storage: shard stored", slog.String("shard", id.String()), slog.Int64("bytes", size))
	return nil
}

// copyBlocks copies exactly size bytes from r to f in blocks, checking ctx between blocks,
// and returns their checksums.
func (s *Store) copyBlocks(ctx context.Context, f segFile, r io.Reader, size, blockSize int64, object string) (blockSum, error) {
	sum := blockSum{size: size, blockSize: blockSize, blocks: make([]uint32, 0, numBlocks(size, blockSize))}
	buf := make([]byte, min(blockSize, max(size, 1)))
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return sum, fmt.Errorf("storage: %s: after %d of %d bytes: %w", object, off, size, err)
		}
		n := min(blockSize, size-off)
		got, err := io.ReadFull(r, buf[:n])
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return sum, fmt.Errorf("storage: %s: %w", object, model.Invalid("data", "stream ended after %d of %d bytes", off+int64(got), size))
			}
			return sum, fmt.Errorf("storage: %s: read at offset %d: %w", object, off, err)
		}
		w, err := f.WriteAt(buf[:n], off)
		if err == nil && w != int(n) {
			err = fmt.Errorf("short write (%d of %d bytes)", w, n)
		}
		if err != nil {
			return sum, ioError(fmt.Sprintf("%s: write at offset %d", object, off), err)
		}
		c := crc32c(buf[:n])
		sum.blocks = append(sum.blocks, c)
		sum.fileCRC = crc32.Update(sum.fileCRC, castagnoli, buf[:n])
		off += n
	}
	var one [1]byte
	if n, _ := r.Read(one[:]); n > 0 {
		return sum, fmt.Errorf("storage: %s: %w", object, model.Invalid("data", "stream holds more than the %d bytes announced", size))
	}
	return sum, nil
}

// OpenShard opens a shard stored by PutShard for verified reading.
func (s *Store) OpenShard(id ShardID) (*ShardReader, error) {
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("storage: open shard: %w", err)
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.life.RUnlock()
	m, err := s.getShardMeta(id)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(s.shardPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("storage: shard %s: %w: %w", id, errFileGone, model.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: shard %s: open: %w", id, err)
	}
	return newShardReader("shard "+id.String(), f, blockSum{size: m.size, blockSize: m.blockSize, blocks: m.blocks, fileCRC: m.fileCRC}), nil
}

// OpenSegmentShard opens a local sealed segment as its stripe's data shard: the segment
// file read through its per-block checksums (the virtual zero padding up to the shard size
// is the reader's business, see Stripe). An open segment wraps model.ErrInUse.
func (s *Store) OpenSegmentShard(id model.SegmentID) (*ShardReader, error) {
	k, err := parseSegmentID(id)
	if err != nil {
		return nil, fmt.Errorf("storage: open segment shard: %w", err)
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.life.RUnlock()
	m, err := s.getMeta(k)
	if err != nil {
		return nil, err
	}
	if !m.sealed {
		return nil, fmt.Errorf("storage: segment %s: not sealed, cannot be a stripe's data shard yet: %w", id, model.ErrInUse)
	}
	f, err := os.Open(s.segPath(k))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("storage: segment %s: %w: %w", id, errFileGone, model.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: segment %s: open: %w", id, err)
	}
	return newShardReader("segment "+string(id), f, blockSum{size: m.bytes, blockSize: m.blockSize, blocks: m.blocks, fileCRC: m.fileCRC}), nil
}

// OpenShardRef opens what a stripe's catalog names: the shard stored under ref's id when
// this store holds it, else (for a data shard) the local segment ref.Segment.
func (s *Store) OpenShardRef(ref ShardRef) (*ShardReader, error) {
	r, err := s.OpenShard(ref.ID())
	if err == nil || !errors.Is(err, model.ErrNotFound) || ref.Segment == "" {
		return r, err
	}
	return s.OpenSegmentShard(ref.Segment)
}

// ReadShard reads len(p) verified bytes at off of the shard ref names (see OpenShardRef).
// It makes the store a ShardFetcher for the shards of this node.
func (s *Store) ReadShard(ctx context.Context, ref ShardRef, p []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r, err := s.OpenShardRef(ref)
	if err != nil {
		return err
	}
	defer r.Close()
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("storage: %s: read [%d, %d) past its %d bytes: %w", r.object, off, off+int64(len(p)), r.Size(), model.ErrInvalid)
	}
	return err
}

// DeleteShard removes a shard: its index record (synced), then its file. An unknown shard
// wraps model.ErrNotFound. A crash between the two leaves a file the next Open removes.
func (s *Store) DeleteShard(id ShardID) error {
	if err := id.Validate(); err != nil {
		return fmt.Errorf("storage: delete shard: %w", err)
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.life.RUnlock()
	s.mu.Lock()
	busy := s.shardBusy[id]
	if !busy {
		s.shardBusy[id] = true
	}
	s.mu.Unlock()
	if busy {
		return fmt.Errorf("storage: delete shard %s: a transfer of it is under way: %w", id, model.ErrInUse)
	}
	defer func() {
		s.mu.Lock()
		delete(s.shardBusy, id)
		s.mu.Unlock()
	}()
	m, err := s.getShardMeta(id)
	if err != nil {
		return fmt.Errorf("storage: delete: %w", err)
	}
	if err := s.db.Delete(id.key(), s.wopts); err != nil {
		return ioError(fmt.Sprintf("delete shard %s: index", id), err)
	}
	s.mu.Lock()
	s.shardBytes -= m.size
	s.shardCount--
	s.mu.Unlock()
	if err := os.Remove(s.shardPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return ioError(fmt.Sprintf("delete shard %s: remove file (removed at next start)", id), err)
	}
	if err := s.syncDir(s.shardDir); err != nil {
		return ioError(fmt.Sprintf("delete shard %s: sync directory", id), err)
	}
	s.log.Info("storage: shard deleted", slog.String("shard", id.String()), slog.Int64("bytes", m.size))
	return nil
}

// Shards returns every shard the store holds, sorted by stripe then index.
func (s *Store) Shards() ([]ShardInfo, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.life.RUnlock()
	return s.scanShards()
}

func (s *Store) scanShards() ([]ShardInfo, error) {
	lower := []byte{prefixShard}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return nil, fmt.Errorf("storage: scan shards: %w", err)
	}
	defer it.Close()
	var out []ShardInfo
	for it.First(); it.Valid(); it.Next() {
		id, err := parseShardKey(it.Key())
		if err != nil {
			return nil, fmt.Errorf("storage: index key %q: %w: %w", it.Key(), model.ErrCorrupt, err)
		}
		m, err := decodeShardMeta(it.Value())
		if err != nil {
			return nil, fmt.Errorf("storage: shard %s: %w: %w", id, model.ErrCorrupt, err)
		}
		out = append(out, ShardInfo{ID: id, Bytes: m.size, Checksum: m.fileCRC, BlockSize: m.blockSize})
	}
	return out, it.Error()
}

// ShardUsage returns the bytes and number of shards held (segments are in Usage).
func (s *Store) ShardUsage() (bytes int64, shards int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shardBytes, s.shardCount
}

// VerifyShard re-reads a shard entirely: size, every block checksum, whole-file checksum.
// A mismatch is a *CorruptError (model.ErrCorrupt) naming the shard and offset.
func (s *Store) VerifyShard(id ShardID) error {
	r, err := s.OpenShard(id)
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = r.verifyAll(context.Background(), nil)
	return err
}

// recoverShards is the startup check of the shard directory: unfinished transfers (temporary
// files) are removed; a record whose file is missing is dropped; a file whose size differs
// from its record is quarantined; a file with no record (crash between rename and index:
// never acknowledged) is removed. Each is reported.
func (s *Store) recoverShards() error {
	files, err := listFiles(s.shardDir)
	if err != nil {
		return err
	}
	infos, err := s.scanShards()
	if err != nil {
		return err
	}
	for _, info := range infos {
		name := info.ID.fileName()
		size, ok := files[name]
		delete(files, name)
		path := s.shardPath(info.ID)
		switch {
		case !ok:
			if err := s.db.Delete(info.ID.key(), s.wopts); err != nil {
				return err
			}
			s.addReport(SegmentRecovery{File: path, IndexDropped: true, Reason: fmt.Sprintf("shard %s: file is missing", info.ID)})
		case size != info.Bytes:
			if err := s.db.Delete(info.ID.key(), s.wopts); err != nil {
				return err
			}
			reason := fmt.Sprintf("shard %s is %d bytes in the index but the file has %d", info.ID, info.Bytes, size)
			rep := SegmentRecovery{File: path, IndexDropped: true, Reason: reason}
			if dst, err := s.quarantine(path, reason); err != nil {
				rep.Reason += fmt.Sprintf("; moving it to quarantine failed: %v", err)
			} else {
				rep.QuarantinedTo = dst
			}
			s.addReport(rep)
		default:
			s.shardBytes += info.Bytes
			s.shardCount++
		}
	}
	for name := range files {
		path := filepath.Join(s.shardDir, name)
		reason := "shard file has no index record: its transfer was never acknowledged"
		if strings.Contains(name, ".tmp-") {
			reason = "unfinished shard transfer"
		}
		if err := os.Remove(path); err != nil {
			return err
		}
		s.addReport(SegmentRecovery{File: path, Removed: true, Reason: reason})
	}
	if len(files) > 0 {
		return s.syncDir(s.shardDir)
	}
	return nil
}
