package transferv1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedCodeIsCurrent regenerates the code into a temporary directory and fails when
// it differs from the committed files: edit v1/transfer.proto, run
// `bash storage/transfer/generate.sh`, commit both.
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
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command("bash", "storage/transfer/generate.sh", out)
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
			if n := e.Name(); strings.HasSuffix(n, ".pb.go") {
				b, err := os.ReadFile(filepath.Join(dir, n))
				if err != nil {
					t.Fatal(err)
				}
				files[n] = b
			}
		}
		return files
	}
	want := generated(filepath.Join(out, "v1"))
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
			t.Errorf("%s differs from what generate.sh produces: run bash storage/transfer/generate.sh", n)
		}
	}
	for n := range have {
		if _, ok := want[n]; !ok {
			t.Errorf("%s is committed but no longer generated: delete it", n)
		}
	}
}
