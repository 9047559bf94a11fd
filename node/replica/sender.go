package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage"
)

// Defaults of SenderConfig.
const (
	DefaultTimeout       = 2 * time.Second
	DefaultRetryInterval = time.Second
	maxRetryInterval     = 30 * time.Second
)

// ErrStreamClosed is returned by Append on a stream that was sealed, aborted or closed.
var ErrStreamClosed = errors.New("replica: stream closed")

// Source is where a stream re-reads the fragments it already sent, to catch up a replica
// that failed or joined late: the owner's own store (*storage.Store implements it).
type Source interface {
	OpenReader(id model.SegmentID) (*storage.SegmentReader, error)
}

// SenderConfig configures a Sender.
type SenderConfig struct {
	// NodeID is this node, the owner of the segments it streams.
	NodeID model.NodeID
	// Resolve returns a node's HTTP address (host:port) for its internal endpoints.
	Resolve func(model.NodeID) (string, error)
	// Source re-reads what was sent, to catch up a replica that failed or joined while a
	// segment was open. Nil: a replica that fails is dropped until the next segment.
	Source Source
	// Timeout bounds every request to a replica: the longest a failed replica can hold a
	// fragment back (default 2 s).
	Timeout time.Duration
	// RetryInterval is the first pause before a failed replica is tried again (doubling up
	// to 30 s while it keeps failing). Default 1 s.
	RetryInterval time.Duration
	// Client sends the requests; nil means a client with keep-alive connections sized for
	// many cameras per replica.
	Client *http.Client
	// Logger receives the sender's logs; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultSenderConfig returns the defaults; NodeID and Resolve have none.
func DefaultSenderConfig() SenderConfig {
	return SenderConfig{Timeout: DefaultTimeout, RetryInterval: DefaultRetryInterval, Logger: slog.Default()}
}

// Validate reports every problem of the configuration at once, each naming its option.
func (c SenderConfig) Validate() error {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, model.Invalid("replica.node_id", "is required"))
	}
	if c.Resolve == nil {
		errs = append(errs, model.Invalid("replica.resolve", "is required (node → HTTP address)"))
	}
	if c.Timeout <= 0 {
		errs = append(errs, model.Invalid("replica.timeout", "must be positive, got %s", c.Timeout))
	}
	if c.RetryInterval <= 0 {
		errs = append(errs, model.Invalid("replica.retry_interval", "must be positive, got %s", c.RetryInterval))
	}
	return errors.Join(errs...)
}

// Sender streams the owner's open segments to their hot replicas. It is safe for
// concurrent use; each Stream is used by one recorder.
type Sender struct {
	cfg    SenderConfig
	log    *slog.Logger
	client *http.Client

	fragments, bytes, failures, rejoins atomic.Int64

	mu sync.Mutex
	// suspect holds the replicas that failed recently, until when: a new stream does not
	// wait for them (it creates the segment there in the background), so a dead replica
	// costs recording at most one timeout, not one per segment.
	suspect map[model.NodeID]time.Time
	bg      sync.WaitGroup // background seals
}

// suspectFor is how long a failed replica is not waited for by new streams.
const suspectFor = 30 * time.Second

func (s *Sender) isSuspect(n model.NodeID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Now().Before(s.suspect[n])
}

func (s *Sender) setSuspect(n model.NodeID, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.suspect[n] = time.Now().Add(suspectFor)
	} else {
		delete(s.suspect, n)
	}
}

// NewSender checks the configuration and returns a sender.
func NewSender(cfg SenderConfig) (*Sender, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("replica: config: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	client := cfg.Client
	if client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 256
		client = &http.Client{Transport: tr}
	}
	return &Sender{cfg: cfg, log: cfg.Logger, client: client, suspect: make(map[model.NodeID]time.Time)}, nil
}

// Close waits for background seals (each bounded by the timeout) and releases idle
// connections. Streams must be finished first.
func (s *Sender) Close() {
	s.bg.Wait()
	s.client.CloseIdleConnections()
}

// SenderMetrics counts what the sender replicated.
type SenderMetrics struct {
	// Fragments and Bytes count fragment copies acknowledged by a replica (a fragment
	// sent to two replicas counts twice).
	Fragments, Bytes int64
	// Failures counts replicas dropped from a stream (a request failed or timed out).
	Failures int64
	// Rejoins counts replicas caught up and back in a stream.
	Rejoins int64
}

// Metrics returns the sender's counters.
func (s *Sender) Metrics() SenderMetrics {
	return SenderMetrics{Fragments: s.fragments.Load(), Bytes: s.bytes.Load(),
		Failures: s.failures.Load(), Rejoins: s.rejoins.Load()}
}

type peerState int

const (
	peerLive    peerState = iota // acknowledges every fragment
	peerLagging                  // failed; being caught up in the background
	peerGone                     // out of the stream for good (fenced, removed, cannot catch up)
)

type peer struct {
	node     model.NodeID
	state    peerState // guarded by Stream.mu
	catching bool      // a catch-up goroutine runs; guarded by Stream.mu
	gen      int       // which catch-up goroutine is current; guarded by Stream.mu
}

// Stream replicates one open segment. Append, Seal, Abort and SetReplicas are called by
// one goroutine (the camera's recorder); Replicated may be called from anywhere.
type Stream struct {
	s       *Sender
	id      model.SegmentID
	camera  model.CameraID
	init    []byte
	initCRC uint32

	// appendMu is held by Append for its whole duration, and by a catch-up for the
	// instant it rejoins, so a replica never misses a fragment between the two.
	appendMu sync.Mutex

	mu     sync.Mutex // guards the fields below; never held across I/O
	n      int        // fragments appended (the next one's seq)
	peers  []*peer
	closed bool

	ctx    context.Context // catch-ups; cancelled by Seal, Abort, Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Open creates the segment on every replica (in parallel, each bounded by the timeout)
// and returns its stream. A replica that fails is caught up in the background; the
// stream is returned even when every replica failed (recording never waits for them).
// The error is only for bad input. Replicas naming this node, or repeated, are ignored.
func (s *Sender) Open(ctx context.Context, camera model.CameraID, epoch uint64, start time.Time, init []byte, replicas []model.NodeID) (*Stream, error) {
	id, err := storage.NewSegmentID(camera, epoch, start)
	if err != nil {
		return nil, fmt.Errorf("replica: open stream: %w", err)
	}
	if len(init) == 0 {
		return nil, fmt.Errorf("replica: open stream of %s: %w", id, model.Invalid("init", "is empty"))
	}
	st := &Stream{s: s, id: id, camera: camera, init: append([]byte(nil), init...), initCRC: crc32c(init)}
	st.ctx, st.cancel = context.WithCancel(context.Background())
	seen := map[model.NodeID]bool{s.cfg.NodeID: true, "": true}
	for _, n := range replicas {
		if !seen[n] {
			seen[n] = true
			st.peers = append(st.peers, &peer{node: n})
		}
	}
	var now []*peer
	st.mu.Lock()
	for _, p := range st.peers {
		if s.isSuspect(p.node) {
			p.state = peerLagging // failed recently: created in the background
			st.startCatchUpLocked(p, 0)
		} else {
			now = append(now, p)
		}
	}
	st.mu.Unlock()
	errs := st.each(now, func(p *peer) error {
		_, err := st.create(ctx, p.node, false)
		return err
	})
	for i, p := range now {
		if errs[i] != nil {
			st.failed(p, "create", errs[i])
		}
	}
	return st, nil
}

// ID returns the segment's id.
func (st *Stream) ID() model.SegmentID { return st.id }

// Replicated reports how many replicas hold every fragment appended so far (acked) out
// of how many the stream was opened for (wanted).
func (st *Stream) Replicated() (acked, wanted int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, p := range st.peers {
		if p.state == peerLive {
			acked++
		}
	}
	return acked, len(st.peers)
}

// Append sends one fragment, already durable on the owner, to every replica in the
// stream in parallel, and returns when each acknowledged it (durable there) or failed.
// A replica that fails or does not answer within the timeout leaves the stream (logged
// and counted) and is caught up in the background; recording never waits longer than
// the timeout. The error is ErrStreamClosed on a finished stream, or ctx's error;
// replication failures are not errors (see Replicated).
func (st *Stream) Append(ctx context.Context, f model.Fragment) error {
	st.appendMu.Lock()
	defer st.appendMu.Unlock()
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return fmt.Errorf("segment %s: %w", st.id, ErrStreamClosed)
	}
	seq := st.n
	var live []*peer
	for _, p := range st.peers {
		if p.state == peerLive {
			live = append(live, p)
		}
	}
	st.mu.Unlock()

	crc := crc32c(f.Data)
	errs := st.each(live, func(p *peer) error {
		_, err := st.postFragment(ctx, p.node, seq, f, crc)
		return err
	})
	st.mu.Lock()
	st.n++
	st.mu.Unlock()
	for i, p := range live {
		if errs[i] != nil {
			st.failed(p, fmt.Sprintf("fragment %d", seq), errs[i])
			continue
		}
		st.s.fragments.Add(1)
		st.s.bytes.Add(int64(len(f.Data)))
	}
	return ctx.Err()
}

// Seal stops the catch-ups and seals the segment on every replica that holds it: those in
// the stream before returning, lagging ones in the background (a replica that lagged
// keeps the fragments it had: a shorter copy still survives the owner). It returns the
// replicas in the stream that failed to seal, for the log; the owner's own seal does not
// depend on it.
func (st *Stream) Seal(ctx context.Context) error {
	if !st.finish() {
		return nil
	}
	st.mu.Lock()
	var live, lagging []*peer
	for _, p := range st.peers {
		switch p.state {
		case peerLive:
			live = append(live, p)
		case peerLagging:
			lagging = append(lagging, p)
		}
	}
	st.mu.Unlock()
	seal := func(ctx context.Context, p *peer) error {
		err := st.call(ctx, p.node, http.MethodPost, "/seal", nil, nil, nil)
		var re *replicaError
		if errors.As(err, &re) && re.Code == codeNotFound {
			return nil // it never got the segment
		}
		return err
	}
	// A lagging replica may be down or hung: its seal does not hold the recorder.
	if len(lagging) > 0 {
		st.s.bg.Add(1)
		go func() {
			defer st.s.bg.Done()
			st.each(lagging, func(p *peer) error { return seal(context.Background(), p) })
		}()
	}
	errs := st.each(live, func(p *peer) error { return seal(ctx, p) })
	return errors.Join(errs...)
}

// Abort drops the segment on every replica (the owner aborted its own copy).
func (st *Stream) Abort(ctx context.Context) error {
	if !st.finish() {
		return nil
	}
	st.mu.Lock()
	ps := append([]*peer(nil), st.peers...)
	st.mu.Unlock()
	errs := st.each(ps, func(p *peer) error { return st.drop(ctx, p.node) })
	return errors.Join(errs...)
}

// Close stops the stream's background work without telling the replicas anything (their
// copies stay open until the owner comes back to them, they are sealed as idle, or
// adopted as orphans). Seal or Abort first in the normal course.
func (st *Stream) Close() { st.finish() }

// finish marks the stream closed and waits for its catch-ups to stop; false when it was
// already closed.
func (st *Stream) finish() bool {
	st.mu.Lock()
	was := st.closed
	st.closed = true
	st.mu.Unlock()
	st.cancel()
	st.wg.Wait()
	// No Append runs after this (same goroutine), but wait for one in flight anyway.
	st.appendMu.Lock()
	st.appendMu.Unlock() //nolint:staticcheck // a barrier
	return !was
}

// SetReplicas changes the replicas of the open segment: new ones are created and caught
// up in the background (with a Source; without one only while no fragment was sent
// yet), removed ones leave the stream and their copy is dropped.
func (st *Stream) SetReplicas(replicas []model.NodeID) {
	want := map[model.NodeID]bool{}
	for _, n := range replicas {
		if n != "" && n != st.s.cfg.NodeID {
			want[n] = true
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return
	}
	kept := st.peers[:0]
	have := map[model.NodeID]bool{}
	for _, p := range st.peers {
		if want[p.node] {
			kept = append(kept, p)
			have[p.node] = true
			continue
		}
		p.state = peerGone
		st.wg.Add(1)
		go func(node model.NodeID) {
			defer st.wg.Done()
			if err := st.drop(context.Background(), node); err != nil {
				st.s.log.Debug("replica: drop on removed replica", slog.String("segment", string(st.id)), slog.String("replica", string(node)), slog.Any("err", err))
			}
		}(p.node)
	}
	st.peers = kept
	for _, n := range replicas {
		if want[n] && !have[n] {
			have[n] = true
			p := &peer{node: n, state: peerLagging}
			st.peers = append(st.peers, p)
			st.startCatchUpLocked(p, 0)
		}
	}
}

// failed takes a replica out of the stream after err.
func (st *Stream) failed(p *peer, what string, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if p.state != peerLive {
		return
	}
	st.s.failures.Add(1)
	st.s.setSuspect(p.node, true)
	var re *replicaError
	if errors.As(err, &re) && re.Code == codeStaleEpoch {
		p.state = peerGone
		st.s.log.Warn("replica: replica refuses this epoch (the camera has a newer owner); it leaves the stream",
			slog.String("segment", string(st.id)), slog.String("replica", string(p.node)), slog.Any("err", err))
		return
	}
	p.state = peerLagging
	st.s.log.Warn("replica: replica failed; recording goes on without it while it is caught up",
		slog.String("segment", string(st.id)), slog.String("replica", string(p.node)), slog.String("at", what), slog.Any("err", err))
	st.startCatchUpLocked(p, st.s.cfg.RetryInterval)
}

// startCatchUpLocked starts the catch-up goroutine of a lagging replica (st.mu held).
func (st *Stream) startCatchUpLocked(p *peer, first time.Duration) {
	if st.closed || p.catching {
		return
	}
	p.catching = true
	p.gen++
	gen := p.gen
	st.wg.Add(1)
	go func() {
		defer st.wg.Done()
		st.catchUpLoop(p, gen, first)
	}()
}

func (st *Stream) catchUpLoop(p *peer, gen int, wait time.Duration) {
	defer func() {
		st.mu.Lock()
		if p.gen == gen { // else a later failure started another catch-up
			p.catching = false
		}
		st.mu.Unlock()
	}()
	for {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-st.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		err := st.catchUp(p)
		if err == nil || st.ctx.Err() != nil {
			return
		}
		var re *replicaError
		if errors.Is(err, errCannotCatchUp) || (errors.As(err, &re) && (re.Code == codeStaleEpoch || re.Code == codeAdopted)) {
			st.mu.Lock()
			p.state = peerGone
			st.mu.Unlock()
			st.s.log.Warn("replica: replica cannot be caught up; it leaves the stream until the next segment",
				slog.String("segment", string(st.id)), slog.String("replica", string(p.node)), slog.Any("err", err))
			return
		}
		st.s.log.Debug("replica: catch-up failed, retrying", slog.String("segment", string(st.id)),
			slog.String("replica", string(p.node)), slog.Any("err", err))
		wait = min(2*max(wait, st.s.cfg.RetryInterval/2), maxRetryInterval)
	}
}

var errCannotCatchUp = errors.New("cannot catch up")

// catchUp brings a lagging replica up to the stream and puts it back in.
func (st *Stream) catchUp(p *peer) error {
	held, err := st.create(st.ctx, p.node, true)
	if err != nil {
		return err
	}
	var rd *storage.SegmentReader
	defer func() {
		if rd != nil {
			_ = rd.Close()
		}
	}()
	var frags []model.FragmentInfo
	var buf []byte
	for {
		st.mu.Lock()
		target, gone := st.n, p.state == peerGone
		st.mu.Unlock()
		if gone || st.ctx.Err() != nil {
			return st.ctx.Err()
		}
		if held > target {
			return fmt.Errorf("replica %s holds %d fragments, more than the %d sent", p.node, held, target)
		}
		if held == target {
			st.appendMu.Lock()
			st.mu.Lock()
			rejoined := held == st.n && p.state == peerLagging && !st.closed
			if rejoined {
				p.state = peerLive
				p.catching = false // a new failure from now on starts a new catch-up
			}
			st.mu.Unlock()
			st.appendMu.Unlock()
			if rejoined {
				st.s.rejoins.Add(1)
				st.s.setSuspect(p.node, false)
				st.s.log.Info("replica: replica caught up and back in the stream", slog.String("segment", string(st.id)),
					slog.String("replica", string(p.node)), slog.Int("fragments", held))
				return nil
			}
			continue
		}
		if st.s.cfg.Source == nil {
			return fmt.Errorf("%w: replica %s holds %d of %d fragments and no source to re-read them from", errCannotCatchUp, p.node, held, target)
		}
		if held >= len(frags) { // (re)open: a reader sees what was durable when it opened
			if rd != nil {
				_ = rd.Close()
			}
			if rd, err = st.s.cfg.Source.OpenReader(st.id); err != nil {
				return fmt.Errorf("%w: re-read %s: %w", errCannotCatchUp, st.id, err)
			}
			if frags = rd.Fragments(); held >= len(frags) {
				return fmt.Errorf("%w: the owner's copy of %s holds %d fragments, the replica needs fragment %d", errCannotCatchUp, st.id, len(frags), held)
			}
		}
		fi := frags[held]
		if buf, err = rd.ReadFragment(fi, buf); err != nil {
			return fmt.Errorf("%w: re-read fragment %d of %s: %w", errCannotCatchUp, held, st.id, err)
		}
		f := model.Fragment{Start: fi.Start, Duration: fi.Duration, Keyframe: fi.Keyframe, Data: buf}
		if held, err = st.postFragment(st.ctx, p.node, held, f, crc32c(buf)); err != nil {
			return err
		}
	}
}

// each runs fn for every peer, in parallel when there are several, and returns the
// errors by position.
func (st *Stream) each(ps []*peer, fn func(*peer) error) []error {
	errs := make([]error, len(ps))
	if len(ps) == 1 {
		errs[0] = fn(ps[0])
		return errs
	}
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(p)
		}()
	}
	wg.Wait()
	return errs
}

// create creates the segment on a replica and returns how many fragments it holds (a
// retried create answers what is there). A sealed copy left by a restart of the replica
// is dropped and created again when it can be refilled (catchUp, with a source or
// nothing sent yet).
func (st *Stream) create(ctx context.Context, node model.NodeID, refill bool) (int, error) {
	h := http.Header{HeaderOwner: {string(st.s.cfg.NodeID)}, HeaderCRC: {formatCRC(st.initCRC)}}
	var out status
	err := st.call(ctx, node, http.MethodPut, "", h, st.init, &out)
	var re *replicaError
	if errors.As(err, &re) && re.Code == codeSealed && refill {
		st.mu.Lock()
		n := st.n
		st.mu.Unlock()
		if st.s.cfg.Source == nil && n > 0 {
			return 0, fmt.Errorf("%w: replica %s holds a sealed copy and there is no source to refill it", errCannotCatchUp, node)
		}
		if err := st.drop(ctx, node); err != nil {
			return 0, err
		}
		out = status{}
		err = st.call(ctx, node, http.MethodPut, "", h, st.init, &out)
	}
	return out.Fragments, err
}

func (st *Stream) drop(ctx context.Context, node model.NodeID) error {
	err := st.call(ctx, node, http.MethodDelete, "", nil, nil, nil)
	var re *replicaError
	if errors.As(err, &re) && re.Code == codeNotFound {
		return nil
	}
	return err
}

// postFragment sends fragment seq and returns how many fragments the replica then holds.
func (st *Stream) postFragment(ctx context.Context, node model.NodeID, seq int, f model.Fragment, crc uint32) (int, error) {
	kf := "0"
	if f.Keyframe {
		kf = "1"
	}
	h := http.Header{
		HeaderSeq:      {strconv.Itoa(seq)},
		HeaderStart:    {strconv.FormatInt(f.Start.UnixNano(), 10)},
		HeaderDuration: {strconv.FormatInt(int64(f.Duration), 10)},
		HeaderKeyframe: {kf},
		HeaderCRC:      {formatCRC(crc)},
	}
	var out status
	err := st.call(ctx, node, http.MethodPost, "/fragments", h, f.Data, &out)
	return out.Fragments, err
}

// replicaError is an error answer of a replica.
type replicaError struct {
	Node      model.NodeID
	Status    int
	Code      string
	Message   string
	Fragments int
}

func (e *replicaError) Error() string {
	return fmt.Sprintf("replica %s: %d %s: %s", e.Node, e.Status, e.Code, e.Message)
}

func (e *replicaError) Unwrap() error {
	switch e.Code {
	case codeStaleEpoch:
		return model.ErrStaleEpoch
	case codeNotFound:
		return model.ErrNotFound
	case codeInvalid:
		return model.ErrInvalid
	}
	return nil
}

// call makes one request to a replica's segment resource, bounded by the timeout, and
// decodes its status into out (when not nil).
func (st *Stream) call(ctx context.Context, node model.NodeID, method, suffix string, h http.Header, body []byte, out *status) error {
	addr, err := st.s.cfg.Resolve(node)
	if err != nil {
		return fmt.Errorf("replica %s: resolve: %w", node, err)
	}
	ctx, cancel := context.WithTimeout(ctx, st.s.cfg.Timeout)
	defer cancel()
	u := "http://" + addr + PathPrefix + "/segments/" + url.PathEscape(string(st.id)) + suffix
	var rd io.Reader
	var getBody func() (io.ReadCloser, error)
	if body != nil {
		// The transport may read a request body after Do returned (on a timeout); the
		// caller's bytes (the ingest reuses its fragment buffer) must not be touched then.
		g := &bodyGuard{b: body}
		defer g.close()
		rd = &guardedReader{g: g}
		getBody = func() (io.ReadCloser, error) { return io.NopCloser(&guardedReader{g: g}), nil }
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("replica %s: %w", node, err)
	}
	req.ContentLength = int64(len(body))
	req.GetBody = getBody
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := st.s.client.Do(req)
	if err != nil {
		return fmt.Errorf("replica %s unreachable: %w", node, err)
	}
	defer resp.Body.Close()
	var got status
	derr := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&got)
	if resp.StatusCode >= 300 {
		msg := got.Error
		if derr != nil {
			msg = "unreadable answer"
		}
		return &replicaError{Node: node, Status: resp.StatusCode, Code: got.Code, Message: msg, Fragments: got.Fragments}
	}
	if derr != nil {
		return fmt.Errorf("replica %s: unreadable answer: %w", node, derr)
	}
	if out != nil {
		*out = got
	}
	return nil
}

// bodyGuard holds a request body until closed; after close it never touches it again.
type bodyGuard struct {
	mu     sync.Mutex
	b      []byte
	closed bool
}

func (g *bodyGuard) close() {
	g.mu.Lock()
	g.closed = true
	g.b = nil
	g.mu.Unlock()
}

// guardedReader is one read of a guarded body (the transport asks for a fresh one with
// GetBody when it retries on a connection that turned out dead).
type guardedReader struct {
	g   *bodyGuard
	off int
}

func (r *guardedReader) Read(p []byte) (int, error) {
	r.g.mu.Lock()
	defer r.g.mu.Unlock()
	if r.g.closed {
		return 0, errors.New("replica: request abandoned")
	}
	if r.off >= len(r.g.b) {
		return 0, io.EOF
	}
	n := copy(p, r.g.b[r.off:])
	r.off += n
	return n, nil
}
