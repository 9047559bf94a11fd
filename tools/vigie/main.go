// Command vigie is the single binary of Vigie: `vigie node` runs a node, `vigie demo` runs a
// node with simulated cameras, `vigie ctl` administers a cluster through its API.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "vigie:", err)
		os.Exit(1)
	}
}
