// Package gateway is Vigie's public API: the gRPC services of package vigie.v1 (tenants,
// cameras, recordings, cluster), the same API as REST/JSON through grpc-gateway with its
// OpenAPI document at /openapi.json, /healthz, and the HTTP media endpoints
// (/media/v1/cameras/{id}/stream.mp4 and export.mp4).
//
// # One request path
//
// gRPC listens on Config.GRPCAddr; everything HTTP on Config.HTTPAddr. The REST mux does
// not call the services in process: it dials the gateway's own gRPC listener, so a REST
// call and a gRPC call go through the same interceptor chain — authenticate (the
// Authenticator hook, nil = LocalAdmin; the caller is then in the context, see
// CallerFrom), authorize (the Authorizer hook), validate and serve, map the error to a
// gRPC status, audit (the Auditor hook, default: slog). The media endpoints, which are
// plain HTTP, call the same authenticate/authorize/audit functions.
//
// # Errors
//
// Handlers return model sentinel errors wrapped with context; the interceptor maps them
// with errors.Is (ErrNotFound → NotFound, ErrExists → AlreadyExists, ErrInvalid →
// InvalidArgument with the FieldError message and a google.rpc.BadRequest field
// violation, ErrInUse/ErrStaleEpoch → FailedPrecondition, ErrQuota/ErrNoSpace →
// ResourceExhausted, ErrNotLeader → Unavailable, ErrCorrupt → DataLoss, else Internal);
// grpc-gateway turns the code into the HTTP status. Every request is validated before any
// catalog or storage call (unknown JSON fields and query parameters, page_size 0..1000,
// page tokens, start < end, ranges of at most 31 days), so a bad request changes nothing.
//
// # Media
//
// stream.mp4?start=&duration= writes a fragmented MP4 progressively: the init section,
// then each fragment from the one with the keyframe at or before start to the last that
// starts before start+duration, with decode times rebased (package media) so the stream
// starts at 0 and follows wall-clock time across segments. X-Vigie-Start is the wall-clock
// time of the first frame. A stream stops where the codec configuration changes
// (Segment.CodecHash differs); a multi-period stream is future work. export.mp4?start=&end=
// is a progressive MP4 (ftyp, moov, mdat) of the same fragments, cut at the last sample
// before end, with an exact Content-Length; an export across a codec change is refused
// (409) naming the time of the change, rather than silently cut. Media errors are JSON
// {"error": "..."}: 400 naming the parameter, 404 for an unknown camera or a range with
// nothing recorded.
//
// Footage recorded twice (a handover, a critical camera, a healed partition) is served
// once. The times of fragments are each recorder's clock mapping, and two nodes' mappings
// of one camera differ by up to a few hundred ms, so seams are not cut by time alone: a
// switch to a segment that starts inside the current one cuts the current one at its
// keyframe fragment nearest the new segment's start (the same frame on both nodes); a
// fragment is served only once per segment but the fragments of one segment are never
// skipped among themselves; a segment the catalog starts exactly where the previous one
// ends is served from its first fragment.
//
// # What it must not do
//
// The gateway imports only package model of Vigie: it declares the interfaces it consumes
// (Catalog, Recordings, SegmentReader, Health, ClusterInfo, Protection) and the node passes the real
// implementations in. It holds no state of its own beyond its listeners.
package gateway
