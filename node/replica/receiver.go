package replica

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage"
)

// DefaultMaxFragmentBytes is the default of Config.MaxFragmentBytes.
const DefaultMaxFragmentBytes = 64 << 20

// Config configures a Receiver.
type Config struct {
	// Dir holds the replica store (Dir/store, a storage.Store) and the owner of each
	// replica segment (Dir/owners). The node uses <data_dir>/replicas. Created if missing.
	Dir string
	// NodeID is this node: it is stamped into model.Segment.Node of every replica segment.
	NodeID model.NodeID
	// NoSync disables every fsync. Tests and benchmarks only: a crash then loses
	// acknowledged fragments, which defeats the purpose of a replica.
	NoSync bool
	// MaxFragmentBytes bounds an init section or fragment received (it is held in memory
	// while it is checked). Default 64 MiB.
	MaxFragmentBytes int64
	// Logger receives the receiver's logs; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults; Dir and NodeID have none (the node sets them).
func DefaultConfig() Config {
	return Config{MaxFragmentBytes: DefaultMaxFragmentBytes, Logger: slog.Default()}
}

// Validate reports every problem of the configuration at once, each naming its option.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, model.Invalid("replica.dir", "is required"))
	}
	if c.NodeID == "" {
		errs = append(errs, model.Invalid("replica.node_id", "is required"))
	}
	if c.MaxFragmentBytes <= 0 || c.MaxFragmentBytes > storage.MaxFragmentSize {
		errs = append(errs, model.Invalid("replica.max_fragment_bytes", "must be between 1 and %d, got %d", storage.MaxFragmentSize, c.MaxFragmentBytes))
	}
	return errors.Join(errs...)
}

// Receiver keeps the hot replicas other nodes stream to this node, in a store of its own,
// and serves the endpoints they stream through. It is safe for concurrent use.
type Receiver struct {
	cfg     Config
	log     *slog.Logger
	store   *storage.Store
	metaDir string

	// metaMu serialises create, seal, drop and Orphans (rare); appends take only the
	// segment's own lock.
	metaMu sync.Mutex
	mu     sync.Mutex // guards open and owners; never held across I/O
	open   map[model.SegmentID]*openSegment
	owners map[model.SegmentID]sidecar

	fragments, bytes, duplicates, rejected atomic.Int64
	bufs                                   sync.Pool
}

// openSegment is a replica segment being streamed to.
type openSegment struct {
	mu       sync.Mutex // serialises appends (a retry may race the request it retries)
	w        *storage.SegmentWriter
	initCRC  uint32
	frags    []fragKey // what each durable fragment was, by position
	lastSeen atomic.Int64
	closed   bool // sealed or dropped: no longer in Receiver.open
}

type fragKey struct {
	start int64
	crc   uint32
	size  int64
}

// sidecar is what the receiver persists about a replica segment beside the store: its
// owner, and how far its life went.
type sidecar struct {
	Owner model.NodeID `json:"owner"`
	// OwnerSealed: the owner sealed the segment (it holds it whole and commits it).
	OwnerSealed bool `json:"owner_sealed,omitempty"`
	// Adopted: Orphans returned the segment for the node to commit as its own.
	Adopted bool `json:"adopted,omitempty"`
}

// Open opens the receiver's store under cfg.Dir. The store's startup check seals every
// replica segment a crash or a restart left open (at most the fragment in flight is
// lost); their owners are still known, so Orphans can adopt them.
func Open(cfg Config) (*Receiver, error) {
	if cfg.MaxFragmentBytes == 0 {
		cfg.MaxFragmentBytes = DefaultMaxFragmentBytes
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("replica: config: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Receiver{
		cfg:     cfg,
		log:     cfg.Logger,
		metaDir: filepath.Join(cfg.Dir, "owners"),
		open:    make(map[model.SegmentID]*openSegment),
		owners:  make(map[model.SegmentID]sidecar),
	}
	if err := os.MkdirAll(r.metaDir, 0o755); err != nil {
		return nil, fmt.Errorf("replica: create %s: %w", r.metaDir, err)
	}
	scfg := storage.DefaultConfig()
	scfg.Dir = filepath.Join(cfg.Dir, "store")
	scfg.NodeID = cfg.NodeID
	scfg.NoSync = cfg.NoSync
	scfg.MinFreeBytes = 0 // replicas are recording: never refused for the shard reserve
	scfg.Logger = cfg.Logger.With(slog.String("component", "replica-store"))
	st, err := storage.Open(scfg)
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	r.store = st
	if err := r.loadOwners(); err != nil {
		_ = st.Close()
		return nil, err
	}
	return r, nil
}

// loadOwners reads the sidecars, dropping those whose segment the store no longer holds.
func (r *Receiver) loadOwners() error {
	segs, err := r.store.All()
	if err != nil {
		return fmt.Errorf("replica: list replica segments: %w", err)
	}
	held := make(map[model.SegmentID]bool, len(segs))
	for _, s := range segs {
		held[s.ID] = true
	}
	entries, err := os.ReadDir(r.metaDir)
	if err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		id := model.SegmentID(strings.TrimSuffix(name, ".json"))
		path := filepath.Join(r.metaDir, name)
		if !strings.HasSuffix(name, ".json") || !held[id] {
			// a temporary file, or the sidecar of a segment dropped (or never created)
			_ = os.Remove(path)
			continue
		}
		b, err := os.ReadFile(path)
		var sc sidecar
		if err == nil {
			err = json.Unmarshal(b, &sc)
		}
		if err != nil {
			r.log.Warn("replica: owner record unreadable; the segment's owner is unknown",
				slog.String("segment", string(id)), slog.Any("err", err))
			continue
		}
		r.owners[id] = sc
	}
	return nil
}

// Close closes the replica store. Replica segments still open stay open on disk; the next
// Open seals them.
func (r *Receiver) Close() error { return r.store.Close() }

// Store is the replica store, for the node's read endpoints: a replica segment reads like
// any local segment (open ones included, up to their last acknowledged fragment).
func (r *Receiver) Store() *storage.Store { return r.store }

// ReceiverMetrics counts what the receiver accepted.
type ReceiverMetrics struct {
	// Fragments and Bytes count fragments made durable here (duplicates excluded).
	Fragments, Bytes int64
	// Duplicates counts retried fragments acknowledged without writing.
	Duplicates int64
	// Rejected counts requests answered with an error.
	Rejected int64
	// Open is the number of replica segments being streamed to.
	Open int
}

// Metrics returns the receiver's counters.
func (r *Receiver) Metrics() ReceiverMetrics {
	r.mu.Lock()
	n := len(r.open)
	r.mu.Unlock()
	return ReceiverMetrics{Fragments: r.fragments.Load(), Bytes: r.bytes.Load(),
		Duplicates: r.duplicates.Load(), Rejected: r.rejected.Load(), Open: n}
}

// Handlers returns the receiver's endpoints, keyed by http.ServeMux pattern, for the node
// to mount on its HTTP listener:
//
//	PUT    /internal/v1/replicas/segments/{id}            create (body: init; Vigie-Owner, Vigie-Crc32c)
//	POST   /internal/v1/replicas/segments/{id}/fragments  append (body: fragment; Vigie-Seq, -Start, -Duration, -Keyframe, -Crc32c)
//	POST   /internal/v1/replicas/segments/{id}/seal       seal
//	DELETE /internal/v1/replicas/segments/{id}            drop
//	GET    /internal/v1/replicas/segments/{id}            state
//
// Every answer is a JSON status (fragments held; on error also error and code).
func (r *Receiver) Handlers() map[string]http.Handler {
	p := PathPrefix + "/segments/{id}"
	return map[string]http.Handler{
		"PUT " + p:                 http.HandlerFunc(r.serveCreate),
		"POST " + p + "/fragments": http.HandlerFunc(r.serveAppend),
		"POST " + p + "/seal":      http.HandlerFunc(r.serveSeal),
		"DELETE " + p:              http.HandlerFunc(r.serveDrop),
		"GET " + p:                 http.HandlerFunc(r.serveState),
	}
}

// fail answers an error, choosing status and code from the error.
func (r *Receiver) fail(w http.ResponseWriter, id model.SegmentID, code string, err error) {
	r.rejected.Add(1)
	httpStatus := http.StatusInternalServerError
	if code == "" {
		code = codeInternal
		switch {
		case errors.Is(err, model.ErrInvalid):
			httpStatus, code = http.StatusBadRequest, codeInvalid
		case errors.Is(err, model.ErrNotFound):
			httpStatus, code = http.StatusNotFound, codeNotFound
		case errors.Is(err, model.ErrStaleEpoch):
			httpStatus, code = http.StatusConflict, codeStaleEpoch
		case errors.Is(err, model.ErrExists):
			httpStatus, code = http.StatusConflict, codeConflict
		case errors.Is(err, model.ErrNoSpace):
			httpStatus = http.StatusInsufficientStorage
		}
	} else {
		switch code {
		case codeInvalid:
			httpStatus = http.StatusBadRequest
		case codeNotFound:
			httpStatus = http.StatusNotFound
		case codeTooLarge:
			httpStatus = http.StatusRequestEntityTooLarge
		case codeStaleEpoch, codeSealed, codeGap, codeConflict, codeAdopted:
			httpStatus = http.StatusConflict
		}
	}
	st := status{Segment: id, Error: err.Error(), Code: code}
	if code == codeGap || code == codeSealed || code == codeConflict {
		st.Fragments = r.heldFragments(id)
	}
	writeStatus(w, httpStatus, st)
}

// heldFragments returns how many fragments the replica holds of a segment (0 if none).
func (r *Receiver) heldFragments(id model.SegmentID) int {
	r.mu.Lock()
	o := r.open[id]
	r.mu.Unlock()
	if o != nil {
		return o.w.Info().Fragments
	}
	if seg, err := r.store.Segment(id); err == nil {
		return seg.Fragments
	}
	return 0
}

// segmentID reads and checks the {id} path value.
func segmentID(req *http.Request) (model.SegmentID, model.CameraID, uint64, time.Time, error) {
	id := model.SegmentID(req.PathValue("id"))
	camera, start, epoch, err := storage.ParseSegmentID(id)
	return id, camera, epoch, start, err
}

// readBody reads exactly the request's Content-Length bytes into a pooled buffer and
// checks them against want; put the buffer back with r.bufs.Put.
func (r *Receiver) readBody(req *http.Request, size int64, want uint32) (*[]byte, error) {
	bp, _ := r.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	if int64(cap(*bp)) < size {
		*bp = make([]byte, size)
	}
	buf := (*bp)[:size]
	if n, err := io.ReadFull(req.Body, buf); err != nil {
		r.bufs.Put(bp)
		return nil, model.Invalid("body", "truncated: got %d of %d bytes (%v)", n, size, err)
	}
	if got := crc32c(buf); got != want {
		r.bufs.Put(bp)
		return nil, model.Invalid("body", "CRC-32C %08x does not match %s %08x: damaged in transit", got, HeaderCRC, want)
	}
	*bp = buf
	return bp, nil
}

func (r *Receiver) serveCreate(w http.ResponseWriter, req *http.Request) {
	id, camera, epoch, start, err := segmentID(req)
	if err != nil {
		r.fail(w, id, codeInvalid, err)
		return
	}
	owner := model.NodeID(req.Header.Get(HeaderOwner))
	var errs []error
	if err := model.ValidateID(HeaderOwner, string(owner)); err != nil {
		errs = append(errs, err)
	} else if owner == r.cfg.NodeID {
		errs = append(errs, model.Invalid(HeaderOwner, "is this node (%s): a node does not replicate to itself", owner))
	}
	crc, err := parseCRC(req.Header.Get(HeaderCRC))
	if err != nil {
		errs = append(errs, err)
	}
	switch {
	case req.ContentLength <= 0:
		errs = append(errs, model.Invalid("Content-Length", "the init section is required as the body"))
	case req.ContentLength > r.cfg.MaxFragmentBytes:
		r.fail(w, id, codeTooLarge, fmt.Errorf("replica: segment %s: init of %d bytes, more than %d", id, req.ContentLength, r.cfg.MaxFragmentBytes))
		return
	}
	if err := errors.Join(errs...); err != nil {
		r.fail(w, id, codeInvalid, fmt.Errorf("replica: create segment %s: %w", id, err))
		return
	}
	bp, err := r.readBody(req, req.ContentLength, crc)
	if err != nil {
		r.fail(w, id, codeInvalid, fmt.Errorf("replica: create segment %s: %w", id, err))
		return
	}
	defer r.bufs.Put(bp)
	init := *bp

	r.metaMu.Lock()
	defer r.metaMu.Unlock()
	r.mu.Lock()
	o := r.open[id]
	r.mu.Unlock()
	if o != nil {
		if o.initCRC != crc {
			r.fail(w, id, codeConflict, fmt.Errorf("replica: segment %s is open here with a different init section", id))
			return
		}
		// A retried create: acknowledge with what is held, so the sender resumes from there.
		writeStatus(w, http.StatusOK, status{Segment: id, Fragments: o.w.Info().Fragments, Duplicate: true})
		return
	}
	if seg, err := r.store.Segment(id); err == nil {
		r.fail(w, id, codeSealed, fmt.Errorf("replica: segment %s is already here, sealed with %d fragments (this node restarted, or the segment was sealed); drop it first to stream it again", id, seg.Fragments))
		return
	} else if !errors.Is(err, model.ErrNotFound) {
		r.fail(w, id, "", err)
		return
	}
	// The owner is recorded first: a crash before the segment exists leaves a sidecar
	// that the next Open removes; the other order could leave a segment without owner.
	if err := r.writeSidecar(id, sidecar{Owner: owner}); err != nil {
		r.fail(w, id, "", err)
		return
	}
	sw, err := r.store.Create(camera, epoch, init, start)
	if err != nil {
		r.removeSidecar(id)
		r.fail(w, id, "", fmt.Errorf("replica: create segment %s for owner %s: %w", id, owner, err))
		return
	}
	o = &openSegment{w: sw, initCRC: crc}
	o.lastSeen.Store(time.Now().UnixNano())
	r.mu.Lock()
	r.open[id] = o
	r.mu.Unlock()
	r.log.Debug("replica: segment created", slog.String("segment", string(id)), slog.String("owner", string(owner)))
	writeStatus(w, http.StatusCreated, status{Segment: id})
}

func (r *Receiver) serveAppend(w http.ResponseWriter, req *http.Request) {
	id, _, _, _, err := segmentID(req)
	if err != nil {
		r.fail(w, id, codeInvalid, err)
		return
	}
	fh, err := parseFragmentHeader(req.Header, req.ContentLength, r.cfg.MaxFragmentBytes)
	if err != nil {
		code := codeInvalid
		if req.ContentLength > r.cfg.MaxFragmentBytes {
			code = codeTooLarge
		}
		r.fail(w, id, code, fmt.Errorf("replica: segment %s: append: %w", id, err))
		return
	}
	r.mu.Lock()
	o := r.open[id]
	r.mu.Unlock()
	if o == nil {
		r.failNotOpen(w, id)
		return
	}
	bp, err := r.readBody(req, fh.size, fh.crc)
	if err != nil {
		r.fail(w, id, codeInvalid, fmt.Errorf("replica: segment %s: fragment %d: %w", id, fh.seq, err))
		return
	}
	defer r.bufs.Put(bp)

	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed { // sealed or dropped while the body was read
		r.failNotOpen(w, id)
		return
	}
	o.lastSeen.Store(time.Now().UnixNano())
	n := len(o.frags)
	switch {
	case fh.seq < n:
		k := o.frags[fh.seq]
		if k.start != fh.start.UnixNano() || k.crc != fh.crc || k.size != fh.size {
			r.fail(w, id, codeConflict, fmt.Errorf("replica: segment %s: fragment %d is already here with other content (start %s, %d bytes)",
				id, fh.seq, time.Unix(0, k.start).UTC().Format(time.RFC3339Nano), k.size))
			return
		}
		r.duplicates.Add(1)
		writeStatus(w, http.StatusOK, status{Segment: id, Fragments: n, Duplicate: true})
		return
	case fh.seq > n:
		r.fail(w, id, codeGap, fmt.Errorf("replica: segment %s: fragment %d arrives but only %d are here: send fragments %d.. first", id, fh.seq, n, n))
		return
	}
	f := model.Fragment{Start: fh.start, Duration: fh.duration, Keyframe: fh.keyframe, Data: *bp}
	if err := o.w.Append(f); err != nil {
		r.fail(w, id, "", fmt.Errorf("replica: %w", err))
		return
	}
	o.frags = append(o.frags, fragKey{start: fh.start.UnixNano(), crc: fh.crc, size: fh.size})
	r.fragments.Add(1)
	r.bytes.Add(fh.size)
	writeStatus(w, http.StatusOK, status{Segment: id, Fragments: n + 1})
}

// failNotOpen answers an append to a segment that is not open here.
func (r *Receiver) failNotOpen(w http.ResponseWriter, id model.SegmentID) {
	if seg, err := r.store.Segment(id); err == nil && seg.Sealed {
		r.fail(w, id, codeSealed, fmt.Errorf("replica: segment %s is sealed here (this node restarted, or it was sealed): drop and create it again to stream it", id))
		return
	}
	r.fail(w, id, codeNotFound, fmt.Errorf("replica: segment %s is not open here: create it first: %w", id, model.ErrNotFound))
}

func (r *Receiver) serveSeal(w http.ResponseWriter, req *http.Request) {
	id, _, _, _, err := segmentID(req)
	if err != nil {
		r.fail(w, id, codeInvalid, err)
		return
	}
	seg, err := r.seal(id, true)
	if err != nil {
		r.fail(w, id, "", err)
		return
	}
	writeStatus(w, http.StatusOK, status{Segment: id, Fragments: seg.Fragments, Sealed: true})
}

// seal seals a replica segment (idempotent: a sealed one is returned as is). ownerSealed
// records that its owner sealed it.
func (r *Receiver) seal(id model.SegmentID, ownerSealed bool) (model.Segment, error) {
	r.metaMu.Lock()
	defer r.metaMu.Unlock()
	return r.sealLocked(id, ownerSealed)
}

func (r *Receiver) sealLocked(id model.SegmentID, ownerSealed bool) (model.Segment, error) {
	r.mu.Lock()
	o := r.open[id]
	r.mu.Unlock()
	var seg model.Segment
	var err error
	if o != nil {
		o.mu.Lock()
		seg, err = o.w.Seal()
		if err == nil {
			o.closed = true
			r.mu.Lock()
			delete(r.open, id)
			r.mu.Unlock()
		}
		o.mu.Unlock()
		if err != nil {
			return seg, fmt.Errorf("replica: seal: %w", err)
		}
	} else if seg, err = r.store.Segment(id); err != nil {
		return seg, fmt.Errorf("replica: seal: %w", err)
	}
	if ownerSealed {
		r.mu.Lock()
		sc, ok := r.owners[id]
		r.mu.Unlock()
		if ok && !sc.OwnerSealed {
			sc.OwnerSealed = true
			if err := r.writeSidecar(id, sc); err != nil {
				r.log.Warn("replica: record owner seal", slog.String("segment", string(id)), slog.Any("err", err))
			}
		}
	}
	return seg, nil
}

func (r *Receiver) serveDrop(w http.ResponseWriter, req *http.Request) {
	id, _, _, _, err := segmentID(req)
	if err != nil {
		r.fail(w, id, codeInvalid, err)
		return
	}
	r.mu.Lock()
	adopted := r.owners[id].Adopted
	r.mu.Unlock()
	if adopted {
		// Its owner was declared gone and this node committed the copy as its own: the
		// catalog may point here, so only this node decides when it goes.
		r.fail(w, id, codeAdopted, fmt.Errorf("replica: segment %s was adopted by node %s after its owner was declared gone; it is not dropped on request", id, r.cfg.NodeID))
		return
	}
	if err := r.Drop(id); err != nil {
		r.fail(w, id, "", err)
		return
	}
	writeStatus(w, http.StatusOK, status{Segment: id})
}

// Drop removes a replica segment, open or sealed, with its owner record: call it when the
// segment is protected elsewhere (striped, or committed from another node's copy). An
// unknown segment wraps model.ErrNotFound.
func (r *Receiver) Drop(id model.SegmentID) error {
	if _, _, _, err := storage.ParseSegmentID(id); err != nil {
		return fmt.Errorf("replica: drop: %w", err)
	}
	r.metaMu.Lock()
	defer r.metaMu.Unlock()
	return r.dropLocked(id)
}

func (r *Receiver) dropLocked(id model.SegmentID) error {
	r.mu.Lock()
	o := r.open[id]
	r.mu.Unlock()
	if o != nil {
		o.mu.Lock()
		err := o.w.Abort()
		if err == nil {
			o.closed = true
			r.mu.Lock()
			delete(r.open, id)
			r.mu.Unlock()
		}
		o.mu.Unlock()
		if err != nil {
			return fmt.Errorf("replica: drop: %w", err)
		}
	} else if err := r.store.Delete(id); err != nil {
		return fmt.Errorf("replica: drop: %w", err)
	}
	r.removeSidecar(id)
	r.log.Debug("replica: segment dropped", slog.String("segment", string(id)))
	return nil
}

func (r *Receiver) serveState(w http.ResponseWriter, req *http.Request) {
	id, _, _, _, err := segmentID(req)
	if err != nil {
		r.fail(w, id, codeInvalid, err)
		return
	}
	seg, err := r.store.Segment(id)
	if err != nil {
		r.fail(w, id, "", err)
		return
	}
	writeStatus(w, http.StatusOK, status{Segment: id, Fragments: seg.Fragments, Sealed: seg.Sealed})
}

// Held is one replica segment this node holds.
type Held struct {
	Segment model.Segment
	// Owner is the node that streamed it (empty when its record was lost).
	Owner model.NodeID
	// OwnerSealed: its owner sealed it, so the owner holds it whole and commits it.
	OwnerSealed bool
	// Adopted: Orphans returned it for this node to commit as its own.
	Adopted bool
}

// Held lists every replica segment this node holds, sorted by camera then start.
func (r *Receiver) Held() ([]Held, error) {
	segs, err := r.store.All()
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	out := make([]Held, len(segs))
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, s := range segs {
		sc := r.owners[s.ID]
		out[i] = Held{Segment: s, Owner: sc.Owner, OwnerSealed: sc.OwnerSealed, Adopted: sc.Adopted}
	}
	return out, nil
}

// Orphans finds the replica segments whose owner is gone: for each replica segment not
// yet adopted, isOwnerAlive(camera, owner) says whether its owner can still finish and
// commit it (owner is empty when unknown). Those whose owner is not alive are sealed
// (open ones: every acknowledged fragment is kept), recorded as adopted, and returned,
// with Node set to this node, for the node to commit to the catalog as reconciled footage
// (cluster ReconcileSegment never replaces a normally committed entry). A segment is
// returned once; Held lists adopted ones again (for a node that crashed before
// committing them). A replica segment without any fragment is dropped, not returned.
func (r *Receiver) Orphans(isOwnerAlive func(camera model.CameraID, owner model.NodeID) bool) ([]model.Segment, error) {
	r.metaMu.Lock()
	defer r.metaMu.Unlock()
	segs, err := r.store.All()
	if err != nil {
		return nil, fmt.Errorf("replica: orphans: %w", err)
	}
	var out []model.Segment
	var errs []error
	for _, s := range segs {
		r.mu.Lock()
		sc, known := r.owners[s.ID]
		r.mu.Unlock()
		if sc.Adopted || isOwnerAlive(s.Camera, sc.Owner) {
			continue
		}
		seg, err := r.sealLocked(s.ID, false)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if seg.Fragments == 0 {
			if err := r.dropLocked(s.ID); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		sc.Adopted = true
		if err := r.writeSidecar(s.ID, sc); err != nil {
			errs = append(errs, err)
			continue
		}
		r.log.Info("replica: segment adopted, its owner is gone", slog.String("segment", string(seg.ID)),
			slog.String("owner", string(sc.Owner)), slog.Bool("owner_known", known),
			slog.Int("fragments", seg.Fragments), slog.Time("end", seg.End))
		out = append(out, seg)
	}
	return out, errors.Join(errs...)
}

// SealIdle seals the open replica segments that received nothing for idle (an owner that
// restarted does not come back to the segment it was streaming: its own copy was sealed
// by its startup check). Sealed replica segments stay until Orphans adopts them or Drop
// removes them. It returns how many it sealed.
func (r *Receiver) SealIdle(idle time.Duration) (int, error) {
	cutoff := time.Now().Add(-idle).UnixNano()
	r.mu.Lock()
	var ids []model.SegmentID
	for id, o := range r.open {
		if o.lastSeen.Load() < cutoff {
			ids = append(ids, id)
		}
	}
	r.mu.Unlock()
	var errs []error
	n := 0
	for _, id := range ids {
		if _, err := r.seal(id, false); err != nil && !errors.Is(err, model.ErrNotFound) {
			errs = append(errs, err)
		} else if err == nil {
			n++
		}
	}
	return n, errors.Join(errs...)
}

// writeSidecar persists a segment's owner record atomically (temporary file, fsync,
// rename, directory fsync).
func (r *Receiver) writeSidecar(id model.SegmentID, sc sidecar) error {
	b, _ := json.Marshal(sc)
	path := filepath.Join(r.metaDir, string(id)+".json")
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("replica: segment %s: write owner record: %w", id, err)
	}
	_, err = f.Write(b)
	if err == nil && !r.cfg.NoSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil && !r.cfg.NoSync {
		err = syncDir(r.metaDir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("replica: segment %s: write owner record: %w", id, err)
	}
	r.mu.Lock()
	r.owners[id] = sc
	r.mu.Unlock()
	return nil
}

func (r *Receiver) removeSidecar(id model.SegmentID) {
	r.mu.Lock()
	delete(r.owners, id)
	r.mu.Unlock()
	err := os.Remove(filepath.Join(r.metaDir, string(id)+".json"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		r.log.Warn("replica: remove owner record (removed at next start)", slog.String("segment", string(id)), slog.Any("err", err))
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
