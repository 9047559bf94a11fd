package archtest

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/vigie-vms/vigie"

type pkg struct {
	ImportPath string
	Doc        string
	Imports    []string
	Name       string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkg
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 5 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

// forbidden maps a package prefix (relative to the module) to the prefixes it must not import.
var forbidden = map[string][]string{
	"model":       {""}, // leaf: nothing of ours
	"cluster":     {"node", "storage", "gateway", "loadtest", "tools"},
	"storage":     {"node", "cluster", "gateway", "loadtest", "tools"},
	"gateway":     {"node", "cluster", "storage", "loadtest", "tools"},
	"node/ingest": {"node", "cluster", "storage", "gateway", "loadtest", "tools"},
	"node":        {"loadtest", "tools"},
	// The in-process cluster harness drives simulated cameras, like the tests it serves.
	"node/clustertest": {"tools"},
}

func rel(path string) (string, bool) {
	if path == module {
		return "", true
	}
	if strings.HasPrefix(path, module+"/") {
		return strings.TrimPrefix(path, module+"/"), true
	}
	return "", false
}

func under(p, prefix string) bool {
	return prefix == "" || p == prefix || strings.HasPrefix(p, prefix+"/")
}

func TestDependencyDirection(t *testing.T) {
	for _, p := range listPackages(t) {
		from, _ := rel(p.ImportPath)
		// The most specific rule applies (node/ingest before node).
		var rule string
		found := false
		for prefix := range forbidden {
			if under(from, prefix) && (!found || len(prefix) > len(rule)) {
				rule, found = prefix, true
			}
		}
		if !found {
			continue
		}
		for _, imp := range p.Imports {
			to, ours := rel(imp)
			if !ours || under(to, rule) || under(to, "model") || under(to, "testdata") {
				continue // libraries, own sub-packages, the leaf, embedded test clips
			}
			for _, bad := range forbidden[rule] {
				if under(to, bad) {
					t.Errorf("%s imports %s: %s must not import %q (DESIGN.md: packages and the direction of imports)", from, to, rule, bad)
				}
			}
		}
	}
}

func TestEveryPackageHasADocComment(t *testing.T) {
	for _, p := range listPackages(t) {
		if p.Doc == "" {
			t.Errorf("package %s has no doc comment: say what it is for and what it must not do", p.ImportPath)
		}
	}
}
