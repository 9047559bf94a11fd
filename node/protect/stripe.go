package protect

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage"
	"github.com/vigie-vms/vigie/storage/erasure"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// liveNodes counts the members that take data: alive and active.
func (p *Protector) liveNodes() int {
	n := 0
	for _, m := range p.cfg.Catalog.Members() {
		if m.State == model.NodeActive {
			n++
		}
	}
	return n
}

// StripeOnce groups this node's unstriped sealed segments into stripes (DESIGN.md write
// path 5–7) and returns how many it committed. With fewer than 2 live nodes it does
// nothing (the code would be 1+0). One failed stripe does not stop the others; the error
// returned is the first.
func (p *Protector) StripeOnce(ctx context.Context) (int, error) {
	p.stripeMu.Lock()
	defer p.stripeMu.Unlock()
	nodes := p.liveNodes()
	if nodes < 2 {
		return 0, nil
	}
	segs, err := p.cfg.Catalog.UnstripedSegments(p.cfg.Self, 1000)
	if err != nil {
		return 0, fmt.Errorf("protect: list unstriped segments: %w", err)
	}
	now := time.Now()
	byClass := map[model.RedundancyClass][]model.Segment{}
	var classes []model.RedundancyClass
	for _, s := range segs {
		if !s.Sealed || s.Bytes <= 0 || now.Sub(s.End) < p.cfg.MinSegmentAge {
			continue
		}
		if local, err := p.cfg.Store.Segment(s.ID); err != nil || !local.Sealed {
			continue // bytes not in this store (e.g. a hot replica store): not ours to stripe
		}
		class := model.RedundancyStandard
		if cam, err := p.cfg.Catalog.Camera(s.Camera); err == nil && cam.Redundancy != "" {
			class = cam.Redundancy
		}
		if _, ok := byClass[class]; !ok {
			classes = append(classes, class)
		}
		byClass[class] = append(byClass[class], s)
	}
	made := 0
	var first error
	for _, class := range classes {
		k, m := erasure.CodeFor(nodes, class, p.cfg.Overrides)
		if m == 0 {
			continue
		}
		for _, group := range groupSegments(byClass[class], k, now, p.cfg.MaxStripeWait) {
			if ctx.Err() != nil {
				return made, ctx.Err()
			}
			if err := p.makeStripe(ctx, group, m); err != nil {
				p.c.stripeFailures.Add(1)
				p.log.Warn("stripe not made", slog.Int("k", len(group)), slog.Int("m", m), slog.Any("error", err))
				if first == nil {
					first = err
				}
				continue
			}
			made++
		}
	}
	return made, first
}

// groupSegments groups segments (oldest first) k at a time: the oldest waiting segment
// with the k−1 others closest to it in size, so padding costs little. Fewer than k
// segments make a smaller group only once the oldest has waited maxWait (0: never).
func groupSegments(segs []model.Segment, k int, now time.Time, maxWait time.Duration) [][]model.Segment {
	rest := append([]model.Segment(nil), segs...)
	sort.SliceStable(rest, func(i, j int) bool { return rest[i].End.Before(rest[j].End) })
	var out [][]model.Segment
	for len(rest) > 0 {
		if len(rest) < k && (maxWait <= 0 || now.Sub(rest[0].End) < maxWait) {
			break
		}
		anchor := rest[0]
		others := append([]model.Segment(nil), rest[1:]...)
		sort.SliceStable(others, func(i, j int) bool {
			return abs(others[i].Bytes-anchor.Bytes) < abs(others[j].Bytes-anchor.Bytes)
		})
		n := min(k-1, len(others))
		group := append([]model.Segment{anchor}, others[:n]...)
		out = append(out, group)
		taken := map[model.SegmentID]bool{}
		for _, s := range group {
			taken[s.ID] = true
		}
		next := rest[:0]
		for _, s := range rest {
			if !taken[s.ID] {
				next = append(next, s)
			}
		}
		rest = next
	}
	return out
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// newStripeID returns a fresh, time-ordered stripe id.
func newStripeID(now time.Time) model.StripeID {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return model.StripeID(fmt.Sprintf("s%016x-%s", now.UnixNano(), hex.EncodeToString(b[:])))
}

// makeStripe builds one stripe over segs (k = len(segs)) with m parity shards. Data shard
// 0 stays here; data shards 1..k−1 and the parity shards go to the nodes PlaceStripe
// picks. Crash safety: nothing is deleted before CommitStripe returned; shards shipped for
// a stripe that is never committed are orphans that CollectGarbage deletes after
// OrphanGrace on their node.
func (p *Protector) makeStripe(ctx context.Context, segs []model.Segment, m int) error {
	k := len(segs)
	started := time.Now()
	targets, err := p.cfg.Catalog.PlaceStripe(k, m, []model.NodeID{p.cfg.Self})
	if err != nil {
		return err
	}
	if len(targets) != k+m-1 {
		return fmt.Errorf("protect: placement returned %d nodes for a %d+%d stripe", len(targets), k, m)
	}
	id := newStripeID(started)
	sid := storage.StripeID(id)

	readers := make([]*storage.ShardReader, k)
	defer func() {
		for _, r := range readers {
			if r != nil {
				_ = r.Close()
			}
		}
	}()
	sizes := make([]int64, k)
	data := make([]io.ReaderAt, k)
	st := model.Stripe{ID: id, K: k, M: m, Shards: make([]model.StripeShard, k+m)}
	for i, s := range segs {
		r, err := p.cfg.Store.OpenSegmentShard(s.ID)
		if err != nil {
			return fmt.Errorf("protect: stripe %s: %w", id, err)
		}
		readers[i], data[i], sizes[i] = r, r, r.Size()
		if r.Size() != s.Bytes || r.Checksum() != s.Checksum {
			return fmt.Errorf("protect: stripe %s: segment %s is %d bytes (crc %08x) here, %d (crc %08x) in the catalog: %w",
				id, s.ID, r.Size(), r.Checksum(), s.Bytes, s.Checksum, model.ErrCorrupt)
		}
		node := p.cfg.Self
		if i > 0 {
			node = targets[i-1]
		}
		st.Shards[i] = model.StripeShard{Node: node, Segment: s.ID, Bytes: s.Bytes, Checksum: s.Checksum}
	}
	shardSize := erasure.ShardSize(sizes)
	st.ShardSize = shardSize

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, k+m)
	// Data shards 1..k-1: the segment bytes, whole.
	for i := 1; i < k; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := p.cfg.Clients(st.Shards[i].Node)
			if err == nil {
				cr := &countReader{r: io.NewSectionReader(readers[i], 0, sizes[i])}
				err = c.PutShard(ctx, storage.ShardID{Stripe: sid, Index: i}, cr, sizes[i], segs[i].Checksum)
				p.c.shipped.Add(cr.n)
			}
			if err != nil {
				errs[i] = fmt.Errorf("data shard %d (segment %s) to node %s: %w", i, segs[i].ID, st.Shards[i].Node, err)
				cancel()
			}
		}()
	}
	// Parity shards, streamed from Encode into the transfers.
	pws := make([]*io.PipeWriter, m)
	writers := make([]io.Writer, m)
	sums := make([]*crcWriter, m)
	for j := 0; j < m; j++ {
		i := k + j
		st.Shards[i] = model.StripeShard{Node: targets[k-1+j], Bytes: shardSize}
		pr, pw := io.Pipe()
		pws[j] = pw
		sums[j] = &crcWriter{w: pw}
		writers[j] = sums[j]
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := p.cfg.Clients(st.Shards[i].Node)
			if err == nil {
				cr := &countReader{r: pr}
				err = c.PutShard(ctx, storage.ShardID{Stripe: sid, Index: i}, cr, shardSize)
				p.c.shipped.Add(cr.n)
			}
			if err != nil {
				errs[i] = fmt.Errorf("parity shard %d to node %s: %w", i, st.Shards[i].Node, err)
				cancel()
			}
			_ = pr.CloseWithError(fmt.Errorf("transfer ended: %w", errors.Join(err, io.ErrClosedPipe)))
		}()
	}
	_, encErr := erasure.Encode(ctx, k, m, data, sizes, writers, p.cfg.RowSize)
	for _, pw := range pws {
		if encErr != nil {
			_ = pw.CloseWithError(encErr)
		} else {
			_ = pw.Close()
		}
	}
	if encErr != nil {
		cancel()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		p.dropShipped(st, errs)
		return fmt.Errorf("protect: stripe %s: %w", id, err)
	}
	if encErr != nil {
		p.dropShipped(st, errs)
		return fmt.Errorf("protect: stripe %s: encode: %w", id, encErr)
	}
	for j := range sums {
		st.Shards[k+j].Checksum = sums[j].sum
	}
	if took := time.Since(started); took > p.cfg.OrphanGrace/2 {
		p.dropShipped(st, errs)
		return fmt.Errorf("protect: stripe %s: shipping took %s, more than half of protect.orphan_grace (%s): its shards may be collected as orphans; abandoned",
			id, took.Round(time.Millisecond), p.cfg.OrphanGrace)
	}
	if err := p.cfg.Catalog.CommitStripe(ctx, st); err != nil {
		// The outcome may be unknown (a timeout after the leader got it): the shards stay,
		// and are collected as orphans if the stripe never shows up in the catalog.
		if _, gerr := p.cfg.Catalog.Stripe(id); gerr != nil {
			return fmt.Errorf("protect: commit stripe %s: %w", id, err)
		}
	}
	var bytes int64
	for i, s := range segs {
		bytes += s.Bytes
		if i == 0 {
			continue
		}
		// The catalog now places the segment on its shard's node: the local copy is
		// surplus, deleted by garbage collection after SurplusGrace (reads under way).
		if p.cfg.SurplusGrace > 0 {
			p.orphanMu.Lock()
			p.surplusSeen[s.ID] = time.Now()
			p.orphanMu.Unlock()
		} else if err := p.cfg.Store.Delete(s.ID); err != nil && !errors.Is(err, model.ErrNotFound) {
			p.log.Warn("stripe: delete shipped segment (retried by garbage collection)", slog.String("segment", string(s.ID)), slog.Any("error", err))
		}
	}
	p.c.stripesMade.Add(1)
	p.c.striped.Add(bytes)
	p.log.Info("stripe committed", slog.String("stripe", string(id)), slog.Int("k", k), slog.Int("m", m),
		slog.Int64("shard_size", shardSize), slog.Int64("bytes", bytes), slog.Duration("took", time.Since(started)))
	return nil
}

// dropShipped deletes, best effort, the shards of an abandoned stripe that reached their
// node (what it misses, garbage collection takes later).
func (p *Protector) dropShipped(st model.Stripe, errs []error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 1; i < len(st.Shards); i++ {
		if errs[i] != nil {
			continue
		}
		c, err := p.cfg.Clients(st.Shards[i].Node)
		if err != nil {
			continue
		}
		_ = c.DeleteShard(ctx, storage.ShardID{Stripe: storage.StripeID(st.ID), Index: i})
	}
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type crcWriter struct {
	w   io.Writer
	sum uint32
}

func (c *crcWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.sum = crc32.Update(c.sum, castagnoli, p[:n])
	return n, err
}

// CollectGarbage deletes what a crash or a lost race left behind: shards whose stripe the
// catalog does not know, or records on another node, once seen so for OrphanGrace; and
// local segments that a committed stripe placed on another node (shipped, but the crash
// came before the local delete).
func (p *Protector) CollectGarbage(ctx context.Context) {
	shards, err := p.cfg.Store.Shards()
	if err != nil {
		p.log.Warn("garbage collection: list shards", slog.Any("error", err))
		return
	}
	now := time.Now()
	seen := map[storage.ShardID]bool{}
	for _, sh := range shards {
		if ctx.Err() != nil {
			return
		}
		st, err := p.cfg.Catalog.Stripe(model.StripeID(sh.ID.Stripe))
		orphan := errors.Is(err, model.ErrNotFound) ||
			(err == nil && (sh.ID.Index >= len(st.Shards) || st.Shards[sh.ID.Index].Node != p.cfg.Self))
		if !orphan {
			continue
		}
		seen[sh.ID] = true
		p.orphanMu.Lock()
		first, ok := p.orphanSeen[sh.ID]
		if !ok {
			p.orphanSeen[sh.ID] = now
			first = now
		}
		p.orphanMu.Unlock()
		if now.Sub(first) < p.cfg.OrphanGrace {
			continue
		}
		if err := p.cfg.Store.DeleteShard(sh.ID); err != nil && !errors.Is(err, model.ErrNotFound) {
			p.log.Warn("garbage collection: delete orphan shard", slog.String("shard", sh.ID.String()), slog.Any("error", err))
			continue
		}
		p.c.orphansDeleted.Add(1)
		p.log.Info("orphan shard deleted: no stripe of the catalog places it here",
			slog.String("shard", sh.ID.String()), slog.Int64("bytes", sh.Bytes), slog.Duration("orphaned_for", now.Sub(first)))
	}
	p.orphanMu.Lock()
	for id := range p.orphanSeen {
		if !seen[id] {
			delete(p.orphanSeen, id)
		}
	}
	p.orphanMu.Unlock()

	segs, err := p.cfg.Store.All()
	if err != nil {
		p.log.Warn("garbage collection: list segments", slog.Any("error", err))
		return
	}
	present := make(map[model.SegmentID]bool, len(segs))
	for _, s := range segs {
		present[s.ID] = true
	}
	p.orphanMu.Lock()
	for id := range p.surplusSeen { // deleted some other way (retention)
		if !present[id] {
			delete(p.surplusSeen, id)
		}
	}
	p.orphanMu.Unlock()
	for _, s := range segs {
		if !s.Sealed || ctx.Err() != nil {
			continue
		}
		st, ok, err := p.cfg.Catalog.StripeOf(s.ID)
		if err != nil || !ok {
			continue
		}
		i := dataIndex(st, s.ID)
		if i < 0 || st.Shards[i].Node == p.cfg.Self || st.Shards[i].Node == "" {
			continue
		}
		p.orphanMu.Lock()
		first, ok := p.surplusSeen[s.ID]
		if !ok {
			first = now
			p.surplusSeen[s.ID] = now
		}
		p.orphanMu.Unlock()
		if now.Sub(first) < p.cfg.SurplusGrace {
			continue
		}
		p.orphanMu.Lock()
		delete(p.surplusSeen, s.ID)
		p.orphanMu.Unlock()
		if err := p.cfg.Store.Delete(s.ID); err != nil && !errors.Is(err, model.ErrNotFound) {
			p.log.Warn("garbage collection: delete surplus segment", slog.String("segment", string(s.ID)), slog.Any("error", err))
			continue
		}
		p.c.surplusDeleted.Add(1)
		p.log.Info("surplus segment deleted: its stripe keeps it on another node",
			slog.String("segment", string(s.ID)), slog.String("stripe", string(st.ID)), slog.String("node", string(st.Shards[i].Node)))
	}
}

// dataIndex returns the data shard index of segment seg in st, or -1.
func dataIndex(st model.Stripe, seg model.SegmentID) int {
	for i := 0; i < st.K && i < len(st.Shards); i++ {
		if st.Shards[i].Segment == seg {
			return i
		}
	}
	return -1
}
