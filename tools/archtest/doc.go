// Package archtest holds the tests that keep the house in order: the dependency direction
// of DESIGN.md (node wires; cluster, storage and gateway never import node; cluster and
// storage never import each other; model imports nothing of ours) and a doc comment on
// every package. It has no code of its own.
package archtest
