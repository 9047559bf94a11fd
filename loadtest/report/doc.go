// Package report renders a load-test run (scenario.Result): a terminal summary, a JSON
// file, and a self-contained HTML page (inline SVG, no script, no network) with the gaps
// of each camera on a time axis, the failover-time distribution, CPU and memory per node
// and the ingest rate.
//
// It only formats: it runs nothing, reads no API and must not fail on a partial Result
// (a run interrupted or failed half-way still gets its report).
package report
