package storage

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
	"time"

	"github.com/vigie-vms/vigie/model"
)

// CorruptError says which stored bytes failed their checksum. It wraps model.ErrCorrupt.
type CorruptError struct {
	// Object is what was read: "segment <id>" or "shard <stripe>/<index>".
	Object string
	// Offset and Length delimit the block that failed (Length 0: the whole-file checksum
	// or the file size).
	Offset, Length int64
	Reason         string
}

func (e *CorruptError) Error() string {
	if e.Length == 0 {
		return fmt.Sprintf("storage: %s: %s: %v", e.Object, e.Reason, model.ErrCorrupt)
	}
	return fmt.Sprintf("storage: %s: block at offset %d (%d bytes) %s: %v", e.Object, e.Offset, e.Length, e.Reason, model.ErrCorrupt)
}

// Unwrap makes errors.Is(err, model.ErrCorrupt) true.
func (e *CorruptError) Unwrap() error { return model.ErrCorrupt }

// blockSum is what verifies a file: its size, block size, one CRC-32C per block and the
// CRC-32C of the whole file.
type blockSum struct {
	size, blockSize int64
	blocks          []uint32
	fileCRC         uint32
}

// ShardReader reads a shard's bytes (a parity shard, a data segment received as a shard,
// or a local sealed segment read as its stripe's data shard) verifying every block it
// touches against its CRC-32C. It is an io.ReaderAt, safe for concurrent use; bytes that
// fail their checksum are never returned (the error is a *CorruptError).
type ShardReader struct {
	object string
	f      *os.File
	sum    blockSum
	pool   *sync.Pool
}

func newShardReader(object string, f *os.File, sum blockSum) *ShardReader {
	bs := sum.blockSize
	return &ShardReader{object: object, f: f, sum: sum,
		pool: &sync.Pool{New: func() any { b := make([]byte, bs); return &b }}}
}

// Size returns the number of bytes stored (a data shard's virtual padding not included).
func (r *ShardReader) Size() int64 { return r.sum.size }

// Checksum returns the CRC-32C of the whole shard, as recorded when it was written.
func (r *ShardReader) Checksum() uint32 { return r.sum.fileCRC }

// Close closes the file.
func (r *ShardReader) Close() error { return r.f.Close() }

// readBlock reads block i into p (len = the block's length) and verifies it.
func (r *ShardReader) readBlock(i int64, p []byte) error {
	off := i * r.sum.blockSize
	n, err := r.f.ReadAt(p, off)
	if n < len(p) {
		if err == nil || errors.Is(err, io.EOF) {
			return &CorruptError{Object: r.object, Offset: off, Length: int64(len(p)),
				Reason: fmt.Sprintf("is cut short: file ends %d bytes early", len(p)-n)}
		}
		return fmt.Errorf("storage: %s: read at offset %d: %w", r.object, off, err)
	}
	if got := crc32c(p); got != r.sum.blocks[i] {
		return &CorruptError{Object: r.object, Offset: off, Length: int64(len(p)),
			Reason: fmt.Sprintf("fails its checksum (crc32c %08x, want %08x)", got, r.sum.blocks[i])}
	}
	return nil
}

// ReadAt reads len(p) bytes at off, verified. Past the end it returns the bytes there are
// and io.EOF.
func (r *ShardReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("storage: %s: negative offset %d", r.object, off)
	}
	if off >= r.sum.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), r.sum.size)
	bs := r.sum.blockSize
	n := 0
	for b := off / bs; b*bs < end; b++ {
		bstart, bend := b*bs, min((b+1)*bs, r.sum.size)
		if bstart >= off && bend <= end { // whole block inside p: read in place
			if err := r.readBlock(b, p[bstart-off:bend-off]); err != nil {
				return n, err
			}
			n += int(bend - bstart)
			continue
		}
		bp := r.pool.Get().(*[]byte)
		buf := (*bp)[:bend-bstart]
		err := r.readBlock(b, buf)
		if err == nil {
			lo, hi := max(off, bstart), min(end, bend)
			n += copy(p[lo-off:hi-off], buf[lo-bstart:hi-bstart])
		}
		r.pool.Put(bp)
		if err != nil {
			return n, err
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// limiter paces reads to a rate in bytes per second (0: unlimited).
type limiter struct {
	rate  int64
	start time.Time
	done  int64
}

func (l *limiter) wait(ctx context.Context, n int64) error {
	if l == nil || l.rate <= 0 {
		return ctx.Err()
	}
	if l.start.IsZero() {
		l.start = time.Now()
	}
	l.done += n
	due := l.start.Add(time.Duration(float64(l.done) / float64(l.rate) * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return ctx.Err()
}

// verifyAll re-reads the whole file: its size, every block checksum and the whole-file
// checksum. It returns the number of bytes read.
func (r *ShardReader) verifyAll(ctx context.Context, lim *limiter) (int64, error) {
	st, err := r.f.Stat()
	if err != nil {
		return 0, fmt.Errorf("storage: %s: stat: %w", r.object, err)
	}
	if st.Size() != r.sum.size {
		return 0, &CorruptError{Object: r.object, Offset: min(st.Size(), r.sum.size),
			Reason: fmt.Sprintf("file is %d bytes, recorded as %d", st.Size(), r.sum.size)}
	}
	bp := r.pool.Get().(*[]byte)
	defer r.pool.Put(bp)
	var whole uint32
	var read int64
	for i := range int64(len(r.sum.blocks)) {
		off := i * r.sum.blockSize
		buf := (*bp)[:min(r.sum.blockSize, r.sum.size-off)]
		if err := r.readBlock(i, buf); err != nil {
			return read, err
		}
		whole = crc32.Update(whole, castagnoli, buf)
		read += int64(len(buf))
		if err := lim.wait(ctx, int64(len(buf))); err != nil {
			return read, err
		}
	}
	if whole != r.sum.fileCRC {
		return read, &CorruptError{Object: r.object, Reason: fmt.Sprintf("whole-file checksum %08x, want %08x", whole, r.sum.fileCRC)}
	}
	return read, nil
}
