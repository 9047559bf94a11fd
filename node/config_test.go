package node

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func noEnv(string) (string, bool) { return "", false }

func TestExampleConfigEqualsDefaults(t *testing.T) {
	var cfg Config
	if err := cfg.LoadFile(filepath.Join("..", "deploy", "node.example.yaml")); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Seeds) == 0 {
		cfg.Seeds = nil // "seeds: []" in the file
	}
	if len(cfg.StripeCodes) == 0 {
		cfg.StripeCodes = nil // "stripe_codes: []"
	}
	if def := DefaultConfig(); !reflect.DeepEqual(cfg, def) {
		t.Errorf("deploy/node.example.yaml differs from DefaultConfig():\nfile:    %+v\ndefault: %+v", cfg, def)
	}
	// Every key is in the example.
	data, _ := os.ReadFile(filepath.Join("..", "deploy", "node.example.yaml"))
	for _, f := range (&cfg).fields() {
		if !strings.Contains(string(data), "\n"+f.key+":") {
			t.Errorf("key %s missing from deploy/node.example.yaml", f.key)
		}
	}
}

func TestDefaultConfigIsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestBadConfigs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{"empty node id", func(c *Config) { c.NodeID = "" }, []string{"config node_id: is required"}},
		{"bad node id", func(c *Config) { c.NodeID = "Node 1" }, []string{"config node_id:"}},
		{"bad address", func(c *Config) { c.HTTPAddr = "8080" }, []string{"config http_addr: \"8080\" is not host:port"}},
		{"same port twice", func(c *Config) { c.GRPCAddr = c.HTTPAddr }, []string{"config grpc_addr: \"127.0.0.1:8080\" is also used by http_addr"}},
		{"seed without port", func(c *Config) { c.GossipAddr = "127.0.0.1:7946"; c.Seeds = []string{"127.0.0.2"} }, []string{"config seeds: entry 1 \"127.0.0.2\" is not host:port"}},
		{"seeds without gossip", func(c *Config) { c.Seeds = []string{"127.0.0.2:7946"} }, []string{"config gossip_addr: is required to join seeds"}},
		{"retention over the legal maximum", func(c *Config) { c.RetentionCapDays = 31 }, []string{"config retention_cap_days: must be between 1 and 30"}},
		{"bad stripe code", func(c *Config) { c.StripeCodes = []string{"critical=4-2"} }, []string{"config stripe_codes: entry \"critical=4-2\" is not class=k+m"}},
		{"unknown redundancy class", func(c *Config) { c.StripeCodes = []string{"gold=4+2"} }, []string{"unknown redundancy class \"gold\""}},
		{"negative rates and graces", func(c *Config) { c.ScrubRateBytes = -1; c.RepairGrace = -time.Second; c.StripeInterval = 0 }, []string{
			"config scrub_rate_bytes: must not be negative", "config repair_grace: must not be negative", "config stripe_interval: must be positive"}},
		{"several at once", func(c *Config) { c.SegmentMaxBytes = 10; c.LogFormat = "xml"; c.FragmentMax = time.Minute }, []string{
			"config segment_max_bytes:", "config log_format: must be text or json", "config fragment_max:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mutate(&cfg)
			err := cfg.Validate()
			if err == nil {
				t.Fatal("Validate accepted a bad config")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(file, []byte("node_id: from-file\nhttp_addr: 127.0.0.1:1111\nsegment_max_age: 5m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"VIGIE_HTTP_ADDR": "127.0.0.1:2222", "VIGIE_LOG_LEVEL": "debug", "VIGIE_SEEDS": "127.0.0.2:7946, 127.0.0.3:7946", "VIGIE_GOSSIP_ADDR": "127.0.0.1:7946"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	cfg, err := Load(fs, []string{"--config", file, "--log-level", "warn"}, lookup)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeID != "from-file" || cfg.SegmentMaxAge != 5*time.Minute {
		t.Errorf("file not applied: %+v", cfg)
	}
	if cfg.HTTPAddr != "127.0.0.1:2222" {
		t.Errorf("environment should override the file: http_addr=%s", cfg.HTTPAddr)
	}
	if cfg.LogLevel != "warn" {
		t.Errorf("flag should override the environment: log_level=%s", cfg.LogLevel)
	}
	if ov, err := (Config{StripeCodes: []string{"critical=4+2", " standard = 2+1"}}).stripeCodes(); err != nil || ov["critical"].K != 4 || ov["critical"].M != 2 || ov["standard"].K != 2 {
		t.Errorf("stripe codes critical=4+2, standard=2+1 parsed as %v, %v", ov, err)
	}
	if !reflect.DeepEqual(cfg.Seeds, []string{"127.0.0.2:7946", "127.0.0.3:7946"}) {
		t.Errorf("comma-separated seeds from the environment: %q", cfg.Seeds)
	}
	if cfg.GRPCAddr != DefaultConfig().GRPCAddr {
		t.Errorf("untouched key changed: grpc_addr=%s", cfg.GRPCAddr)
	}
}

func TestLoadErrorsNameTheKey(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "node.yaml")
	_ = os.WriteFile(file, []byte("http_adr: 127.0.0.1:1\n"), 0o600)
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := Load(fs, []string{"--config", file}, noEnv); err == nil || !strings.Contains(err.Error(), "http_adr") {
		t.Errorf("misspelt key: got %v, want an error naming http_adr", err)
	}
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	env := func(k string) (string, bool) {
		if k == "VIGIE_SEGMENT_MAX_AGE" {
			return "ten minutes", true
		}
		return "", false
	}
	if _, err := Load(fs, nil, env); err == nil || !strings.Contains(err.Error(), "VIGIE_SEGMENT_MAX_AGE") {
		t.Errorf("bad env value: got %v, want an error naming VIGIE_SEGMENT_MAX_AGE", err)
	}
}

func TestShippedClusterConfigsAreValid(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "deploy", "local-3-nodes", "*.yaml"))
	if len(files) != 3 {
		t.Fatalf("found %d example node configs, want 3", len(files))
	}
	for _, f := range files {
		cfg := DefaultConfig()
		if err := cfg.LoadFile(f); err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
