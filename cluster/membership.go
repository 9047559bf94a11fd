package cluster

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/vigie-vms/vigie/model"
)

// NodeMeta is what a node tells the others about itself through gossip: where to reach
// it and what it can take. It travels in memberlist's node metadata (at most MaxMetaSize
// bytes), encoded with a version byte.
type NodeMeta struct {
	// RaftAddr is the node's raft address (filled in by Open).
	RaftAddr string `json:"raft_addr"`
	// HTTPAddr is where the node serves its HTTP API, including the internal path that
	// receives forwarded writes (see Forwarder).
	HTTPAddr string `json:"http_addr"`
	GRPCAddr string `json:"grpc_addr,omitempty"`
	RTSPAddr string `json:"rtsp_addr,omitempty"`
	// Zone is the failure domain (room, building, site): voters and the two recorders of
	// a critical camera are spread across zones when there are several.
	Zone string `json:"zone,omitempty"`
	// CapacityBps is the ingest bitrate the node is sized for; the leader balances load
	// in proportion to it when every node states one (else evenly). 0: not stated.
	CapacityBps uint64 `json:"capacity_bps,omitempty"`
}

const metaVersion = 1

func (m NodeMeta) encode() []byte {
	e := encoder{b: make([]byte, 0, 96)}
	e.u8(metaVersion)
	e.str(m.RaftAddr)
	e.str(m.HTTPAddr)
	e.str(m.GRPCAddr)
	e.str(m.RTSPAddr)
	e.str(m.Zone)
	e.uvarint(m.CapacityBps)
	return e.b
}

// decodeMeta parses a node's metadata as gossiped. Bytes from another node are
// untrusted: a bad encoding is an error, never a panic. Later versions may append
// fields: they are ignored.
func decodeMeta(b []byte) (NodeMeta, error) {
	d := decoder{b: b}
	v := d.u8()
	if d.err == nil && v < metaVersion {
		return NodeMeta{}, fmt.Errorf("%w node meta: unknown version %d", errDecode, v)
	}
	m := NodeMeta{RaftAddr: d.str(), HTTPAddr: d.str(), GRPCAddr: d.str(), RTSPAddr: d.str(), Zone: d.str(), CapacityBps: d.uvarint()}
	if d.err != nil {
		return NodeMeta{}, fmt.Errorf("node meta: %w", d.err)
	}
	if v == metaVersion && len(d.b) != 0 {
		return NodeMeta{}, fmt.Errorf("%w node meta: trailing bytes", errDecode)
	}
	return m, nil
}

// member is one node as gossip knows it.
type member struct {
	ID   model.NodeID
	Meta NodeMeta
	// Addr is the gossip address.
	Addr string
	// Alive is true while memberlist holds the node alive or suspect.
	Alive bool
	// Left: the node left on purpose (graceful leave) rather than failed.
	Left bool
	// DeadSince is when memberlist declared it dead or left (zero while alive).
	DeadSince time.Time
}

// membership wraps memberlist: it gossips this node's meta and keeps the view of every
// node ever seen, with when it died. Its delegate methods never block.
type membership struct {
	self   model.NodeID
	meta   []byte
	logger *slog.Logger
	seeds  []string
	kick   func()

	ml *memberlist.Memberlist

	mu      sync.RWMutex
	members map[model.NodeID]*member

	stop chan struct{}
	done chan struct{}
}

func newMembership(cfg Config, meta NodeMeta, logger *slog.Logger, kick func()) (*membership, error) {
	m := &membership{
		self:    cfg.NodeID,
		meta:    meta.encode(),
		logger:  logger,
		kick:    kick,
		members: map[model.NodeID]*member{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = string(cfg.NodeID)
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.SuspicionMaxTimeoutMult = cfg.SuspicionMaxTimeoutMult
	mc.GossipInterval = cfg.GossipInterval
	mc.PushPullInterval = cfg.PushPullInterval
	mc.GossipToTheDeadTime = max(30*time.Second, 4*cfg.PushPullInterval)
	mc.TCPTimeout = max(2*time.Second, 4*cfg.ProbeInterval)
	mc.Delegate = m
	mc.Events = m
	mc.Logger = log.New(memberlistLogWriter{logger}, "", 0)
	if cfg.MemberTransport != nil {
		mc.Transport = cfg.MemberTransport
	} else {
		host, port, err := net.SplitHostPort(cfg.GossipAddr)
		if err != nil {
			return nil, fmt.Errorf("GossipAddr %q: %w", cfg.GossipAddr, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("GossipAddr %q: port: %w", cfg.GossipAddr, err)
		}
		mc.BindAddr, mc.BindPort = host, p
		mc.AdvertisePort = p
	}
	for _, s := range cfg.Seeds {
		if s != "" {
			m.seeds = append(m.seeds, s)
		}
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start gossip: %w", err)
	}
	m.ml = ml
	go m.rejoinLoop(cfg.RejoinInterval)
	return m, nil
}

// rejoinLoop joins the seeds at start, and later whenever this node sees nobody else or
// sees members dead (after a partition both sides hold the other dead; a join merges
// them again).
func (m *membership) rejoinLoop(every time.Duration) {
	defer close(m.done)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		var addrs []string
		if m.ml.NumMembers() <= 1 {
			addrs = append(addrs, m.seeds...)
		}
		m.mu.RLock()
		for _, mb := range m.members {
			if !mb.Alive && !mb.Left && mb.Addr != "" {
				addrs = append(addrs, mb.Addr)
			}
		}
		m.mu.RUnlock()
		if own := m.ml.LocalNode().Address(); own != "" {
			addrs = removeString(addrs, own)
		}
		for _, a := range addrs { // one at a time, so that shutdown is not held up long
			select {
			case <-m.stop:
				return
			default:
			}
			if _, err := m.ml.Join([]string{a}); err != nil {
				m.logger.Debug("gossip join failed; retrying", slog.String("addr", a), slog.Any("error", err))
			}
		}
		t.Reset(every)
	}
}

func removeString(ss []string, s string) []string {
	out := ss[:0]
	for _, x := range ss {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

// shutdown leaves the gossip (so the others see a graceful leave at once) and stops. A
// join under way (to a node that does not answer) is not waited for beyond a second: it
// ends on its own once memberlist is shut down.
func (m *membership) shutdown(leave bool) error {
	close(m.stop)
	select {
	case <-m.done:
	case <-time.After(time.Second):
	}
	if leave {
		_ = m.ml.Leave(time.Second)
	}
	return m.ml.Shutdown()
}

// snapshot returns every node gossip has seen (self included), sorted by id.
func (m *membership) snapshot() []member {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]member, 0, len(m.members))
	for _, mb := range m.members {
		out = append(out, *mb)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (m *membership) get(id model.NodeID) (member, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	mb, ok := m.members[id]
	if !ok {
		return member{}, false
	}
	return *mb, true
}

// ---- memberlist.Delegate (must not block) ----

func (m *membership) NodeMeta(limit int) []byte {
	if len(m.meta) > limit {
		return nil // Validate refuses such a Meta; never reached
	}
	return m.meta
}
func (m *membership) NotifyMsg([]byte)                           {}
func (m *membership) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (m *membership) LocalState(join bool) []byte                { return nil }
func (m *membership) MergeRemoteState(buf []byte, join bool)     {}

// ---- memberlist.EventDelegate (must not block) ----

func (m *membership) NotifyJoin(n *memberlist.Node)   { m.update(n, true) }
func (m *membership) NotifyUpdate(n *memberlist.Node) { m.update(n, true) }
func (m *membership) NotifyLeave(n *memberlist.Node)  { m.update(n, false) }

func (m *membership) update(n *memberlist.Node, alive bool) {
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		m.logger.Warn("gossip: node sent undecodable metadata", slog.String("peer", n.Name), slog.Any("error", err))
	}
	m.mu.Lock()
	mb := m.members[model.NodeID(n.Name)]
	if mb == nil {
		mb = &member{ID: model.NodeID(n.Name)}
		m.members[mb.ID] = mb
	}
	if err == nil && len(n.Meta) > 0 {
		mb.Meta = meta
	}
	mb.Addr = n.Address()
	wasAlive := mb.Alive
	mb.Alive = alive
	if alive {
		mb.Left, mb.DeadSince = false, time.Time{}
	} else if wasAlive || mb.DeadSince.IsZero() {
		mb.Left = n.State == memberlist.StateLeft
		mb.DeadSince = time.Now()
	}
	m.mu.Unlock()
	if wasAlive != alive {
		state := "alive"
		if !alive {
			state = "dead"
			if n.State == memberlist.StateLeft {
				state = "left"
			}
		}
		m.logger.Info("gossip: node "+state, slog.String("peer", n.Name), slog.String("gossip_addr", n.Address()))
	}
	m.kick()
}

// memberlistLogWriter sends memberlist's "[LEVEL] memberlist: msg" lines to slog.
type memberlistLogWriter struct{ l *slog.Logger }

func (w memberlistLogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{"[DEBUG]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError} {
		if strings.HasPrefix(line, prefix) {
			level = l
			line = strings.TrimSpace(strings.TrimPrefix(line, prefix))
			break
		}
	}
	// A dead peer or a partition makes memberlist log errors on every probe: they are
	// expected, the state change is what we report (at info).
	if level == slog.LevelError {
		level = slog.LevelWarn
	}
	w.l.Log(context.Background(), level, line, slog.String("component", "gossip"))
	return len(p), nil
}
