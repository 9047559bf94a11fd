package main

import (
	"os"

	"github.com/vigie-vms/vigie/loadtest/cli"
)

// runLoadtest is `vigie loadtest …`: the camera fleet, the scenario runner, the verifier
// and the report (loadtest/README.md).
func runLoadtest(args []string) error {
	if exe, err := os.Executable(); err == nil {
		cli.SelfCommand = []string{exe, "loadtest"}
	}
	return cli.Main(args)
}
