package vigiev1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedCodeIsCurrent regenerates the API into a temporary directory and fails when
// the result differs from the committed files: edit the .proto, run
// `go generate ./gateway/api/...` (or `bash gateway/api/generate.sh`), commit both.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("regenerating builds the protoc plugins: skipped in -short mode")
	}
	if _, err := exec.LookPath("protoc"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("protoc is required under CI=true (apt-get install protobuf-compiler): %v", err)
		}
		t.Skipf("protoc not installed (apt-get install protobuf-compiler): %v", err)
	}
	root, err := filepath.Abs("../../../..")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command("bash", "gateway/api/generate.sh", out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generate.sh: %v\n%s", err, b)
	}
	generated := func(dir string) map[string][]byte {
		files := map[string][]byte{}
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			n := e.Name()
			if strings.HasSuffix(n, ".pb.go") || strings.HasSuffix(n, ".pb.gw.go") || strings.HasSuffix(n, ".swagger.json") {
				b, err := os.ReadFile(filepath.Join(dir, n))
				if err != nil {
					t.Fatal(err)
				}
				files[n] = b
			}
		}
		return files
	}
	want := generated(filepath.Join(out, "vigie", "v1"))
	have := generated(".")
	if len(want) == 0 {
		t.Fatal("generate.sh produced no file")
	}
	for n, w := range want {
		h, ok := have[n]
		switch {
		case !ok:
			t.Errorf("%s is generated but not committed", n)
		case !bytes.Equal(h, w):
			t.Errorf("%s differs from what generate.sh produces: run bash gateway/api/generate.sh", n)
		}
	}
	for n := range have {
		if _, ok := want[n]; !ok {
			t.Errorf("%s is committed but no longer generated: delete it", n)
		}
	}
}
