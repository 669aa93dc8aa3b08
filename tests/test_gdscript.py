"""Every .gd file parses as GDScript 2.0 and passes gdtoolkit's linter (the line-length and
return-count limits raised, see LINT_CONFIG), plus the rules the Godot 4 addon keeps: no
parameter shadows the global `seed()`, every FileAccess.open result is null-checked, and the
WebSocket Edit client speaks the proto JSON names of EditRequest / EditResponse.

gdtoolkit (PyPI) is in the `test` extra; skipped with the reason when it is missing. Godot 4 itself
does not run here; the Godot 3 twin of the request logic runs in tests/test_godot_smoke.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from moeavatar.v1 import avatar_pb2 as pb

GODOT = Path(__file__).resolve().parents[1] / "clients" / "godot"
ADDON = GODOT / "gdscript" / "addons" / "moe_avatar"
GD_FILES = sorted(GODOT.rglob("*.gd"))
LINT_CONFIG = {"max-line-length": 140, "max-returns": 12}


def test_the_addon_has_its_scripts():
    assert {p.name for p in ADDON.glob("*.gd")} == {"plugin.gd", "avatar_dock.gd", "moe_avatar_client.gd",
                                                    "moe_avatar_edit.gd"}


@pytest.mark.parametrize("path", GD_FILES, ids=lambda p: p.name)
def test_parses_and_lints_as_gdscript_2(path):
    pytest.importorskip("gdtoolkit", reason="pip install gdtoolkit (test extra)")
    from gdtoolkit.linter import DEFAULT_CONFIG, lint_code
    from gdtoolkit.parser import parser

    code = path.read_text(encoding="utf-8")
    parser.parse(code)  # raises on a syntax error
    problems = lint_code(code, {**DEFAULT_CONFIG, **LINT_CONFIG})
    assert not problems, "\n".join(f"{path.name}:{p.line}: {p.name}: {p.description}" for p in problems)


def test_the_checks_can_fail():
    pytest.importorskip("gdtoolkit", reason="pip install gdtoolkit (test extra)")
    from gdtoolkit.linter import DEFAULT_CONFIG, lint_code
    from gdtoolkit.parser import parser

    with pytest.raises(Exception):
        parser.parse("func broken(:\n\tpass\n")
    assert lint_code("func BadName():\n\tpass\n", {**DEFAULT_CONFIG, **LINT_CONFIG})


@pytest.mark.parametrize("path", [p for p in GD_FILES if "godot3" not in p.parts], ids=lambda p: p.name)
def test_no_parameter_shadows_the_global_seed(path):
    code = path.read_text(encoding="utf-8")
    for params in re.findall(r"func \w+\(([^)]*)\)", code, re.S):
        names = [p.split(":")[0].split("=")[0].strip() for p in params.split(",")]
        assert "seed" not in names, f"{path.name}: parameter `seed` shadows the global seed()"
    assert not re.search(r"\bvar seed\b", code), f"{path.name}: variable `seed` shadows the global seed()"


@pytest.mark.parametrize("path", [p for p in GD_FILES if "godot3" not in p.parts], ids=lambda p: p.name)
def test_file_access_open_is_null_checked(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if m := re.search(r"var (\w+)\s*:?=\s*FileAccess\.open\(", line):
            assert re.search(rf"if {m[1]} == null", lines[i + 1]), f"{path.name}:{i + 1}: {m[1]} not null-checked"


def test_edit_session_speaks_the_proto_json_names():
    code = (ADDON / "moe_avatar_edit.gd").read_text(encoding="utf-8")
    request = {f.json_name for f in pb.EditRequest.DESCRIPTOR.fields}
    response = {f.json_name for f in pb.EditResponse.DESCRIPTOR.fields}
    assert set(re.findall(r'\{"(\w+)": str\(_sequence\), "(\w+)"', code)[0]) == request
    read = set(re.findall(r'frame\.(?:has|get)\("(\w+)"', code))
    assert read == response - {"superseded"}, read  # superseded frames are dropped with the stale sequence
    assert "/v1/edit" in code and "WebSocketPeer" in code
