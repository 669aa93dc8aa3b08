"""The one command that regenerates the Python code for the API contract.

    python protos/codegen.py            # writes clients/python/moeavatar/v1/avatar_pb2*.py(i)
    python protos/codegen.py --out DIR  # writes into DIR/moeavatar/v1/ (used by the staleness test)

`-I protos` makes the generated imports read `from moeavatar.v1 import avatar_pb2`, the
package the client distribution (clients/python) ships and the server imports.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

PROTO_ROOT = pathlib.Path(__file__).resolve().parent
PYTHON_OUT = PROTO_ROOT.parent / "clients" / "python"
PROTO_FILES = ["moeavatar/v1/avatar.proto"]
GENERATED = ["moeavatar/v1/avatar_pb2.py", "moeavatar/v1/avatar_pb2.pyi", "moeavatar/v1/avatar_pb2_grpc.py"]

def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Run grpc_tools.protoc; returns the generated files."""
    from grpc_tools import protoc  # only needed at build time, not for serving

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{pathlib.Path(protoc.__file__).parent / '_proto'}",  # well-known types
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *PROTO_FILES,
    ]
    # protoc resolves PROTO_FILES relative to the -I root, so run from there.

    cwd = os.getcwd()
    os.chdir(PROTO_ROOT)
    try:
        rc = protoc.main(args)
    finally:
        os.chdir(cwd)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    return [out_dir / name for name in GENERATED]

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=PYTHON_OUT, help="output root (default: clients/python/)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0

if __name__ == "__main__":
    sys.exit(main())
