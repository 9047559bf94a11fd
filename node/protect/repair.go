package protect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/vigie-vms/vigie/cluster"
	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage"
)

// RepairOnce runs the repair tasks the catalog gives this node (at most RepairLimit, most
// endangered first) and returns how many it completed. Each shard is copied from the node
// that lost it when that node still answers, else rebuilt from k others; stored here (a
// data shard as a shard file: OpenShardRef and OpenLocal serve it as the segment); then
// recorded with UpdateShard, a compare-and-set — losing it drops the copy.
func (p *Protector) RepairOnce(ctx context.Context) int {
	tasks, err := p.cfg.Catalog.RepairTasks(p.cfg.Self, p.cfg.RepairLimit)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("repair: list tasks", slog.Any("error", err))
		}
		return 0
	}
	done := 0
	for _, t := range tasks {
		if ctx.Err() != nil {
			break
		}
		if t.To != "" && t.To != p.cfg.Self {
			continue
		}
		if err := p.repair(ctx, t); err != nil {
			p.c.repairsFailed.Add(1)
			p.log.Warn("repair failed", slog.String("stripe", string(t.Stripe.ID)), slog.Int("shard", t.Index),
				slog.String("from", string(t.From)), slog.Any("error", err))
			continue
		}
		done++
	}
	return done
}

func (p *Protector) repair(ctx context.Context, t cluster.RepairTask) error {
	st := toStorage(t.Stripe)
	if t.Index < 0 || t.Index >= len(st.Shards) {
		return fmt.Errorf("protect: repair: %w", model.Invalid("index", "%d outside stripe %s", t.Index, st.ID))
	}
	want := st.Shards[t.Index]
	id := storage.ShardID{Stripe: st.ID, Index: t.Index}
	started := time.Now()
	var expect []uint32
	if want.Checksum != 0 {
		expect = []uint32{want.Checksum}
	}
	put := func(fill func(w io.Writer) error) error {
		pr, pw := io.Pipe()
		go func() { _ = pw.CloseWithError(fill(newPacedWriter(ctx, pw, p.cfg.RepairRate))) }()
		err := p.cfg.Store.PutShard(ctx, id, pr, want.Bytes, expect...)
		_ = pr.CloseWithError(io.ErrClosedPipe)
		return err
	}
	var err error
	how := "rebuilt"
	if t.FromAlive && t.From != p.cfg.Self {
		how = "copied"
		err = put(func(w io.Writer) error {
			c, err := p.cfg.Clients(t.From)
			if err != nil {
				return err
			}
			_, err = c.GetShard(ctx, st.Ref(t.Index), 0, 0, w)
			return err
		})
		if err != nil && !errors.Is(err, model.ErrExists) {
			p.log.Info("repair: copy from the old node failed; rebuilding", slog.String("stripe", string(st.ID)),
				slog.Int("shard", t.Index), slog.Any("error", err))
			how = "rebuilt"
		}
	}
	if how == "rebuilt" {
		err = put(func(w io.Writer) error { return storage.Rebuild(ctx, st, t.Index, p.fetcher, w, p.cfg.RowSize) })
	}
	switch {
	case errors.Is(err, model.ErrExists):
		// An earlier attempt stored it (verified against the stripe's checksum) but did
		// not get to record it: record it now.
	case err != nil:
		return err
	default:
		p.c.repairBytes.Add(want.Bytes)
	}
	shard := model.StripeShard{Node: p.cfg.Self, Segment: want.Segment, Bytes: want.Bytes, Checksum: want.Checksum}
	if _, err := p.cfg.Catalog.UpdateShard(ctx, t.Stripe.ID, t.Index, t.From, shard); err != nil {
		if errors.Is(err, model.ErrStaleEpoch) {
			_ = p.cfg.Store.DeleteShard(id)
			return fmt.Errorf("protect: another node repaired shard %s first; copy dropped: %w", id, err)
		}
		return fmt.Errorf("protect: record repaired shard %s (kept; retried): %w", id, err)
	}
	p.c.repairsDone.Add(1)
	p.log.Info("shard repaired", slog.String("stripe", string(st.ID)), slog.Int("shard", t.Index),
		slog.String("segment", string(want.Segment)), slog.String("from", string(t.From)), slog.String("how", how),
		slog.Int64("bytes", want.Bytes), slog.Duration("took", time.Since(started)))
	return nil
}

// ScrubOnce runs one scrub pass over the store, then repairs every finding it can from
// its stripe (Rebuild, then RepairSegment or RepairShard). It returns the findings.
func (p *Protector) ScrubOnce(ctx context.Context) []storage.Finding {
	var findings []storage.Finding
	stats, err := p.cfg.Store.Scrub(ctx, p.cfg.ScrubRate, func(f storage.Finding) {
		p.c.scrubFindings.Add(1)
		p.log.Error("scrub: stored bytes fail their checksums", slog.String("segment", string(f.Segment)),
			slog.String("shard", shardName(f.Shard)), slog.Int64("offset", f.Offset), slog.Any("error", f.Err))
		findings = append(findings, f)
	})
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("scrub pass", slog.Any("error", err))
		}
	} else {
		p.c.scrubPasses.Add(1)
		p.log.Debug("scrub pass", slog.Int("segments", stats.Segments), slog.Int("shards", stats.Shards),
			slog.Int64("bytes", stats.Bytes), slog.Int("findings", stats.Findings))
	}
	for _, f := range findings {
		if ctx.Err() != nil {
			break
		}
		if err := p.RepairFinding(ctx, f); err != nil {
			p.log.Error("scrub: repair failed", slog.String("segment", string(f.Segment)),
				slog.String("shard", shardName(f.Shard)), slog.Any("error", err))
			continue
		}
		p.c.scrubRepaired.Add(1)
		p.log.Info("scrub: repaired from the stripe", slog.String("segment", string(f.Segment)), slog.String("shard", shardName(f.Shard)))
	}
	return findings
}

func shardName(id storage.ShardID) string {
	if id.Stripe == "" {
		return ""
	}
	return id.String()
}

// RepairFinding rewrites the local copy a scrub finding names from k other shards of its
// stripe. An unstriped segment cannot be repaired here (model.ErrNotFound).
func (p *Protector) RepairFinding(ctx context.Context, f storage.Finding) error {
	rebuild := func(st model.Stripe, i int, store func(r io.Reader) error) error {
		pr, pw := io.Pipe()
		go func() {
			_ = pw.CloseWithError(storage.Rebuild(ctx, toStorage(st), i, p.fetcher, newPacedWriter(ctx, pw, p.cfg.RepairRate), p.cfg.RowSize))
		}()
		err := store(pr)
		_ = pr.CloseWithError(io.ErrClosedPipe)
		if err == nil {
			p.c.repairBytes.Add(st.Shards[i].Bytes)
		}
		return err
	}
	switch {
	case f.Shard.Stripe != "":
		st, err := p.cfg.Catalog.Stripe(model.StripeID(f.Shard.Stripe))
		if err != nil {
			return fmt.Errorf("protect: repair shard %s: %w", f.Shard, err)
		}
		if f.Shard.Index >= len(st.Shards) || st.Shards[f.Shard.Index].Node != p.cfg.Self {
			return fmt.Errorf("protect: repair shard %s: the catalog does not place it here (garbage collection removes it): %w", f.Shard, model.ErrNotFound)
		}
		sh := st.Shards[f.Shard.Index]
		return rebuild(st, f.Shard.Index, func(r io.Reader) error {
			return p.cfg.Store.RepairShard(ctx, f.Shard, r, sh.Bytes, sh.Checksum)
		})
	case f.Segment != "":
		st, ok, err := p.cfg.Catalog.StripeOf(f.Segment)
		if err != nil {
			return fmt.Errorf("protect: repair segment %s: %w", f.Segment, err)
		}
		if !ok {
			return fmt.Errorf("protect: repair segment %s: not striped, no other copy to rebuild it from: %w", f.Segment, model.ErrNotFound)
		}
		i := dataIndex(st, f.Segment)
		if i < 0 {
			return fmt.Errorf("protect: repair segment %s: stripe %s does not list it: %w", f.Segment, st.ID, model.ErrNotFound)
		}
		return rebuild(st, i, func(r io.Reader) error { return p.cfg.Store.RepairSegment(ctx, f.Segment, r) })
	}
	return fmt.Errorf("protect: repair: %w", model.Invalid("finding", "names neither a segment nor a shard"))
}

// pacedWriter writes at most rate bytes per second (0: unlimited).
type pacedWriter struct {
	ctx   context.Context
	w     io.Writer
	rate  int64
	start time.Time
	n     int64
}

func newPacedWriter(ctx context.Context, w io.Writer, rate int64) io.Writer {
	if rate <= 0 {
		return w
	}
	return &pacedWriter{ctx: ctx, w: w, rate: rate, start: time.Now()}
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += int64(n)
	due := p.start.Add(time.Duration(float64(p.n) / float64(p.rate) * float64(time.Second)))
	if d := time.Until(due); d > 0 && err == nil {
		select {
		case <-time.After(d):
		case <-p.ctx.Done():
			return n, p.ctx.Err()
		}
	}
	return n, err
}
