package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	vigiev1 "github.com/vigie-vms/vigie/gateway/api/vigie/v1"
)

// Gateway serves Vigie's public API: gRPC on one listener; REST (grpc-gateway), the
// OpenAPI document, /healthz and the media endpoints on another.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	auditor Auditor

	grpcSrv *grpc.Server
	httpSrv *http.Server

	mu       sync.Mutex
	started  bool
	closed   bool
	grpcLn   net.Listener
	httpLn   net.Listener
	conn     *grpc.ClientConn
	cancel   context.CancelFunc
	serveErr chan error
}

// New checks cfg and builds a Gateway; nothing listens before Start.
func New(cfg Config) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, auditor: cfg.Auditor}
	if g.log == nil {
		g.log = slog.Default()
	}
	g.log = g.log.With(slog.String("component", "gateway"))
	if g.auditor == nil {
		g.auditor = SlogAuditor{Logger: g.log}
	}
	g.grpcSrv = grpc.NewServer(
		grpc.ChainUnaryInterceptor(g.unaryInterceptor),
		grpc.ChainStreamInterceptor(g.streamInterceptor),
	)
	vigiev1.RegisterTenantServiceServer(g.grpcSrv, &tenantService{g: g})
	vigiev1.RegisterHoldServiceServer(g.grpcSrv, &holdService{g: g})
	vigiev1.RegisterCameraServiceServer(g.grpcSrv, &cameraService{g: g})
	vigiev1.RegisterRecordingServiceServer(g.grpcSrv, &recordingService{g: g})
	vigiev1.RegisterClusterServiceServer(g.grpcSrv, &clusterService{g: g})
	for _, register := range cfg.GRPCServices {
		register(g.grpcSrv)
	}
	return g, nil
}

func (g *Gateway) now() time.Time {
	if g.cfg.Now != nil {
		return g.cfg.Now()
	}
	return time.Now()
}

// Start binds both listeners and serves until Close. The REST mux does not call the
// services directly: it dials the gateway's own gRPC listener, so every REST call takes
// exactly the path of a gRPC call (interceptors: authentication, authorisation,
// validation, error mapping, audit). The media endpoints are plain HTTP handlers that call
// the same authenticate/authorize/audit functions.
func (g *Gateway) Start(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.started {
		return errors.New("gateway: already started")
	}

	grpcLn, httpLn := g.cfg.GRPCListener, g.cfg.HTTPListener
	var err error
	if grpcLn == nil {
		if grpcLn, err = net.Listen("tcp", g.cfg.GRPCAddr); err != nil {
			return fmt.Errorf("gateway: grpc_addr %s: %w", g.cfg.GRPCAddr, err)
		}
	}
	if httpLn == nil {
		if httpLn, err = net.Listen("tcp", g.cfg.HTTPAddr); err != nil {
			grpcLn.Close()
			return fmt.Errorf("gateway: http_addr %s: %w", g.cfg.HTTPAddr, err)
		}
	}
	conn, err := grpc.NewClient("passthrough:///"+grpcLn.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		grpcLn.Close()
		httpLn.Close()
		return fmt.Errorf("gateway: dial own gRPC listener: %w", err)
	}
	g.grpcLn, g.httpLn, g.conn = grpcLn, httpLn, conn

	// The REST mux lives as long as the gateway, not as long as Start's ctx.
	rctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	rest := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{
			Marshaler: &runtime.JSONPb{
				MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
				UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
			},
		}),
	)
	for _, reg := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		vigiev1.RegisterTenantServiceHandler,
		vigiev1.RegisterHoldServiceHandler,
		vigiev1.RegisterCameraServiceHandler,
		vigiev1.RegisterRecordingServiceHandler,
		vigiev1.RegisterClusterServiceHandler,
	} {
		if err := reg(rctx, rest, conn); err != nil {
			cancel()
			conn.Close()
			grpcLn.Close()
			httpLn.Close()
			return fmt.Errorf("gateway: register REST handlers: %w", err)
		}
	}

	mux := http.NewServeMux()
	mux.Handle("/v1/", rejectUnknownQuery(rest))
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(vigiev1.OpenAPI)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /media/v1/cameras/{id}/stream.mp4", g.serveStream)
	mux.HandleFunc("GET /media/v1/cameras/{id}/export.mp4", g.serveExport)
	mux.HandleFunc("/media/", func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, http.StatusNotFound, "no media endpoint at "+r.URL.Path+": use /media/v1/cameras/{id}/stream.mp4 or export.mp4")
	})
	for pattern, h := range g.cfg.Handlers {
		mux.Handle(pattern, h)
	}
	g.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	g.serveErr = make(chan error, 2)
	go func() { g.serveErr <- g.grpcSrv.Serve(grpcLn) }()
	go func() { g.serveErr <- g.httpSrv.Serve(httpLn) }()
	g.started = true // only now: Close has something to stop
	g.log.Info("gateway listening", slog.String("grpc", grpcLn.Addr().String()), slog.String("http", httpLn.Addr().String()))
	return nil
}

// GRPCAddr is the bound gRPC address (after Start).
func (g *Gateway) GRPCAddr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.grpcLn == nil {
		return ""
	}
	return g.grpcLn.Addr().String()
}

// HTTPAddr is the bound HTTP address (after Start).
func (g *Gateway) HTTPAddr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.httpLn == nil {
		return ""
	}
	return g.httpLn.Addr().String()
}

// Close stops serving. Order: HTTP first (no new REST or media request; in-flight ones get
// up to 5 s), then the REST mux's client connection, then gRPC (graceful, up to 5 s).
func (g *Gateway) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.started || g.closed {
		g.closed = true
		return nil
	}
	g.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := g.httpSrv.Shutdown(ctx)
	if err != nil {
		g.httpSrv.Close()
	}
	g.cancel()
	g.conn.Close()
	done := make(chan struct{})
	go func() { g.grpcSrv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		g.grpcSrv.Stop()
		<-done
	}
	return err
}

func runtimeHTTPStatus(c codes.Code) int { return runtime.HTTPStatusFromCode(c) }

// restQuery lists the query parameters each REST GET accepts. grpc-gateway ignores
// unknown ones; a typo ("pagesize") would then silently do something else, so the gateway
// rejects them.
var restQuery = []struct {
	suffix string // path after /v1/, with * for one segment
	keys   []string
}{
	{"tenants", []string{"page_size", "page_token"}},
	{"cameras", []string{"tenant", "page_size", "page_token"}},
	{"cameras:health", []string{"tenant", "page_size", "page_token"}},
	{"cameras/*/timeline", []string{"start", "end"}},
	{"cameras/*/segments", []string{"start", "end", "page_size", "page_token"}},
	{"holds", []string{"camera_id", "include_released"}},
}

func allowedQuery(path string) []string {
	rest := strings.Split(strings.TrimPrefix(path, "/v1/"), "/")
	for _, q := range restQuery {
		pat := strings.Split(q.suffix, "/")
		if len(pat) != len(rest) {
			continue
		}
		ok := true
		for i := range pat {
			if pat[i] != "*" && pat[i] != rest[i] {
				ok = false
				break
			}
		}
		if ok {
			return q.keys
		}
	}
	return nil
}

// rejectUnknownQuery answers 400 for a query parameter the route does not take.
func rejectUnknownQuery(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		allowed := allowedQuery(r.URL.Path)
		for k := range r.URL.Query() {
			if !containsString(allowed, k) {
				msg := fmt.Sprintf("%s: unknown query parameter", k)
				if len(allowed) > 0 {
					msg += " (this request takes " + strings.Join(allowed, ", ") + ")"
				} else {
					msg += " (this request takes none)"
				}
				writeStatusJSON(w, status.New(codes.InvalidArgument, msg))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// writeStatusJSON writes a status the way grpc-gateway does ({"code","message","details"}).
func writeStatusJSON(w http.ResponseWriter, st *status.Status) {
	b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(st.Proto())
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(runtime.HTTPStatusFromCode(st.Code()))
	w.Write(b)
}

// writeJSONError writes the media endpoints' error body: {"error": "..."}.
func writeJSONError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.Header().Del("Content-Disposition")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
