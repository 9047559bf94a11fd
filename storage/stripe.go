package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage/erasure"
)

// Stripe is the catalog entry of an erasure-coded stripe (DESIGN.md data model), as the
// readers and the repair need it. It is meant to move to model.Stripe; storage only reads
// it.
type Stripe struct {
	ID StripeID
	// K data shards (the segments, whole) and M parity shards.
	K, M int
	// ShardSize is the largest segment's size: every shard is that long once data shards
	// are padded with zeros.
	ShardSize int64
	// Shards lists the K data shards then the M parity shards.
	Shards []StripeShard
}

// StripeShard is where one shard of a stripe lives and what it must read as.
type StripeShard struct {
	// Node holds the shard.
	Node model.NodeID
	// Segment is the data segment this shard is (data shards only): on its recording node
	// the shard is the segment file itself.
	Segment model.SegmentID
	// Bytes is the stored size: the segment's size for a data shard, ShardSize for parity.
	Bytes int64
	// Checksum is the CRC-32C of the stored bytes (model.Segment.Checksum for a data shard).
	Checksum uint32
}

// Validate checks the stripe is self-consistent, wrapping model.ErrInvalid.
func (st Stripe) Validate() error {
	var errs []error
	if !stripePattern.MatchString(string(st.ID)) {
		errs = append(errs, model.Invalid("stripe.id", "%q is not a stripe id", st.ID))
	}
	if err := (erasure.Code{K: st.K, M: st.M}).Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(st.Shards) != st.K+st.M {
		errs = append(errs, model.Invalid("stripe.shards", "%d shards for a %d+%d stripe", len(st.Shards), st.K, st.M))
	}
	var largest int64
	for i, sh := range st.Shards {
		largest = max(largest, sh.Bytes)
		switch {
		case sh.Bytes < 0 || sh.Bytes > st.ShardSize:
			errs = append(errs, model.Invalid(fmt.Sprintf("stripe.shards[%d].bytes", i), "%d outside [0, shard size %d]", sh.Bytes, st.ShardSize))
		case i >= st.K && sh.Bytes != st.ShardSize:
			errs = append(errs, model.Invalid(fmt.Sprintf("stripe.shards[%d].bytes", i), "parity shard of %d bytes, shard size is %d", sh.Bytes, st.ShardSize))
		}
	}
	if len(st.Shards) > 0 && largest != st.ShardSize {
		errs = append(errs, model.Invalid("stripe.shard_size", "%d, but the largest shard is %d bytes", st.ShardSize, largest))
	}
	return errors.Join(errs...)
}

// Ref returns the reference to shard i that a ShardFetcher resolves.
func (st Stripe) Ref(i int) ShardRef {
	return ShardRef{Stripe: st.ID, Index: i, Segment: st.Shards[i].Segment}
}

// ShardRef names a shard for reading: by its id, and for a data shard also by the segment
// it is (the recording node holds it as a segment, others as a shard).
type ShardRef struct {
	Stripe  StripeID
	Index   int
	Segment model.SegmentID
}

// ID returns the shard's id.
func (r ShardRef) ID() ShardID { return ShardID{Stripe: r.Stripe, Index: r.Index} }

// ShardFetcher reads byte ranges of shards wherever they live: the local Store for this
// node's shards (Store.ReadShard), a transfer client for the others (storage/transfer's
// Fetcher routes by node). ReadShard fills p with bytes [off, off+len(p)) of the shard
// (within its stored size), verified against the shard's block checksums on the node that
// holds it; it must return an error rather than unverified bytes. It is called from
// several goroutines at once and must honour ctx.
type ShardFetcher interface {
	ReadShard(ctx context.Context, node model.NodeID, ref ShardRef, p []byte, off int64) error
}

// DegradedReaderOptions tune a DegradedReader.
type DegradedReaderOptions struct {
	// RowSize bounds the bytes reconstructed at a time (memory: k × RowSize); 0 means
	// erasure.DefaultRowSize.
	RowSize int
	// OnShardError, when set, is told every shard read that failed (and was worked around):
	// the node counts them and plans a repair. Called from reading goroutines; must not block.
	OnShardError func(index int, node model.NodeID, err error)
}

// DegradedReader reads one data segment of a stripe: from its own shard while that works,
// and, for any range its shard cannot serve (node down, file lost, a block failing its
// checksum), from the same range of k other shards, reconstructed — byte-identical and
// transparent to the caller. Shards found unavailable (any error but a checksum failure)
// are not asked again by this reader. It is an io.ReaderAt, safe for concurrent use.
type DegradedReader struct {
	st    Stripe
	index int
	f     ShardFetcher
	opts  DegradedReaderOptions

	mu       sync.Mutex
	down     map[int]bool
	degraded int64 // bytes served by reconstruction

	// The last row rebuilt (RowSize-aligned): playback and export read a segment a
	// fragment at a time, a few fragments per row, and every shard read verifies whole
	// checksum blocks; rebuilding each fragment alone would fetch and check the same
	// k blocks again for each one.
	rowMu  sync.Mutex
	rowOff int64 // -1: none
	row    []byte
}

// NewDegradedReader returns a reader of data shard index (0 ≤ index < k) of st.
func NewDegradedReader(st Stripe, index int, f ShardFetcher, opts DegradedReaderOptions) (*DegradedReader, error) {
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("storage: degraded reader: %w", err)
	}
	if index < 0 || index >= st.K {
		return nil, fmt.Errorf("storage: degraded reader of stripe %s: %w", st.ID, model.Invalid("index", "data shard index must be in [0, %d), got %d", st.K, index))
	}
	if opts.RowSize <= 0 {
		opts.RowSize = erasure.DefaultRowSize
	}
	return &DegradedReader{st: st, index: index, f: f, opts: opts, down: map[int]bool{}, rowOff: -1}, nil
}

// Size is the segment's size.
func (r *DegradedReader) Size() int64 { return r.st.Shards[r.index].Bytes }

// ReconstructedBytes is how many bytes were served by reconstruction so far.
func (r *DegradedReader) ReconstructedBytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.degraded
}

// ReadAt reads with context.Background(); see ReadAtContext.
func (r *DegradedReader) ReadAt(p []byte, off int64) (int, error) {
	return r.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext reads len(p) bytes of the segment at off. Past the end it returns what
// there is and io.EOF. When neither the segment's shard nor k others can serve a range,
// the error wraps erasure.ErrTooFewShards and the last shard error.
func (r *DegradedReader) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	size := r.Size()
	if off < 0 {
		return 0, fmt.Errorf("storage: stripe %s: negative offset %d", r.st.ID, off)
	}
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := p[:min(int64(len(p)), size-off)]
	if !r.isDown(r.index) {
		err := r.f.ReadShard(ctx, r.st.Shards[r.index].Node, r.st.Ref(r.index), want, off)
		if err == nil {
			return r.eof(len(want), len(p))
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		r.failed(r.index, err)
	}
	for done := 0; done < len(want); {
		n, err := r.readRow(ctx, want[done:], off+int64(done))
		if err != nil {
			return done, err
		}
		done += n
	}
	r.mu.Lock()
	r.degraded += int64(len(want))
	r.mu.Unlock()
	return r.eof(len(want), len(p))
}

// readRow copies into p what the RowSize-aligned row holding off has from off on, rebuilt
// from k other shards unless it is the row rebuilt last.
func (r *DegradedReader) readRow(ctx context.Context, p []byte, off int64) (int, error) {
	rs := int64(r.opts.RowSize)
	start := off / rs * rs
	r.rowMu.Lock()
	defer r.rowMu.Unlock()
	if r.rowOff != start {
		n := min(rs, r.Size()-start)
		if int64(cap(r.row)) < n {
			r.row = make([]byte, n)
		}
		r.row = r.row[:n]
		r.rowOff = -1
		if err := r.rebuildRange(ctx, r.index, r.row, start); err != nil {
			return 0, err
		}
		r.rowOff = start
	}
	return copy(p, r.row[off-start:]), nil
}

func (r *DegradedReader) eof(n, asked int) (int, error) {
	if n < asked {
		return n, io.EOF
	}
	return n, nil
}

func (r *DegradedReader) isDown(i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.down[i]
}

// failed records that shard i could not be read.
func (r *DegradedReader) failed(i int, err error) {
	if !errors.Is(err, model.ErrCorrupt) {
		r.mu.Lock()
		r.down[i] = true
		r.mu.Unlock()
	}
	if r.opts.OnShardError != nil {
		r.opts.OnShardError(i, r.st.Shards[i].Node, err)
	}
}

// rebuildRange fills p with bytes [off, off+len(p)) of shard want rebuilt from k others,
// fetched in parallel; a shard that fails is replaced by the next candidate.
func (r *DegradedReader) rebuildRange(ctx context.Context, want int, p []byte, off int64) error {
	return rebuildRange(ctx, r.st, r.f, want, p, off, r.isDown, r.failed)
}

func rebuildRange(ctx context.Context, st Stripe, f ShardFetcher, want int, p []byte, off int64,
	isDown func(int) bool, failed func(int, error)) error {
	var cands []int
	for i := range st.Shards {
		if i != want && !isDown(i) {
			cands = append(cands, i)
		}
	}
	// Data shards first: a data shard shorter than the range costs fewer bytes to fetch.
	row := make([][]byte, len(st.Shards))
	have := 0
	var lastErr error
	for have < st.K && len(cands) > 0 {
		need := min(st.K-have, len(cands))
		batch := cands[:need]
		cands = cands[need:]
		errs := make([]error, len(batch))
		var wg sync.WaitGroup
		for bi, i := range batch {
			buf := getBuf(len(p))
			defer putBuf(buf)
			row[i] = buf
			stored := st.Shards[i].Bytes
			if off >= stored {
				clear(buf)
				continue // entirely virtual padding: zeros
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := min(int64(len(buf)), stored-off)
				clear(buf[n:])
				errs[bi] = f.ReadShard(ctx, st.Shards[i].Node, st.Ref(i), buf[:n], off)
			}()
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return err
		}
		for bi, i := range batch {
			if errs[bi] != nil {
				row[i] = nil
				lastErr = errs[bi]
				failed(i, errs[bi])
				continue
			}
			have++
		}
	}
	if have < st.K {
		return fmt.Errorf("storage: stripe %s: rebuild shard %d at [%d, %d): %d of %d shards readable (last error: %v): %w",
			st.ID, want, off, off+int64(len(p)), have, st.K, lastErr, erasure.ErrTooFewShards)
	}
	if err := erasure.Decode(st.K, st.M, row, want, p); err != nil {
		return fmt.Errorf("storage: stripe %s: %w", st.ID, err)
	}
	return nil
}

// rowPool recycles the row buffers of reconstructions: fresh 1 MiB buffers on every read
// cost more in page faults and GC than the decoding itself.
var rowPool sync.Pool

func getBuf(n int) []byte {
	if b, ok := rowPool.Get().(*[]byte); ok && cap(*b) >= n {
		return (*b)[:n]
	}
	return make([]byte, n)
}

func putBuf(b []byte) { rowPool.Put(&b) }

// Rebuild reconstructs shard want of st (data or parity) from k other shards and writes
// its stored bytes (st.Shards[want].Bytes) to w, row by row: the repair of a lost or
// corrupt shard. Feed w into Store.RepairShard / RepairSegment (an io.Pipe) or, for a new
// node, a transfer PutShard. The shard's own copy is never read.
func Rebuild(ctx context.Context, st Stripe, want int, f ShardFetcher, w io.Writer, rowSize int) error {
	if err := st.Validate(); err != nil {
		return fmt.Errorf("storage: rebuild: %w", err)
	}
	if want < 0 || want >= len(st.Shards) {
		return fmt.Errorf("storage: rebuild stripe %s: %w", st.ID, model.Invalid("index", "%d outside [0, %d)", want, len(st.Shards)))
	}
	if rowSize <= 0 {
		rowSize = erasure.DefaultRowSize
	}
	var mu sync.Mutex
	down := map[int]bool{want: true}
	isDown := func(i int) bool { mu.Lock(); defer mu.Unlock(); return down[i] }
	failed := func(i int, err error) {
		if !errors.Is(err, model.ErrCorrupt) {
			mu.Lock()
			down[i] = true
			mu.Unlock()
		}
	}
	size := st.Shards[want].Bytes
	buf := make([]byte, min(int64(rowSize), max(size, 1)))
	for off := int64(0); off < size; {
		n := min(int64(len(buf)), size-off)
		if err := rebuildRange(ctx, st, f, want, buf[:n], off, isDown, failed); err != nil {
			return err
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return fmt.Errorf("storage: rebuild shard %d of stripe %s: write at offset %d: %w", want, st.ID, off, err)
		}
		off += n
	}
	return nil
}

// SegmentView serves a segment's init section and fragments from any io.ReaderAt over its
// bytes (a DegradedReader, a ShardReader), given the fragment index the catalog keeps. It
// has the reading methods of SegmentReader (Init, Fragments, FragmentAt, ReadFragment), so
// playback code does not care whether the bytes are local, remote or reconstructed.
// Integrity comes from the underlying reader (per-block checksums on every shard read).
type SegmentView struct {
	r     io.ReaderAt
	init  []byte
	infos []model.FragmentInfo
}

// NewSegmentView reads the init section — the bytes before the first fragment — and
// returns the view. frags must be sorted by offset (as the catalog keeps them) and not
// overlap.
func NewSegmentView(r io.ReaderAt, frags []model.FragmentInfo) (*SegmentView, error) {
	if len(frags) == 0 {
		return nil, fmt.Errorf("storage: segment view: %w", model.Invalid("fragments", "a segment holds at least one fragment"))
	}
	for i, f := range frags {
		if f.Size <= 0 || f.Offset <= 0 || (i > 0 && f.Offset < frags[i-1].Offset+frags[i-1].Size) {
			return nil, fmt.Errorf("storage: segment view: %w", model.Invalid("fragments", "fragment %d at offset %d of %d bytes is out of order or empty", i, f.Offset, f.Size))
		}
	}
	init := make([]byte, frags[0].Offset)
	if _, err := r.ReadAt(init, 0); err != nil {
		return nil, fmt.Errorf("storage: segment view: read init: %w", err)
	}
	return &SegmentView{r: r, init: init, infos: append([]model.FragmentInfo(nil), frags...)}, nil
}

// Init returns the init section (ftyp+moov). The caller must not modify it.
func (v *SegmentView) Init() []byte { return v.init }

// Fragments returns the fragments, sorted by offset (= time).
func (v *SegmentView) Fragments() []model.FragmentInfo {
	return append([]model.FragmentInfo(nil), v.infos...)
}

// FragmentAt is SegmentReader.FragmentAt.
func (v *SegmentView) FragmentAt(t time.Time, keyframe bool) int {
	i := sort.Search(len(v.infos), func(i int) bool { return v.infos[i].Start.After(t) }) - 1
	for keyframe && i >= 0 && !v.infos[i].Keyframe {
		i--
	}
	return i
}

// ReadFragment reads one fragment into dst[:0], growing it if needed.
func (v *SegmentView) ReadFragment(fi model.FragmentInfo, dst []byte) ([]byte, error) {
	i := sort.Search(len(v.infos), func(i int) bool { return v.infos[i].Offset >= fi.Offset })
	if i == len(v.infos) || v.infos[i].Offset != fi.Offset || v.infos[i].Size != fi.Size {
		return dst[:0], fmt.Errorf("storage: no fragment at offset %d of %d bytes: %w", fi.Offset, fi.Size, model.ErrNotFound)
	}
	var buf []byte
	if int64(cap(dst)) >= fi.Size {
		buf = dst[:fi.Size]
	} else {
		buf = make([]byte, fi.Size)
	}
	if _, err := v.r.ReadAt(buf, fi.Offset); err != nil {
		return dst[:0], err
	}
	return buf, nil
}

// LocalFetcher is a ShardFetcher over Stores in this process, by node: a node's own
// shards, and whole clusters in tests. A node it does not hold is unavailable
// (model.ErrNotFound).
type LocalFetcher map[model.NodeID]*Store

// ReadShard reads from node's Store.
func (l LocalFetcher) ReadShard(ctx context.Context, node model.NodeID, ref ShardRef, p []byte, off int64) error {
	s, ok := l[node]
	if !ok {
		return fmt.Errorf("storage: node %q is not reachable from here: %w", node, model.ErrNotFound)
	}
	return s.ReadShard(ctx, ref, p, off)
}
