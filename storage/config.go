package storage

import (
	"errors"
	"log/slog"

	"github.com/vigie-vms/vigie/model"
)

// Block size limits: a block is the unit of the per-block checksums of a sealed segment.
const (
	DefaultBlockSize = 1 << 20
	MinBlockSize     = 4 << 10
	MaxBlockSize     = 64 << 20
)

// MaxFragmentSize is the largest fragment Append accepts (a sanity bound, far above any
// real one-second fragment).
const MaxFragmentSize = 256 << 20

// DefaultMinFreeBytes is the default of Config.MinFreeBytes.
const DefaultMinFreeBytes = 1 << 30

// Config configures a Store.
type Config struct {
	// Dir is the root directory; segment files, the Pebble index and the quarantine live
	// under it. Created if missing.
	Dir string
	// NodeID is stamped into model.Segment.Node of every segment this store returns.
	NodeID model.NodeID
	// BlockSize is the size of the blocks a sealed segment's checksums cover (default
	// 1 MiB). Each segment records the block size it was sealed with, so changing it only
	// affects segments sealed afterwards.
	BlockSize int
	// Logger receives the store's logs; nil means slog.Default().
	Logger *slog.Logger
	// MinFreeBytes is the free space the store keeps for recording: PutShard refuses a
	// shard that would leave less (model.ErrNoSpace) and Full reports it, so placement
	// avoids the node. Default 1 GiB; 0 disables the reserve.
	MinFreeBytes int64
	// NoSync disables every fsync (segment files, directories, Pebble). Tests and
	// benchmarks only: a crash then loses acknowledged fragments.
	NoSync bool
}

// DefaultConfig returns the defaults. NodeID has no default: the node sets it.
func DefaultConfig() Config {
	return Config{
		Dir:          "vigie-data/storage",
		BlockSize:    DefaultBlockSize,
		MinFreeBytes: DefaultMinFreeBytes,
		Logger:       slog.Default(),
	}
}

// Validate reports every problem of the configuration at once, each naming its option and
// wrapping model.ErrInvalid.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, model.Invalid("storage.dir", "is required"))
	}
	if c.NodeID == "" {
		errs = append(errs, model.Invalid("storage.node_id", "is required"))
	}
	if c.BlockSize < MinBlockSize || c.BlockSize > MaxBlockSize {
		errs = append(errs, model.Invalid("storage.block_size", "must be between %d and %d bytes, got %d", MinBlockSize, MaxBlockSize, c.BlockSize))
	}
	if c.MinFreeBytes < 0 {
		errs = append(errs, model.Invalid("storage.min_free_bytes", "must not be negative, got %d", c.MinFreeBytes))
	}
	return errors.Join(errs...)
}
