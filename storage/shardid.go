package storage

import (
	"encoding/binary"
	"fmt"
	"regexp"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage/erasure"
)

// StripeID names an erasure-coded stripe. The cluster assigns it (proposed to move to
// model.StripeID); storage only requires it to be file-name safe: 1 to 128 characters of
// a-z, 0-9, '.', '_' and '-', starting with a letter or digit.
type StripeID string

// ShardID names one shard of a stripe: index 0..k-1 are the data shards (the segments, in
// stripe order), k..k+m-1 the parity shards.
type ShardID struct {
	Stripe StripeID
	Index  int
}

// String returns "<stripe>/<index>".
func (id ShardID) String() string { return fmt.Sprintf("%s/%d", id.Stripe, id.Index) }

var stripePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)

// Validate checks the id, wrapping model.ErrInvalid.
func (id ShardID) Validate() error {
	if !stripePattern.MatchString(string(id.Stripe)) {
		return model.Invalid("stripe", "%q must be 1-128 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit", id.Stripe)
	}
	if id.Index < 0 || id.Index >= erasure.MaxShards {
		return model.Invalid("index", "must be between 0 and %d, got %d", erasure.MaxShards-1, id.Index)
	}
	return nil
}

// fileName is the shard's file name under <Dir>/shards/.
func (id ShardID) fileName() string { return fmt.Sprintf("%s.%d.shard", id.Stripe, id.Index) }

// shardKey is 'h' stripe 0x00 index(2).
func (id ShardID) key() []byte {
	b := append(make([]byte, 0, len(id.Stripe)+4), prefixShard)
	b = append(b, id.Stripe...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint16(b, uint16(id.Index))
}

func parseShardKey(k []byte) (ShardID, error) {
	if len(k) < 5 || k[0] != prefixShard || k[len(k)-3] != 0 {
		return ShardID{}, errBadKey
	}
	id := ShardID{Stripe: StripeID(k[1 : len(k)-3]), Index: int(binary.BigEndian.Uint16(k[len(k)-2:]))}
	if id.Validate() != nil {
		return ShardID{}, errBadKey
	}
	return id, nil
}

// prefixShard is the index prefix of shard records (see doc.go).
const prefixShard = 'h'

// shardMeta is the value of a shard record.
type shardMeta struct {
	size      int64
	blockSize int64
	fileCRC   uint32
	blocks    []uint32
}

// encodeShardMeta encodes a shard record:
//
//	version u8 | size uvarint | blockSize uvarint | fileCRC u32 | nblocks uvarint | nblocks × u32
func encodeShardMeta(m shardMeta) []byte {
	b := make([]byte, 0, 24+4*len(m.blocks))
	b = append(b, recordVersion)
	b = binary.AppendUvarint(b, uint64(m.size))
	b = binary.AppendUvarint(b, uint64(m.blockSize))
	b = binary.BigEndian.AppendUint32(b, m.fileCRC)
	b = binary.AppendUvarint(b, uint64(len(m.blocks)))
	for _, c := range m.blocks {
		b = binary.BigEndian.AppendUint32(b, c)
	}
	return b
}

// decodeShardMeta decodes a shard record; it never panics on arbitrary input
// (FuzzDecodeShardMeta).
func decodeShardMeta(b []byte) (shardMeta, error) {
	r := recReader{b: b}
	var m shardMeta
	if v := r.u8("version"); r.err == nil && v != recordVersion {
		r.fail("version %d, want %d", v, recordVersion)
	}
	m.size = r.uvarint("size", 0, maxFileSize)
	m.blockSize = r.uvarint("block size", MinBlockSize, MaxBlockSize)
	m.fileCRC = r.u32("file crc")
	n := r.uvarint("blocks", 0, maxFileSize)
	if r.err == nil {
		switch {
		case n != numBlocks(m.size, m.blockSize):
			r.fail("%d blocks for %d bytes of %d-byte blocks", n, m.size, m.blockSize)
		case int64(len(r.b)) != 4*n:
			r.fail("blocks: %d bytes for %d checksums", len(r.b), n)
		}
	}
	if r.err == nil {
		m.blocks = make([]uint32, n)
		for i := range m.blocks {
			m.blocks[i] = r.u32("block crc")
		}
	}
	if err := r.done(); err != nil {
		return shardMeta{}, err
	}
	return m, nil
}
