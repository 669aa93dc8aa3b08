#!/usr/bin/env bash
# Regenerates Runtime/Generated/{Avatar.cs,AvatarGrpc.cs} (C# messages + client stub) from
# protos/moeavatar/v1/avatar.proto. Run it after every proto change.
#
# Needs protoc and grpc_csharp_plugin. Both ship in the Grpc.Tools NuGet package
# (https://www.nuget.org/packages/Grpc.Tools): download the .nupkg, unzip it, and use
# tools/<os>_<arch>/protoc and tools/<os>_<arch>/grpc_csharp_plugin (chmod +x on macOS/Linux).
#   PROTOC=~/grpc.tools/tools/linux_x64/protoc \
#   GRPC_CSHARP_PLUGIN=~/grpc.tools/tools/linux_x64/grpc_csharp_plugin ./codegen.sh
# Without PROTOC, `protoc` on PATH is used. (Python's grpc_tools.protoc has no C# generator.)
# OUT overrides the output folder (the tests use it).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
protos="$here/../../protos"
out="${OUT:-$here/Runtime/Generated}"
protoc="${PROTOC:-protoc}"
plugin="${GRPC_CSHARP_PLUGIN:-$(command -v grpc_csharp_plugin || true)}"

if ! command -v "$protoc" >/dev/null 2>&1; then
  echo "codegen.sh: protoc not found; set PROTOC (it is in the Grpc.Tools NuGet package, tools/<os>_<arch>/)" >&2
  exit 1
fi
if [ -z "$plugin" ] || [ ! -x "$plugin" ]; then
  echo "codegen.sh: grpc_csharp_plugin not found; set GRPC_CSHARP_PLUGIN (Grpc.Tools NuGet package, tools/<os>_<arch>/)" >&2
  exit 1
fi

mkdir -p "$out"
# no_server: a game only calls the service.
"$protoc" -I "$protos" \
  --csharp_out="$out" \
  --grpc_out="$out" --grpc_opt=no_server \
  --plugin=protoc-gen-grpc="$plugin" \
  "$protos/moeavatar/v1/avatar.proto"
echo "wrote $(ls "$out"/*.cs | tr '\n' ' ')"
