package replica

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage"
)

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	if _, ok := t.(*testing.B); ok {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// t0 is the wall-clock time the tests record at.
var t0 = time.Date(2025, 3, 14, 9, 26, 53, 123456789, time.UTC)

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

var testInit = randBytes(99, 700)

// fragment i of a recording: one second each, keyframe every other, sizes varying.
func fragment(i int) model.Fragment {
	return model.Fragment{
		Start:    t0.Add(time.Duration(i)*time.Second + time.Duration(i)*time.Microsecond),
		Duration: time.Second,
		Keyframe: i%2 == 0,
		Data:     randBytes(uint64(i)+1, 3000+i*517),
	}
}

// replicaNode is a receiver served over real HTTP on 127.0.0.1, which the test can take
// down (connections answered 503) or hang (requests never answered).
type replicaNode struct {
	id   model.NodeID
	dir  string
	r    *Receiver
	srv  *httptest.Server
	down atomic.Bool
	hang atomic.Bool
	mux  atomic.Pointer[http.ServeMux]
	stop chan struct{}
}

func newReplicaNode(t testing.TB, id model.NodeID) *replicaNode {
	t.Helper()
	n := &replicaNode{id: id, dir: t.TempDir(), stop: make(chan struct{})}
	n.open(t)
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if n.hang.Load() {
			select {
			case <-n.stop:
			case <-req.Context().Done():
			}
			return
		}
		if n.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		n.mux.Load().ServeHTTP(w, req)
	}))
	t.Cleanup(func() {
		close(n.stop)
		n.srv.Close()
		_ = n.r.Close()
	})
	return n
}

// open (re)opens the receiver on the node's directory.
func (n *replicaNode) open(t testing.TB) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Dir = n.dir
	cfg.NodeID = n.id
	cfg.NoSync = true
	cfg.Logger = testLogger(t)
	r, err := Open(cfg)
	if err != nil {
		t.Fatalf("replica.Open: %v", err)
	}
	n.r = r
	n.mux.Store(newMux(r))
}

func newMux(r *Receiver) *http.ServeMux {
	mux := http.NewServeMux()
	for p, h := range r.Handlers() {
		mux.Handle(p, h)
	}
	return mux
}

func (n *replicaNode) addr() string { return n.srv.Listener.Addr().String() }

// owner is a recording node: its own store and a sender.
type owner struct {
	store  *storage.Store
	sender *Sender
	addrs  sync.Map // model.NodeID → host:port
}

func newOwner(t testing.TB, replicas ...*replicaNode) *owner {
	t.Helper()
	scfg := storage.DefaultConfig()
	scfg.Dir = t.TempDir()
	scfg.NodeID = "owner"
	scfg.NoSync = true
	scfg.MinFreeBytes = 0
	scfg.Logger = testLogger(t)
	st, err := storage.Open(scfg)
	if err != nil {
		t.Fatal(err)
	}
	o := &owner{store: st}
	for _, r := range replicas {
		o.addrs.Store(r.id, r.addr())
	}
	cfg := DefaultSenderConfig()
	cfg.NodeID = "owner"
	cfg.Resolve = func(id model.NodeID) (string, error) {
		if a, ok := o.addrs.Load(id); ok {
			return a.(string), nil
		}
		return "", model.ErrNotFound
	}
	cfg.Source = st
	cfg.Timeout = 500 * time.Millisecond
	cfg.RetryInterval = 20 * time.Millisecond
	cfg.Logger = testLogger(t)
	if o.sender, err = NewSender(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		o.sender.Close()
		_ = st.Close()
	})
	return o
}

// recording is an open segment on the owner and its stream, as the recorder drives them.
type recording struct {
	w  *storage.SegmentWriter
	st *Stream
	n  int
}

func (o *owner) start(t testing.TB, replicas ...model.NodeID) *recording {
	t.Helper()
	w, err := o.store.Create("cam-1", 1, testInit, t0)
	if err != nil {
		t.Fatal(err)
	}
	st, err := o.sender.Open(context.Background(), "cam-1", 1, t0, testInit, replicas)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return &recording{w: w, st: st}
}

// append appends the next fragment locally, then to the replicas (the recorder's order).
func (r *recording) append(t testing.TB) {
	t.Helper()
	f := fragment(r.n)
	if err := r.w.Append(f); err != nil {
		t.Fatal(err)
	}
	if err := r.st.Append(context.Background(), f); err != nil {
		t.Fatalf("Stream.Append(fragment %d): %v", r.n, err)
	}
	r.n++
}

// segmentBytes reads a segment through a reader (init then every fragment, verified).
func segmentBytes(t testing.TB, s *storage.Store, id model.SegmentID) ([]byte, []model.FragmentInfo) {
	t.Helper()
	rd, err := s.OpenReader(id)
	if err != nil {
		t.Fatalf("OpenReader(%s): %v", id, err)
	}
	defer rd.Close()
	out := append([]byte(nil), rd.Init()...)
	for _, fi := range rd.Fragments() {
		b, err := rd.ReadFragment(fi, nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out, rd.Fragments()
}

// sameSegment checks that the replica holds the owner's segment byte for byte, with the
// same fragment index.
func sameSegment(t testing.TB, owner, replica *storage.Store, id model.SegmentID) {
	t.Helper()
	want, wantIdx := segmentBytes(t, owner, id)
	got, gotIdx := segmentBytes(t, replica, id)
	if !bytes.Equal(got, want) {
		t.Fatalf("replica of %s: %d bytes differ from the owner's %d bytes", id, len(got), len(want))
	}
	if len(gotIdx) != len(wantIdx) {
		t.Fatalf("replica of %s: %d fragments, owner %d", id, len(gotIdx), len(wantIdx))
	}
	for i := range wantIdx {
		g, w := gotIdx[i], wantIdx[i]
		if !g.Start.Equal(w.Start) || g.Duration != w.Duration || g.Keyframe != w.Keyframe || g.Offset != w.Offset || g.Size != w.Size {
			t.Fatalf("replica of %s: fragment %d is %+v, owner %+v", id, i, g, w)
		}
	}
}

// eventually polls cond until it holds or 5 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
