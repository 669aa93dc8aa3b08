"""The Unity package (clients/unity) as Unity and a developer see it, without Unity.

* asmdef references name real assemblies (table below, each name cited from its project).
* Every asset has a .meta with a unique, stable GUID (a read-only git/tarball install needs them).
* The generated C# (messages + client stub) compiles with Mono's `mcs` against compile-only
  stand-ins of Google.Protobuf and Grpc.Core.Api (tests/csharp_stubs/); AvatarLifetime.cs
  compiles for Unity before and after 2022.2. The other sources use C# 8/9, which mcs cannot
  compile: tree-sitter's C# grammar checks their syntax instead.
* `npm pack` builds an installable tarball holding exactly the package's files.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNITY = REPO / "clients" / "unity"
STUBS = Path(__file__).resolve().parent / "csharp_stubs"

def _load_codegen():
    """protos/codegen.py, by path (protos/ on sys.path would shadow the generated `moeavatar`)."""
    spec = importlib.util.spec_from_file_location("codegen", REPO / "protos" / "codegen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


codegen = _load_codegen()  # what counts as a Unity asset, and the GUID rule

# Assembly names the asmdefs may reference, and where each name comes from.
REAL_ASSEMBLIES = {
    # YetAnotherHttpHandler: src/YetAnotherHttpHandler/YetAnotherHttpHandler.Unity.asmdef has
    # "name": "Cysharp.Net.Http.YetAnotherHttpHandler" since its "Fix assembly name" commit
    # (807db66, 2023-07-26), so in every release; the .csproj's <AssemblyName> is the same.
    "Cysharp.Net.Http.YetAnotherHttpHandler": "asmdef",
    "UnityEngine.UI": "asmdef",  # uGUI (com.unity.ugui), Unity's own package
    "MoeAvatar.Client": "asmdef",  # this package's Runtime/MoeAvatar.Client.asmdef
}
REAL_DLLS = {
    # NuGet DLLs (NuGetForUnity / UnityNuGet put them in the project as precompiled assemblies).
    # The file is <AssemblyName>.dll; SDK projects default AssemblyName to the project file name:
    "Google.Protobuf.dll",  # protocolbuffers/protobuf csharp/src/Google.Protobuf/Google.Protobuf.csproj
    "Grpc.Core.Api.dll",  # grpc/grpc-dotnet src/Grpc.Core.Api/Grpc.Core.Api.csproj
    "Grpc.Net.Client.dll",  # grpc/grpc-dotnet src/Grpc.Net.Client/Grpc.Net.Client.csproj
    "Grpc.Net.Common.dll",  # grpc/grpc-dotnet src/Grpc.Net.Common/Grpc.Net.Common.csproj
}


def asmdefs() -> dict[Path, dict]:
    return {p: json.loads(p.read_text()) for p in sorted(UNITY.rglob("*.asmdef"))}


def test_asmdefs_reference_real_assembly_names():
    found = asmdefs()
    assert len(found) == 4
    for path, asmdef in found.items():
        for name in asmdef.get("references", []):
            assert name in REAL_ASSEMBLIES, f"{path.relative_to(REPO)}: no assembly is named {name!r}"
        for dll in asmdef.get("precompiledReferences", []):
            assert dll in REAL_DLLS, f"{path.relative_to(REPO)}: {dll!r} is not a DLL of the NuGet packages"
    by_name = {a["name"]: a for a in found.values()}
    assert set(by_name) == {"MoeAvatar.Client", "MoeAvatar.Client.Editor", "MoeAvatar.Samples.LiveCreator",
                            "MoeAvatar.Samples.Quickstart"}
    for name in ("MoeAvatar.Client", "MoeAvatar.Client.Editor", "MoeAvatar.Samples.LiveCreator"):
        assert "Cysharp.Net.Http.YetAnotherHttpHandler" in by_name[name]["references"], name  # `using Cysharp.Net.Http;`
    link = (UNITY / "link.xml").read_text()
    assert re.findall(r'fullname="(Cysharp[^"]*)"', link) == ["Cysharp.Net.Http.YetAnotherHttpHandler"]


def test_every_asset_has_a_meta_with_a_unique_stable_guid():
    guids: dict[str, Path] = {}
    for asset in codegen.unity_assets(UNITY):
        meta = asset.with_name(asset.name + ".meta")
        assert meta.is_file(), f"{asset.relative_to(REPO)} has no .meta: run `python protos/codegen.py`"
        text = meta.read_text()
        guid = re.search(r"^guid: ([0-9a-f]{32})$", text, re.M)
        assert text.startswith("fileFormatVersion: 2\n") and guid, meta
        assert guid[1] not in guids, f"{meta} repeats the GUID of {guids[guid[1]]}"
        guids[guid[1]] = meta
        assert ("folderAsset: yes" in text) == asset.is_dir(), meta
    metas = {p for p in UNITY.rglob("*.meta")}
    orphans = {m for m in metas if not m.with_name(m.name[:-5]).exists()}
    assert not orphans, f"a .meta without its asset: {sorted(orphans)}"
    assert len(guids) >= 20
    # Stable: the GUID is derived from the path, so regenerating cannot change it.
    script = UNITY / "Runtime" / "AvatarClient.cs"
    assert codegen.meta_text(UNITY, script) == script.with_name("AvatarClient.cs.meta").read_text()


def _mcs() -> str:
    mcs = shutil.which("mcs")
    if mcs is None:
        pytest.skip("Mono's mcs not installed (Debian: apt-get install -y mono-mcs)")
    return mcs


def _compile(tmp_path: Path, sources: list[Path], *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([_mcs(), "-target:library", "-warnaserror+", "-nowarn:1591", *flags,
                           f"-out:{tmp_path / 'out.dll'}", *map(str, sources)],
                          capture_output=True, text=True, timeout=180)


def test_generated_csharp_compiles_against_the_grpc_and_protobuf_api(tmp_path):
    stubs = [STUBS / "GoogleProtobuf.cs", STUBS / "GrpcCoreApi.cs"]
    generated = sorted((UNITY / "Runtime" / "Generated").glob("*.cs"))
    assert [p.name for p in generated] == ["Avatar.cs", "AvatarGrpc.cs"]
    build = _compile(tmp_path, stubs + generated)
    assert build.returncode == 0, build.stdout + build.stderr
    # The check can fail: a client stub calling the CallInvoker wrongly does not compile.
    broken = tmp_path / "AvatarGrpc.cs"
    code = generated[1].read_text()
    assert "CallInvoker.AsyncServerStreamingCall(__Method_Generate, null, options, request)" in code
    broken.write_text(code.replace("AsyncServerStreamingCall(__Method_Generate, null, options, request)",
                                   "AsyncServerStreamingCall(__Method_Generate, options, request)"))
    assert _compile(tmp_path, stubs + [generated[0], broken]).returncode != 0


@pytest.mark.parametrize("define", ["", "-define:UNITY_2022_2_OR_NEWER"])
def test_lifetime_helper_compiles_before_and_after_unity_2022_2(tmp_path, define):
    flags = [define] if define else []
    build = _compile(tmp_path, [STUBS / "UnityEngine.cs", UNITY / "Runtime" / "AvatarLifetime.cs"], *flags)
    assert build.returncode == 0, build.stdout + build.stderr


def test_no_2022_2_api_outside_its_version_guard():
    """package.json claims Unity 2021.3: destroyCancellationToken (2022.2+) only under #if."""
    assert json.loads((UNITY / "package.json").read_text())["unity"] == "2021.3"
    for path in sorted(UNITY.rglob("*.cs")):
        guarded = False
        for line in path.read_text().splitlines():
            if line.strip().startswith("#if"):
                guarded = "UNITY_2022_2_OR_NEWER" in line and "!" not in line
            elif line.strip().startswith(("#else", "#endif")):
                guarded = False
            elif "destroyCancellationToken" in line.split("//")[0]:
                assert guarded, f"{path.relative_to(REPO)}: {line.strip()}"
    code_blocks = re.findall(r"```csharp\n(.*?)```", (UNITY / "README.md").read_text(), re.S)
    assert code_blocks and not any("destroyCancellationToken" in block for block in code_blocks)


def _csharp_parser():
    ts = pytest.importorskip("tree_sitter", reason="pip install tree-sitter tree-sitter-c-sharp (test extra)")
    grammar = pytest.importorskip("tree_sitter_c_sharp", reason="pip install tree-sitter-c-sharp (test extra)")
    return ts.Parser(ts.Language(grammar.language()))


def test_csharp_sources_parse(tmp_path):
    parser = _csharp_parser()
    sources = [p for p in sorted(UNITY.rglob("*.cs")) if "Generated" not in p.parts]  # those compile with mcs
    sources += sorted((REPO / "clients" / "godot" / "csharp").glob("*.cs"))
    assert len(sources) >= 9
    for path in sources:
        assert not parser.parse(path.read_bytes()).root_node.has_error, f"{path.relative_to(REPO)}: syntax error"
    broken = (UNITY / "Runtime" / "AvatarClient.cs").read_text().replace("return assembler.ToResult();", "return assembler.ToResult()", 1)
    assert parser.parse(broken.encode()).root_node.has_error  # the check can fail


def test_sources_compare_unity_objects_with_unity_null_check():
    """`?.` and `??` on a UnityEngine.Object skip Unity's destroyed-object check."""
    for path in sorted(UNITY.rglob("*.cs")):
        code = path.read_text()
        fields = re.findall(r"\[SerializeField\][^;]*?\b(\w+)\?\s+(\w+)\s*[;=]", code)
        unity_fields = [name for typ, name in fields if typ not in ("string",)]
        for name in unity_fields:
            assert not re.search(rf"\b{name}\?\.|\b{name}\s*\?\?", code), f"{path.name}: {name}?. / ??"


def test_npm_pack_builds_an_installable_tarball(tmp_path):
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm not installed (Debian: apt-get install -y npm)")
    run = subprocess.run([npm, "pack", "--json", "--pack-destination", str(tmp_path)], cwd=UNITY,
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    package = json.loads((UNITY / "package.json").read_text())
    (info,) = json.loads(run.stdout)
    tarball = tmp_path / info["filename"]
    assert tarball.name == f"{package['name']}-{package['version']}.tgz"
    with tarfile.open(tarball) as tar:
        names = {m.name.removeprefix("package/") for m in tar.getmembers() if m.isfile()}
        assert json.load(tar.extractfile("package/package.json"))["name"] == "com.moeavatar.client"
    expected = {p.relative_to(UNITY).as_posix() for p in UNITY.rglob("*") if p.is_file()}
    assert names == expected, (sorted(names - expected), sorted(expected - names))
    for needed in ("package.json", "Runtime/Generated/Avatar.cs", "Runtime/Generated/AvatarGrpc.cs",
                   "Runtime/Generated/Avatar.cs.meta", "Runtime/MoeAvatar.Client.asmdef.meta", "Runtime.meta",
                   "Samples~/LiveCreator/LiveCreatorExample.cs.meta"):
        assert needed in names, needed
    assets = {p.relative_to(UNITY).as_posix() for p in codegen.unity_assets(UNITY) if p.is_file()}
    assert {n + ".meta" for n in assets} <= names
    junk = [n for n in names if re.search(r"(\.tgz|\.pyc|\.orig|\.rej|~)$|(^|/)(node_modules|\.)", n)]
    assert not junk, junk
