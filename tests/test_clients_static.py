"""Static checks of the Unity / Godot client samples (fast, no network, no game engine).

* Proto consistency: every proto message member, enum value, oneof case and RPC that the C#
  sources use, and every proto JSON key the GDScript bridge client uses, exists in
  protos/moeavatar/v1/avatar.proto. Names are derived from the proto's descriptor (built with
  grpc_tools.protoc) using protobuf's C# naming rules; the used names are found in the sources
  by regex, not listed by hand. A mutation test renames proto fields and expects failures.
* The engine-agnostic C# core (clients/unity/Runtime/AvatarCore.cs: chunk assembly, SHA-256
  check, backoff, LRU) is compiled with Mono's `mcs` and run against vectors computed here in
  Python; skipped when mcs/mono are not installed (`apt-get install -y mono-mcs mono-runtime`).
* The committed generated C# (clients/unity/Runtime/Generated) is checked against the proto in
  tests/test_proto.py; the Unity package as a whole in tests/test_unity_package.py.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

REPO = Path(__file__).resolve().parents[1]
PROTO = REPO / "protos" / "moeavatar" / "v1" / "avatar.proto"
UNITY = REPO / "clients" / "unity"
GODOT = REPO / "clients" / "godot"
GD_CLIENT = GODOT / "gdscript" / "addons" / "moe_avatar" / "moe_avatar_client.gd"
GD3_SMOKE = GODOT / "godot3_smoke" / "smoke.gd"  # Godot 3 twin of the request logic (tests/test_godot_smoke.py)
PROTO_ENUM_TYPES = ("TextureFormat", "RowOrder", "ResizeFilter", "Stage")


# --------------------------------------------------------------------------------------------
# The proto, as C# and JSON sees it


@dataclass
class ProtoNames:
    # C# class -> member name -> type name of the member (a message name, or "" for scalars/etc.)
    messages: dict[str, dict[str, str]] = field(default_factory=dict)
    enums: dict[str, set[str]] = field(default_factory=dict)  # C# enum type -> C# value names
    oneof_cases: dict[str, set[str]] = field(default_factory=dict)  # message -> EventOneofCase values
    enum_value_names: set[str] = field(default_factory=set)  # proto names, e.g. TEXTURE_FORMAT_PNG
    json_names: dict[str, set[str]] = field(default_factory=dict)  # message -> proto JSON field names
    json_types: dict[str, dict[str, str]] = field(default_factory=dict)  # message -> json name -> message type
    client_methods: set[str] = field(default_factory=set)  # generated AvatarServiceClient methods


def _pascal(name: str) -> str:
    """protobuf's C# UnderscoresToCamelCase(name, cap_first=True): sha256 -> Sha256, a_b1c -> AB1C."""
    out, cap = [], True
    for ch in name:
        if ch == "_":
            cap = True
        elif ch.isdigit():
            out.append(ch)
            cap = True
        else:
            out.append(ch.upper() if cap else ch)
            cap = False
    return "".join(out)


def _enum_value_csharp(enum_name: str, value: str) -> str:
    """TEXTURE_FORMAT_RGBA8 in TextureFormat -> Rgba8 (prefix stripped, then PascalCase)."""
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum_name).upper() + "_"
    stripped = value[len(prefix):] if value.startswith(prefix) else value
    return _pascal(stripped.lower())


def load_proto(proto_path: Path, tmp: Path) -> ProtoNames:
    from grpc_tools import protoc

    out = tmp / "avatar.pb"
    rc = protoc.main(["protoc", f"-I{proto_path.parent.parent.parent}", f"--descriptor_set_out={out}",
                      str(proto_path)])
    assert rc == 0, f"protoc failed on {proto_path}"
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (file,) = fds.file
    names = ProtoNames()
    object_members = {"Clone", "Equals", "GetHashCode", "ToString", "MergeFrom", "WriteTo", "CalculateSize",
                      "Descriptor", "Parser"}
    for msg in file.message_type:
        members: dict[str, str] = {m: "" for m in object_members}
        json_names: set[str] = set()
        json_types: dict[str, str] = {}
        for f in msg.field:
            prop = _pascal(f.name)
            if prop == msg.name:  # C# cannot name a member like its class
                prop += "_"
            is_message = f.type == descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE and f.label != 3
            members[prop] = f.type_name.rsplit(".", 1)[-1] if is_message else ""
            if f.proto3_optional:  # explicit presence: HasSeed / ClearSeed
                members["Has" + prop] = ""
                members["Clear" + prop] = ""
            json_names.add(f.json_name)
            if is_message:
                json_types[f.json_name] = members[prop]
        for i, oneof in enumerate(msg.oneof_decl):
            if oneof.name.startswith("_"):  # synthetic oneof of a proto3 optional field
                continue
            members[_pascal(oneof.name) + "Case"] = ""  # the property: message.EventCase
            members[_pascal(oneof.name) + "OneofCase"] = ""  # the nested enum type
            members["Clear" + _pascal(oneof.name)] = ""
            names.oneof_cases[msg.name] = {"None"} | {
                _pascal(f.name) for f in msg.field if f.HasField("oneof_index") and f.oneof_index == i}
        names.messages[msg.name] = members
        names.json_names[msg.name] = json_names
        names.json_types[msg.name] = json_types
    for enum in file.enum_type:
        names.enums[enum.name] = {_enum_value_csharp(enum.name, v.name) for v in enum.value}
        names.enum_value_names |= {v.name for v in enum.value}
    for service in file.service:
        for m in service.method:
            names.client_methods.add(m.name)
            if not m.client_streaming and not m.server_streaming:
                names.client_methods.add(m.name + "Async")
    return names


# --------------------------------------------------------------------------------------------
# What the sources use


def csharp_sources() -> list[Path]:
    files = [p for p in UNITY.rglob("*.cs") if "Generated" not in p.parts]
    files += list((GODOT / "csharp").rglob("*.cs"))
    return sorted(files)


def _strip_comments(code: str) -> str:
    code = re.sub(r"/\*.*?\*/", "", code, flags=re.S)
    code = re.sub(r"//[^\n]*", "", code)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', code)  # string contents are not code


def _matching_brace(code: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(code)):
        if code[i] == "{":
            depth += 1
        elif code[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced braces")


def check_csharp(names: ProtoNames, sources: list[Path]) -> tuple[list[str], int]:
    """Returns (problems, number of proto usages checked)."""
    problems: list[str] = []
    checked = 0
    message_types = "|".join(sorted(names.messages, key=len, reverse=True))
    for path in sources:
        rel = path.relative_to(REPO)
        code = _strip_comments(path.read_text(encoding="utf-8"))
        # The proto types are reached through `Proto.` (alias of MoeAvatar.V1) or fully qualified.
        code = re.sub(r"\b(?:global::)?MoeAvatar\.V1\.", "", code)
        code = re.sub(r"(?<![\w.])Proto\.", "", code)

        # 1. Enum values: TextureFormat.Png, Stage.Queued (not UnityEngine.TextureFormat.RGBA32).
        for enum, value in re.findall(r"(?<![\w.])(" + "|".join(PROTO_ENUM_TYPES) + r")\.(\w+)", code):
            checked += 1
            if value not in names.enums[enum]:
                problems.append(f"{rel}: {enum}.{value} is not a value of proto enum {enum}")

        # 2. Oneof cases: GenerateResponse.EventOneofCase.Texture
        for msg, case_enum, value in re.findall(r"(?<![\w.])(\w+)\.(\w+OneofCase)\.(\w+)", code):
            checked += 1
            if msg not in names.oneof_cases or value not in names.oneof_cases[msg]:
                problems.append(f"{rel}: {msg}.{case_enum}.{value} is not a oneof case in the proto")

        # 3. Object initialisers: new GenerateRequest { Prompt = ..., Output = new OutputOptions { ... } }
        for m in re.finditer(r"\bnew\s+(" + message_types + r")\s*(?:\(\s*\))?\s*\{", code):
            body_start = m.end() - 1
            body = code[body_start + 1:_matching_brace(code, body_start)]
            depth, top = 0, []
            for ch in body:  # keep only the top level of this initialiser
                depth += ch in "({["
                depth -= ch in ")}]"
                top.append(ch if depth == 0 else " ")
            for member in re.findall(r"(?:^|,)\s*(\w+)\s*=(?!=)", "".join(top)):
                checked += 1
                if member not in names.messages[m.group(1)]:
                    problems.append(f"{rel}: new {m.group(1)} {{ {member} = ... }}: no such field in the proto")

        # 4. Member chains on variables declared with a proto message type:
        #    `Started started = ...; started.RequestId`, `(GenerateResponse message)`, `message.Texture.Width`.
        variables: dict[str, set[str]] = {}
        for typ, var in re.findall(r"(?<![\w.])(" + message_types + r")\??\s+(\w+)\s*(?=[=;,)]|\bin\b)", code):
            variables.setdefault(var, set()).add(typ)
        for var, typ in re.findall(r"\bvar\s+(\w+)\s*=\s*new\s+(" + message_types + r")\b", code):
            variables.setdefault(var, set()).add(typ)
        # A name reused for different types in one file (`request`) must fit at least one of them.
        for var, types in variables.items():
            for chain in re.findall(r"(?<![\w.])" + re.escape(var) + r"((?:\.\w+)+)", code):
                errors = []
                for typ in sorted(types):
                    current, error = typ, ""
                    for member in chain.strip(".").split("."):
                        if not current:  # a scalar/bytes/repeated member: the rest is not proto
                            break
                        if member not in names.messages[current]:
                            error = f"{rel}: {var}{chain}: {current} has no member {member} in the proto"
                            break
                        current = names.messages[current][member]
                    errors.append(error)
                checked += 1
                if all(errors):
                    problems.append(errors[0])

        # 5. RPCs through the generated stub (`Raw.` in AvatarClient, or any AvatarServiceClient variable).
        stub_vars = {"Raw"} | set(re.findall(r"AvatarServiceClient\??\s+(\w+)\s*[=;,)]", code))
        for var in stub_vars:
            for method in re.findall(r"(?<![\w.])" + re.escape(var) + r"\.(\w+)\s*\(", code):
                checked += 1
                if method not in names.client_methods:
                    problems.append(f"{rel}: {var}.{method}(...) is not an AvatarService RPC")
    return problems, checked


def bridge_error_keys() -> set[str]:
    """The JSON keys of the HTTP bridge's errors, from the bridge's own code: the final stream
    line {"error": {...}} and the body {"code", "message", "details": [{"field", "description"}], "requestId"}."""
    import grpc

    from moe_avatar.server.http_bridge import BridgeError

    error = BridgeError(grpc.StatusCode.INVALID_ARGUMENT, "m", [("f", "d")], "request-id").to_json()
    return {"error"} | set(error) | set(error["details"][0])


def check_gdscript(names: ProtoNames, path: Path,
                   request_func: str = "build_request_body") -> tuple[list[str], int]:
    """Every JSON key and enum name the bridge client reads or writes must exist in the proto
    (or, for error handling, in the HTTP bridge's error format)."""
    problems: list[str] = []
    code = "\n".join(line.split("#", 1)[0] if not line.lstrip().startswith("##") else "" for line in
                     path.read_text(encoding="utf-8").splitlines())
    all_json = set().union(*names.json_names.values())
    # Keys of the parsed proto JSON: event.has("started"), header.get("totalBytes", ...), event["texture"]
    used = set(re.findall(r'\.(?:get|has)\(\s*"(\w+)"', code)) | set(re.findall(r'\w\["(\w+)"\]', code))
    # Dictionary literal keys inside build_request_body: resolved against GenerateRequest / OutputOptions.
    body = re.search(rf"func {request_func}\(.*?\n(?=func |\Z)", code, re.S)
    assert body, f"{request_func}() not found in {path.name}"
    checked = 0
    request_keys = set(re.findall(r'"(\w+)"\s*:', body.group(0))) | set(re.findall(r'body\["(\w+)"\]', body.group(0)))
    output = re.search(r'"output"\s*:\s*\{([^}]*)\}', body.group(0))
    output_keys = set(re.findall(r'"(\w+)"\s*:', output.group(1))) if output else set()
    for key in sorted(request_keys - output_keys):
        checked += 1
        if key not in names.json_names["GenerateRequest"]:
            problems.append(f"{path.name}: request key {key!r} is not a GenerateRequest field (proto JSON name)")
    for key in sorted(output_keys):
        checked += 1
        if key not in names.json_names["OutputOptions"]:
            problems.append(f"{path.name}: output key {key!r} is not an OutputOptions field (proto JSON name)")
    # Keys this client adds to its own `state`/`infos` dictionaries are not proto: they are the
    # ones it only ever writes (state["header"] = ...), never reads from the server's JSON.
    written_only = set(re.findall(r'state\["(\w+)"\]\s*=', code)) | {"textures", "infos", "done", "header", "buffer"}
    error_keys = bridge_error_keys()
    for key in sorted(used & (error_keys - all_json)):
        checked += 1  # error handling: these exist in the bridge's error JSON (checked above)
    for key in sorted(used - written_only - error_keys):
        checked += 1
        if key not in all_json:
            problems.append(f"{path.name}: JSON key {key!r} is not a field of any proto message")
    for enum_value in sorted(set(re.findall(r'"((?:TEXTURE_FORMAT|ROW_ORDER|RESIZE_FILTER|STAGE)_\w+)"', code))):
        checked += 1
        if enum_value not in names.enum_value_names:
            problems.append(f"{path.name}: {enum_value} is not a proto enum value")
    # The event names read from each JSON line are the GenerateResponse oneof fields.
    for event in re.findall(r'event\.has\("(\w+)"\)', code):
        if event != "error":  # the bridge's final error line
            checked += 1
            if event not in names.json_names["GenerateResponse"]:
                problems.append(f"{path.name}: event {event!r} is not a GenerateResponse field")
    return problems, checked


# --------------------------------------------------------------------------------------------
# Tests


@pytest.fixture(scope="module")
def proto_names(tmp_path_factory) -> ProtoNames:
    return load_proto(PROTO, tmp_path_factory.mktemp("proto"))


def test_csharp_sources_use_only_names_in_the_proto(proto_names):
    problems, checked = check_csharp(proto_names, csharp_sources())
    assert not problems, "\n".join(problems)
    assert checked >= 60, f"only {checked} proto usages found: is the C# scanner still matching the sources?"


def test_gdscript_uses_only_proto_json_names(proto_names):
    problems, checked = check_gdscript(proto_names, GD_CLIENT)
    assert not problems, "\n".join(problems)
    assert checked >= 25, f"only {checked} JSON usages found"
    problems, checked = check_gdscript(proto_names, GD3_SMOKE, request_func="_init")
    assert not problems, "\n".join(problems)
    assert checked >= 15, f"only {checked} JSON usages found in the Godot 3 smoke script"


def test_gdscript_handles_the_bridge_error_format():
    """The addon reads the error keys the bridge really sends (body and final stream line)."""
    keys = bridge_error_keys()
    for path in (GD_CLIENT, GD3_SMOKE):
        code = path.read_text(encoding="utf-8")
        assert 'event.has("error")' in code, path.name
        for key in ("code", "message", "details", "field"):
            assert f'.get("{key}"' in code, (path.name, key)
            assert key in keys


def test_a_renamed_proto_field_is_caught(tmp_path):
    """The checks are real: rename fields in a copy of the proto and they must fail."""
    text = PROTO.read_text(encoding="utf-8")
    renames = [("uint32 texture_index = 1;", "uint32 image_index = 1;"),
               ("RowOrder row_order = 4;", "RowOrder rows = 4;"),
               ("TEXTURE_FORMAT_RGBA8 = 2;", "TEXTURE_FORMAT_RAW = 2;"),
               ("rpc Edit(stream EditRequest)", "rpc LiveEdit(stream EditRequest)"),
               ("bytes sha256 = 10;", "bytes digest = 10;")]
    for old, new in renames:
        assert old in text, f"mutation anchor {old!r} missing from the proto"
        text = text.replace(old, new)
    mutated = tmp_path / "moeavatar" / "v1" / "avatar.proto"
    mutated.parent.mkdir(parents=True)
    mutated.write_text(text, encoding="utf-8")
    names = load_proto(mutated, tmp_path)
    cs_problems = "\n".join(check_csharp(names, csharp_sources())[0])
    for needle in ("TextureIndex", "RowOrder", "Rgba8", "Raw.Edit(", "Sha256"):
        assert needle in cs_problems, f"C# check missed the rename behind {needle!r}:\n{cs_problems}"
    gd_problems = "\n".join(check_gdscript(names, GD_CLIENT)[0])
    for needle in ("textureIndex", "rowOrder", "TEXTURE_FORMAT_RGBA8", "sha256"):
        assert needle in gd_problems, f"GDScript check missed {needle!r}:\n{gd_problems}"
    gd3_problems = "\n".join(check_gdscript(names, GD3_SMOKE, request_func="_init")[0])
    for needle in ("textureIndex", "rowOrder", "sha256"):
        assert needle in gd3_problems, f"Godot 3 check missed {needle!r}:\n{gd3_problems}"


def test_csharp_naming_rules_match_protoc_when_available(proto_names, tmp_path):
    """Cross-check the derived C# names against protoc's own C# generator, where installed."""
    protoc = shutil.which("protoc")
    if protoc is None:
        pytest.skip("no `protoc` on PATH (Python's grpc_tools.protoc has no C# generator)")
    subprocess.run([protoc, f"-I{REPO / 'protos'}", f"--csharp_out={tmp_path}", str(PROTO)], check=True, timeout=60)
    generated = (tmp_path / "Avatar.cs").read_text(encoding="utf-8")
    for enum, values in proto_names.enums.items():
        block = re.search(r"public enum " + enum + r" \{(.*?)\}", generated, re.S).group(1)
        assert set(re.findall(r"\] (\w+) = \d+", block)) == values, enum
    segments = re.split(r"public sealed partial class (\w+) : pb::IMessage", generated)[1:]
    for name, body in zip(segments[::2], segments[1::2]):
        props = set(re.findall(r"public (?:global::[\w.]+|[\w.<>:]+) (\w+) \{", body))
        proto_props = {m for m, _ in proto_names.messages[name].items()} - {"Descriptor", "Parser"}
        assert props - {"Descriptor", "Parser"} <= proto_props, (name, props - proto_props)


def test_package_layout():
    import json

    package = json.loads((UNITY / "package.json").read_text())
    assert package["name"] == "com.moeavatar.client"
    for sample in package["samples"]:
        assert (UNITY / sample["path"]).is_dir(), sample["path"]
    for asmdef in UNITY.rglob("*.asmdef"):
        json.loads(asmdef.read_text())
    runtime_core = [UNITY / "Runtime" / n for n in ("AvatarCore.cs", "AvatarClient.cs", "AvatarEditSession.cs")]
    for path in runtime_core:  # shared with Godot: must not touch UnityEngine
        assert "UnityEngine" not in _strip_comments(path.read_text()), path
    csproj = (GODOT / "csharp" / "MoeAvatarGodot.csproj").read_text()
    for path in runtime_core:
        assert f"../../unity/Runtime/{path.name}" in csproj
        assert (GODOT / "csharp" / f"../../unity/Runtime/{path.name}").resolve().exists()
    assert 'script="plugin.gd"' in (GODOT / "gdscript" / "addons" / "moe_avatar" / "plugin.cfg").read_text()


CSHARP_CHECK = r"""
using System;
using System.Text;
using MoeAvatar.Client;

public static class Check
{
    static int failures;
    static void Expect(bool ok, string what) { if (!ok) { failures++; Console.WriteLine("FAIL " + what); } }
    static string Hex(byte[] b) { var s = new StringBuilder(); foreach (var x in b) s.Append(x.ToString("x2")); return s.ToString(); }
    static byte[] Data() { var d = new byte[1280]; for (int i = 0; i < d.Length; i++) d[i] = (byte)(i % 256); return d; }
    static byte[] Slice(byte[] a, int o, int n) { var r = new byte[n]; Buffer.BlockCopy(a, o, r, 0, n); return r; }
    static TextureHeaderInfo Header(byte[] sha, ulong total)
    {
        return new TextureHeaderInfo(0, 16, 20, AvatarImageFormat.Rgba8, AvatarRowOrder.BottomUp, 42UL, 0.31f, total, sha, 0f);
    }
    static string Throws(Action a) { try { a(); return ""; } catch (AvatarStreamException e) { return e.Message; } }

    public static int Main()
    {
        byte[] data = Data();
        byte[] sha = TextureAssembler.ComputeSha256(data);
        Expect(Hex(sha) == "EXPECTED_SHA", "SHA-256 known vector: " + Hex(sha));

        var a = new TextureAssembler();
        a.OnStarted("req-1", "chibi-64", "v1", 42, 0.7f, 1);
        a.OnHeader(Header(sha, (ulong)data.Length));
        Expect(!a.OnChunk(0, 0, Slice(data, 0, 1000), false), "first chunk does not finish");
        Expect(a.OnChunk(0, 1000, Slice(data, 1000, 280), true), "last chunk finishes");
        a.OnDone(1, 0.5f);
        AvatarResult r = a.ToResult();
        Expect(r.Textures.Count == 1 && r.Textures[0].Seed == 42UL && r.Textures[0].Width == 16, "result texture");
        Expect(r.Textures[0].ModelVersion == "v1" && r.Textures[0].RowOrder == AvatarRowOrder.BottomUp, "result metadata");
        Expect(Hex(r.Textures[0].Data) == Hex(data), "reassembled bytes");
        Expect(r.Reading.Families.Count == 0 && r.Reading.Summary() == "EXPECTED_NO_READING", "no reading: " + r.Reading.Summary());

        var read = new TextureAssembler();
        read.OnStarted("req-2", "chibi-64", "v1", 1, 0.7f, 0);
        read.OnReading(new PromptReadingInfo(new[] {
            new FamilyReadingInfo("hair_color", true, 0.97f, "pink", 0.984f),
            new FamilyReadingInfo("eye_color", false, 0.12f, "blue", 0.4f),
            new FamilyReadingInfo("head_accessory", true, 0.88f, "cat ears + bow", 0.555f),
            new FamilyReadingInfo("bangs", false, 0.03f, "none", 0.9f) }));
        read.OnDone(0, 0.1f);
        Expect(read.ToResult().Reading.Summary() == "EXPECTED_READING", "reading summary: " + read.ToResult().Reading.Summary());
        var open = new PromptReadingInfo(new[] { new FamilyReadingInfo("bangs", false, 0.1f, "none", 0.5f) });
        Expect(open.Summary() == "EXPECTED_OPEN_READING", "nothing stated: " + open.Summary());

        var bad = (byte[])data.Clone(); bad[7] ^= 1;
        var b = new TextureAssembler();
        b.OnHeader(Header(sha, (ulong)data.Length));
        Expect(Throws(() => b.OnChunk(0, 0, bad, true)).Contains("SHA-256"), "corrupt bytes rejected");
        var c = new TextureAssembler();
        c.OnHeader(Header(sha, (ulong)data.Length));
        Expect(Throws(() => c.OnChunk(0, 5, data, true)).Contains("offset"), "out-of-order chunk rejected");
        var d = new TextureAssembler();
        d.OnHeader(Header(sha, (ulong)data.Length));
        Expect(Throws(() => d.OnChunk(0, 0, Slice(data, 0, 10), true)).Contains("header says"), "short texture rejected");
        Expect(Throws(() => new TextureAssembler().OnChunk(3, 0, data, true)).Contains("without its header"), "chunk without header");
        var e = new TextureAssembler();
        Expect(Throws(() => e.ToResult()).Contains("Done"), "missing Done detected");

        var policy = new RetryPolicy();
        var rng = new Random(1);
        for (int attempt = 0; attempt < 10; attempt++)
        {
            double cap = Math.Min(5000, 200 * Math.Pow(2, attempt));
            double ms = policy.DelayFor(attempt, rng).TotalMilliseconds;
            Expect(ms >= cap / 2 && ms <= cap, "backoff " + attempt + ": " + ms);
        }

        var evicted = new System.Collections.Generic.List<int>();
        var lru = new LruCache<string, int>(2, v => evicted.Add(v));
        lru.Set("a", 1); lru.Set("b", 2); lru.Get("a"); lru.Set("c", 3);
        Expect(lru.ContainsKey("a") && !lru.ContainsKey("b") && lru.ContainsKey("c") && evicted.Count == 1 && evicted[0] == 2, "LRU evicts the least recently used");
        Expect(AvatarCacheKey.For("cat ears ", 1, 0.7f, "", "v1", AvatarImageFormat.Png, AvatarRowOrder.TopDown, 0)
            == AvatarCacheKey.For("cat ears", 1, 0.7f, "", "v1", AvatarImageFormat.Png, AvatarRowOrder.TopDown, 0), "cache key trims");
        Expect(AvatarCacheKey.For("cat ears", 1, 0.7f, "", "v1", AvatarImageFormat.Png, AvatarRowOrder.TopDown, 0)
            != AvatarCacheKey.For("cat ears", 2, 0.7f, "", "v1", AvatarImageFormat.Png, AvatarRowOrder.TopDown, 0), "cache key has the seed");

        Console.WriteLine(failures == 0 ? "csharp core: all checks passed" : failures + " failures");
        return failures == 0 ? 0 : 1;
    }
}
"""


def test_csharp_core_compiles_and_runs_with_mono(tmp_path):
    mcs, mono = shutil.which("mcs"), shutil.which("mono")
    if mcs is None or mono is None:
        pytest.skip("Mono's mcs/mono not installed (Debian: apt-get install -y mono-mcs mono-runtime)")
    expected = hashlib.sha256(bytes(i % 256 for i in range(1280))).hexdigest()
    program = tmp_path / "Check.cs"
    from moe_avatar_client.client import reading_summary
    from moeavatar.v1 import avatar_pb2 as pb

    def reading(*rows):
        return pb.PromptReading(families=[pb.FamilyReading(family=f, stated=s, stated_probability=sp, value=v,
                                                           value_probability=vp) for f, s, sp, v, vp in rows])

    four = reading(("hair_color", True, 0.97, "pink", 0.984), ("eye_color", False, 0.12, "blue", 0.4),
                   ("head_accessory", True, 0.88, "cat ears + bow", 0.555), ("bangs", False, 0.03, "none", 0.9))
    vectors = {"EXPECTED_SHA": expected, "EXPECTED_NO_READING": reading_summary(None),
               "EXPECTED_OPEN_READING": reading_summary(reading(("bangs", False, 0.1, "none", 0.5))),
               "EXPECTED_READING": reading_summary(four)}  # the C# summary is the Python CLI's line
    source = CSHARP_CHECK
    for key in sorted(vectors, key=len, reverse=True):
        source = source.replace(key, vectors[key])
    program.write_text(source)
    exe = tmp_path / "check.exe"
    build = subprocess.run([mcs, "-warnaserror+", "-nowarn:1591", f"-out:{exe}", str(program),
                            str(UNITY / "Runtime" / "AvatarCore.cs")], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    run = subprocess.run([mono, str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all checks passed" in run.stdout


def test_gdscript_chunk_fields_match_python_proto_json():
    """The JSON the bridge will send (proto JSON mapping of a real GenerateResponse) has the keys
    and value shapes the GDScript parser expects: camelCase, uint64 as strings, bytes as base64."""
    from google.protobuf import json_format

    from moeavatar.v1 import avatar_pb2 as pb

    data = bytes(range(200))
    header = pb.GenerateResponse(texture=pb.TextureHeader(index=1, width=8, height=8, format=pb.TEXTURE_FORMAT_RGBA8,
                                                          seed=7, total_bytes=len(data),
                                                          sha256=hashlib.sha256(data).digest()))
    chunk = pb.GenerateResponse(chunk=pb.TextureChunk(texture_index=1, offset=0, data=data, last=True))
    h = json_format.MessageToDict(header)["texture"]
    c = json_format.MessageToDict(chunk)["chunk"]
    assert h["totalBytes"] == "200" and h["seed"] == "7" and h["format"] == "TEXTURE_FORMAT_RGBA8"
    assert base64.b64decode(h["sha256"]) == hashlib.sha256(data).digest()
    assert c["textureIndex"] == 1 and "offset" not in c and c["last"] is True  # defaults are left out
    code = GD_CLIENT.read_text()
    assert 'chunk.get("offset", "0")' in code and 'header.get("totalBytes", "0")' in code
    assert 'str(header.get("seed", ""))' in code


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
