#!/usr/bin/env bash
# Regenerates the Go code of the shard transfer service from v1/transfer.proto.
#
#   bash storage/transfer/generate.sh [OUTDIR]
#
# OUTDIR (default: this directory) receives v1/*.pb.go. The protoc plugins are the versions
# pinned as tool dependencies in go.mod, built from the module cache (works offline).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$here}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

command -v protoc >/dev/null || { echo "generate.sh: protoc not found (apt-get install protobuf-compiler)" >&2; exit 1; }

bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT

cd "$root"
go build -o "$bin/" google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc

mkdir -p "$out/v1"
cd "$here"
PATH="$bin:$PATH" protoc -I . \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  v1/transfer.proto
