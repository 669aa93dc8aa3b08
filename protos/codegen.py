"""The one command that regenerates all code made from the API contract.

    python protos/codegen.py            # Python (clients/python/moeavatar/v1/), C# (clients/unity/Runtime/Generated/)
                                        # and a .meta file for every Unity package asset that lacks one
    python protos/codegen.py --out DIR  # DIR/python/moeavatar/v1/ and DIR/csharp/ (the staleness tests)

* Python: grpc_tools.protoc (`--python_out`, `--pyi_out`, `--grpc_python_out`). `-I protos`
  makes the generated imports read `from moeavatar.v1 import avatar_pb2`, the package the
  client distribution (clients/python) ships and the server imports.
* C# messages (Avatar.cs): protoc's own `--csharp_out`. grpc_tools.protoc has no C# generator,
  so this step runs the `protoc` on PATH (or $PROTOC), which must be CSHARP_PROTOC_VERSION so
  that the committed file does not churn with the compiler (Debian 12/13: `apt-get install
  protobuf-compiler`). Without it the command writes everything else and exits with status 2.
* C# client stub (AvatarGrpc.cs): written from the descriptor by protos/csharp_grpc.py in the
  form grpc_csharp_plugin emits (that plugin is a native binary only shipped in Grpc.Tools).
* Unity .meta files: a package installed from git or a tarball is read-only, so every asset
  ships its .meta. GUIDs are the MD5 of the asset's path in the package: stable and unique.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

PROTO_ROOT = pathlib.Path(__file__).resolve().parent


def load_sibling(name: str):
    """A module next to this file, loaded by path: putting protos/ on sys.path would shadow the
    generated `moeavatar` package with the proto folder of the same name."""
    spec = importlib.util.spec_from_file_location(name, PROTO_ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


csharp_grpc = load_sibling("csharp_grpc")
REPO = PROTO_ROOT.parent
PYTHON_OUT = REPO / "clients" / "python"
UNITY_PACKAGE = REPO / "clients" / "unity"
CSHARP_OUT = UNITY_PACKAGE / "Runtime" / "Generated"
PROTO_FILES = ["moeavatar/v1/avatar.proto"]
GENERATED = ["moeavatar/v1/avatar_pb2.py", "moeavatar/v1/avatar_pb2.pyi", "moeavatar/v1/avatar_pb2_grpc.py"]
CSHARP_GENERATED = ["Avatar.cs", "AvatarGrpc.cs"]
CSHARP_PROTOC_VERSION = "libprotoc 3.21.12"


def _grpc_tools_protoc(args: list[str]) -> None:
    from grpc_tools import protoc  # only needed at build time, not for serving

    include = pathlib.Path(protoc.__file__).parent / "_proto"  # well-known types
    cwd = os.getcwd()
    os.chdir(PROTO_ROOT)  # protoc resolves PROTO_FILES relative to the -I root
    try:
        rc = protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}", *args, *PROTO_FILES])
    finally:
        os.chdir(cwd)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """The Python code under out_dir/moeavatar/v1/."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _grpc_tools_protoc([f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}"])
    return [out_dir / name for name in GENERATED]


def generate_csharp_stub(out_dir: pathlib.Path) -> pathlib.Path:
    """AvatarGrpc.cs from the descriptor (with source info, for the doc comments)."""
    from google.protobuf import descriptor_pb2

    with tempfile.TemporaryDirectory() as tmp:
        descriptor = pathlib.Path(tmp) / "avatar.pb"
        _grpc_tools_protoc(["--include_source_info", f"--descriptor_set_out={descriptor}"])
        (file,) = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes()).file
    name, source = csharp_grpc.generate(file)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / name).write_text(source, encoding="utf-8", newline="\n")
    return out_dir / name


def csharp_protoc() -> tuple[str | None, str]:
    """(path of a protoc with the pinned version, or None; why not)."""
    protoc = os.environ.get("PROTOC") or shutil.which("protoc")
    if not protoc:
        return None, "no `protoc` on PATH (apt-get install protobuf-compiler, or set PROTOC)"
    version = subprocess.run([protoc, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    if version != CSHARP_PROTOC_VERSION:
        return None, f"{protoc} is {version!r}; Avatar.cs is made with {CSHARP_PROTOC_VERSION!r}"
    return protoc, ""


def generate_csharp_messages(out_dir: pathlib.Path) -> pathlib.Path:
    protoc, why = csharp_protoc()
    if protoc is None:
        raise RuntimeError(f"C# messages not written: {why}")
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([protoc, f"-I{PROTO_ROOT}", f"--csharp_out={out_dir}", *PROTO_FILES], cwd=PROTO_ROOT,
                   check=True, timeout=60)
    return out_dir / "Avatar.cs"


# --- Unity .meta files ------------------------------------------------------------------

META_IMPORTER = {".cs": "MonoImporter", ".asmdef": "AssemblyDefinitionImporter", ".json": "TextScriptImporter",
                 ".md": "TextScriptImporter", ".xml": "TextScriptImporter", ".txt": "TextScriptImporter"}
MONO_BODY = ("  serializedVersion: 2\n  defaultReferences: []\n  executionOrder: 0\n"
             "  icon: {instanceID: 0}\n")


def unity_assets(package: pathlib.Path) -> list[pathlib.Path]:
    """Files and folders Unity imports from the package (Samples~ contents too: Unity copies
    them into Assets/ on import and keeps the shipped .meta GUIDs)."""
    def hidden(part: str) -> bool:
        return part.startswith(".") or (part.endswith("~") and part != "Samples~")

    assets = []
    for path in sorted(package.rglob("*")):
        rel = path.relative_to(package)
        if any(hidden(p) for p in rel.parts) or rel.parts[0] == "Samples~" and len(rel.parts) == 1:
            continue
        if path.suffix == ".meta" or rel.name in ("node_modules", ".npmignore"):
            continue
        assets.append(path)
    return assets


def meta_text(package: pathlib.Path, asset: pathlib.Path) -> str:
    rel = asset.relative_to(package).as_posix()
    guid = hashlib.md5(f"com.moeavatar.client/{rel}".encode()).hexdigest()
    if asset.is_dir():
        head, importer = "folderAsset: yes\n", "DefaultImporter"
    else:
        head = ""
        importer = "PackageManifestImporter" if rel == "package.json" else META_IMPORTER.get(asset.suffix,
                                                                                             "DefaultImporter")
    body = MONO_BODY if importer == "MonoImporter" else ""
    return (f"fileFormatVersion: 2\nguid: {guid}\n{head}{importer}:\n  externalObjects: {{}}\n{body}"
            "  userData: \n  assetBundleName: \n  assetBundleVariant: \n")


def write_missing_metas(package: pathlib.Path) -> list[pathlib.Path]:
    """Writes a .meta next to every asset that has none; existing ones are never changed."""
    written = []
    for asset in unity_assets(package):
        meta = asset.with_name(asset.name + ".meta")
        if not meta.exists():
            meta.write_text(meta_text(package, asset), encoding="utf-8", newline="\n")
            written.append(meta)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="write DIR/python/ and DIR/csharp/ instead of the client folders (no .meta files)")
    args = parser.parse_args(argv)
    python_out = PYTHON_OUT if args.out is None else args.out / "python"
    csharp_out = CSHARP_OUT if args.out is None else args.out / "csharp"
    written = generate(python_out) + [generate_csharp_stub(csharp_out)]
    status = 0
    try:
        written.append(generate_csharp_messages(csharp_out))
    except RuntimeError as e:
        print(f"codegen.py: {e}", file=sys.stderr)
        status = 2
    if args.out is None:
        written += write_missing_metas(UNITY_PACKAGE)
    for path in written:
        print(path)
    return status


if __name__ == "__main__":
    sys.exit(main())
