package node

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	"go.yaml.in/yaml/v3"

	"github.com/vigie-vms/vigie/cluster"
	"github.com/vigie-vms/vigie/model"
	"github.com/vigie-vms/vigie/node/protect"
	"github.com/vigie-vms/vigie/storage"
	"github.com/vigie-vms/vigie/storage/erasure"
)

// Config is everything a node needs to run. Its zero values are not meaningful: start from
// DefaultConfig, which is the embedded default (a single node on 127.0.0.1 with its data
// under ./vigie-data), then apply a file, the environment and flags with Load.
//
// Every field has a yaml key (used in files), an environment variable (VIGIE_ + the key in
// upper case, dots as underscores) and a flag (--key with dashes).
type Config struct {
	NodeID  string `yaml:"node_id" help:"name of this node, unique in the cluster"`
	DataDir string `yaml:"data_dir" help:"directory for segments, the catalog and the Raft log"`

	HTTPAddr string `yaml:"http_addr" help:"REST API, media endpoints, OpenAPI document and metrics"`
	GRPCAddr string `yaml:"grpc_addr" help:"gRPC API"`
	RTSPAddr string `yaml:"rtsp_addr" help:"RTSP server for cameras and encoders that push (ANNOUNCE/RECORD); empty disables it"`
	RaftAddr string `yaml:"raft_addr" help:"cluster consensus (Raft) address"`
	// GossipAddr is the membership (memberlist) address; empty runs a node on its own.
	GossipAddr string `yaml:"gossip_addr" help:"cluster membership (gossip, UDP and TCP) address; empty: a single node"`
	// Seeds are gossip addresses of nodes to join; a node with no seeds starts a cluster.
	Seeds []string `yaml:"seeds" help:"comma-separated gossip addresses of nodes to join (empty: start a new cluster)"`
	Zone  string   `yaml:"zone" help:"failure domain (zone or rack) of this node: footage and voters are spread across zones"`
	// SecretKeyFile holds the 32-byte key that encrypts camera credentials at rest. Every
	// node of a cluster needs the same key: copy the first node's file to the others.
	SecretKeyFile string `yaml:"secret_key_file" help:"key encrypting camera credentials at rest (default <data_dir>/secret.key, created on first start); the same file on every node of a cluster"`

	SegmentMaxBytes int64         `yaml:"segment_max_bytes" help:"a segment is sealed when it reaches this size"`
	SegmentMaxAge   time.Duration `yaml:"segment_max_age" help:"a segment is sealed when it is this old"`
	FragmentMax     time.Duration `yaml:"fragment_max" help:"longest fMP4 fragment; a fragment also ends at every keyframe"`

	RetentionCapDays  int           `yaml:"retention_cap_days" help:"no camera keeps footage longer than this, whatever its setting (legal maximum 30)"`
	RetentionInterval time.Duration `yaml:"retention_interval" help:"how often expired segments are deleted"`

	// Footage protection (DESIGN.md write path 6, read path, repair).
	StorageMinFreeBytes int64         `yaml:"storage_min_free_bytes" help:"free space kept for recording: below it the node takes no new shards and its cameras move to nodes with space"`
	StripeCodes         []string      `yaml:"stripe_codes" help:"comma-separated per-class erasure codes overriding the cluster-size ladder, e.g. critical=4+2 (used when the cluster has k+m nodes)"`
	StripeInterval      time.Duration `yaml:"stripe_interval" help:"how often sealed segments are grouped into erasure-coded stripes"`
	StripeMinAge        time.Duration `yaml:"stripe_min_age" help:"a sealed segment is striped once it ended this long ago"`
	StripeMaxWait       time.Duration `yaml:"stripe_max_wait" help:"when fewer than k segments are waiting, the oldest is striped with fewer data shards after this long"`
	OrphanGrace         time.Duration `yaml:"orphan_grace" help:"a shard no committed stripe names is deleted after this long"`
	RepairGrace         time.Duration `yaml:"repair_grace" help:"a node dead this long has its shards rebuilt on other nodes"`
	RepairRateBytes     int64         `yaml:"repair_rate_bytes" help:"bytes per second one node writes when rebuilding shards (0: unlimited)"`
	ScrubRateBytes      int64         `yaml:"scrub_rate_bytes" help:"bytes per second the scrubber reads to re-verify checksums (0: unlimited)"`
	ScrubPause          time.Duration `yaml:"scrub_pause" help:"pause between two scrub passes over the node's shards"`

	LogLevel  string `yaml:"log_level" help:"debug, info, warn or error"`
	LogFormat string `yaml:"log_format" help:"text or json"`

	// Pprof serves Go's profiler under /debug/pprof/ on the HTTP listener.
	Pprof bool `yaml:"pprof" help:"serve the Go profiler under /debug/pprof/ on http_addr"`

	// NoSync disables fsync of footage and catalog (benchmarks and tests only: a crash then
	// loses acknowledged footage).
	NoSync bool `yaml:"no_sync" help:"disable fsync (tests and benchmarks only)"`

	// Injected parts, for running whole clusters inside one test process; nil in
	// production, where the addresses above are used.
	Inject Inject `yaml:"-"`
}

// Inject replaces the node's network transports (tests run many nodes in one process).
type Inject struct {
	RaftTransport   raft.Transport
	MemberTransport memberlist.Transport
	Forwarder       cluster.Forwarder
	// SecretKey replaces the key file.
	SecretKey []byte
	// Cluster adjusts the cluster configuration (short timeouts in tests).
	Cluster func(*cluster.Config)
	// Protect adjusts the striping, repair and scrub settings (short intervals in tests).
	Protect func(*protect.Config)
}

// DefaultConfig is the embedded default: one node, everything on 127.0.0.1.
func DefaultConfig() Config {
	pdef := protect.DefaultConfig()
	return Config{
		NodeID:              "node-1",
		DataDir:             "./vigie-data",
		HTTPAddr:            "127.0.0.1:8080",
		GRPCAddr:            "127.0.0.1:9090",
		RTSPAddr:            "127.0.0.1:8554",
		RaftAddr:            "127.0.0.1:7000",
		SegmentMaxBytes:     32 << 20,
		SegmentMaxAge:       10 * time.Minute,
		FragmentMax:         time.Second,
		RetentionCapDays:    model.MaxRetentionDays,
		RetentionInterval:   time.Minute,
		StorageMinFreeBytes: storage.DefaultMinFreeBytes,
		StripeInterval:      pdef.StripeInterval,
		StripeMinAge:        pdef.MinSegmentAge,
		StripeMaxWait:       pdef.MaxStripeWait,
		OrphanGrace:         pdef.OrphanGrace,
		RepairGrace:         cluster.DefaultConfig().RepairGrace,
		RepairRateBytes:     pdef.RepairRate,
		ScrubRateBytes:      pdef.ScrubRate,
		ScrubPause:          pdef.ScrubPause,
		LogLevel:            "info",
		LogFormat:           "text",
	}
}

// Validate reports every problem of the configuration at once, each naming its key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config %s: %s", key, fmt.Sprintf(format, args...)))
	}
	if err := model.ValidateID("node_id", c.NodeID); err != nil {
		bad("node_id", "%v", err.(*model.FieldError).Reason)
	}
	if c.DataDir == "" {
		bad("data_dir", "is required")
	}
	addrs := map[string]string{"http_addr": c.HTTPAddr, "grpc_addr": c.GRPCAddr, "raft_addr": c.RaftAddr, "rtsp_addr": c.RTSPAddr, "gossip_addr": c.GossipAddr}
	seen := map[string]string{}
	for _, key := range []string{"http_addr", "grpc_addr", "raft_addr", "rtsp_addr", "gossip_addr"} {
		addr := addrs[key]
		if addr == "" && (key == "rtsp_addr" || key == "gossip_addr") {
			continue
		}
		if _, port, err := net.SplitHostPort(addr); err != nil {
			bad(key, "%q is not host:port (%v)", addr, err)
			continue
		} else if port != "0" {
			if other, dup := seen[addr]; dup {
				bad(key, "%q is also used by %s", addr, other)
			}
			seen[addr] = key
		}
	}
	for i, seed := range c.Seeds {
		if _, _, err := net.SplitHostPort(seed); err != nil {
			bad("seeds", "entry %d %q is not host:port (%v)", i+1, seed, err)
		}
	}
	if len(c.Seeds) > 0 && c.GossipAddr == "" && c.Inject.MemberTransport == nil {
		bad("gossip_addr", "is required to join seeds %v", c.Seeds)
	}
	if c.SegmentMaxBytes < 1<<20 {
		bad("segment_max_bytes", "must be at least 1 MiB, got %d", c.SegmentMaxBytes)
	}
	if c.SegmentMaxAge < 10*time.Second {
		bad("segment_max_age", "must be at least 10s, got %s", c.SegmentMaxAge)
	}
	if c.FragmentMax < 100*time.Millisecond || c.FragmentMax > 10*time.Second {
		bad("fragment_max", "must be between 100ms and 10s, got %s", c.FragmentMax)
	}
	if c.RetentionCapDays < 1 || c.RetentionCapDays > model.MaxRetentionDays {
		bad("retention_cap_days", "must be between 1 and %d (legal maximum), got %d", model.MaxRetentionDays, c.RetentionCapDays)
	}
	if c.RetentionInterval < time.Second {
		bad("retention_interval", "must be at least 1s, got %s", c.RetentionInterval)
	}
	if _, err := c.stripeCodes(); err != nil {
		bad("stripe_codes", "%v", err)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"stripe_interval", c.StripeInterval}, {"stripe_min_age", c.StripeMinAge}, {"scrub_pause", c.ScrubPause}} {
		if d.v <= 0 {
			bad(d.key, "must be positive, got %s", d.v)
		}
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"stripe_max_wait", c.StripeMaxWait}, {"repair_grace", c.RepairGrace}} {
		if d.v < 0 {
			bad(d.key, "must not be negative, got %s", d.v)
		}
	}
	if c.OrphanGrace < time.Second {
		bad("orphan_grace", "must be at least 1s (a stripe being shipped must not look orphaned), got %s", c.OrphanGrace)
	}
	if c.StorageMinFreeBytes < 0 {
		bad("storage_min_free_bytes", "must not be negative, got %d", c.StorageMinFreeBytes)
	}
	if c.RepairRateBytes < 0 {
		bad("repair_rate_bytes", "must not be negative, got %d", c.RepairRateBytes)
	}
	if c.ScrubRateBytes < 0 {
		bad("scrub_rate_bytes", "must not be negative, got %d", c.ScrubRateBytes)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		bad("log_level", "%v", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log_format", "must be text or json, got %q", c.LogFormat)
	}
	return errors.Join(errs...)
}

// stripeCodes parses StripeCodes ("class=k+m" entries) into per-class overrides.
func (c Config) stripeCodes() (erasure.Overrides, error) {
	out := erasure.Overrides{}
	for _, e := range c.StripeCodes {
		class, code, ok := strings.Cut(e, "=")
		class = strings.TrimSpace(class)
		var k, m int
		if ok {
			if _, err := fmt.Sscanf(strings.TrimSpace(code), "%d+%d", &k, &m); err != nil {
				ok = false
			}
		}
		if !ok {
			return nil, fmt.Errorf("entry %q is not class=k+m (e.g. critical=4+2)", e)
		}
		rc := model.RedundancyClass(class)
		if rc != model.RedundancyStandard && rc != model.RedundancyCritical {
			return nil, fmt.Errorf("entry %q: unknown redundancy class %q (standard or critical)", e, class)
		}
		if _, dup := out[rc]; dup {
			return nil, fmt.Errorf("entry %q: class %s is given twice", e, class)
		}
		ec := erasure.Code{K: k, M: m}
		if err := ec.Validate(); err != nil {
			return nil, fmt.Errorf("entry %q: %v", e, err)
		}
		out[rc] = ec
	}
	return out, nil
}

// Logger builds the node's logger from LogLevel and LogFormat.
func (c Config) Logger() *slog.Logger {
	level, _ := parseLevel(c.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("must be debug, info, warn or error, got %q", s)
	}
	return l, nil
}

// LoadFile applies a YAML file over c. Unknown keys are errors (a misspelt key would
// otherwise be silently ignored).
func (c *Config) LoadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) { // io.EOF: empty file
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// fields lists the configuration's settable fields with their yaml key.
func (c *Config) fields() []configField {
	v := reflect.ValueOf(c).Elem()
	t := v.Type()
	var out []configField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := f.Tag.Get("yaml")
		if key == "" || key == "-" {
			continue
		}
		out = append(out, configField{key: key, help: f.Tag.Get("help"), value: v.Field(i)})
	}
	return out
}

type configField struct {
	key   string
	help  string
	value reflect.Value
}

// EnvName is the environment variable that sets a key.
func EnvName(key string) string { return "VIGIE_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_")) }

// FlagName is the command-line flag that sets a key.
func FlagName(key string) string { return strings.ReplaceAll(key, "_", "-") }

// LoadEnv applies VIGIE_* variables over c (lookup is os.LookupEnv outside tests).
func (c *Config) LoadEnv(lookup func(string) (string, bool)) error {
	var errs []error
	for _, f := range c.fields() {
		s, ok := lookup(EnvName(f.key))
		if !ok {
			continue
		}
		if err := setValue(f.value, s); err != nil {
			errs = append(errs, fmt.Errorf("environment %s: %w", EnvName(f.key), err))
		}
	}
	return errors.Join(errs...)
}

// RegisterFlags declares one flag per key on fs; values given on the command line are
// applied over c when fs is parsed.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	for _, f := range c.fields() {
		fs.Var(flagValue{f.value}, FlagName(f.key), f.help)
	}
}

type flagValue struct{ v reflect.Value }

func (f flagValue) String() string {
	if !f.v.IsValid() {
		return ""
	}
	if list, ok := f.v.Interface().([]string); ok {
		return strings.Join(list, ",")
	}
	return fmt.Sprint(f.v.Interface())
}

func (f flagValue) Set(s string) error { return setValue(f.v, s) }

func (f flagValue) IsBoolFlag() bool { return f.v.IsValid() && f.v.Kind() == reflect.Bool }

func setValue(v reflect.Value, s string) error {
	switch v.Interface().(type) {
	case time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration (e.g. 10m, 1s)", s)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.Slice:
		var list []string
		for _, item := range strings.Split(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				list = append(list, item)
			}
		}
		v.Set(reflect.ValueOf(list))
	case reflect.String:
		v.SetString(s)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		v.SetInt(n)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		v.SetBool(b)
	default:
		return fmt.Errorf("unsupported setting type %s", v.Type())
	}
	return nil
}

// Load builds a configuration the documented way: defaults, then the file named by
// --config (or VIGIE_CONFIG), then VIGIE_* variables, then flags, then Validate. args are
// the command-line arguments after the subcommand.
func Load(fs *flag.FlagSet, args []string, lookup func(string) (string, bool)) (Config, error) {
	cfg := DefaultConfig()
	// Flags are parsed into a scratch copy first to find --config, then applied last.
	var path string
	fs.StringVar(&path, "config", "", "YAML configuration file (keys as in the example config)")
	scratch := cfg
	scratch.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if path == "" {
		path, _ = lookup("VIGIE_CONFIG")
	}
	if path != "" {
		if err := cfg.LoadFile(path); err != nil {
			return cfg, err
		}
	}
	if err := cfg.LoadEnv(lookup); err != nil {
		return cfg, err
	}
	// Re-apply only the flags that were given.
	var errs []error
	fields := map[string]configField{}
	for _, f := range cfg.fields() {
		fields[FlagName(f.key)] = f
	}
	fs.Visit(func(fl *flag.Flag) {
		if f, ok := fields[fl.Name]; ok {
			if err := setValue(f.value, fl.Value.String()); err != nil {
				errs = append(errs, fmt.Errorf("flag --%s: %w", fl.Name, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}
