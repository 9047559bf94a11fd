package protect

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage"
)

// Segment reads one striped segment through its stripe: its own shard while that reads
// and verifies, else the same bytes rebuilt from k other shards. It has the methods of
// gateway.SegmentReader (Init, Fragments, ReadFragment, Close) and of the node's peer
// index (Segment), plus FragmentAt.
type Segment struct {
	seg  model.Segment
	view *storage.SegmentView
	dr   *storage.DegradedReader
	p    *Protector
	// Rebuilt is true when the fragment index was rebuilt from the bytes (the holder's
	// index was not available here).
	Rebuilt bool
}

// Segment returns the catalog entry the reader was opened with.
func (s *Segment) Segment() model.Segment { return s.seg }

// Init returns the init section (ftyp+moov).
func (s *Segment) Init() []byte { return s.view.Init() }

// Fragments returns the fragment index, sorted by offset (= time).
func (s *Segment) Fragments() []model.FragmentInfo { return s.view.Fragments() }

// FragmentAt is storage.SegmentReader.FragmentAt.
func (s *Segment) FragmentAt(t time.Time, keyframe bool) int { return s.view.FragmentAt(t, keyframe) }

// ReadFragment returns the verified bytes of fi in dst[:0] when large enough.
func (s *Segment) ReadFragment(fi model.FragmentInfo, dst []byte) ([]byte, error) {
	return s.view.ReadFragment(fi, dst)
}

// ReconstructedBytes is how many bytes this reader served by reconstruction.
func (s *Segment) ReconstructedBytes() int64 { return s.dr.ReconstructedBytes() }

// Close counts the read (degraded when any byte was reconstructed).
func (s *Segment) Close() error {
	if n := s.dr.ReconstructedBytes(); n > 0 {
		s.p.c.degradedReads.Add(1)
		s.p.c.degradedBytes.Add(n)
	}
	return nil
}

// OpenSegment opens a striped segment wherever its bytes are: the node calls it when the
// segment's holder (the catalog's Node) cannot serve it — holder down, file lost or
// corrupt — and when this node holds the segment as a stripe's data shard (shipped here
// by the striper, or rebuilt by a repair) rather than as a recorded segment. Unstriped
// segments are not its business: model.ErrNotFound (their only copies are the holder's
// and its hot replicas).
//
// The fragment index is this store's when it recorded the segment, else rebuilt from the
// segment bytes (RebuildIndex) and cached.
func (p *Protector) OpenSegment(ctx context.Context, seg model.Segment) (*Segment, error) {
	st, ok, err := p.cfg.Catalog.StripeOf(seg.ID)
	if err != nil {
		return nil, fmt.Errorf("protect: segment %s: stripe: %w", seg.ID, err)
	}
	if !ok {
		return nil, fmt.Errorf("protect: segment %s is not striped: %w", seg.ID, model.ErrNotFound)
	}
	i := dataIndex(st, seg.ID)
	if i < 0 {
		return nil, fmt.Errorf("protect: stripe %s does not list segment %s: %w", st.ID, seg.ID, model.ErrNotFound)
	}
	dr, err := storage.NewDegradedReader(toStorage(st), i, p.fetcher, storage.DegradedReaderOptions{
		RowSize: p.cfg.RowSize,
		OnShardError: func(index int, node model.NodeID, err error) {
			p.c.shardErrors.Add(1)
			p.log.Warn("shard read failed; reading through the stripe", slog.String("stripe", string(st.ID)),
				slog.Int("shard", index), slog.String("node", string(node)), slog.Any("error", err))
		},
	})
	if err != nil {
		return nil, fmt.Errorf("protect: segment %s: %w", seg.ID, err)
	}
	if seg.Start.IsZero() {
		if _, start, _, err := storage.ParseSegmentID(seg.ID); err == nil {
			seg.Start = start
		}
	}
	out := &Segment{seg: seg, dr: dr, p: p}
	frags, err := p.localIndex(seg.ID)
	if err != nil {
		idx, rebuilt, err := p.index(ctx, seg, dr)
		if err != nil {
			return nil, err
		}
		frags, out.Rebuilt = idx.frags, rebuilt
	}
	view, err := storage.NewSegmentView(dr, frags)
	if err != nil {
		return nil, fmt.Errorf("protect: segment %s: %w", seg.ID, err)
	}
	out.view = view
	if out.seg.Bytes == 0 {
		out.seg.Bytes = dr.Size()
	}
	if out.seg.Fragments == 0 {
		out.seg.Fragments = len(frags)
	}
	if out.seg.End.IsZero() && len(frags) > 0 {
		out.seg.End = frags[len(frags)-1].End()
	}
	return out, nil
}

// OpenLocal opens a segment this node holds as a stripe's data shard, by id (the node's
// peer API serves it so when its store has no such recorded segment).
func (p *Protector) OpenLocal(ctx context.Context, id model.SegmentID) (*Segment, error) {
	st, ok, err := p.cfg.Catalog.StripeOf(id)
	if err != nil {
		return nil, fmt.Errorf("protect: segment %s: stripe: %w", id, err)
	}
	if !ok {
		return nil, fmt.Errorf("protect: segment %s is not striped: %w", id, model.ErrNotFound)
	}
	i := dataIndex(st, id)
	if i < 0 || st.Shards[i].Node != p.cfg.Self {
		return nil, fmt.Errorf("protect: segment %s is not kept on this node: %w", id, model.ErrNotFound)
	}
	camera, start, epoch, _ := storage.ParseSegmentID(id)
	seg := model.Segment{ID: id, Camera: camera, Epoch: epoch, Node: p.cfg.Self, Start: start, Sealed: true,
		Bytes: st.Shards[i].Bytes, Checksum: st.Shards[i].Checksum}
	return p.OpenSegment(ctx, seg)
}

// localIndex returns the fragment index of a segment this store recorded.
func (p *Protector) localIndex(id model.SegmentID) ([]model.FragmentInfo, error) {
	r, err := p.cfg.Store.OpenReader(id)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Fragments(), nil
}

// index returns the rebuilt fragment index of seg, from the cache or the bytes.
func (p *Protector) index(ctx context.Context, seg model.Segment, dr *storage.DegradedReader) (cachedIndex, bool, error) {
	p.idxMu.Lock()
	c, ok := p.idx[seg.ID]
	p.idxMu.Unlock()
	if ok {
		return c, true, nil
	}
	init, frags, err := RebuildIndex(readerAtCtx{ctx: ctx, r: dr}, dr.Size(), seg.Start)
	if err != nil {
		return cachedIndex{}, false, fmt.Errorf("protect: segment %s: rebuild fragment index: %w", seg.ID, err)
	}
	p.c.indexesRebuilt.Add(1)
	c = cachedIndex{init: init, frags: frags}
	if p.cfg.IndexCache > 0 {
		p.idxMu.Lock()
		if _, ok := p.idx[seg.ID]; !ok {
			p.idx[seg.ID] = c
			p.idxLRU = append(p.idxLRU, seg.ID)
			for len(p.idxLRU) > p.cfg.IndexCache {
				delete(p.idx, p.idxLRU[0])
				p.idxLRU = p.idxLRU[1:]
			}
		}
		p.idxMu.Unlock()
	}
	return c, true, nil
}

// readerAtCtx reads a DegradedReader with a context.
type readerAtCtx struct {
	ctx context.Context
	r   *storage.DegradedReader
}

func (r readerAtCtx) ReadAt(p []byte, off int64) (int, error) {
	return r.r.ReadAtContext(r.ctx, p, off)
}
