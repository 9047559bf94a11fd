package clustertest

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Network is an in-memory network for memberlist, like memberlist.MockNetwork, with
// what multi-node tests need on top: a node can be taken down (a crash: everything to
// and from it is dropped) and the network can be partitioned. It differs from
// MockNetwork in two ways that matter for failure tests: packets are delivered without
// blocking (a full or dead receiver drops them, as UDP would — MockNetwork's unbuffered
// send blocks its sender forever once the receiver stops reading), and nodes can be added
// while others gossip (its maps are locked).
type Network struct {
	mu      sync.RWMutex
	byAddr  map[string]*Transport
	byName  map[string]*Transport
	addrOf  map[string]string
	port    int
	down    map[string]bool
	blocked map[[2]string]bool // (from, to) by name
	dropped uint64
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	return &Network{
		byAddr: map[string]*Transport{}, byName: map[string]*Transport{}, addrOf: map[string]string{},
		down: map[string]bool{}, blocked: map[[2]string]bool{},
	}
}

// Transport is one node's end of the Network; it implements
// memberlist.NodeAwareTransport.
type Transport struct {
	net      *Network
	name     string
	addr     string
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	stop     chan struct{}
	once     sync.Once
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// NewTransport returns a transport for name. A name seen before (a restarted node) keeps
// its address and replaces the former transport; it is up.
func (n *Network) NewTransport(name string) *Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	addr, ok := n.addrOf[name]
	if !ok {
		n.port++
		addr = "127.0.0.1:" + strconv.Itoa(n.port)
		n.addrOf[name] = addr
	}
	t := &Transport{
		net: n, name: name, addr: addr,
		packetCh: make(chan *memberlist.Packet, 4096),
		streamCh: make(chan net.Conn, 64),
		stop:     make(chan struct{}),
	}
	n.byAddr[addr] = t
	n.byName[name] = t
	delete(n.down, name)
	return t
}

// Addr is the gossip address of name ("" when unknown).
func (n *Network) Addr(name string) string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.addrOf[name]
}

// SetDown takes a node off the network (true) or puts it back (false).
func (n *Network) SetDown(name string, down bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if down {
		n.down[name] = true
	} else {
		delete(n.down, name)
	}
}

// Partition cuts every link between the named nodes and the others (both directions).
// Links inside each side keep working. It adds to any earlier partition.
func (n *Network) Partition(side ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	in := map[string]bool{}
	for _, s := range side {
		in[s] = true
	}
	for other := range n.addrOf {
		if in[other] {
			continue
		}
		for s := range in {
			n.blocked[[2]string{s, other}] = true
			n.blocked[[2]string{other, s}] = true
		}
	}
}

// Heal removes every partition (nodes that are down stay down).
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.blocked = map[[2]string]bool{}
}

// Reachable reports whether from can send to to.
func (n *Network) Reachable(from, to string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return !n.down[from] && !n.down[to] && !n.blocked[[2]string{from, to}]
}

func (n *Network) route(from string, a memberlist.Address) (*Transport, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	var dest *Transport
	if a.Name != "" {
		dest = n.byName[a.Name]
	} else {
		dest = n.byAddr[a.Addr]
	}
	if dest == nil || dest.stopped() {
		return nil, fmt.Errorf("no route to %s", a)
	}
	if n.down[from] || n.down[dest.name] || n.blocked[[2]string{from, dest.name}] {
		return nil, fmt.Errorf("%s unreachable from %s", a, from)
	}
	return dest, nil
}

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *Transport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	host, port, err := net.SplitHostPort(t.addr)
	if err != nil {
		return nil, 0, err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, 0, err
	}
	return net.ParseIP(host), p, nil
}

// WriteTo implements memberlist.Transport.
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress implements memberlist.NodeAwareTransport. Like UDP, a packet that
// cannot be delivered is dropped silently.
func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	dest, err := t.net.route(t.name, a)
	if err != nil {
		return now, nil
	}
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: mockAddr(t.addr), Timestamp: now}
	select {
	case <-dest.stop:
	case dest.packetCh <- p:
	default:
	}
	return now, nil
}

// PacketCh implements memberlist.Transport.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout implements memberlist.Transport.
func (t *Transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *Transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	dest, err := t.net.route(t.name, a)
	if err != nil {
		return nil, err
	}
	p1, p2 := net.Pipe()
	select {
	case dest.streamCh <- p1:
		return p2, nil
	case <-dest.stop:
	case <-time.After(timeout):
	}
	_ = p1.Close()
	_ = p2.Close()
	return nil, fmt.Errorf("dial %s: timed out", a)
}

// StreamCh implements memberlist.Transport.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown implements memberlist.Transport. A stopped transport refuses connections.
func (t *Transport) Shutdown() error {
	t.once.Do(func() { close(t.stop) })
	return nil
}

func (t *Transport) stopped() bool {
	select {
	case <-t.stop:
		return true
	default:
		return false
	}
}

type mockAddr string

func (a mockAddr) Network() string { return "mem" }
func (a mockAddr) String() string  { return string(a) }
