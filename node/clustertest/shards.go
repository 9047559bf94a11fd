package clustertest

import (
	"context"
	"fmt"
	"hash/crc32"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage"
	"github.com/vigie-vms/vigie/storage/transfer"
)

// ShardCheck is what reading one shard of a stripe back from the node the catalog places
// it on found.
type ShardCheck struct {
	Stripe model.StripeID
	Index  int
	Node   model.NodeID
	// Bytes read and their CRC-32C.
	Bytes    int64
	Checksum uint32
	// Err: the node is down, the read failed (the holder verifies every block before
	// sending it), or size or checksum differ from the catalog's.
	Err error
}

// CheckShard reads shard i of st whole from the node the catalog places it on, through
// that node's shard transfer service (gRPC, as a peer would), and compares its size and
// CRC-32C with the catalog's.
func (h *Cluster) CheckShard(ctx context.Context, st model.Stripe, i int) ShardCheck {
	sh := st.Shards[i]
	out := ShardCheck{Stripe: st.ID, Index: i, Node: sh.Node}
	nd := h.ByID(sh.Node)
	if nd == nil || nd.N() == nil {
		out.Err = fmt.Errorf("shard %d of stripe %s: node %s is down", i, st.ID, sh.Node)
		return out
	}
	cc, err := grpc.NewClient(nd.N().GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		out.Err = fmt.Errorf("shard %d of stripe %s: dial %s: %w", i, st.ID, sh.Node, err)
		return out
	}
	defer cc.Close()
	sum := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	ref := storage.ShardRef{Stripe: storage.StripeID(st.ID), Index: i, Segment: sh.Segment}
	n, err := transfer.NewClient(cc).GetShard(ctx, ref, 0, 0, sum)
	out.Bytes, out.Checksum = n, sum.Sum32()
	switch {
	case err != nil:
		out.Err = fmt.Errorf("shard %d of stripe %s on %s: %w", i, st.ID, sh.Node, err)
	case n != sh.Bytes || out.Checksum != sh.Checksum:
		out.Err = fmt.Errorf("shard %d of stripe %s on %s: read %d bytes (crc %08x), the catalog says %d (crc %08x): %w",
			i, st.ID, sh.Node, n, out.Checksum, sh.Bytes, sh.Checksum, model.ErrCorrupt)
	}
	return out
}
