package node

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/vigie-vms/vigie/cluster"
	"github.com/vigie-vms/vigie/gateway"
	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/node/ingest"
	"github.com/vigie-vms/vigie/node/protect"
	"github.com/vigie-vms/vigie/node/replica"
	"github.com/vigie-vms/vigie/storage"
	"github.com/vigie-vms/vigie/storage/transfer"
)

// version is reported by the cluster status; the binary sets it with SetVersion.
var version = "dev"

// SetVersion sets the version the node reports.
func SetVersion(v string) { version = v }

// Node is one running Vigie node.
type Node struct {
	cfg   Config
	base  *slog.Logger // without the node attribute, for components that add it themselves
	log   *slog.Logger
	store *storage.Store
	clu   *cluster.Cluster
	gw    *gateway.Gateway
	push  *ingest.Server
	cams  *cameraManager
	peer  *peerClient
	// rep holds the hot replicas other nodes stream to this one; repSend streams this
	// node's open segments to their replicas.
	rep     *replica.Receiver
	repSend *replica.Sender
	// prot stripes sealed segments across nodes, serves degraded reads, repairs and
	// scrubs; conns are its gRPC connections to the other nodes.
	prot  *protect.Protector
	conns *protect.Conns
	comm  *committer
	// repairMon samples the repair state for the cluster status and the metrics.
	repairMon *repairMonitor

	cancel context.CancelFunc
	wg     sync.WaitGroup
	// httpLn and grpcLn are the API listeners until the gateway takes them over.
	httpLn, grpcLn net.Listener
	// stopCams ends the camera manager's loop; camsDone is closed when it has returned.
	stopCams context.CancelFunc
	camsDone chan struct{}
}

// New checks the configuration and prepares a node; Start runs it.
func New(cfg Config, log *slog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = cfg.Logger()
	}
	return &Node{cfg: cfg, base: log, log: log.With(slog.String("node", cfg.NodeID))}, nil
}

// Start brings the node up, in this order:
//  1. the local store, whose startup check repairs what a crash left half-written;
//  2. the cluster (Raft + catalog), waiting until it has a leader;
//  3. reconciliation of local segments with the catalog (segments sealed by the startup
//     check are committed; the time the node was down is recorded as an outage);
//  4. the gateway (API and media), so the node answers while cameras connect;
//  5. the RTSP server for pushed cameras, then the camera manager that starts recorders;
//  6. background work: retention.
//
// On error, whatever was started is closed again.
func (n *Node) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if err := os.MkdirAll(n.cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	key := n.cfg.Inject.SecretKey
	if key == nil {
		path := n.cfg.SecretKeyFile
		if path == "" {
			path = filepath.Join(n.cfg.DataDir, "secret.key")
		}
		if key, err = loadOrCreateKey(path); err != nil {
			return err
		}
	}
	// The API listeners are bound now, before the cluster starts: peers learn this node's
	// addresses through gossip, so a port 0 ("any free port") must be the real one.
	if n.httpLn, err = net.Listen("tcp", n.cfg.HTTPAddr); err != nil {
		return fmt.Errorf("http_addr %s: %w", n.cfg.HTTPAddr, err)
	}
	n.cfg.HTTPAddr = n.httpLn.Addr().String()
	if n.grpcLn, err = net.Listen("tcp", n.cfg.GRPCAddr); err != nil {
		return fmt.Errorf("grpc_addr %s: %w", n.cfg.GRPCAddr, err)
	}
	n.cfg.GRPCAddr = n.grpcLn.Addr().String()

	scfg := storage.DefaultConfig()
	scfg.Dir = filepath.Join(n.cfg.DataDir, "segments")
	scfg.NodeID = model.NodeID(n.cfg.NodeID)
	scfg.Logger = n.log.With(slog.String("component", "storage"))
	scfg.NoSync = n.cfg.NoSync
	scfg.MinFreeBytes = n.cfg.StorageMinFreeBytes
	if n.store, err = storage.Open(scfg); err != nil {
		return fmt.Errorf("open storage: %w", err)
	}
	// The store logs what its startup check repaired.

	rcfg := replica.DefaultConfig()
	rcfg.Dir, rcfg.NodeID, rcfg.NoSync = filepath.Join(n.cfg.DataDir, "replicas"), model.NodeID(n.cfg.NodeID), n.cfg.NoSync
	rcfg.Logger = n.log.With(slog.String("component", "replicas"))
	if n.rep, err = replica.Open(rcfg); err != nil {
		return fmt.Errorf("open replica store: %w", err)
	}

	ccfg := cluster.DefaultConfig()
	ccfg.NodeID = model.NodeID(n.cfg.NodeID)
	ccfg.Dir = filepath.Join(n.cfg.DataDir, "cluster")
	ccfg.RaftAddr = n.cfg.RaftAddr
	ccfg.Transport = n.cfg.Inject.RaftTransport
	ccfg.GossipAddr = n.cfg.GossipAddr
	ccfg.MemberTransport = n.cfg.Inject.MemberTransport
	ccfg.Seeds = n.cfg.Seeds
	ccfg.Bootstrap = len(n.cfg.Seeds) == 0 // the first node starts the cluster; the others join it
	ccfg.Meta = cluster.NodeMeta{HTTPAddr: n.cfg.HTTPAddr, GRPCAddr: n.cfg.GRPCAddr, RTSPAddr: n.cfg.RTSPAddr, Zone: n.cfg.Zone}
	ccfg.Forwarder = n.cfg.Inject.Forwarder
	if ccfg.Forwarder == nil {
		ccfg.Forwarder = newHTTPForwarder()
	}
	ccfg.SecretKey = key
	ccfg.RepairGrace = n.cfg.RepairGrace
	ccfg.Logger = n.base.With(slog.String("component", "cluster"))
	if n.cfg.Inject.Cluster != nil {
		n.cfg.Inject.Cluster(&ccfg)
	}
	if n.clu, err = cluster.Open(ccfg); err != nil {
		return fmt.Errorf("open cluster: %w", err)
	}
	if ccfg.Bootstrap {
		waitCtx, cancelWait := context.WithTimeout(ctx, 30*time.Second)
		err = n.clu.WaitLeader(waitCtx)
		cancelWait()
		if err != nil {
			return fmt.Errorf("cluster: no leader: %w", err)
		}
	}
	// A joining node goes on: the leader adds it to the cluster when gossip reaches it,
	// and its catalog fills in as it catches up.

	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.comm = newCommitter(n.clu, n.log.With(slog.String("component", "committer")))
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.comm.run(runCtx) }()

	started := time.Now()
	if ccfg.Bootstrap {
		if err := n.reconcile(ctx, started); err != nil {
			return fmt.Errorf("reconcile storage with catalog: %w", err)
		}
	} else {
		// A joining node reconciles once it is part of the cluster.
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := n.clu.WaitLeader(runCtx); err != nil {
				return
			}
			if err := n.reconcile(runCtx, started); err != nil {
				n.log.Error("reconcile storage with catalog", slog.Any("err", err))
			}
		}()
	}

	scfgRep := replica.DefaultSenderConfig()
	scfgRep.NodeID, scfgRep.Resolve, scfgRep.Source = model.NodeID(n.cfg.NodeID), n.peerAddr, n.store
	scfgRep.Logger = n.log.With(slog.String("component", "replication"))
	if n.repSend, err = replica.NewSender(scfgRep); err != nil {
		return fmt.Errorf("replication: %w", err)
	}
	n.conns = &protect.Conns{Resolve: n.grpcPeerAddr, Options: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}}
	pcfg := protect.DefaultConfig()
	pcfg.Self, pcfg.Store, pcfg.Catalog, pcfg.Clients = model.NodeID(n.cfg.NodeID), n.store, n.clu, n.conns.Client
	pcfg.Logger = n.log.With(slog.String("component", "protect"))
	pcfg.Overrides, _ = n.cfg.stripeCodes() // validated by Config.Validate
	pcfg.StripeInterval, pcfg.MinSegmentAge, pcfg.MaxStripeWait = n.cfg.StripeInterval, n.cfg.StripeMinAge, n.cfg.StripeMaxWait
	pcfg.OrphanGrace, pcfg.RepairRate = n.cfg.OrphanGrace, n.cfg.RepairRateBytes
	pcfg.ScrubRate, pcfg.ScrubPause = n.cfg.ScrubRateBytes, n.cfg.ScrubPause
	if n.cfg.Inject.Protect != nil {
		n.cfg.Inject.Protect(&pcfg)
	}
	if n.prot, err = protect.New(pcfg); err != nil {
		return fmt.Errorf("protect: %w", err)
	}
	n.cams = newCameraManager(n)
	gcfg := gateway.DefaultConfig()
	gcfg.HTTPAddr, gcfg.HTTPListener = n.cfg.HTTPAddr, n.httpLn
	gcfg.GRPCAddr, gcfg.GRPCListener = n.cfg.GRPCAddr, n.grpcLn
	gcfg.Logger = n.log
	gcfg.Catalog = n.clu
	n.peer = newPeerClient(n.peerAddr)
	gcfg.Recordings = &recordings{clu: n.clu, store: n.store, rep: n.rep, prot: n.prot, self: model.NodeID(n.cfg.NodeID), peer: n.peer, log: n.log}
	gcfg.GRPCServices = append(gcfg.GRPCServices, transfer.NewServer(n.store, n.log.With(slog.String("component", "transfer"))).Register)
	gcfg.Holds = n.clu
	gcfg.Health = newClusterHealth(n)
	gcfg.Cluster = clusterInfo{n}
	configureGateway(&gcfg, n)
	if n.gw, err = gateway.New(gcfg); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if err := n.gw.Start(runCtx); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	n.httpLn, n.grpcLn = nil, nil // the gateway closes them now

	n.prot.Start(runCtx)

	if n.cfg.RTSPAddr != "" {
		icfg := ingest.ServerConfig{
			Addr:        n.cfg.RTSPAddr,
			Logger:      n.log.With(slog.String("component", "rtsp")),
			FragmentMax: n.cfg.FragmentMax,
			Publisher:   n.cams.publisher,
		}
		if n.push, err = ingest.NewServer(icfg); err != nil {
			return fmt.Errorf("rtsp server: %w", err)
		}
		if err := n.push.Start(); err != nil {
			return fmt.Errorf("rtsp server on %s: %w", n.cfg.RTSPAddr, err)
		}
	}

	n.wg.Add(3)
	camsCtx, stopCams := context.WithCancel(runCtx)
	n.camsDone = make(chan struct{})
	n.stopCams = stopCams
	go func() { defer n.wg.Done(); defer close(n.camsDone); n.cams.run(camsCtx) }()
	go func() { defer n.wg.Done(); n.runRetention(runCtx) }()
	go func() { defer n.wg.Done(); n.runReplicaUpkeep(runCtx) }()
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.repairMon.run(runCtx) }()
	n.log.Info("node started",
		slog.String("http", "http://"+n.HTTPAddr()),
		slog.String("grpc", n.GRPCAddr()),
		slog.String("rtsp", n.cfg.RTSPAddr),
		slog.String("data_dir", n.cfg.DataDir))
	return nil
}

// HTTPAddr is the bound address of the REST/media listener.
func (n *Node) HTTPAddr() string {
	if n.gw == nil {
		return n.cfg.HTTPAddr
	}
	return n.gw.HTTPAddr()
}

// GRPCAddr is the bound address of the gRPC listener.
func (n *Node) GRPCAddr() string {
	if n.gw == nil {
		return n.cfg.GRPCAddr
	}
	return n.gw.GRPCAddr()
}

// Cluster gives access to the catalog (tools and tests register tenants and cameras).
func (n *Node) Cluster() *cluster.Cluster { return n.clu }

// Close stops the node, in the reverse order of Start: recorders first (their open
// segments are sealed and queued for commit), then the committer drains, then the RTSP
// server, the gateway, the cluster and last the store. It is safe to call more than once.
func (n *Node) Close() error {
	var errs []error
	// The camera manager's loop stops first, so no resync restarts a recorder that
	// stopAll has just stopped.
	if n.stopCams != nil {
		n.stopCams()
		<-n.camsDone
		n.stopCams = nil
	}
	if n.cams != nil {
		n.cams.stopAll()
	}
	if n.push != nil {
		n.push.Close()
		n.push = nil
	}
	if n.repSend != nil {
		n.repSend.Close()
		n.repSend = nil
	}
	if n.comm != nil {
		n.comm.drain(5 * time.Second)
	}
	if n.cancel != nil {
		n.cancel()
		n.cancel = nil
	}
	n.wg.Wait()
	if n.prot != nil {
		errs = append(errs, n.prot.Close())
		n.prot = nil
	}
	if n.conns != nil {
		errs = append(errs, n.conns.Close())
		n.conns = nil
	}
	if n.gw != nil {
		errs = append(errs, n.gw.Close())
		n.gw = nil
	}
	for _, ln := range []net.Listener{n.httpLn, n.grpcLn} {
		if ln != nil {
			ln.Close()
		}
	}
	n.httpLn, n.grpcLn = nil, nil
	if n.clu != nil {
		errs = append(errs, n.clu.Close())
		n.clu = nil
	}
	if n.rep != nil {
		errs = append(errs, n.rep.Close())
		n.rep = nil
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
		n.store = nil
	}
	return errors.Join(errs...)
}

// loadOrCreateKey returns the node's key for credentials at rest, creating it (0600) on
// first start.
func loadOrCreateKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err == nil {
		if len(key) != 32 {
			return nil, fmt.Errorf("secret key %s: want 32 bytes, found %d (restore it from backup; without it camera passwords cannot be read)", path, len(key))
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, key, 0o600); err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	return key, nil
}
