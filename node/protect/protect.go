package protect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigie-vms/vigie/cluster"
	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage"
	"github.com/vigie-vms/vigie/storage/erasure"
	"github.com/vigie-vms/vigie/storage/transfer"
)

// Catalog is what the protector needs of the cluster (*cluster.Cluster implements it).
type Catalog interface {
	Members() []model.NodeStatus
	Camera(id model.CameraID) (model.Camera, error)
	UnstripedSegments(node model.NodeID, limit int) ([]model.Segment, error)
	PlaceStripe(k, m int, dataNodes []model.NodeID) ([]model.NodeID, error)
	CommitStripe(ctx context.Context, st model.Stripe) error
	Stripe(id model.StripeID) (model.Stripe, error)
	StripeOf(segment model.SegmentID) (model.Stripe, bool, error)
	UpdateShard(ctx context.Context, stripe model.StripeID, index int, from model.NodeID, shard model.StripeShard) (model.Stripe, error)
	RepairTasks(node model.NodeID, limit int) ([]cluster.RepairTask, error)
	ReportDisk(ctx context.Context, node model.NodeID, u cluster.DiskUsage) error
}

var _ Catalog = (*cluster.Cluster)(nil)

// Config configures a Protector.
type Config struct {
	// Self is this node.
	Self model.NodeID
	// Store is the node's segment and shard store.
	Store *storage.Store
	// Catalog is the cluster catalog.
	Catalog Catalog
	// Clients returns the transfer client of a peer (the node keeps one gRPC connection
	// per peer, to Members()[i].GRPCAddr). An error makes the peer unavailable.
	Clients func(model.NodeID) (*transfer.Client, error)
	// Logger; nil means slog.Default().
	Logger *slog.Logger

	// Overrides of the code per redundancy class (erasure.CodeFor).
	Overrides erasure.Overrides
	// StripeInterval is how often the striper looks for unstriped sealed segments.
	StripeInterval time.Duration
	// MinSegmentAge: a sealed segment is striped once it ended this long ago (gives the
	// commit and hot replicas time to settle).
	MinSegmentAge time.Duration
	// MaxStripeWait: when fewer segments than k are waiting, the oldest is striped with
	// fewer data shards once it has waited this long (0: never, always wait for k).
	MaxStripeWait time.Duration
	// OrphanGrace: a shard whose stripe the catalog does not know (a stripe whose commit
	// never happened, or one deleted) is deleted after it was seen orphaned this long. A
	// stripe whose shipping takes longer than half of it is abandoned, not committed.
	OrphanGrace time.Duration
	// SurplusGrace: a segment this node shipped as a stripe's data shard to another node
	// is deleted here once it has been surplus this long, so that reads already under
	// way (a playback or export opened on this node) finish; 0 deletes it at once.
	SurplusGrace time.Duration
	// RepairInterval is how often RepairTasks is asked; RepairLimit how many tasks at a
	// time; RepairRate the bytes per second repairs write (0: unlimited).
	RepairInterval time.Duration
	RepairLimit    int
	RepairRate     int64
	// ScrubRate is the bytes per second the scrubber reads (0: unlimited); ScrubPause the
	// sleep between passes.
	ScrubRate  int64
	ScrubPause time.Duration
	// DiskInterval is how often the disk usage is reported.
	DiskInterval time.Duration
	// RowSize is the erasure row size (0: erasure.DefaultRowSize).
	RowSize int
	// IndexCache is how many rebuilt fragment indexes are kept in memory.
	IndexCache int
}

// DefaultConfig returns the defaults; Self, Store, Catalog and Clients must be set.
func DefaultConfig() Config {
	return Config{
		StripeInterval: 30 * time.Second,
		MinSegmentAge:  time.Minute,
		MaxStripeWait:  30 * time.Minute,
		OrphanGrace:    30 * time.Minute,
		SurplusGrace:   2 * time.Minute,
		RepairInterval: 15 * time.Second,
		RepairLimit:    4,
		RepairRate:     100 << 20,
		ScrubRate:      20 << 20,
		ScrubPause:     time.Minute,
		DiskInterval:   10 * time.Second,
		IndexCache:     256,
	}
}

// Validate returns every problem of the configuration at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(opt, format string, a ...any) { errs = append(errs, model.Invalid(opt, format, a...)) }
	if c.Self == "" {
		bad("protect.self", "is required")
	}
	if c.Store == nil {
		bad("protect.store", "is required")
	}
	if c.Catalog == nil {
		bad("protect.catalog", "is required")
	}
	if c.Clients == nil {
		bad("protect.clients", "is required")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"stripe_interval", c.StripeInterval}, {"repair_interval", c.RepairInterval}, {"disk_interval", c.DiskInterval}, {"orphan_grace", c.OrphanGrace}} {
		if d.v <= 0 {
			bad("protect."+d.name, "must be positive, got %s", d.v)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"min_segment_age", c.MinSegmentAge}, {"max_stripe_wait", c.MaxStripeWait}, {"scrub_pause", c.ScrubPause}, {"surplus_grace", c.SurplusGrace}} {
		if d.v < 0 {
			bad("protect."+d.name, "must not be negative, got %s", d.v)
		}
	}
	if c.RepairLimit < 1 {
		bad("protect.repair_limit", "must be at least 1, got %d", c.RepairLimit)
	}
	if c.RepairRate < 0 {
		bad("protect.repair_rate", "must not be negative, got %d", c.RepairRate)
	}
	if c.ScrubRate < 0 {
		bad("protect.scrub_rate", "must not be negative, got %d", c.ScrubRate)
	}
	if c.RowSize < 0 {
		bad("protect.row_size", "must not be negative, got %d", c.RowSize)
	}
	if c.IndexCache < 0 {
		bad("protect.index_cache", "must not be negative, got %d", c.IndexCache)
	}
	return errors.Join(errs...)
}

// Stats are the protector's counters since it started.
type Stats struct {
	StripesMade      int64 // stripes committed by this node
	StripeFailures   int64 // stripes abandoned (placement, transfer or commit failed)
	ShippedBytes     int64 // bytes this node sent east-west to build stripes
	StripedBytes     int64 // recorded bytes protected by the stripes this node made
	DegradedReads    int64 // segment reads that needed reconstruction
	DegradedBytes    int64 // bytes served by reconstruction
	ShardErrors      int64 // shard reads that failed (worked around)
	RepairsDone      int64
	RepairsFailed    int64
	RepairBytes      int64
	ScrubPasses      int64
	ScrubFindings    int64
	ScrubRepaired    int64
	OrphansDeleted   int64 // shards without a stripe, deleted
	SurplusDeleted   int64 // local segments whose stripe moved them elsewhere, deleted
	IndexesRebuilt   int64 // fragment indexes rebuilt from segment bytes
	DiskReportErrors int64
}

type counters struct {
	stripesMade, stripeFailures, shipped, striped           atomic.Int64
	degradedReads, degradedBytes, shardErrors               atomic.Int64
	repairsDone, repairsFailed, repairBytes                 atomic.Int64
	scrubPasses, scrubFindings, scrubRepaired               atomic.Int64
	orphansDeleted, surplusDeleted, indexesRebuilt, diskErr atomic.Int64
}

// Protector runs the striper, repair, scrub and disk loops of a node, and reads segments
// through their stripes.
type Protector struct {
	cfg     Config
	log     *slog.Logger
	fetcher *transfer.Fetcher
	c       counters

	idxMu  sync.Mutex
	idx    map[model.SegmentID]cachedIndex
	idxLRU []model.SegmentID

	orphanMu    sync.Mutex
	orphanSeen  map[storage.ShardID]time.Time
	surplusSeen map[model.SegmentID]time.Time // guarded by orphanMu

	stripeMu sync.Mutex // one striping round at a time

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type cachedIndex struct {
	init  []byte
	frags []model.FragmentInfo
}

// New returns a protector; Start runs its loops.
func New(cfg Config) (*Protector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("protect: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	p := &Protector{
		cfg: cfg, log: log.With(slog.String("component", "protect")),
		idx: map[model.SegmentID]cachedIndex{}, orphanSeen: map[storage.ShardID]time.Time{},
		surplusSeen: map[model.SegmentID]time.Time{},
	}
	p.fetcher = &transfer.Fetcher{Self: cfg.Self, Local: cfg.Store, Clients: cfg.Clients}
	return p, nil
}

// Fetcher returns the node's storage.ShardFetcher (its own store, peers through transfer).
func (p *Protector) Fetcher() storage.ShardFetcher { return p.fetcher }

// Start runs the loops until Close: striper (with orphan and surplus collection), repair,
// scrub, disk reports.
func (p *Protector) Start(ctx context.Context) {
	ctx, p.cancel = context.WithCancel(ctx)
	loop := func(name string, every time.Duration, fn func(context.Context)) {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				fn(ctx)
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	loop("stripe", p.cfg.StripeInterval, func(ctx context.Context) {
		if _, err := p.StripeOnce(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("striping", slog.Any("error", err))
		}
		p.CollectGarbage(ctx)
	})
	loop("repair", p.cfg.RepairInterval, func(ctx context.Context) { p.RepairOnce(ctx) })
	loop("disk", p.cfg.DiskInterval, func(ctx context.Context) { p.ReportDisk(ctx) })
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for ctx.Err() == nil {
			p.ScrubOnce(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(p.cfg.ScrubPause):
			}
		}
	}()
}

// Close stops the loops and waits for them.
func (p *Protector) Close() error {
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
	return nil
}

// Stats returns the counters.
func (p *Protector) Stats() Stats {
	c := &p.c
	return Stats{
		StripesMade: c.stripesMade.Load(), StripeFailures: c.stripeFailures.Load(),
		ShippedBytes: c.shipped.Load(), StripedBytes: c.striped.Load(),
		DegradedReads: c.degradedReads.Load(), DegradedBytes: c.degradedBytes.Load(), ShardErrors: c.shardErrors.Load(),
		RepairsDone: c.repairsDone.Load(), RepairsFailed: c.repairsFailed.Load(), RepairBytes: c.repairBytes.Load(),
		ScrubPasses: c.scrubPasses.Load(), ScrubFindings: c.scrubFindings.Load(), ScrubRepaired: c.scrubRepaired.Load(),
		OrphansDeleted: c.orphansDeleted.Load(), SurplusDeleted: c.surplusDeleted.Load(),
		IndexesRebuilt: c.indexesRebuilt.Load(), DiskReportErrors: c.diskErr.Load(),
	}
}

// ReportDisk sends the store's disk usage to the catalog (the catalog drops changes
// under 1 %).
func (p *Protector) ReportDisk(ctx context.Context) {
	free, total, err := p.cfg.Store.FreeBytes()
	if err != nil {
		p.c.diskErr.Add(1)
		p.log.Warn("disk usage", slog.Any("error", err))
		return
	}
	u := cluster.DiskUsage{FreeBytes: free, TotalBytes: total, Full: p.cfg.Store.Full()}
	if err := p.cfg.Catalog.ReportDisk(ctx, p.cfg.Self, u); err != nil && ctx.Err() == nil {
		p.c.diskErr.Add(1)
		p.log.Warn("report disk usage", slog.Any("error", err))
	}
}

// toStorage converts a catalog stripe to storage's view of it.
func toStorage(st model.Stripe) storage.Stripe {
	out := storage.Stripe{ID: storage.StripeID(st.ID), K: st.K, M: st.M, ShardSize: st.ShardSize, Shards: make([]storage.StripeShard, len(st.Shards))}
	for i, sh := range st.Shards {
		out.Shards[i] = storage.StripeShard{Node: sh.Node, Segment: sh.Segment, Bytes: sh.Bytes, Checksum: sh.Checksum}
	}
	return out
}
