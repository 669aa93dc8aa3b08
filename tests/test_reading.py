"""What the model reads from a prompt (the bundle's reader graph, the generator's attribute
prior): reported in the Generate stream, by EncodeText, over the HTTP bridge and by the CLI,
and absent, said plainly, for a bundle without a reader. Real server on the committed tiny
bundle; the expected answer is reader.onnx run directly on the server's own text embedding."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import onnxruntime as ort
import pytest
from server_util import free_port, running_server
from test_http_bridge import lines, post

from moe_avatar.bundle import BundleError, decode_reading, load_bundle
from moe_avatar_client import cli
from moe_avatar_client.client import AvatarClient, reading_summary
from moeavatar.v1 import avatar_pb2 as pb

PROMPT = "purple long hair, glasses, for my RPG"


@pytest.fixture(scope="module")
def server(model_repo):
    with running_server(model_repo, http_port=free_port()) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with AvatarClient(server.target, timeout=30) as c:
        yield c


def expected(tiny_bundle: pathlib.Path, embedding: list[float]) -> list:
    """reader.onnx on the embedding, decoded with the manifest's labels."""
    bundle = load_bundle(tiny_bundle)
    session = ort.InferenceSession(str(tiny_bundle / "reader.onnx"), providers=["CPUExecutionProvider"])
    stated, values = session.run(None, {"text_embedding": np.array([embedding], np.float32)})
    return decode_reading(bundle.reading, stated[0], values[0])


def as_tuples(reading: pb.PromptReading) -> list[tuple]:
    return [(f.family, f.stated, f.value, round(f.stated_probability, 5), round(f.value_probability, 5))
            for f in reading.families]


def test_encode_text_reports_the_reader_graphs_answer_per_family(client, tiny_bundle):
    embedding = client.encode_text(PROMPT)
    reading = client.read_prompt(PROMPT)
    want = expected(tiny_bundle, embedding)
    assert [f.family for f in reading.families] == list(load_bundle(tiny_bundle).reading)
    assert as_tuples(reading) == [(r.family, r.stated, r.value, round(r.stated_probability, 5),
                                   round(r.value_probability, 5)) for r in want]
    for f in reading.families:
        assert f.stated == (f.stated_probability >= 0.5) and 0 < f.value_probability <= 1
    assert client.model_info().reads_prompts


def test_generate_stream_sends_one_reading_after_the_prompt_is_encoded(server, client):
    events = list(client.stub.Generate(pb.GenerateRequest(prompt=PROMPT, count=2, seed=3), timeout=30))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds.count("reading") == 1
    at = kinds.index("reading")
    assert kinds.index("started") < at < kinds.index("texture")
    assert as_tuples(events[at].reading) == as_tuples(client.read_prompt(PROMPT))
    result = client.generate(PROMPT, count=1, seed=3)
    assert as_tuples(result.reading) == as_tuples(events[at].reading)


def test_http_bridge_reports_the_reading(server, client):
    status, _, body = post(server, "/v1/encode-text", {"prompt": PROMPT})
    assert status == 200
    families = json.loads(body)["reading"]["families"]
    grpc_reading = client.read_prompt(PROMPT)
    assert [f["family"] for f in families] == [f.family for f in grpc_reading.families]
    assert [f.get("stated", False) for f in families] == [f.stated for f in grpc_reading.families]
    assert [f["value"] for f in families] == [f.value for f in grpc_reading.families]
    status, _, body = post(server, "/v1/generate", {"prompt": PROMPT, "count": 1, "seed": "3"})
    readings = [e["reading"] for e in lines(body) if "reading" in e]
    assert status == 200 and len(readings) == 1 and readings[0]["families"] == families


def test_cli_prints_a_one_line_summary(server, client, capsys, tmp_path):
    reading = client.read_prompt(PROMPT)
    assert cli.main(["--target", server.target, "read", PROMPT]) == 0
    line = capsys.readouterr().out.strip()
    assert line == reading_summary(reading)
    for f in reading.families:  # every family once: stated with its value, or listed as random
        assert (f"{f.family}={f.value} (" in line) == f.stated
    if any(not f.stated for f in reading.families):
        assert "; random: " in line
    assert cli.main(["--target", server.target, "read", PROMPT, "--all"]) == 0
    rows = [r.split("\t") for r in capsys.readouterr().out.strip().splitlines()]
    assert [r[0] for r in rows] == [f.family for f in reading.families]
    assert [r[1] for r in rows] == ["stated" if f.stated else "random" for f in reading.families]
    assert cli.main(["--target", server.target, "generate", PROMPT, "--seed", "1", "-q", "-o", str(tmp_path)]) == 0
    assert f"# read: {reading_summary(reading)}" in capsys.readouterr().err


def test_summary_lists_stated_families_then_the_random_ones():
    reading = pb.PromptReading(families=[
        pb.FamilyReading(family="hair_color", stated=True, stated_probability=0.99, value="purple", value_probability=0.9),
        pb.FamilyReading(family="eye_color", stated=False, stated_probability=0.1, value="blue", value_probability=0.3),
        pb.FamilyReading(family="head_accessory", stated=True, stated_probability=0.8, value="cat ears + bow",
                         value_probability=0.6)])
    assert reading_summary(reading) == "hair_color=purple (0.90), head_accessory=cat ears + bow (0.60); random: eye_color"
    assert reading_summary(None) == "the model does not report what it read"


def _without_reader(model_repo: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    repo = tmp_path / "repo"
    shutil.copytree(model_repo / "tiny", repo / "tiny")
    manifest = json.loads((repo / "tiny" / "manifest.json").read_text())
    del manifest["reading"], manifest["files"]["reader"]
    (repo / "tiny" / "reader.onnx").unlink()
    (repo / "tiny" / "manifest.json").write_text(json.dumps(manifest))
    return repo


def test_a_bundle_without_a_reader_serves_and_says_it_does_not_read(model_repo, tmp_path, capsys):
    with running_server(_without_reader(model_repo, tmp_path)) as s, AvatarClient(s.target, timeout=30) as c:
        assert not c.model_info().reads_prompts and c.read_prompt(PROMPT) is None
        result = c.generate(PROMPT, count=1, seed=1)
        assert result.reading is None and len(result.textures) == 1
        assert cli.main(["--target", s.target, "read", PROMPT]) == 1
        assert "does not report what it reads" in capsys.readouterr().err


@pytest.mark.parametrize("how, words", [
    ("no field", "files.reader needs field 'reading'"),
    ("no file", "field 'reading' needs files.reader"),
    ("empty family", "field 'reading' must map each family to a non-empty list"),
])
def test_reading_and_its_graph_come_together(model_repo, tmp_path, how, words):
    d = tmp_path / "tiny"
    shutil.copytree(model_repo / "tiny", d)
    manifest = json.loads((d / "manifest.json").read_text())
    if how == "no field":
        del manifest["reading"]
    elif how == "no file":
        del manifest["files"]["reader"]
    else:
        manifest["reading"]["hair_color"] = []
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=words):
        load_bundle(d)


def test_a_reader_that_disagrees_with_its_labels_is_refused_at_start(model_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(model_repo / "tiny", repo / "tiny")
    manifest = json.loads((repo / "tiny" / "manifest.json").read_text())
    manifest["reading"]["hair_color"].append("teal")  # one label more than the graph has values
    (repo / "tiny" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as info:
        with running_server(repo):
            pass
    assert "reader.onnx" in str(info.value) and "reading" in str(info.value)
