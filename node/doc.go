// Package node is one Vigie node: it loads the configuration, wires storage, cluster,
// gateway and ingest together, and runs them in a written-down order.
//
// Only node imports the other packages of Vigie; they never import node. Each of them
// declares the small interfaces it consumes and node passes the real implementations in
// (see adapters.go).
//
// A node records the cameras the cluster assigns to it: one recorder per camera turns the
// ingest's fMP4 fragments into segments in the local store, seals them by size or age and
// commits each sealed segment to the catalog with the camera's epoch.
package node
