"""Hardening: a server that is never half-ready (bundle checks, warm-up), validation gaps,
bounded memory per call, fairness between clients, and the HTTP bridge's timeouts and
headers. Heavy measurements are `slow`; their figures are in tests/RELIABILITY.md."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from moe_avatar.server.bundle import BundleError, sha256_file
from server_util import REPO_ROOT, running_server

# --- bundles: checked against their graphs, warmed up, refused in one line ----------------


def _broken(model_repo: pathlib.Path, tmp_path: pathlib.Path, how: str) -> pathlib.Path:
    """A copy of the tiny bundle with one thing wrong that still parses."""
    repo = tmp_path / "repo"
    shutil.copytree(model_repo / "tiny", repo / "tiny")
    d = repo / "tiny"
    manifest = json.loads((d / "manifest.json").read_text())
    if how in ("z_dim", "context_length", "resolution", "embed_dim"):
        manifest[how] += 13
    elif how == "attributes":
        manifest["attributes"] = "hair_color"
    elif how == "invalid onnx":
        (d / "generator.onnx").write_bytes(b"not an onnx graph")
        manifest["files"]["generator"]["sha256"] = sha256_file(d / "generator.onnx")
    elif how == "tokenizer":
        (d / "tokenizer.json").write_text('{"vocab": {"a": 1}}')
        manifest["files"]["tokenizer"]["sha256"] = sha256_file(d / "tokenizer.json")
    elif how == "manifest list":
        manifest = []
    (d / "manifest.json").write_text(json.dumps(manifest))
    return repo


BROKEN = [  # how, the file and the field the one line must name
    ("z_dim", "generator.onnx", "z_dim"),
    ("context_length", "text_encoder.onnx", "context_length"),
    ("resolution", "generator.onnx", "resolution"),
    ("embed_dim", "text_encoder.onnx", "embed_dim"),
    ("attributes", "manifest.json", "attributes"),
    ("invalid onnx", "generator.onnx", "files.generator"),
    ("tokenizer", "tokenizer.json", "files.tokenizer"),
    ("manifest list", "manifest.json", "JSON object"),
]


@pytest.mark.parametrize("how, file, field", BROKEN)
def test_broken_bundle_is_refused_naming_file_and_field(model_repo, tmp_path, how, file, field):
    repo = _broken(model_repo, tmp_path, how)
    with pytest.raises(BundleError) as info:
        with running_server(repo):
            pass
    assert file in str(info.value) and field in str(info.value)


@pytest.mark.parametrize("how", ["invalid onnx", "tokenizer", "z_dim"])
def test_broken_bundle_exits_1_with_one_cannot_start_line(model_repo, tmp_path, how):
    repo = _broken(model_repo, tmp_path, how)
    out = subprocess.run([sys.executable, "-m", "moe_avatar.server.main", "--models", str(repo), "--host",
                          "127.0.0.1", "--port", "0", "--device", "cpu", "--log-format", "json"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert all(json.loads(line) for line in lines)  # no traceback: every line is a JSON log entry
    refusals = [json.loads(line)["message"] for line in lines if "cannot start:" in line]
    assert len(refusals) == 1 and "Traceback" not in out.stderr, out.stderr


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def test_no_manifest_under_models_holds_an_absolute_path():
    manifests = sorted((REPO_ROOT / "models").glob("*/manifest.json"))
    assert manifests
    for path in manifests:
        absolute = [s for s in _strings(json.loads(path.read_text())) if s.startswith(("/", "~"))
                    or (len(s) > 2 and s[1] == ":" and s[2] in "\\/")]
        assert not absolute, f"{path}: absolute paths {absolute}"
