// Package erasure computes the Reed–Solomon parity of a stripe and rebuilds any lost shard
// of it, streaming in rows so that a stripe of k 32 MiB segments never sits in memory whole.
//
// A stripe groups k data shards and m parity shards of one shard size. The data shards are
// sealed segment files kept whole (contiguous layout, as in Facebook's f4 and SeaweedFS EC
// volumes): data shard i is segment i's bytes, virtually padded with zeros up to the shard
// size, which is the largest segment's size. Parity shard j is shard-size bytes. Reed–Solomon
// works column by column, so any byte range of a shard can be rebuilt from the same byte
// range of any k other shards (see ReconstructRange).
//
// The package is pure computation over io.ReaderAt / io.Writer: it knows nothing of files,
// nodes, the catalog or checksums (callers verify what they read), and must not: storage
// wraps it with verified readers and the node moves the bytes.
package erasure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/reedsolomon"

	"github.com/vigie-vms/vigie/model"
)

// DefaultRowSize is the number of bytes of every shard processed at a time by Encode and
// Reconstruct: memory use is (k+m) × row size.
const DefaultRowSize = 1 << 20

// MaxShards bounds k+m (the 8-bit Reed–Solomon code allows 256; Vigie never needs more).
const MaxShards = 64

// Code is a (k, m) Reed–Solomon code: k data shards, m parity shards; any k of the k+m
// shards rebuild the others.
type Code struct {
	K, M int
}

// String returns "k+m".
func (c Code) String() string { return fmt.Sprintf("%d+%d", c.K, c.M) }

// Validate checks the code is usable: 1 ≤ k, 0 ≤ m, k+m ≤ MaxShards.
func (c Code) Validate() error {
	if c.K < 1 || c.M < 0 || c.K+c.M > MaxShards {
		return model.Invalid("code", "k=%d m=%d: need k ≥ 1, m ≥ 0 and k+m ≤ %d", c.K, c.M, MaxShards)
	}
	return nil
}

// Overrides replaces the code CodeFor picks for a redundancy class, whatever the cluster
// size. The node fills it from its configuration (e.g. critical → 4+3). A code that needs
// more nodes than the cluster has is not used: CodeFor falls back to the default ladder.
type Overrides map[model.RedundancyClass]Code

// CodeFor returns the (k, m) a new stripe uses on a cluster of nodes live nodes (DESIGN.md
// write path 6): 1 node → 1+0 (no redundancy); 2 → 1+1 (mirror); 3–5 → 2+1; 6–8 → 4+2;
// 9+ → 6+3. An override for class wins when the cluster has the k+m distinct nodes it needs.
// It is a pure function: every stripe records the code it was written with, so changing the
// answer never affects existing stripes.
func CodeFor(nodes int, class model.RedundancyClass, overrides Overrides) (k, m int) {
	if o, ok := overrides[class]; ok && o.Validate() == nil && o.K+o.M <= max(nodes, 1) {
		return o.K, o.M
	}
	switch {
	case nodes <= 1:
		return 1, 0
	case nodes == 2:
		return 1, 1
	case nodes <= 5:
		return 2, 1
	case nodes <= 8:
		return 4, 2
	default:
		return 6, 3
	}
}

// ShardSize is the shard size of a stripe over data shards of the given sizes: the
// largest of them.
func ShardSize(sizes []int64) int64 {
	var s int64
	for _, n := range sizes {
		s = max(s, n)
	}
	return s
}

var (
	encMu    sync.Mutex
	encCache = map[Code]reedsolomon.Encoder{}
)

// encoder returns a (cached, concurrency-safe) Reed–Solomon encoder for c; m ≥ 1.
func encoder(c Code) (reedsolomon.Encoder, error) {
	encMu.Lock()
	defer encMu.Unlock()
	if e, ok := encCache[c]; ok {
		return e, nil
	}
	e, err := reedsolomon.New(c.K, c.M)
	if err != nil {
		return nil, fmt.Errorf("erasure: code %s: %w", c, err)
	}
	encCache[c] = e
	return e, nil
}

// readPadded fills p with bytes [off, off+len(p)) of a shard of size stored bytes, zeros
// past it (the virtual padding of a data shard).
func readPadded(r io.ReaderAt, size int64, p []byte, off int64) error {
	n := 0
	if off < size {
		n = int(min(int64(len(p)), size-off))
		got, err := r.ReadAt(p[:n], off)
		if got < n {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	clear(p[n:])
	return nil
}

// EncodeResult describes the parity Encode wrote.
type EncodeResult struct {
	// ShardSize is the size of every shard of the stripe (the largest data shard).
	ShardSize int64
}

// Encode computes the m parity shards of the k data shards data (their stored sizes in
// sizes; each is read as if padded with zeros to the largest) and writes parity shard j,
// ShardSize bytes, to parity[j], in rows of rowSize bytes (0: DefaultRowSize). Memory use is
// (k+m) × rowSize. It stops at the first read or write error, or when ctx is done; the
// writers then hold a prefix of their shard and the caller discards them.
//
// Data readers may be verifying readers (storage's segment and shard readers are): a
// checksum failure stops the encoding with that error.
func Encode(ctx context.Context, k, m int, data []io.ReaderAt, sizes []int64, parity []io.Writer, rowSize int) (EncodeResult, error) {
	c := Code{K: k, M: m}
	if err := c.Validate(); err != nil {
		return EncodeResult{}, fmt.Errorf("erasure: encode: %w", err)
	}
	if len(data) != k || len(sizes) != k || len(parity) != m {
		return EncodeResult{}, fmt.Errorf("erasure: encode %s: %w", c,
			model.Invalid("shards", "got %d data readers, %d sizes and %d parity writers", len(data), len(sizes), len(parity)))
	}
	for i, n := range sizes {
		if n < 0 || data[i] == nil {
			return EncodeResult{}, fmt.Errorf("erasure: encode %s: %w", c, model.Invalid("data", "shard %d: missing reader or negative size %d", i, n))
		}
	}
	shardSize := ShardSize(sizes)
	res := EncodeResult{ShardSize: shardSize}
	if m == 0 || shardSize == 0 {
		return res, nil
	}
	enc, err := encoder(c)
	if err != nil {
		return res, err
	}
	if rowSize <= 0 {
		rowSize = DefaultRowSize
	}
	rowSize = int(min(int64(rowSize), shardSize))
	bufs := make([][]byte, k+m)
	for i := range bufs {
		bufs[i] = make([]byte, rowSize)
	}
	for off := int64(0); off < shardSize; off += int64(rowSize) {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("erasure: encode %s at offset %d: %w", c, off, err)
		}
		n := int(min(int64(rowSize), shardSize-off))
		row := make([][]byte, k+m)
		for i := range row {
			row[i] = bufs[i][:n]
		}
		for i := range k {
			if err := readPadded(data[i], sizes[i], row[i], off); err != nil {
				return res, fmt.Errorf("erasure: encode %s: read data shard %d at offset %d: %w", c, i, off, err)
			}
		}
		if err := enc.Encode(row); err != nil {
			return res, fmt.Errorf("erasure: encode %s at offset %d: %w", c, off, err)
		}
		for j := range m {
			if _, err := parity[j].Write(row[k+j]); err != nil {
				return res, fmt.Errorf("erasure: encode %s: write parity shard %d at offset %d: %w", c, j, off, err)
			}
		}
	}
	return res, nil
}

// ErrTooFewShards is wrapped when fewer than k shards are available to rebuild a stripe.
var ErrTooFewShards = errors.New("fewer than k shards available")

// Reconstruct rebuilds shard want of a (k, m) stripe and writes its stored bytes to w:
// sizes[want] bytes (a data shard's segment size, unpadded, or the shard size for a parity
// shard), byte-identical to the lost shard. shards[i] is shard i's reader, nil when it is
// unavailable (shards[want] is ignored); sizes[i] its stored size (k data sizes then m
// parity sizes; parity sizes are the shard size). It reads the first k available shards
// in rows of rowSize bytes (0: DefaultRowSize). Fewer than k available wraps
// ErrTooFewShards.
func Reconstruct(ctx context.Context, k, m int, shards []io.ReaderAt, sizes []int64, want int, w io.Writer, rowSize int) error {
	c := Code{K: k, M: m}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("erasure: reconstruct: %w", err)
	}
	if len(shards) != k+m || len(sizes) != k+m || want < 0 || want >= k+m {
		return fmt.Errorf("erasure: reconstruct %s: %w", c, model.Invalid("shards", "%d readers and %d sizes for %d shards, want shard %d", len(shards), len(sizes), k+m, want))
	}
	shardSize := ShardSize(sizes)
	if rowSize <= 0 {
		rowSize = DefaultRowSize
	}
	rowSize = int(max(1, min(int64(rowSize), shardSize)))
	buf := make([]byte, rowSize)
	scratch := make([][]byte, k+m)
	for off := int64(0); off < sizes[want]; off += int64(rowSize) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("erasure: reconstruct %s shard %d at offset %d: %w", c, want, off, err)
		}
		n := min(int64(rowSize), sizes[want]-off)
		if err := reconstructRange(k, m, shards, sizes, want, buf[:n], off, scratch); err != nil {
			return err
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return fmt.Errorf("erasure: reconstruct %s: write shard %d at offset %d: %w", c, want, off, err)
		}
	}
	return nil
}

// ReconstructRange fills p with bytes [off, off+len(p)) of shard want, rebuilt from the same
// range of the first k available shards (shards[i] nil: unavailable; shards[want] is
// ignored). It allocates k+1 buffers of len(p). Bytes past a data shard's stored size are
// zeros (its virtual padding).
func ReconstructRange(k, m int, shards []io.ReaderAt, sizes []int64, want int, p []byte, off int64) error {
	c := Code{K: k, M: m}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("erasure: reconstruct: %w", err)
	}
	if len(shards) != k+m || len(sizes) != k+m || want < 0 || want >= k+m {
		return fmt.Errorf("erasure: reconstruct %s: %w", c, model.Invalid("shards", "%d readers and %d sizes for %d shards, want shard %d", len(shards), len(sizes), k+m, want))
	}
	return reconstructRange(k, m, shards, sizes, want, p, off, make([][]byte, k+m))
}

// reconstructRange is ReconstructRange reusing the row buffers in scratch (k+m entries,
// grown as needed).
func reconstructRange(k, m int, shards []io.ReaderAt, sizes []int64, want int, p []byte, off int64, scratch [][]byte) error {
	c := Code{K: k, M: m}
	row := make([][]byte, k+m)
	have := 0
	for i, r := range shards {
		if i == want || r == nil || have == k {
			continue
		}
		if cap(scratch[i]) < len(p) {
			scratch[i] = make([]byte, len(p))
		}
		b := scratch[i][:len(p)]
		if err := readPadded(r, sizes[i], b, off); err != nil {
			return fmt.Errorf("erasure: reconstruct %s shard %d: read shard %d at offset %d: %w", c, want, i, off, err)
		}
		row[i] = b
		have++
	}
	return Decode(k, m, row, want, p)
}

// Decode rebuilds shard want into p from row, which holds len(p) bytes of at least k shards
// (nil for the others) at one offset. It is the in-memory step of ReconstructRange, for
// callers that fetch the rows themselves (in parallel, from other nodes).
func Decode(k, m int, row [][]byte, want int, p []byte) error {
	c := Code{K: k, M: m}
	have := 0
	for i, b := range row {
		if b != nil && i != want {
			if len(b) != len(p) {
				return fmt.Errorf("erasure: decode %s: shard %d row is %d bytes, want %d", c, i, len(b), len(p))
			}
			have++
		}
	}
	if have < k {
		return fmt.Errorf("erasure: rebuild shard %d of a %s stripe: %d shards available: %w", want, c, have, ErrTooFewShards)
	}
	if m == 0 {
		return fmt.Errorf("erasure: rebuild shard %d of a %s stripe: %w", want, c, ErrTooFewShards)
	}
	enc, err := encoder(c)
	if err != nil {
		return err
	}
	shards := make([][]byte, k+m)
	n := 0
	for i, b := range row {
		if b != nil && i != want && n < k {
			shards[i] = b
			n++
		}
	}
	shards[want] = p[:0]
	required := make([]bool, k+m)
	required[want] = true
	if len(p) == 0 {
		return nil
	}
	if err := enc.ReconstructSome(shards, required); err != nil {
		return fmt.Errorf("erasure: rebuild shard %d of a %s stripe: %w", want, c, err)
	}
	if &shards[want][0] != &p[0] { // the encoder allocated: copy into p
		copy(p, shards[want])
	}
	return nil
}
