package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	vigiev1 "github.com/vigie-vms/vigie/gateway/api/vigie/v1"
	"github.com/vigie-vms/vigie/model"
)

type restClient struct {
	t    *testing.T
	base string
}

func (c restClient) do(method, path, body string) (int, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			c.t.Fatalf("%s %s: body is not JSON: %s", method, path, b)
		}
	}
	return resp.StatusCode, m
}

func (c restClient) ok(method, path, body string) map[string]any {
	c.t.Helper()
	code, m := c.do(method, path, body)
	if code != 200 {
		c.t.Fatalf("%s %s: status %d: %v", method, path, code, m)
	}
	return m
}

func TestRESTRoundTrip(t *testing.T) {
	cat := newFakeCatalog()
	cat.now = time.Date(2025, 3, 1, 9, 30, 0, 0, time.UTC) // cameras are created at 09:30
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	rec := &fakeRecordings{
		segs: []*fakeSegment{
			{seg: model.Segment{ID: "a", Camera: "cam-1", Start: now.Add(-2 * time.Hour), End: now.Add(-time.Hour), Bytes: 3600, Sealed: true}},
			{seg: model.Segment{ID: "b", Camera: "cam-1", Start: now.Add(-time.Hour + 100*time.Millisecond), End: now.Add(-30 * time.Minute), Bytes: 1800, Sealed: true}},
		},
		outages: []model.Outage{{Camera: "cam-1", Start: now.Add(-30 * time.Minute), End: now.Add(-20 * time.Minute), Cause: model.GapCameraUnreachable, Detail: "connection refused"}},
	}
	g := startGateway(t, cat, rec, func(c *Config) {
		c.Now = func() time.Time { return now }
		c.Health = fakeHealth{"cam-1": {Camera: "cam-1", State: model.CameraRecording, FPS: 25, KeyframeInterval: 2 * time.Second}}
		c.Cluster = fakeCluster{{ID: "n1", Role: "leader", State: "active", Cameras: 2}}
	})
	c := restClient{t, "http://" + g.HTTPAddr()}

	tn := c.ok("POST", "/v1/tenants", `{"id":"lyon","name":"Lyon","camera_quota":10}`)
	if tn["retention_days"] != 30.0 || tn["create_time"] == nil {
		t.Errorf("created tenant: %v (want default retention 30 and a create_time)", tn)
	}
	c.ok("POST", "/v1/tenants", `{"id":"metro","name":"Métropole"}`)
	if got := c.ok("GET", "/v1/tenants/lyon", ""); got["name"] != "Lyon" {
		t.Errorf("get tenant: %v", got)
	}
	p1 := c.ok("GET", "/v1/tenants?page_size=1", "")
	if ts := p1["tenants"].([]any); len(ts) != 1 || ts[0].(map[string]any)["id"] != "lyon" || p1["next_page_token"] == "" {
		t.Fatalf("page 1: %v", p1)
	}
	p2 := c.ok("GET", "/v1/tenants?page_size=1&page_token="+p1["next_page_token"].(string), "")
	if ts := p2["tenants"].([]any); len(ts) != 1 || ts[0].(map[string]any)["id"] != "metro" || p2["next_page_token"] != "" {
		t.Fatalf("page 2: %v", p2)
	}
	up := c.ok("PATCH", "/v1/tenants/lyon", `{"retention_days":7}`)
	if up["retention_days"] != 7.0 || up["name"] != "Lyon" || up["camera_quota"] != 10.0 {
		t.Errorf("patch changed more than retention_days: %v", up)
	}

	cam := c.ok("POST", "/v1/cameras", `{"id":"cam-1","tenant":"lyon","url":"rtsp://10.0.0.1/stream","username":"u","password":"secret"}`)
	if cam["has_password"] != true || cam["password"] != "" || cam["retention_days"] != 7.0 || cam["ingest"] != "pull" {
		t.Errorf("created camera: %v (want has_password, no password, the tenant's retention, ingest pull)", cam)
	}
	imp := c.ok("POST", "/v1/cameras:import", `{"csv":"id,tenant,name,tags\ncam-2,lyon,Gare,entrance;north\ncam-3,metro,Pont,\n"}`)
	if cs := imp["cameras"].([]any); len(cs) != 2 {
		t.Errorf("import: %v", imp)
	}
	if c2 := c.ok("GET", "/v1/cameras/cam-2", ""); c2["ingest"] != "push" || len(c2["tags"].([]any)) != 2 {
		t.Errorf("imported camera: %v", c2)
	}
	lc := c.ok("GET", "/v1/cameras?tenant=lyon", "")
	if cs := lc["cameras"].([]any); len(cs) != 2 {
		t.Errorf("cameras of lyon: %v", lc)
	}
	c.ok("PATCH", "/v1/cameras/cam-2", `{"recording":"off"}`)
	if c2, _ := cat.Camera("cam-2"); c2.Recording != model.RecordOff || c2.Name != "Gare" {
		t.Errorf("after patch: %+v", c2)
	}

	h := c.ok("GET", "/v1/cameras/cam-1/health", "")
	if h["state"] != "recording" || h["keyframe_interval"] != "2s" {
		t.Errorf("health: %v", h)
	}
	lh := c.ok("GET", "/v1/cameras:health?tenant=lyon", "")
	if hs := lh["health"].([]any); len(hs) != 2 || hs[1].(map[string]any)["state"] != "unknown" {
		t.Errorf("health list: %v", lh)
	}

	tl := c.ok("GET", "/v1/cameras/cam-1/timeline?start=2025-03-01T09:00:00Z&end=2025-03-01T13:00:00Z", "")
	spans, gaps := tl["spans"].([]any), tl["gaps"].([]any)
	if len(spans) != 1 || spans[0].(map[string]any)["start"] != "2025-03-01T10:00:00Z" || spans[0].(map[string]any)["end"] != "2025-03-01T11:30:00Z" {
		t.Errorf("spans: %v", spans)
	}
	var causes []string
	for _, gp := range gaps {
		causes = append(causes, gp.(map[string]any)["cause"].(string))
	}
	if strings.Join(causes, ",") != "no_recording_policy,unknown,camera_unreachable,unknown" {
		t.Errorf("gap causes %v, want no_recording_policy (before the camera existed), unknown, camera_unreachable, unknown", causes)
	}
	if tl["end"] != "2025-03-01T12:00:00Z" {
		t.Errorf("timeline end %v, want now (the end is in the future)", tl["end"])
	}
	sg := c.ok("GET", "/v1/cameras/cam-1/segments?start=2025-03-01T09:00:00Z&end=2025-03-01T13:00:00Z&page_size=1", "")
	if s := sg["segments"].([]any); len(s) != 1 || s[0].(map[string]any)["id"] != "a" {
		t.Fatalf("segments page 1: %v", sg)
	}
	sg2 := c.ok("GET", "/v1/cameras/cam-1/segments?start=2025-03-01T09:00:00Z&end=2025-03-01T13:00:00Z&page_size=1&page_token="+sg["next_page_token"].(string), "")
	if s := sg2["segments"].([]any); len(s) != 1 || s[0].(map[string]any)["id"] != "b" || sg2["next_page_token"] != "" {
		t.Fatalf("segments page 2: %v", sg2)
	}

	st := c.ok("GET", "/v1/cluster/status", "")
	if st["version"] != "test" || st["cameras"] != 2.0 || len(st["nodes"].([]any)) != 1 {
		t.Errorf("status: %v", st)
	}

	if code, m := c.do("DELETE", "/v1/tenants/metro", ""); code != 400 || !strings.Contains(m["message"].(string), "in use") {
		t.Errorf("delete tenant with cameras: %d %v", code, m)
	}
	c.ok("DELETE", "/v1/cameras/cam-3", "")
	c.ok("DELETE", "/v1/tenants/metro", "")
	if code, _ := c.do("GET", "/v1/tenants/metro", ""); code != 404 {
		t.Errorf("deleted tenant: status %d", code)
	}

	resp, err := http.Get(c.base + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Swagger string
		Paths   map[string]any
	}
	json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if doc.Swagger != "2.0" || doc.Paths["/v1/cameras/{camera_id}/timeline"] == nil {
		t.Errorf("openapi.json: swagger %q, %d paths", doc.Swagger, len(doc.Paths))
	}
	if resp, err := http.Get(c.base + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("healthz: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

func TestRESTBadRequests(t *testing.T) {
	cat := newFakeCatalog()
	cat.tenants["lyon"] = model.Tenant{ID: "lyon", Name: "Lyon", RetentionDays: 30}
	cat.cams["cam-1"] = model.Camera{ID: "cam-1", Tenant: "lyon", Name: "c", URL: "rtsp://h/", Ingest: model.IngestPull,
		Transport: model.TransportTCP, Recording: model.RecordContinuous, Redundancy: model.RedundancyStandard, RetentionDays: 30}
	g := startGateway(t, cat, &fakeRecordings{}, nil)
	c := restClient{t, "http://" + g.HTTPAddr()}
	before := cat.writes
	beforeCam := cat.cams["cam-1"]

	cases := []struct {
		name, method, path, body string
		status                   int
		msg                      string
	}{
		{"unknown body field", "POST", "/v1/tenants", `{"id":"x","name":"X","colour":"red"}`, 400, `unknown field "colour"`},
		{"missing tenant id", "POST", "/v1/tenants", `{"name":"X"}`, 400, "tenant.id: is required"},
		{"missing tenant name", "POST", "/v1/tenants", `{"id":"x"}`, 400, "tenant.name: is required"},
		{"retention over legal max", "POST", "/v1/tenants", `{"id":"x","name":"X","retention_days":45}`, 400, "tenant.retention_days: must be between 1 and 30"},
		{"bad id", "GET", "/v1/tenants/Bad%20Id", "", 400, "id: "},
		{"tenant exists", "POST", "/v1/tenants", `{"id":"lyon","name":"L"}`, 409, "already exists"},
		{"tenant not found", "GET", "/v1/tenants/paris", "", 404, `tenant "paris": not found`},
		{"page_size too big", "GET", "/v1/tenants?page_size=5000", "", 400, "page_size: must be between 0"},
		{"page_size negative", "GET", "/v1/tenants?page_size=-1", "", 400, "page_size: must be between 0"},
		{"page_size not a number", "GET", "/v1/tenants?page_size=ten", "", 400, "page_size"},
		{"bad page_token", "GET", "/v1/tenants?page_token=garbage!", "", 400, "page_token: "},
		{"token of another list", "GET", "/v1/tenants?page_token=" + encodePageToken("cameras/", "x"), "", 400, "page_token: "},
		{"unknown query parameter", "GET", "/v1/tenants?pagesize=5", "", 400, "pagesize: unknown query parameter"},
		{"patch output-only field", "PATCH", "/v1/tenants/lyon", `{"create_time":"2020-01-01T00:00:00Z"}`, 400, `update_mask: "create_time" is output only`},
		{"patch bad retention", "PATCH", "/v1/tenants/lyon", `{"retention_days":99}`, 400, "tenant.retention_days"},
		{"camera url with credentials", "POST", "/v1/cameras", `{"id":"cam-2","tenant":"lyon","url":"rtsp://u:p@h/"}`, 400, "camera.url: must not hold credentials"},
		{"camera unknown tenant", "POST", "/v1/cameras", `{"id":"cam-2","tenant":"paris","url":"rtsp://h/"}`, 400, `camera.tenant: no tenant "paris"`},
		{"camera bad transport", "POST", "/v1/cameras", `{"id":"cam-2","tenant":"lyon","url":"rtsp://h/","transport":"quic"}`, 400, "camera.transport"},
		{"camera exists", "POST", "/v1/cameras", `{"id":"cam-1","tenant":"lyon","url":"rtsp://h/"}`, 409, "already exists"},
		{"camera change tenant", "PATCH", "/v1/cameras/cam-1", `{"tenant":"metro"}`, 400, "camera.tenant: cannot be changed"},
		{"camera password without user", "PATCH", "/v1/cameras/cam-1", `{"password":"x"}`, 400, "camera.username: is required"},
		{"import both", "POST", "/v1/cameras:import", `{"cameras":[{"id":"a","tenant":"lyon"}],"csv":"id,tenant\nb,lyon"}`, 400, "csv: set either cameras or csv"},
		{"import empty", "POST", "/v1/cameras:import", `{}`, 400, "cameras: is empty"},
		{"import one bad of two", "POST", "/v1/cameras:import", `{"cameras":[{"id":"a","tenant":"lyon"},{"id":"b","tenant":"lyon","url":"http://h/"}]}`, 400, "cameras[1].url: must start with rtsp://"},
		{"import duplicate", "POST", "/v1/cameras:import", `{"cameras":[{"id":"a","tenant":"lyon"},{"id":"a","tenant":"lyon"}]}`, 400, "cameras[1].id"},
		{"import existing (atomic)", "POST", "/v1/cameras:import", `{"cameras":[{"id":"a","tenant":"lyon"},{"id":"cam-1","tenant":"lyon"}]}`, 409, "none registered"},
		{"csv unknown column", "POST", "/v1/cameras:import", `{"csv":"id,tenant,colour\na,lyon,red"}`, 400, `csv: unknown column "colour"`},
		{"csv bad row", "POST", "/v1/cameras:import", `{"csv":"id,tenant,retention_days\na,lyon,7\nb,lyon,lots"}`, 400, "csv[line 3].retention_days"},
		{"timeline start after default end (now)", "GET", "/v1/cameras/cam-1/timeline?start=2999-03-01T00:00:00Z", "", 400, "end: must be after start"},
		{"timeline bad start", "GET", "/v1/cameras/cam-1/timeline?start=monday&end=2025-03-01T00:00:00Z", "", 400, "start"},
		{"timeline end before start", "GET", "/v1/cameras/cam-1/timeline?start=2025-03-02T00:00:00Z&end=2025-03-01T00:00:00Z", "", 400, "end: must be after start"},
		{"timeline over 31 days", "GET", "/v1/cameras/cam-1/timeline?start=2025-01-01T00:00:00Z&end=2025-03-01T00:00:00Z", "", 400, "end: range must not exceed 31 days"},
		{"timeline unknown camera", "GET", "/v1/cameras/nope/timeline?start=2025-02-01T00:00:00Z&end=2025-03-01T00:00:00Z", "", 404, `camera "nope": not found`},
		{"segments bad token", "GET", "/v1/cameras/cam-1/segments?start=2025-02-01T00:00:00Z&end=2025-03-01T00:00:00Z&page_token=" + encodePageToken("segments/cam-1", "zz"), "", 400, "page_token"},
		{"health unknown camera", "GET", "/v1/cameras/nope/health", "", 404, "not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, m := c.do(tc.method, tc.path, tc.body)
			msg, _ := m["message"].(string)
			if code != tc.status || !strings.Contains(msg, tc.msg) {
				t.Errorf("got %d %q, want %d with %q", code, msg, tc.status, tc.msg)
			}
		})
	}
	if cat.writes != before || len(cat.cams) != 1 || len(cat.tenants) != 1 {
		t.Errorf("bad requests changed the catalog: %d writes, %d cameras, %d tenants", cat.writes-before, len(cat.cams), len(cat.tenants))
	}
	if got := cat.cams["cam-1"]; got.Tenant != beforeCam.Tenant || got.Password != "" {
		t.Errorf("cam-1 changed: %+v", got)
	}
}

func TestGRPCErrorsCarryFieldViolations(t *testing.T) {
	cat := newFakeCatalog()
	g := startGateway(t, cat, &fakeRecordings{}, nil)
	conn, err := grpc.NewClient("passthrough:///"+g.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = vigiev1.NewTenantServiceClient(conn).CreateTenant(context.Background(),
		&vigiev1.CreateTenantRequest{Tenant: &vigiev1.Tenant{Id: "x", Name: "X", RetentionDays: 31}})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("code %v: %v", st.Code(), err)
	}
	found := false
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				found = found || v.GetField() == "tenant.retention_days"
			}
		}
	}
	if !found {
		t.Errorf("no BadRequest field violation naming tenant.retention_days in %v", st.Details())
	}
}

// authFunc and friends adapt functions to the hooks.
type authFunc func(ctx context.Context, authorization string) (Caller, error)

func (f authFunc) Authenticate(ctx context.Context, a string) (Caller, error) { return f(ctx, a) }

type authzFunc func(ctx context.Context, c Caller, method string, req any) error

func (f authzFunc) Authorize(ctx context.Context, c Caller, m string, r any) error {
	return f(ctx, c, m, r)
}

type auditLog struct{ recs []AuditRecord }

func (a *auditLog) Audit(ctx context.Context, r AuditRecord) { a.recs = append(a.recs, r) }

func TestAuthHooksApplyToGRPCAndREST(t *testing.T) {
	cat := newFakeCatalog()
	cat.tenants["lyon"] = model.Tenant{ID: "lyon", Name: "Lyon", RetentionDays: 30}
	audit := &auditLog{}
	var seen []string
	g := startGateway(t, cat, &fakeRecordings{}, func(c *Config) {
		c.Authenticator = authFunc(func(ctx context.Context, a string) (Caller, error) {
			if a != "Bearer good" {
				return Caller{}, errors.New("bad token")
			}
			return Caller{Name: "alice", Roles: []string{RoleTenantOp}, Tenant: "lyon"}, nil
		})
		c.Authorizer = authzFunc(func(ctx context.Context, caller Caller, method string, req any) error {
			cc, _ := CallerFrom(ctx)
			seen = append(seen, cc.Name+" "+method)
			if strings.HasSuffix(method, "/DeleteTenant") {
				return errors.New("tenant operators cannot delete tenants")
			}
			return nil
		})
		c.Auditor = audit
	})
	get := func(path, token string) int {
		req, _ := http.NewRequest("GET", "http://"+g.HTTPAddr()+path, nil)
		if token != "" {
			req.Header.Set("Authorization", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("/v1/tenants/lyon", ""); code != 401 {
		t.Errorf("no token: %d, want 401", code)
	}
	if code := get("/v1/tenants/lyon", "Bearer good"); code != 200 {
		t.Errorf("good token: %d, want 200", code)
	}
	if code := get("/media/v1/cameras/x/stream.mp4?start=0&duration=1s", "Bearer bad"); code != 401 {
		t.Errorf("media with bad token: %d, want 401", code)
	}
	conn, _ := grpc.NewClient("passthrough:///"+g.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer good")
	_, err := vigiev1.NewTenantServiceClient(conn).DeleteTenant(ctx, &vigiev1.DeleteTenantRequest{Id: "lyon"})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("delete by a tenant operator: %v, want PermissionDenied", err)
	}
	if _, ok := cat.tenants["lyon"]; !ok {
		t.Error("denied delete removed the tenant")
	}
	if len(seen) != 2 || seen[0] != "alice /vigie.v1.TenantService/GetTenant" {
		t.Errorf("authorizer saw %v", seen)
	}
	if len(audit.recs) != 4 || audit.recs[0].Code != codes.Unauthenticated || audit.recs[3].Code != codes.PermissionDenied || audit.recs[1].Caller.Name != "alice" {
		t.Errorf("audit records: %+v", audit.recs)
	}
}

func TestRESTNodeDrainActivateDecommission(t *testing.T) {
	nodes := fakeCluster{{ID: "n1", Role: "leader", State: "active", Cameras: 2}, {ID: "n2", Role: "voter", State: "active"}}
	g := startGateway(t, newFakeCatalog(), &fakeRecordings{}, func(c *Config) { c.Cluster = nodes })
	c := restClient{t, "http://" + g.HTTPAddr()}
	if n := c.ok("POST", "/v1/cluster/nodes/n1:drain", ""); n["state"] != model.NodeDraining {
		t.Errorf("drain: %v", n)
	}
	if code, body := c.do("POST", "/v1/cluster/nodes/n1:decommission", ""); code != 400 || body["code"] != 9.0 || !strings.Contains(fmt.Sprint(body["message"]), "drain it first") {
		t.Errorf("decommission of a node that records cameras: %d %v; want 400 (FailedPrecondition) saying to drain it first", code, body)
	}
	if n := c.ok("POST", "/v1/cluster/nodes/n2:decommission", ""); n["state"] != model.NodeDecommissioned {
		t.Errorf("decommission: %v", n)
	}
	if n := c.ok("POST", "/v1/cluster/nodes/n1:activate", ""); n["state"] != model.NodeActive {
		t.Errorf("activate: %v", n)
	}
	if code, _ := c.do("POST", "/v1/cluster/nodes/n9:drain", ""); code != 404 {
		t.Errorf("drain of an unknown node: %d, want 404", code)
	}
	if code, body := c.do("POST", "/v1/cluster/nodes/Bad%20Id:drain", ""); code != 400 || !strings.Contains(fmt.Sprint(body["message"]), "id") {
		t.Errorf("drain with a bad id: %d %v, want 400 naming id", code, body)
	}
}

func TestRESTHolds(t *testing.T) {
	cat := newFakeCatalog()
	holds := &fakeHolds{}
	g := startGateway(t, cat, &fakeRecordings{}, func(c *Config) { c.Holds = holds })
	c := restClient{t, "http://" + g.HTTPAddr()}
	c.ok("POST", "/v1/tenants", `{"id":"lyon","name":"Lyon"}`)
	c.ok("POST", "/v1/cameras", `{"id":"cam-1","tenant":"lyon","url":"rtsp://10.0.0.1/s"}`)

	for _, tc := range []struct{ body, want string }{
		{`{"camera_ids":["cam-1"],"start":"2025-03-01T10:00:00Z","end":"2025-03-01T11:00:00Z"}`, "hold.case_ref: is required"},
		{`{"camera_ids":[],"case_ref":"PV 2025/123","start":"2025-03-01T10:00:00Z","end":"2025-03-01T11:00:00Z"}`, "hold.cameras: at least one camera"},
		{`{"camera_ids":["cam-1"],"case_ref":"PV 2025/123","start":"2025-03-01T11:00:00Z","end":"2025-03-01T10:00:00Z"}`, "hold.end: must be after start"},
		{`{"camera_ids":["cam-9"],"case_ref":"PV 2025/123","start":"2025-03-01T10:00:00Z","end":"2025-03-01T11:00:00Z"}`, "cam-9"},
		{`{"camera_ids":["cam-1"],"case_ref":"PV","start":"2025-03-01T10:00:00Z","end":"2025-03-01T11:00:00Z","created_by":"me"}`, "set by the server"},
	} {
		code, body := c.do("POST", "/v1/holds", tc.body)
		if code/100 != 4 || !strings.Contains(fmt.Sprint(body["message"]), tc.want) {
			t.Errorf("create hold %s: %d %v; want 4xx naming %q", tc.body, code, body, tc.want)
		}
	}
	if len(holds.list) != 0 {
		t.Fatalf("a refused hold was stored: %+v", holds.list)
	}
	h := c.ok("POST", "/v1/holds", `{"camera_ids":["cam-1"],"case_ref":"PV 2025/123","start":"2025-03-01T10:00:00Z","end":"2025-03-01T11:00:00Z"}`)
	if h["id"] == "" || h["created_by"] != LocalAdmin.Name || h["active"] != true {
		t.Errorf("created hold: %v", h)
	}
	if l := c.ok("GET", "/v1/holds?camera_id=cam-1", ""); len(l["holds"].([]any)) != 1 {
		t.Errorf("list: %v", l)
	}
	r := c.ok("POST", "/v1/holds/"+h["id"].(string)+":release", "")
	if r["active"] != false || r["released_by"] != LocalAdmin.Name || r["release_time"] == nil {
		t.Errorf("released hold: %v", r)
	}
	if l := c.ok("GET", "/v1/holds", ""); len(l["holds"].([]any)) != 0 {
		t.Errorf("a released hold is listed as active: %v", l)
	}
	if l := c.ok("GET", "/v1/holds?include_released=true", ""); len(l["holds"].([]any)) != 1 {
		t.Errorf("include_released: %v", l)
	}
}
