package gateway

import (
	"go/build"
	"strings"
	"testing"
)

// TestImports enforces the direction of imports: gateway and its sub-packages import
// model and nothing else of Vigie (no cluster, storage or node).
func TestImports(t *testing.T) {
	const mod = "github.com/vigie-vms/vigie/"
	for _, dir := range []string{".", "media", "api/vigie/v1"} {
		pkg, err := build.ImportDir(dir, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range append(pkg.Imports, pkg.TestImports...) {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			rest := strings.TrimPrefix(imp, mod)
			if rest != "model" && !strings.HasPrefix(rest, "gateway/") && rest != "testdata/clips" {
				t.Errorf("%s imports %s: gateway may import only model (declare an interface instead)", dir, imp)
			}
		}
	}
}
