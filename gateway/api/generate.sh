#!/usr/bin/env bash
# Regenerates the Go code and the OpenAPI document of Vigie's public API from the .proto
# files under vigie/v1.
#
#   bash gateway/api/generate.sh [OUTDIR]
#
# OUTDIR (default: this directory) receives vigie/v1/*.pb.go, *.pb.gw.go and
# vigie.swagger.json. The protoc plugins are the versions pinned as tool dependencies in
# go.mod, built from the module cache (works offline). google/api/*.proto are read from the
# grpc-gateway v1 module in the module cache; they are never copied into the repository.
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
go build -o "$bin/" \
  google.golang.org/protobuf/cmd/protoc-gen-go \
  google.golang.org/grpc/cmd/protoc-gen-go-grpc \
  github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway \
  github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2

gwv1="$(go mod download -json github.com/grpc-ecosystem/grpc-gateway@v1.16.0 | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
googleapis="$gwv1/third_party/googleapis"
[ -f "$googleapis/google/api/annotations.proto" ] || { echo "generate.sh: google/api/annotations.proto not found under $googleapis" >&2; exit 1; }

wkt=""
for d in /usr/include /usr/local/include; do
  if [ -f "$d/google/protobuf/timestamp.proto" ]; then wkt="$d"; break; fi
done
[ -n "$wkt" ] || { echo "generate.sh: google/protobuf/timestamp.proto not found (protobuf-compiler ships it)" >&2; exit 1; }

mkdir -p "$out/vigie/v1"
cd "$here"
PATH="$bin:$PATH" protoc \
  -I . -I "$googleapis" -I "$wkt" \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  --grpc-gateway_out="$out" --grpc-gateway_opt=paths=source_relative \
  --openapiv2_out="$out" \
  --openapiv2_opt=allow_merge=true,merge_file_name=vigie/v1/vigie,json_names_for_fields=false \
  vigie/v1/*.proto
