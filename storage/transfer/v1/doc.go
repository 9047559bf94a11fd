// Package transferv1 is the generated protobuf and gRPC code of the node-to-node shard
// transfer service (v1/transfer.proto). Do not edit: change the .proto and run
// `go generate ./storage/transfer/...`. Only storage/transfer uses it.
package transferv1

//go:generate bash ../generate.sh
