// Package transfer moves erasure-coded shards between nodes over gRPC streams: a Server
// that exposes a node's shard store (PutShard, GetShard with offset and length, DeleteShard)
// and a Client with the same methods, plus a Fetcher that lets storage's DegradedReader and
// Rebuild read any shard of a stripe, local or remote.
//
// Back-pressure is gRPC's flow control: a sender blocks when the receiver has not consumed
// its window, so a slow disk slows the sender instead of filling memory (one chunk, at most
// 1 MiB, in flight per stream beyond the window). Every chunk carries its CRC-32C, so bytes
// damaged on the way are refused; the sender of a GetShard verified the shard's block
// checksums before sending.
//
// It must not decide where shards go, read the catalog, or dial nodes by itself: placement
// is the cluster's and connections are the node's (it passes grpc.ClientConnInterface in).
package transfer

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/storage"
	transferv1 "github.com/vigie-vms/vigie/storage/transfer/v1"
)

// ChunkSize is the data carried by one stream message.
const ChunkSize = 256 << 10

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Store is what the server needs of the node's shard store (*storage.Store).
type Store interface {
	PutShard(ctx context.Context, id storage.ShardID, r io.Reader, size int64, expect ...uint32) error
	OpenShardRef(ref storage.ShardRef) (*storage.ShardReader, error)
	DeleteShard(id storage.ShardID) error
}

// Server serves the Transfer service over a Store.
type Server struct {
	transferv1.UnimplementedTransferServer
	store Store
	log   *slog.Logger
}

// NewServer returns a server over store; log nil means slog.Default().
func NewServer(store Store, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{store: store, log: log.With(slog.String("component", "transfer"))}
}

// Register registers the service on g.
func (s *Server) Register(g grpc.ServiceRegistrar) { transferv1.RegisterTransferServer(g, s) }

func fromRef(r *transferv1.ShardRef) (storage.ShardRef, error) {
	if r == nil {
		return storage.ShardRef{}, model.Invalid("shard", "is required")
	}
	ref := storage.ShardRef{Stripe: storage.StripeID(r.GetStripe()), Index: int(r.GetIndex()), Segment: model.SegmentID(r.GetSegment())}
	if err := ref.ID().Validate(); err != nil {
		return storage.ShardRef{}, err
	}
	return ref, nil
}

func toRef(r storage.ShardRef) *transferv1.ShardRef {
	return &transferv1.ShardRef{Stripe: string(r.Stripe), Index: uint32(r.Index), Segment: string(r.Segment)}
}

// streamReader turns the PutShard stream into an io.Reader, checking each chunk's CRC.
type streamReader struct {
	stream transferv1.Transfer_PutShardServer
	buf    []byte
	err    error
}

func (r *streamReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		msg, err := r.stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				err = fmt.Errorf("transfer: receive: %w", err)
			}
			r.err = err
			return 0, err
		}
		if msg.GetHeader() != nil {
			r.err = fmt.Errorf("transfer: %w", model.Invalid("header", "sent twice"))
			return 0, r.err
		}
		if crc32c(msg.GetData()) != msg.GetDataCrc() {
			r.err = fmt.Errorf("transfer: chunk of %d bytes damaged in transit (crc32c mismatch): %w", len(msg.GetData()), model.ErrCorrupt)
			return 0, r.err
		}
		r.buf = msg.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// PutShard implements the service.
func (s *Server) PutShard(stream transferv1.Transfer_PutShardServer) error {
	first, err := stream.Recv()
	if err != nil {
		return toStatus(fmt.Errorf("transfer: receive header: %w", err))
	}
	h := first.GetHeader()
	if h == nil {
		return toStatus(fmt.Errorf("transfer: put shard: %w", model.Invalid("header", "the first message must carry the header")))
	}
	ref, err := fromRef(h.GetShard())
	if err != nil {
		return toStatus(fmt.Errorf("transfer: put shard: %w", err))
	}
	if crc32c(first.GetData()) != first.GetDataCrc() {
		return toStatus(fmt.Errorf("transfer: put shard %s: first chunk damaged in transit: %w", ref.ID(), model.ErrCorrupt))
	}
	var expect []uint32
	if h.GetHasChecksum() {
		expect = []uint32{h.GetChecksum()}
	}
	r := &streamReader{stream: stream, buf: first.GetData()}
	if err := s.store.PutShard(stream.Context(), ref.ID(), r, h.GetSize(), expect...); err != nil {
		s.log.Warn("transfer: put shard refused", slog.String("shard", ref.ID().String()), slog.Any("error", err))
		return toStatus(err)
	}
	return stream.SendAndClose(&transferv1.PutShardResponse{Size: h.GetSize()})
}

// GetShard implements the service.
func (s *Server) GetShard(req *transferv1.GetShardRequest, stream transferv1.Transfer_GetShardServer) error {
	ref, err := fromRef(req.GetShard())
	if err != nil {
		return toStatus(fmt.Errorf("transfer: get shard: %w", err))
	}
	r, err := s.store.OpenShardRef(ref)
	if err != nil {
		return toStatus(err)
	}
	defer r.Close()
	off, length := req.GetOffset(), req.GetLength()
	if length == 0 {
		length = r.Size() - off
	}
	if off < 0 || length < 0 || off+length > r.Size() {
		return toStatus(fmt.Errorf("transfer: get shard %s: %w", ref.ID(), model.Invalid("range", "[%d, %d) is outside the shard's %d bytes", off, off+length, r.Size())))
	}
	buf := make([]byte, min(ChunkSize, max(length, 1)))
	for end := off + length; off < end; {
		if err := stream.Context().Err(); err != nil {
			return toStatus(err)
		}
		n := min(int64(len(buf)), end-off)
		if _, err := r.ReadAt(buf[:n], off); err != nil {
			return toStatus(err)
		}
		if err := stream.Send(&transferv1.GetShardResponse{Data: buf[:n], DataCrc: crc32c(buf[:n])}); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// DeleteShard implements the service.
func (s *Server) DeleteShard(_ context.Context, req *transferv1.DeleteShardRequest) (*transferv1.DeleteShardResponse, error) {
	ref, err := fromRef(req.GetShard())
	if err != nil {
		return nil, toStatus(fmt.Errorf("transfer: delete shard: %w", err))
	}
	if err := s.store.DeleteShard(ref.ID()); err != nil {
		return nil, toStatus(err)
	}
	return &transferv1.DeleteShardResponse{}, nil
}

// codeOf maps sentinel errors to gRPC codes and back.
var codeOf = []struct {
	err  error
	code codes.Code
}{
	{model.ErrNotFound, codes.NotFound},
	{model.ErrExists, codes.AlreadyExists},
	{model.ErrInvalid, codes.InvalidArgument},
	{model.ErrNoSpace, codes.ResourceExhausted},
	{model.ErrCorrupt, codes.DataLoss},
	{model.ErrInUse, codes.FailedPrecondition},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

func toStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, c := range codeOf {
		if errors.Is(err, c.err) {
			return status.Error(c.code, err.Error())
		}
	}
	return status.Error(codes.Internal, err.Error())
}

// fromStatus turns a gRPC error back into one that wraps the matching sentinel.
func fromStatus(what string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("transfer: %s: %w", what, err)
	}
	for _, c := range codeOf {
		if c.code == st.Code() {
			return fmt.Errorf("transfer: %s: %w (remote: %s)", what, c.err, st.Message())
		}
	}
	return fmt.Errorf("transfer: %s: %w", what, err)
}

// Client calls one node's Transfer service. It is safe for concurrent use.
type Client struct {
	c transferv1.TransferClient
}

// NewClient returns a client over a connection to one node (the node dials, with its TLS).
func NewClient(cc grpc.ClientConnInterface) *Client {
	return &Client{c: transferv1.NewTransferClient(cc)}
}

// PutShard sends size bytes read from r as shard id; expect, when given, is the CRC-32C the
// whole shard must have. It returns nil once the remote node holds the shard durably.
// Cancelling ctx (or r failing) aborts the stream and the remote keeps nothing. Errors wrap
// the sentinel the remote store returned (model.ErrNoSpace, ErrExists, ErrCorrupt…).
func (c *Client) PutShard(ctx context.Context, id storage.ShardID, r io.Reader, size int64, expect ...uint32) error {
	what := "put shard " + id.String()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.c.PutShard(ctx)
	if err != nil {
		return fromStatus(what, err)
	}
	h := &transferv1.PutShardHeader{Shard: toRef(storage.ShardRef{Stripe: id.Stripe, Index: id.Index}), Size: size}
	if len(expect) > 0 {
		h.Checksum, h.HasChecksum = expect[0], true
	}
	send := func(msg *transferv1.PutShardRequest) error {
		err := stream.Send(msg)
		if errors.Is(err, io.EOF) { // the server ended the call: its status says why
			_, err = stream.CloseAndRecv()
		}
		if err != nil {
			return fromStatus(what, err)
		}
		return nil
	}
	if err := send(&transferv1.PutShardRequest{Header: h}); err != nil {
		return err
	}
	buf := make([]byte, min(ChunkSize, max(size, 1)))
	for sent := int64(0); sent < size; {
		n, rerr := io.ReadFull(r, buf[:min(int64(len(buf)), size-sent)])
		if n > 0 {
			if err := send(&transferv1.PutShardRequest{Data: buf[:n], DataCrc: crc32c(buf[:n])}); err != nil {
				return err
			}
			sent += int64(n)
		}
		if rerr != nil {
			cancel() // the remote drops what it received
			return fmt.Errorf("transfer: %s: read source after %d of %d bytes: %w", what, sent, size, rerr)
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return fromStatus(what, err)
	}
	return nil
}

// GetShard writes [off, off+length) of the shard ref names to w (length 0: to the end) and
// returns the bytes written. The remote verified every block before sending; each chunk is
// checked against its CRC on arrival.
func (c *Client) GetShard(ctx context.Context, ref storage.ShardRef, off, length int64, w io.Writer) (int64, error) {
	what := fmt.Sprintf("get shard %s [%d, +%d)", ref.ID(), off, length)
	stream, err := c.c.GetShard(ctx, &transferv1.GetShardRequest{Shard: toRef(ref), Offset: off, Length: length})
	if err != nil {
		return 0, fromStatus(what, err)
	}
	var n int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fromStatus(what, err)
		}
		if crc32c(msg.GetData()) != msg.GetDataCrc() {
			return n, fmt.Errorf("transfer: %s: chunk at offset %d damaged in transit: %w", what, off+n, model.ErrCorrupt)
		}
		m, err := w.Write(msg.GetData())
		n += int64(m)
		if err != nil {
			return n, fmt.Errorf("transfer: %s: %w", what, err)
		}
	}
}

// ReadShard fills p with bytes [off, off+len(p)) of the shard ref names.
func (c *Client) ReadShard(ctx context.Context, ref storage.ShardRef, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	w := &sliceWriter{p: p}
	n, err := c.GetShard(ctx, ref, off, int64(len(p)), w)
	if err != nil {
		return err
	}
	if n != int64(len(p)) {
		return fmt.Errorf("transfer: get shard %s: %d of %d bytes received: %w", ref.ID(), n, len(p), model.ErrCorrupt)
	}
	return nil
}

type sliceWriter struct {
	p []byte
	n int
}

func (w *sliceWriter) Write(b []byte) (int, error) {
	if len(b) > len(w.p)-w.n {
		return 0, fmt.Errorf("remote sent more than asked: %w", model.ErrCorrupt)
	}
	w.n += copy(w.p[w.n:], b)
	return len(b), nil
}

// DeleteShard removes a shard from the remote node.
func (c *Client) DeleteShard(ctx context.Context, id storage.ShardID) error {
	_, err := c.c.DeleteShard(ctx, &transferv1.DeleteShardRequest{Shard: toRef(storage.ShardRef{Stripe: id.Stripe, Index: id.Index})})
	if err != nil {
		return fromStatus("delete shard "+id.String(), err)
	}
	return nil
}

// LocalReader is what Fetcher needs of the node's own store (*storage.Store).
type LocalReader interface {
	ReadShard(ctx context.Context, ref storage.ShardRef, p []byte, off int64) error
}

// Fetcher is the storage.ShardFetcher of a node: its own shards from Local, the others'
// through Clients. Clients returns the client of a node (the node keeps one connection per
// peer); an error makes the shard unavailable for this read.
type Fetcher struct {
	Self    model.NodeID
	Local   LocalReader
	Clients func(node model.NodeID) (*Client, error)
}

// ReadShard implements storage.ShardFetcher.
func (f *Fetcher) ReadShard(ctx context.Context, node model.NodeID, ref storage.ShardRef, p []byte, off int64) error {
	if node == f.Self {
		return f.Local.ReadShard(ctx, ref, p, off)
	}
	c, err := f.Clients(node)
	if err != nil {
		return fmt.Errorf("transfer: node %q: %w", node, err)
	}
	if err := c.ReadShard(ctx, ref, p, off); err != nil {
		return fmt.Errorf("node %q: %w", node, err)
	}
	return nil
}

var _ storage.ShardFetcher = (*Fetcher)(nil)
