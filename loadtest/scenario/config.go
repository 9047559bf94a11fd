package scenario

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vigie-vms/vigie/loadtest/simcam"
	"github.com/vigie-vms/vigie/model"
)

// Duration is a time.Duration written as "90s", "2m" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration such as 90s or 2m", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Scenario is a load test: nodes, cameras, how long, and which faults when.
type Scenario struct {
	Name        string  `yaml:"name"`
	Description string  `yaml:"description"`
	Nodes       Nodes   `yaml:"nodes"`
	Cameras     Cameras `yaml:"cameras"`
	// Duration of the recording phase, from the moment the cameras are registered.
	Duration Duration `yaml:"duration"`
	Faults   []Fault  `yaml:"faults"`
	Verify   Verify   `yaml:"verify"`
}

// Nodes says how many `vigie node` processes run and how.
type Nodes struct {
	Count int `yaml:"count"`
	// Hosts are the loopback addresses, one per node (node i uses Hosts[i mod len]).
	// Default 127.0.0.1, 127.0.0.2, … (one per node).
	Hosts []string `yaml:"hosts"`
	// Args are passed to every node after the runner's own (--node-id, --data-dir and the
	// four addresses). Placeholders: {i} {node_id} {data_dir} {http_addr} {grpc_addr}
	// {rtsp_addr} {raft_addr} of this node; {raft_addr:0} (any key, any node index) of
	// another node; {all:raft_addr} the comma-joined list over every node.
	Args []string `yaml:"args"`
	// NodeArgs are extra args for one node, by index.
	NodeArgs map[int][]string `yaml:"node_args"`
	// Env is added to every node's environment (KEY=VALUE).
	Env []string `yaml:"env"`
	// StartTimeout bounds the wait for a node's API. Default 30s.
	StartTimeout Duration `yaml:"start_timeout"`
	// StopGrace is how long a node has to exit after SIGTERM before SIGKILL. Default 15s.
	StopGrace Duration `yaml:"stop_grace"`
}

// Cameras says what the fleet serves.
type Cameras struct {
	Count int `yaml:"count"`
	// Bitrate in bit/s; 0 uses the embedded ~1 Mbit/s clips. Other values need ffmpeg.
	Bitrate int `yaml:"bitrate"`
	// Size of generated clips (WIDTHxHEIGHT), "" for the default.
	Size string `yaml:"size"`
	// Codecs mixes codecs by weight, e.g. {H264: 3, H265: 1}. Default all H264.
	Codecs map[string]int `yaml:"codecs"`
	// Tenants spreads the cameras over this many tenants (t01, t02, …). Default 1.
	Tenants int `yaml:"tenants"`
	// Prefix of the camera ids. Default "cam".
	Prefix string `yaml:"prefix"`
	// AltSize enables the "resolution" fault (a second clip at this size). Needs ffmpeg.
	AltSize string `yaml:"alt_size"`
	// RegisterTimeout bounds the wait until every camera records. Default 60s.
	RegisterTimeout Duration `yaml:"register_timeout"`
}

// Fault kinds.
const (
	FaultKill       = "kill"       // SIGKILL node
	FaultRestart    = "restart"    // start a stopped or killed node again (same data dir)
	FaultStop       = "stop"       // SIGSTOP node
	FaultCont       = "cont"       // SIGCONT node
	FaultDrain      = "drain"      // POST Path on the node's API
	FaultAddNode    = "add-node"   // start one more node
	FaultFullDisk   = "full-disk"  // mount a full tmpfs over the node's data dir (root only)
	FaultFlipBytes  = "flip-bytes" // flip Bytes bytes in a segment file under the data dir
	FaultStall      = "stall"      // cameras stop sending (Cameras; Value "false" resumes)
	FaultDrop       = "drop"       // cameras drop their sessions
	FaultGarbage    = "garbage"    // cameras send Value garbage packets
	FaultResolution = "resolution" // cameras switch resolution (needs cameras.alt_size)
	FaultHTTP       = "http"       // any request: Method Path Body on the node's API
)

var faultKinds = []string{FaultKill, FaultRestart, FaultStop, FaultCont, FaultDrain, FaultAddNode, FaultFullDisk,
	FaultFlipBytes, FaultStall, FaultDrop, FaultGarbage, FaultResolution, FaultHTTP}

// Fault is one scheduled action.
type Fault struct {
	At     Duration `yaml:"at"`
	Action string   `yaml:"action"`
	Node   int      `yaml:"node"`
	// Path (drain, http): the API path, with {node_id} replaced; Method default POST; Body
	// JSON text.
	Path   string `yaml:"path"`
	Method string `yaml:"method"`
	Body   string `yaml:"body"`
	// Cameras (stall, drop, garbage, resolution): how many cameras, from the first; 0
	// means all.
	Cameras int `yaml:"cameras"`
	// Value: stall "true"/"false", garbage packet count, resolution "true"/"false".
	Value string `yaml:"value"`
	// Bytes to flip (flip-bytes). Default 16.
	Bytes int `yaml:"bytes"`
}

func (f Fault) String() string {
	s := f.Action
	switch f.Action {
	case FaultKill, FaultRestart, FaultStop, FaultCont, FaultDrain, FaultFullDisk, FaultFlipBytes, FaultHTTP:
		s += fmt.Sprintf(" node %d (node-%d)", f.Node, f.Node+1)
	case FaultStall, FaultDrop, FaultGarbage, FaultResolution:
		if f.Cameras == 0 {
			s += " all cameras"
		} else {
			s += fmt.Sprintf(" %d cameras", f.Cameras)
		}
	}
	if f.Value != "" {
		s += " " + f.Value
	}
	return s
}

// Verify tunes the verification after the run.
type Verify struct {
	// StartupGrace: frames due in the first StartupGrace after registration are not
	// expected (the node connects). Default 10s.
	StartupGrace Duration `yaml:"startup_grace"`
	// Tail: frames due in the last Tail before the end are not expected (in flight).
	// Default 3s.
	Tail Duration `yaml:"tail"`
	// CheckSegments exports every listed segment on its own. Default true.
	CheckSegments *bool `yaml:"check_segments"`
	// Parallel exports at once. Default 4.
	Parallel int `yaml:"parallel"`
	// HiddenGapMin: see verify.Options. Default 500ms.
	HiddenGapMin Duration `yaml:"hidden_gap_min"`
}

// Load reads and checks a scenario file.
func Load(path string) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	sc, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", path, err)
	}
	return sc, nil
}

// Parse decodes YAML (unknown keys are errors), fills defaults and validates.
func Parse(b []byte) (*Scenario, error) {
	var sc Scenario
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&sc); err != nil {
		return nil, fmt.Errorf("%w: %v", model.ErrInvalid, err)
	}
	sc.EnsureDefaults()
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	return &sc, nil
}

// EnsureDefaults fills zero options.
func (s *Scenario) EnsureDefaults() {
	if s.Nodes.Count == 0 {
		s.Nodes.Count = 1
	}
	if len(s.Nodes.Hosts) == 0 {
		for i := range s.Nodes.Count + s.addedNodes() {
			s.Nodes.Hosts = append(s.Nodes.Hosts, fmt.Sprintf("127.0.0.%d", i+1))
		}
	}
	if s.Nodes.StartTimeout == 0 {
		s.Nodes.StartTimeout = Duration(30 * time.Second)
	}
	if s.Nodes.StopGrace == 0 {
		s.Nodes.StopGrace = Duration(15 * time.Second)
	}
	if s.Cameras.Tenants == 0 {
		s.Cameras.Tenants = 1
	}
	if s.Cameras.Prefix == "" {
		s.Cameras.Prefix = "cam"
	}
	if len(s.Cameras.Codecs) == 0 {
		s.Cameras.Codecs = map[string]int{simcam.CodecH264: 1}
	}
	if s.Cameras.RegisterTimeout == 0 {
		s.Cameras.RegisterTimeout = Duration(60 * time.Second)
	}
	if s.Verify.StartupGrace == 0 {
		s.Verify.StartupGrace = Duration(10 * time.Second)
	}
	if s.Verify.Tail == 0 {
		s.Verify.Tail = Duration(3 * time.Second)
	}
	if s.Verify.CheckSegments == nil {
		t := true
		s.Verify.CheckSegments = &t
	}
	if s.Verify.Parallel == 0 {
		s.Verify.Parallel = 4
	}
	if s.Verify.HiddenGapMin == 0 {
		s.Verify.HiddenGapMin = Duration(500 * time.Millisecond)
	}
	for i := range s.Faults {
		if s.Faults[i].Method == "" {
			s.Faults[i].Method = "POST"
		}
		if s.Faults[i].Bytes == 0 {
			s.Faults[i].Bytes = 16
		}
	}
}

func (s *Scenario) addedNodes() int {
	n := 0
	for _, f := range s.Faults {
		if f.Action == FaultAddNode {
			n++
		}
	}
	return n
}

// Validate reports every problem at once, naming the key; errors wrap model.ErrInvalid.
func (s *Scenario) Validate() error {
	var errs []error
	if s.Name == "" {
		errs = append(errs, model.Invalid("name", "is required"))
	}
	if s.Nodes.Count < 1 || s.Nodes.Count > 64 {
		errs = append(errs, model.Invalid("nodes.count", "%d, want 1 to 64", s.Nodes.Count))
	}
	for i, h := range s.Nodes.Hosts {
		ip := net.ParseIP(h)
		if ip == nil || !ip.IsLoopback() {
			errs = append(errs, model.Invalid(fmt.Sprintf("nodes.hosts[%d]", i), "%q is not a loopback address (127.x.y.z): load tests stay on this machine", h))
		}
	}
	if s.Cameras.Count < 1 || s.Cameras.Count > 20000 {
		errs = append(errs, model.Invalid("cameras.count", "%d, want 1 to 20000", s.Cameras.Count))
	}
	for c, w := range s.Cameras.Codecs {
		if c != simcam.CodecH264 && c != simcam.CodecH265 {
			errs = append(errs, model.Invalid("cameras.codecs", "%q, want H264 or H265", c))
		}
		if w < 0 {
			errs = append(errs, model.Invalid("cameras.codecs."+c, "weight %d, want ≥ 0", w))
		}
	}
	if s.Cameras.Tenants < 1 || s.Cameras.Tenants > s.Cameras.Count {
		errs = append(errs, model.Invalid("cameras.tenants", "%d, want 1 to cameras.count", s.Cameras.Tenants))
	}
	if s.Duration.D() < 5*time.Second || s.Duration.D() > 7*24*time.Hour {
		errs = append(errs, model.Invalid("duration", "%v, want 5s to 168h", s.Duration.D()))
	}
	if s.Verify.StartupGrace.D()+s.Verify.Tail.D() >= s.Duration.D() {
		errs = append(errs, model.Invalid("verify", "startup_grace + tail (%v) leave nothing of duration %v to verify", s.Verify.StartupGrace.D()+s.Verify.Tail.D(), s.Duration.D()))
	}
	total := s.Nodes.Count + s.addedNodes()
	for i, f := range s.Faults {
		key := fmt.Sprintf("faults[%d]", i)
		if !containsStr(faultKinds, f.Action) {
			errs = append(errs, model.Invalid(key+".action", "%q, want one of %s", f.Action, strings.Join(faultKinds, ", ")))
		}
		if f.At.D() < 0 || f.At.D() >= s.Duration.D() {
			errs = append(errs, model.Invalid(key+".at", "%v, want within the duration (0 to %v)", f.At.D(), s.Duration.D()))
		}
		if f.Node < 0 || f.Node >= total {
			errs = append(errs, model.Invalid(key+".node", "%d, want 0 to %d", f.Node, total-1))
		}
		if (f.Action == FaultDrain || f.Action == FaultHTTP) && !strings.HasPrefix(f.Path, "/") {
			errs = append(errs, model.Invalid(key+".path", "%q: %s needs the API path to call (e.g. /v1/nodes/{node_id}:drain)", f.Path, f.Action))
		}
		if f.Action == FaultResolution && s.Cameras.AltSize == "" {
			errs = append(errs, model.Invalid(key+".action", "resolution needs cameras.alt_size (e.g. 320x180)"))
		}
		if f.Cameras < 0 || f.Cameras > s.Cameras.Count {
			errs = append(errs, model.Invalid(key+".cameras", "%d, want 0 (all) to cameras.count", f.Cameras))
		}
	}
	return errors.Join(errs...)
}

func containsStr(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
