package protect

import (
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage/transfer"
)

// Conns keeps one gRPC connection per peer for the transfer clients (Config.Clients =
// conns.Client). Resolve gives a peer's gRPC address (Members()[i].GRPCAddr); a changed
// address gets a new connection. Options are the node's dial options (its TLS).
type Conns struct {
	Resolve func(model.NodeID) (string, error)
	Options []grpc.DialOption

	mu sync.Mutex
	m  map[model.NodeID]conn
}

type conn struct {
	addr string
	cc   *grpc.ClientConn
}

// Client returns the transfer client of node.
func (c *Conns) Client(node model.NodeID) (*transfer.Client, error) {
	addr, err := c.Resolve(node)
	if err != nil {
		return nil, err
	}
	if addr == "" {
		return nil, fmt.Errorf("node %s has no gRPC address: %w", node, model.ErrNotFound)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[model.NodeID]conn{}
	}
	if old, ok := c.m[node]; ok {
		if old.addr == addr {
			return transfer.NewClient(old.cc), nil
		}
		_ = old.cc.Close()
		delete(c.m, node)
	}
	cc, err := grpc.NewClient(addr, c.Options...)
	if err != nil {
		return nil, fmt.Errorf("dial node %s at %s: %w", node, addr, err)
	}
	c.m[node] = conn{addr: addr, cc: cc}
	return transfer.NewClient(cc), nil
}

// Close closes every connection.
func (c *Conns) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for id, x := range c.m {
		errs = append(errs, x.cc.Close())
		delete(c.m, id)
	}
	return errors.Join(errs...)
}
