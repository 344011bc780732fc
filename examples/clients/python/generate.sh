#!/usr/bin/env bash
# Generates the Python stubs of the API (messages and gRPC stubs) from proto/ with Debian's
# protoc and grpc_python_plugin: every file of proto/ and of the vendored modules in
# proto-vendor/ that they import (buf/validate, google/api, google/rpc), whose Python modules
# the generated ones import. Not proto-vendor/grpc (health, reflection): the API does not
# import it, and a generated grpc/ would sit beside python3-grpcio's `grpc` package. The
# well-known types (google/protobuf/*.proto) come from libprotobuf-dev, their Python modules
# from python3-protobuf.
#   usage: examples/clients/python/generate.sh [OUT_DIR]     (default examples/clients/python/gen)
# Needs: apt-get install protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-$here/gen}
for tool in protoc grpc_python_plugin; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install protobuf-compiler protobuf-compiler-grpc libprotobuf-dev" >&2; exit 2; }
done
rm -rf "$out"
mkdir -p "$out"
cd "$root"
mapfile -t protos < <(find proto proto-vendor -path proto-vendor/grpc -prune -o -name '*.proto' -print | sort)
# Paths are given relative to their include root (-I), as the imports name them.
protoc -I proto -I proto-vendor \
  --python_out="$out" --grpc_python_out="$out" --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" \
  "${protos[@]}"
echo "generated the Python stubs of ${#protos[@]} proto files into $out"
