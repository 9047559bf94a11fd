package scenario

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vigie-vms/vigie/loadtest/simcam"
	"github.com/vigie-vms/vigie/loadtest/verify"
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
	// Ramp turns the run into a capacity search (see Ramp); the duration is then the
	// ramp's (steps × every) and faults are not allowed.
	Ramp *Ramp `yaml:"ramp"`
}

// Ramp is a capacity search: the run starts with Start cameras registered and registers
// Step more every Every, up to Max (cameras.count by default; the fleet serves Max from
// the start, unregistered cameras cost it almost nothing). Each step's window is
// [step start + Settle, step end). At the end of each step its counters are read — every
// camera recording on the nodes, no RTP packet lost, no reconnect, no frame skipped by the
// fleet, no camera's last frame older than MaxLag, at most MaxFleetLate of the fleet's
// frames late — and the ramp stops at the first step that fails them. After the run each
// step's window is verified frame by frame through the API; the highest clean step is the
// largest camera count of a step that, and every step before it, has clean counters and
// zero lost frames.
type Ramp struct {
	Start  int      `yaml:"start"`
	Step   int      `yaml:"step"`
	Every  Duration `yaml:"every"`
	Max    int      `yaml:"max"`
	Settle Duration `yaml:"settle"` // default 10s (connection of the new cameras)
	// MaxLag: a recording camera whose last frame is older than this is late. Default 2s.
	MaxLag Duration `yaml:"max_lag"`
	// MaxFleetLate: the largest fraction of the fleet's frames sent more than one frame
	// interval late in a step before the step is invalid (the fleet, not the node, was
	// short of CPU). Default 0.01.
	MaxFleetLate float64 `yaml:"max_fleet_late"`
	// Target: the verdict is PASS when the highest clean step reaches this many cameras
	// (0: when the first step is clean).
	Target int `yaml:"target"`
}

// Steps returns the camera count of each step.
func (r *Ramp) Steps() []int {
	var out []int
	for n := r.Start; n <= r.Max && r.Step > 0; n += r.Step {
		out = append(out, n)
	}
	if len(out) > 0 && out[len(out)-1] < r.Max {
		out = append(out, r.Max)
	}
	return out
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
	// CPUs pins every node process to these CPUs (taskset -c, e.g. "0" or "0-1,3") and
	// sets GOMAXPROCS to their number (unless Env sets it). "" = not pinned.
	CPUs string `yaml:"cpus"`
}

// Cameras says what the fleet serves.
type Cameras struct {
	Count int `yaml:"count"`
	// Initial cameras are registered at the start (default Count; ramp.start with a
	// ramp); add-cameras faults register more of the fleet's.
	Initial int `yaml:"initial"`
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
	// CPUs pins the fleet to these CPUs, with GOMAXPROCS their number. The fleet then runs
	// in its own process (the runner's "fleet" subcommand under taskset, when the runner
	// knows how to start itself: Options.FleetCommand, set by the CLI), so that the
	// runner's work (health polling, registrations, its garbage collector) never delays
	// a camera's frame; the runner's threads are pinned to the same CPUs during the
	// recording phase, to stay off the nodes' ones, and verification runs unpinned
	// afterwards. Without FleetCommand the fleet runs inside the pinned runner.
	// "" = not pinned, fleet inside the runner.
	CPUs string `yaml:"cpus"`
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
	// FaultAddCameras registers more of the fleet's cameras through node 0, up to Cameras
	// registered in all (the fleet serves cameras.count from the start).
	FaultAddCameras = "add-cameras"
)

var faultKinds = []string{FaultKill, FaultRestart, FaultStop, FaultCont, FaultDrain, FaultAddNode, FaultFullDisk,
	FaultFlipBytes, FaultStall, FaultDrop, FaultGarbage, FaultResolution, FaultHTTP, FaultAddCameras}

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
	case FaultAddCameras:
		s += fmt.Sprintf(" up to %d", f.Cameras)
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
	// ExportSegments exports every listed segment on its own as well (downloads the
	// footage twice; see verify.CollectOptions). Default false: segments are checked on
	// the window's exports.
	ExportSegments bool `yaml:"export_segments"`
	// Parallel cameras verified at once. Default 2 × GOMAXPROCS.
	Parallel int `yaml:"parallel"`
	// HiddenGapMin: see verify.Options. Default 500ms.
	HiddenGapMin Duration `yaml:"hidden_gap_min"`
	// FFprobeCheck: this many cameras, picked at random (Seed), have the verifier's
	// exports counted again by ffprobe (see verify.ProbeCheck). 0 = no check.
	FFprobeCheck int `yaml:"ffprobe_check"`
	// FFprobeCount: "frames" (decode, default) or "packets" (demux only, for long runs).
	FFprobeCount string `yaml:"ffprobe_count"`
	// Seed of the ffprobe check's pick; 0 = from the clock (the report prints it).
	Seed uint64 `yaml:"seed"`
	// FailoverBudget: when set, a run passes although frames were lost at its faults, as
	// long as every frame lost lies in a timeline gap naming a node failure
	// (node_failover, node_down), every failover interruption lasts at most this long,
	// and every camera recovered. 0 (default): any lost frame fails the run.
	FailoverBudget Duration `yaml:"failover_budget"`
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
	if s.Cameras.Initial == 0 {
		s.Cameras.Initial = s.Cameras.Count
		if s.Ramp != nil && s.Ramp.Start > 0 {
			s.Cameras.Initial = s.Ramp.Start
		}
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
		s.Verify.Parallel = verify.DefaultParallel()
	}
	if s.Verify.FFprobeCount == "" {
		s.Verify.FFprobeCount = verify.ProbeFrames
	}
	if r := s.Ramp; r != nil {
		if r.Max == 0 {
			r.Max = s.Cameras.Count
		}
		if r.Settle == 0 {
			r.Settle = Duration(10 * time.Second)
		}
		if r.MaxLag == 0 {
			r.MaxLag = Duration(2 * time.Second)
		}
		if r.MaxFleetLate == 0 {
			r.MaxFleetLate = 0.01
		}
		if n := len(r.Steps()); n > 0 {
			s.Duration = Duration(time.Duration(n) * r.Every.D())
		}
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
	if s.Cameras.Initial < 1 || s.Cameras.Initial > s.Cameras.Count {
		errs = append(errs, model.Invalid("cameras.initial", "%d, want 1 to cameras.count", s.Cameras.Initial))
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
	if s.Verify.FailoverBudget.D() < 0 {
		errs = append(errs, model.Invalid("verify.failover_budget", "%v, want ≥ 0", s.Verify.FailoverBudget.D()))
	}
	if s.Verify.StartupGrace.D()+s.Verify.Tail.D() >= s.Duration.D() {
		errs = append(errs, model.Invalid("verify", "startup_grace + tail (%v) leave nothing of duration %v to verify", s.Verify.StartupGrace.D()+s.Verify.Tail.D(), s.Duration.D()))
	}
	for key, l := range map[string]string{"nodes.cpus": s.Nodes.CPUs, "cameras.cpus": s.Cameras.CPUs} {
		if l == "" {
			continue
		}
		if _, err := ParseCPUList(l); err != nil {
			errs = append(errs, model.Invalid(key, "%v", err))
		}
	}
	if s.Verify.FFprobeCheck < 0 {
		errs = append(errs, model.Invalid("verify.ffprobe_check", "%d, want ≥ 0 cameras", s.Verify.FFprobeCheck))
	}
	if s.Verify.FFprobeCount != verify.ProbeFrames && s.Verify.FFprobeCount != verify.ProbePackets {
		errs = append(errs, model.Invalid("verify.ffprobe_count", "%q, want frames or packets", s.Verify.FFprobeCount))
	}
	if r := s.Ramp; r != nil {
		if r.Start < 1 {
			errs = append(errs, model.Invalid("ramp.start", "%d, want ≥ 1 camera", r.Start))
		}
		if r.Step < 1 {
			errs = append(errs, model.Invalid("ramp.step", "%d, want ≥ 1 camera", r.Step))
		}
		if r.Max < r.Start || r.Max > s.Cameras.Count {
			errs = append(errs, model.Invalid("ramp.max", "%d, want ramp.start (%d) to cameras.count (%d)", r.Max, r.Start, s.Cameras.Count))
		}
		if r.Every.D() < 10*time.Second {
			errs = append(errs, model.Invalid("ramp.every", "%v, want ≥ 10s", r.Every.D()))
		}
		if r.Settle.D() >= r.Every.D() {
			errs = append(errs, model.Invalid("ramp.settle", "%v leaves nothing of each step (every %v) to verify", r.Settle.D(), r.Every.D()))
		}
		if r.MaxFleetLate < 0 || r.MaxFleetLate > 1 {
			errs = append(errs, model.Invalid("ramp.max_fleet_late", "%v, want a fraction 0 to 1", r.MaxFleetLate))
		}
		if len(s.Faults) > 0 {
			errs = append(errs, model.Invalid("faults", "a ramp (capacity search) takes no faults"))
		}
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
		if f.Action == FaultAddCameras && f.Cameras < 1 {
			errs = append(errs, model.Invalid(key+".cameras", "add-cameras needs the number of cameras registered in all after it (1 to cameras.count)"))
		}
		if f.Cameras < 0 || f.Cameras > s.Cameras.Count {
			errs = append(errs, model.Invalid(key+".cameras", "%d, want 0 (all) to cameras.count", f.Cameras))
		}
	}
	return errors.Join(errs...)
}

// ParseCPUList reads a taskset-style CPU list ("0", "1,3", "0-2") of CPUs this machine has.
func ParseCPUList(l string) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for _, part := range strings.Split(l, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 0 || b < a {
			return nil, fmt.Errorf("%q is not a CPU list such as 0, 1,3 or 0-2", l)
		}
		for c := a; c <= b; c++ {
			if c >= runtime.NumCPU() {
				return nil, fmt.Errorf("CPU %d: this machine has CPUs 0 to %d", c, runtime.NumCPU()-1)
			}
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out, nil
}

func containsStr(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
