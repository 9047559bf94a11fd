// Package cli is the command line of the load tester: `vigie-loadtest` (loadtest/cmd/
// vigie-loadtest) and `vigie loadtest` both call Main.
//
//	run SCENARIO.yaml     run a scenario against real `vigie node` processes, verify, report
//	fleet                 serve N simulated cameras with an HTTP control endpoint
//	fleet-bench           measure how many cameras one core of fleet serves on time
//	report REPORT.json    re-render a run's summary and HTML page from its JSON
//
// It parses flags and wires loadtest/scenario, loadtest/fleet and loadtest/report; it
// holds no logic of its own beyond that and must not import node, gateway, cluster or
// storage.
package cli
