// Command vigie-loadtest is Vigie's load tester: a simulated camera fleet, a scenario
// runner against real `vigie node` processes, a verifier and a report (see
// loadtest/README.md). `vigie loadtest` is the same program.
package main

import (
	"fmt"
	"os"

	"github.com/vigie-vms/vigie/loadtest/cli"
)

func main() {
	if err := cli.Main(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "vigie-loadtest:", err)
		os.Exit(1)
	}
}
