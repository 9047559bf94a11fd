package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// ctl is `vigie ctl`: a client of a node's REST API.
type ctl struct {
	server string
	asJSON bool
	out    io.Writer
	http   *http.Client
}

type ctlCommand struct {
	usage   string
	summary string
	run     func(c *ctl, fs flagSet, args []string) error
}

// flagSet is what ctl subcommands declare their flags on.
type flagSet = *flagSetT

const ctlDefaultServer = "http://127.0.0.1:8080"

var ctlCommands = map[string]ctlCommand{
	"tenant create":     {"tenant create ID --name NAME [--retention-days N] [--camera-quota N]", "create a tenant (a commune)", ctlTenantCreate},
	"tenant list":       {"tenant list", "list tenants", ctlTenantList},
	"tenant get":        {"tenant get ID", "show a tenant", ctlGet("tenants")},
	"tenant delete":     {"tenant delete ID", "delete a tenant that has no cameras", ctlDelete("tenants")},
	"camera create":     {"camera create ID --tenant T (--url rtsp://… | --push) [--username U --password P] [--transport tcp|udp] [--retention-days N] [--name N]", "register a camera", ctlCameraCreate},
	"camera list":       {"camera list [--tenant T]", "list cameras", ctlCameraList},
	"camera get":        {"camera get ID", "show a camera", ctlGet("cameras")},
	"camera delete":     {"camera delete ID", "delete a camera (its footage stays until retention)", ctlDelete("cameras")},
	"camera import":     {"camera import FILE.csv|FILE.json", "register many cameras at once, all or nothing", ctlCameraImport},
	"camera health":     {"camera health [ID]", "health of one camera, or of all", ctlCameraHealth},
	"timeline":          {"timeline CAMERA [--last 1h | --start T --end T]", "recorded spans and gaps with their cause", ctlTimeline},
	"export":            {"export CAMERA --start T (--end T | --duration D) [-o FILE]", "download an MP4 of a range, with progress", ctlExport},
	"cluster status":    {"cluster status", "nodes, roles, cameras, disks, scrub; what is moving and what is being repaired", ctlClusterStatus},
	"node drain":        {"node drain ID", "move every camera off a node (make-before-break), before removing it", ctlNodeAction("drain")},
	"node activate":     {"node activate ID", "let a drained node take cameras again", ctlNodeAction("activate")},
	"node decommission": {"node decommission ID", "remove a drained node that records no camera from the cluster", ctlNodeAction("decommission")},
}

func runCtl(args []string) error {
	c := &ctl{out: os.Stdout, http: &http.Client{}}
	c.server = os.Getenv("VIGIE_SERVER")
	if c.server == "" {
		c.server = ctlDefaultServer
	}
	flags, pos := splitFlags(args)
	var name string
	var cmd ctlCommand
	for n, cc := range ctlCommands {
		words := strings.Fields(n)
		if len(pos) >= len(words) && strings.Join(pos[:len(words)], " ") == n && len(words) > len(strings.Fields(name)) {
			name, cmd = n, cc
		}
	}
	if name == "" {
		ctlUsage(os.Stderr)
		if len(pos) == 0 {
			if hasHelp(flags) {
				return nil
			}
			return errors.New("ctl: name a command")
		}
		return fmt.Errorf("ctl: unknown command %q", strings.Join(pos, " "))
	}
	fs := newCtlFlags(name, cmd.usage)
	fs.StringVar(&c.server, "server", c.server, "node to talk to (env VIGIE_SERVER)")
	fs.BoolVar(&c.asJSON, "json", false, "print the API's JSON instead of a table")
	return cmd.run(c, fs, append(flags, pos[len(strings.Fields(name)):]...))
}

func hasHelp(flags []string) bool {
	for _, f := range flags {
		if f == "-h" || f == "--help" || f == "-help" {
			return true
		}
	}
	return false
}

func ctlUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: vigie ctl <command> [flags]   (flags: --server URL, --json)\n\nCommands:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, n := range sortedKeys(ctlCommands) {
		fmt.Fprintf(tw, "  %s\t%s\n", ctlCommands[n].usage, ctlCommands[n].summary)
	}
	tw.Flush()
}

// call sends a request to the API and decodes the JSON answer into out (when not nil). An
// error answer becomes an error with the API's message, which names the field at fault.
func (c *ctl) call(method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, strings.TrimRight(c.server, "/")+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach %s: %w (is a node running? set --server or VIGIE_SERVER)", c.server, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return apiError(resp.StatusCode, data)
	}
	if c.asJSON && out != nil {
		var buf bytes.Buffer
		if json.Indent(&buf, data, "", "  ") == nil {
			fmt.Fprintln(c.out, buf.String())
			return errPrinted
		}
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}

// errPrinted tells a command that --json already printed the answer.
var errPrinted = errors.New("printed")

func apiError(status int, data []byte) error {
	var e struct {
		Message string `json:"message"`
		Error   string `json:"error"`
	}
	_ = json.Unmarshal(data, &e)
	msg := e.Message
	if msg == "" {
		msg = e.Error
	}
	if msg == "" {
		msg = strings.TrimSpace(string(data))
	}
	return fmt.Errorf("%s: %s", http.StatusText(status), msg)
}

func done(err error) error {
	if errors.Is(err, errPrinted) {
		return nil
	}
	return err
}

func oneArg(fs flagSet, args []string, what string) (string, error) {
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return "", fmt.Errorf("want exactly one %s", what)
	}
	return fs.Arg(0), nil
}

func ctlGet(collection string) func(*ctl, flagSet, []string) error {
	return func(c *ctl, fs flagSet, args []string) error {
		id, err := oneArg(fs, args, "id")
		if err != nil {
			return err
		}
		var obj map[string]any
		if err := c.call("GET", "/v1/"+collection+"/"+url.PathEscape(id), nil, &obj); err != nil {
			return done(err)
		}
		printObject(c.out, obj)
		return nil
	}
}

func ctlDelete(collection string) func(*ctl, flagSet, []string) error {
	return func(c *ctl, fs flagSet, args []string) error {
		id, err := oneArg(fs, args, "id")
		if err != nil {
			return err
		}
		if err := c.call("DELETE", "/v1/"+collection+"/"+url.PathEscape(id), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(c.out, "deleted %s %s\n", strings.TrimSuffix(collection, "s"), id)
		return nil
	}
}

func ctlTenantCreate(c *ctl, fs flagSet, args []string) error {
	name := fs.String("name", "", "display name (required)")
	retention := fs.Int("retention-days", 0, "default retention of the tenant's cameras (1-30; default 30)")
	quota := fs.Int("camera-quota", 0, "most cameras the tenant may register (0: no limit)")
	id, err := oneArg(fs, args, "tenant id")
	if err != nil {
		return err
	}
	body := map[string]any{"id": id, "name": *name, "retention_days": *retention, "camera_quota": *quota}
	var obj map[string]any
	if err := c.call("POST", "/v1/tenants", body, &obj); err != nil {
		return done(err)
	}
	fmt.Fprintf(c.out, "created tenant %s\n", id)
	return nil
}

func ctlTenantList(c *ctl, fs flagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	rows, err := c.list("/v1/tenants", nil, "tenants")
	if err != nil {
		return done(err)
	}
	printTable(c.out, rows, "id", "name", "retention_days", "camera_quota")
	return nil
}

func ctlCameraCreate(c *ctl, fs flagSet, args []string) error {
	tenant := fs.String("tenant", "", "tenant (commune) the camera belongs to (required)")
	u := fs.String("url", "", "rtsp:// address to pull from")
	push := fs.Bool("push", false, "the camera publishes to the node (rtsp://node:8554/ID) instead of being pulled")
	user := fs.String("username", "", "RTSP username")
	pass := fs.String("password", "", "RTSP password (stored encrypted)")
	transport := fs.String("transport", "", "tcp (default) or udp")
	retention := fs.Int("retention-days", 0, "days of footage kept (default: the tenant's)")
	name := fs.String("name", "", "display name")
	location := fs.String("location", "", "where the camera is")
	id, err := oneArg(fs, args, "camera id")
	if err != nil {
		return err
	}
	cam := map[string]any{"id": id, "tenant": *tenant, "url": *u, "username": *user, "password": *pass,
		"transport": *transport, "retention_days": *retention, "name": *name, "location": *location}
	if *push {
		cam["ingest"] = "push"
	}
	var obj map[string]any
	if err := c.call("POST", "/v1/cameras", cam, &obj); err != nil {
		return done(err)
	}
	fmt.Fprintf(c.out, "created camera %s (%s)\n", id, obj["ingest"])
	return nil
}

func ctlCameraList(c *ctl, fs flagSet, args []string) error {
	tenant := fs.String("tenant", "", "only this tenant's cameras")
	if err := fs.Parse(args); err != nil {
		return err
	}
	q := url.Values{}
	if *tenant != "" {
		q.Set("tenant", *tenant)
	}
	rows, err := c.list("/v1/cameras", q, "cameras")
	if err != nil {
		return done(err)
	}
	printTable(c.out, rows, "id", "tenant", "name", "ingest", "recording", "url")
	return nil
}

func ctlCameraImport(c *ctl, fs flagSet, args []string) error {
	path, err := oneArg(fs, args, "file")
	if err != nil {
		return err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var body map[string]any
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		body = map[string]any{"csv": string(data)}
	case ".json":
		var cams []any
		if err := json.Unmarshal(data, &cams); err != nil {
			return fmt.Errorf("%s: want a JSON list of cameras: %w", path, err)
		}
		body = map[string]any{"cameras": cams}
	default:
		return fmt.Errorf("%s: want a .csv or .json file", path)
	}
	var resp struct {
		Cameras []map[string]any `json:"cameras"`
	}
	if err := c.call("POST", "/v1/cameras:import", body, &resp); err != nil {
		return done(err)
	}
	fmt.Fprintf(c.out, "imported %d cameras\n", len(resp.Cameras))
	return nil
}

func ctlCameraHealth(c *ctl, fs flagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	cols := []string{"camera_id", "state", "codec", "fps", "bitrate_bps", "keyframe_interval", "packets_lost", "reconnects", "last_error"}
	if fs.NArg() == 1 {
		var h map[string]any
		if err := c.call("GET", "/v1/cameras/"+url.PathEscape(fs.Arg(0))+"/health", nil, &h); err != nil {
			return done(err)
		}
		printTable(c.out, []map[string]any{h}, cols...)
		return nil
	}
	rows, err := c.list("/v1/cameras:health", nil, "health")
	if err != nil {
		return done(err)
	}
	printTable(c.out, rows, cols...)
	return nil
}

func ctlTimeline(c *ctl, fs flagSet, args []string) error {
	last := fs.Duration("last", time.Hour, "the range ending now")
	start := fs.String("start", "", "range start (RFC3339, e.g. 2026-11-27T10:00:00Z)")
	end := fs.String("end", "", "range end (RFC3339; default now)")
	cam, err := oneArg(fs, args, "camera id")
	if err != nil {
		return err
	}
	from, to, err := parseRange(*start, *end, 0, *last)
	if err != nil {
		return err
	}
	q := url.Values{"start": {from.Format(time.RFC3339Nano)}, "end": {to.Format(time.RFC3339Nano)}}
	var tl struct {
		Spans []map[string]any `json:"spans"`
		Gaps  []map[string]any `json:"gaps"`
	}
	if err := c.call("GET", "/v1/cameras/"+url.PathEscape(cam)+"/timeline?"+q.Encode(), nil, &tl); err != nil {
		return done(err)
	}
	type row struct {
		start, end time.Time
		kind, note string
	}
	var rows []row
	for _, s := range tl.Spans {
		rows = append(rows, row{ts(s["start"]), ts(s["end"]), "recorded", fmt.Sprintf("%s", humanBytes(num(s["bytes"])))})
	}
	for _, g := range tl.Gaps {
		note := fmt.Sprint(g["cause"])
		if d, _ := g["detail"].(string); d != "" {
			note += ": " + d
		}
		rows = append(rows, row{ts(g["start"]), ts(g["end"]), "gap", note})
	}
	sortRows(rows, func(a, b row) bool { return a.start.Before(b.start) })
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "START\tEND\tLENGTH\tKIND\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.start.Local().Format("2006-01-02 15:04:05"), r.end.Local().Format("15:04:05"),
			r.end.Sub(r.start).Round(time.Second), r.kind, r.note)
	}
	return tw.Flush()
}

func ctlClusterStatus(c *ctl, fs flagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	var st clusterStatus
	if err := c.call("GET", "/v1/cluster/status", nil, &st); err != nil {
		return done(err)
	}
	printClusterStatus(c.out, st, time.Now())
	return nil
}

func ctlNodeAction(action string) func(*ctl, flagSet, []string) error {
	return func(c *ctl, fs flagSet, args []string) error {
		id, err := oneArg(fs, args, "node id")
		if err != nil {
			return err
		}
		var n map[string]any
		if err := c.call("POST", "/v1/cluster/nodes/"+url.PathEscape(id)+":"+action, nil, &n); err != nil {
			return done(err)
		}
		fmt.Fprintf(c.out, "node %s: %s (%s cameras)\n", id, cell(n["state"]), cell(n["cameras"]))
		if action == "drain" {
			fmt.Fprintln(c.out, "its cameras move one by one as their new owners start recording; watch 'vigie ctl cluster status', then 'vigie ctl node decommission "+id+"'")
		}
		return nil
	}
}

// list fetches every page of a paginated list.
func (c *ctl) list(path string, q url.Values, field string) ([]map[string]any, error) {
	if q == nil {
		q = url.Values{}
	}
	var all []map[string]any
	for {
		var page map[string]json.RawMessage
		if err := c.call("GET", path+"?"+q.Encode(), nil, &page); err != nil {
			return nil, err
		}
		var items []map[string]any
		if raw, ok := page[field]; ok {
			if err := json.Unmarshal(raw, &items); err != nil {
				return nil, err
			}
		}
		all = append(all, items...)
		var next string
		if raw, ok := page["next_page_token"]; ok {
			_ = json.Unmarshal(raw, &next)
		}
		if next == "" {
			return all, nil
		}
		q.Set("page_token", next)
	}
}

// parseRange turns --start/--end/--duration/--last into a time range.
func parseRange(start, end string, duration, last time.Duration) (time.Time, time.Time, error) {
	now := time.Now()
	var from, to time.Time
	var err error
	if end != "" {
		if to, err = parseTime(end); err != nil {
			return from, to, fmt.Errorf("--end: %w", err)
		}
	}
	if start != "" {
		if from, err = parseTime(start); err != nil {
			return from, to, fmt.Errorf("--start: %w", err)
		}
	}
	switch {
	case start == "" && end == "":
		to, from = now, now.Add(-last)
	case start == "":
		from = to.Add(-last)
	case end == "" && duration > 0:
		to = from.Add(duration)
	case end == "":
		to = now
	}
	if !from.Before(to) {
		return from, to, fmt.Errorf("the range is empty: start %s is not before end %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	return from, to, nil
}

// parseTime accepts RFC3339, or a time of day today ("14:05", "14:05:30").
func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"15:04:05", "15:04"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			y, m, d := time.Now().Date()
			return time.Date(y, m, d, t.Hour(), t.Minute(), t.Second(), 0, time.Local), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time: use RFC3339 (2026-11-27T14:05:00Z) or a time of day today (14:05)", s)
}
