// Package model holds the value types shared by every Vigie package: identifiers,
// tenants, cameras, catalog entries (segments, outages, deletions), fragments and camera
// health, with their validation rules.
//
// It is the leaf of the import graph: it imports nothing of ours, holds no state and does
// no I/O, so cluster, storage, gateway and node can all speak in its terms without
// importing each other.
package model
