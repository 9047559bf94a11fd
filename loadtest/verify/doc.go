// Package verify is the load-test verifier: after a run it reads, through the public API
// only (any node's REST and media endpoints), every camera's timeline, segment list and
// progressive MP4 exports, decodes the SEI tag (loadtest/sei) of every sample, and compares
// with what the fleet sent: frames expected, recorded, lost, duplicated, of another camera;
// each run of lost frames classified as explained by a timeline gap, dropped frames, or a
// hidden gap (missing footage the timeline does not show); the timeline's gaps with their
// causes; the interruption each injected fault caused (failover time); and catalog against
// data (every listed segment exports and holds this camera's tagged samples within its
// range; nothing is served outside the listed spans).
//
// Collect does the I/O (through a Source: API in production, fakes in tests); Analyze is
// pure and deterministic over its Input, so every rule is unit-tested on synthetic
// recordings.
//
// # What it must not do
//
// It never reads a node's data directory or imports node, gateway, storage or cluster: it
// sees exactly what a user of the API sees. ParseExport reads untrusted bytes and must not
// panic (FuzzParseExport). It does not decide pass or fail for a run (report does).
package verify
