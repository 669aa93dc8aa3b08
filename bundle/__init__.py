"""The model-bundle contract (format: models/README.md), in one torch-free module.

Everything the server, the exporter, the evaluator and the benchmarks share about a bundle
lives here: the format version, the file names, each graph's input and output names and
shapes, the seed -> noise rule, the prompt cleaning the tokenizer cannot express, hashing,
and the one reader of manifest.json (`load_bundle`), which checks a bundle before anything
uses it. A bundle that fails a check is refused with a message naming the bundle and the
file or field: serving a half-broken model silently is worse than not starting.
"""

from __future__ import annotations

import hashlib
import html
import json
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (FORMAT_VERSION,)
MANIFEST = "manifest.json"
GRAPH_FILES = {"text_encoder": "text_encoder.onnx", "image_encoder": "image_encoder.onnx",
               "generator": "generator.onnx"}
# Graphs a bundle may leave out; a bundle without them is complete (the server resamples instead).
OPTIONAL_GRAPH_FILES = {"upscaler": "upscaler.onnx", "reader": "reader.onnx"}
TOKENIZER_FILE = "tokenizer.json"
REQUIRED_FILES = (*GRAPH_FILES, "tokenizer")
REQUIRED_INTS = ("resolution", "embed_dim", "z_dim", "context_length")


class BundleError(RuntimeError):
    """The bundle is unusable; the message says which bundle and which file or field."""


def graph_io(context_length: int, embed_dim: int, z_dim: int, resolution: int,
             upscaled: int | None = None, reading: tuple[int, int] | None = None) -> dict[str, dict[str, list[dict]]]:
    """Each graph's inputs and outputs: name, dtype and shape (a str dimension is dynamic);
    the upscaler's (`resolution` -> `upscaled` px) when `upscaled` is given, the reader's
    when `reading` gives its (families, values) counts."""
    graphs = {
        "text_encoder": {
            "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", context_length]}],
            "outputs": [{"name": "text_embedding", "dtype": "float32", "shape": ["batch", embed_dim]}],
        },
        "image_encoder": {
            "inputs": [{"name": "image", "dtype": "uint8", "shape": ["batch", "height", "width", 4]}],
            "outputs": [{"name": "image_embedding", "dtype": "float32", "shape": ["batch", embed_dim]}],
        },
        "generator": {
            "inputs": [
                {"name": "z", "dtype": "float32", "shape": ["batch", z_dim]},
                {"name": "text_embedding", "dtype": "float32", "shape": ["batch", embed_dim]},
                {"name": "psi", "dtype": "float32", "shape": ["batch"]},
            ],
            "outputs": [{"name": "image", "dtype": "uint8", "shape": ["batch", resolution, resolution, 4]}],
        },
    }
    if upscaled is not None:
        graphs["upscaler"] = {
            "inputs": [{"name": "image", "dtype": "uint8", "shape": ["batch", resolution, resolution, 4]}],
            "outputs": [{"name": "upscaled", "dtype": "uint8", "shape": ["batch", upscaled, upscaled, 4]}],
        }
    if reading is not None:  # the attribute prior's answer (manifest field `reading`)
        graphs["reader"] = {
            "inputs": [{"name": "text_embedding", "dtype": "float32", "shape": ["batch", embed_dim]}],
            "outputs": [{"name": "stated", "dtype": "float32", "shape": ["batch", reading[0]]},
                        {"name": "values", "dtype": "float32", "shape": ["batch", reading[1]]}],
        }
    return graphs


def noise_from_seeds(seeds: Sequence[int], z_dim: int) -> np.ndarray:
    """The seed -> z rule: z = PCG64(seed).standard_normal(z_dim), float32, one row per seed.

    The same seed gives the same avatar in the server, the evaluator and the exporter's
    parity check, so this is the only place it is written."""
    return np.stack([np.random.Generator(np.random.PCG64(int(s))).standard_normal(z_dim, dtype=np.float32)
                     for s in seeds])


def clean_prompt(text: str) -> str:
    """The one cleaning step tokenizer.json cannot express: open_clip unescapes HTML twice."""
    return html.unescape(html.unescape(text))


def sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


HEAD_SET_JOINER = " + "  # a reading's label for a set of items ("cat ears + bow"); the empty set is "none"


@dataclass(frozen=True)
class FamilyReading:
    """What the model read from a prompt for one attribute family (the generator's attribute
    prior): whether the prompt states it, and the value it would draw if so."""

    family: str
    stated: bool  # stated_probability >= 0.5; otherwise the generator draws the family at random
    stated_probability: float
    value: str
    value_probability: float


def reading_shape(reading: dict[str, list[str]]) -> tuple[int, int]:
    """(families, values): the reader graph's output widths for the manifest's `reading`."""
    return len(reading), sum(len(v) for v in reading.values())


def decode_reading(reading: dict[str, list[str]], stated: np.ndarray, values: np.ndarray) -> list[FamilyReading]:
    """One prompt's row of the reader graph's outputs (`stated` [F], `values` [V]) -> a
    FamilyReading per family, in the manifest's order (field `reading`)."""
    out, start = [], 0
    for f, (family, labels) in enumerate(reading.items()):
        block = values[start:start + len(labels)]
        k = int(np.argmax(block))
        out.append(FamilyReading(family, bool(stated[f] >= 0.5), float(stated[f]), labels[k], float(block[k])))
        start += len(labels)
    return out


@dataclass(frozen=True)
class Bundle:
    """A checked bundle: its directory, manifest and the paths of its files."""

    directory: pathlib.Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def resolution(self) -> int:
        return int(self.manifest["resolution"])

    @property
    def upscaled_resolution(self) -> int | None:
        """The upscaler's output size (manifest `upscaler.resolution`), or None without one."""
        up = self.manifest.get("upscaler")
        return int(up["resolution"]) if up else None

    @property
    def reading(self) -> dict[str, list[str]] | None:
        """What the reader graph answers (manifest `reading`): family -> the labels of its
        values, in the order of the graph's `stated` columns and `values` blocks; None without one."""
        reading = self.manifest.get("reading")
        return {str(f): [str(v) for v in vs] for f, vs in reading.items()} if reading else None

    @property
    def reading_shape(self) -> tuple[int, int] | None:
        """(families, values) of the reader graph's outputs, or None without one."""
        return reading_shape(self.reading) if self.reading else None

    @property
    def embed_dim(self) -> int:
        return int(self.manifest["embed_dim"])

    @property
    def z_dim(self) -> int:
        return int(self.manifest["z_dim"])

    @property
    def context_length(self) -> int:
        return int(self.manifest["context_length"])

    @property
    def precision(self) -> str:
        return str(self.manifest.get("precision", "fp32"))

    @property
    def attributes(self) -> dict[str, list[str]]:
        return {str(k): [str(v) for v in vs] for k, vs in (self.manifest.get("attributes") or {}).items()}

    def path(self, key: str) -> pathlib.Path:
        return self.directory / self.manifest["files"][key]["path"]

    def io(self, key: str) -> dict[str, list[dict]]:
        """The graph's inputs and outputs as this bundle's sizes make them."""
        return graph_io(self.context_length, self.embed_dim, self.z_dim, self.resolution,
                        self.upscaled_resolution, self.reading_shape)[key]


def _read_manifest(directory: pathlib.Path) -> dict[str, Any]:
    manifest_path = directory / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BundleError(f"{manifest_path}: cannot read manifest: {e}") from e
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: must be a JSON object, not {type(manifest).__name__}")
    return manifest


def _field_problems(manifest: dict[str, Any]) -> list[str]:
    """Every bad top-level field at once."""
    problems = []
    version = manifest.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        problems.append(f"format_version {version!r} is not supported (this code reads {SUPPORTED_FORMAT_VERSIONS})")
    for key in ("name", "version"):
        if not isinstance(manifest.get(key), str) or not manifest.get(key):
            problems.append(f"field {key!r} must be a non-empty string")
    for key in REQUIRED_INTS:
        value = manifest.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            problems.append(f"field {key!r} must be a positive integer")
    attributes = manifest.get("attributes", {})
    if attributes is not None and not (isinstance(attributes, dict) and all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in attributes.values())):
        problems.append("field 'attributes' must map each family to a list of strings")
    if not isinstance(manifest.get("files"), dict):
        problems.append("field 'files' must be an object")
    return problems + _upscaler_problems(manifest) + _reading_problems(manifest)


def _upscaler_problems(manifest: dict[str, Any]) -> list[str]:
    """The optional upscaler: field `upscaler` ({resolution: a whole multiple of the native
    one, above it}) and files.upscaler come together or not at all."""
    up, files = manifest.get("upscaler"), manifest.get("files")
    listed = isinstance(files, dict) and "upscaler" in files
    if up is None:
        return ["files.upscaler needs field 'upscaler' (its resolution)"] if listed else []
    native = manifest.get("resolution")
    size = up.get("resolution") if isinstance(up, dict) else None
    problems = []
    if not (isinstance(size, int) and not isinstance(size, bool) and isinstance(native, int) and native > 0
            and size > native and size % native == 0):
        problems.append("field 'upscaler.resolution' must be a whole multiple of 'resolution', above it")
    if not listed:
        problems.append("field 'upscaler' needs files.upscaler")
    return problems


def _reading_problems(manifest: dict[str, Any]) -> list[str]:
    """The optional reader: field `reading` (family -> at least one non-empty value label) and
    files.reader come together or not at all."""
    reading, files = manifest.get("reading"), manifest.get("files")
    listed = isinstance(files, dict) and "reader" in files
    if reading is None:
        return ["files.reader needs field 'reading' (its families and values)"] if listed else []
    problems = []
    if not (isinstance(reading, dict) and reading and all(
            isinstance(v, list) and v and all(isinstance(x, str) and x for x in v) for v in reading.values())):
        problems.append("field 'reading' must map each family to a non-empty list of value labels")
    if not listed:
        problems.append("field 'reading' needs files.reader")
    return problems


def _check_file(directory: pathlib.Path, key: str, entry: Any, verify_hashes: bool) -> None:
    where = f"{directory / MANIFEST}: files.{key}"
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not isinstance(entry.get("sha256"), str):
        raise BundleError(f"{where} must give path and sha256")
    path = (directory / entry["path"]).resolve()
    if directory.resolve() not in path.parents:
        raise BundleError(f"{where}.path {entry['path']!r} points outside the bundle")
    if not path.is_file():
        raise BundleError(f"{directory.name}: {entry['path']} is missing (listed as files.{key})")
    if verify_hashes:
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise BundleError(f"{directory.name}: {entry['path']} is corrupt or replaced: sha256 {actual} "
                              f"does not match the manifest's {entry['sha256']}")


def load_bundle(directory: pathlib.Path, verify_hashes: bool = True) -> Bundle:
    """Read manifest.json and check its fields, then each file's presence and sha256."""
    directory = pathlib.Path(directory)
    manifest = _read_manifest(directory)
    problems = _field_problems(manifest)
    if problems:
        raise BundleError(f"{directory / MANIFEST}: " + "; ".join(problems))
    for key in REQUIRED_FILES:
        _check_file(directory, key, manifest["files"].get(key), verify_hashes)
    for key, entry in manifest["files"].items():
        if key not in REQUIRED_FILES:
            _check_file(directory, key, entry, verify_hashes)
    return Bundle(directory=directory, manifest=manifest)


def find_bundles(repository: pathlib.Path) -> list[Bundle]:
    """Every sub-directory of the model repository that holds a manifest.json."""
    bundles = [load_bundle(d) for d in sorted(repository.iterdir()) if (d / MANIFEST).is_file()]
    seen: set[tuple[str, str]] = set()
    for b in bundles:
        if (b.name, b.version) in seen:
            raise BundleError(f"{b.directory}: model {b.name} version {b.version} is already loaded "
                              "from another directory")
        seen.add((b.name, b.version))
    if not bundles:
        raise BundleError(f"{repository}: no model bundles (sub-directories with a manifest.json)")
    return bundles


def _dims(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_graph_io(bundle: Bundle, key: str, inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
    """Check a loaded graph's real inputs and outputs (objects with `.name` and `.shape`,
    e.g. ONNX Runtime's NodeArg) against `bundle.io(key)`: the same names in the same
    order, and every fixed dimension equal to the manifest field it comes from.

    A manifest whose sizes disagree with its graphs (z_dim 101 for a generator built for
    100) would otherwise start a server whose every call fails."""
    file = bundle.manifest["files"][key]["path"]
    expected = bundle.io(key)
    # The same table with field names in place of sizes says which field made each dimension.
    named = graph_io("context_length", "embed_dim", "z_dim", "resolution", "upscaler.resolution",  # type: ignore[arg-type]
                     ("reading (its families)", "reading (its values)"))[key]
    for kind, actual in (("inputs", inputs), ("outputs", outputs)):
        want = [e["name"] for e in expected[kind]]
        got = [a.name for a in actual]
        if got != want:
            raise BundleError(f"{bundle.directory.name}: {file} has {kind} {got}, the bundle format "
                              f"(files.{key}) expects {want}")
        for exp, name_exp, act in zip(expected[kind], named[kind], actual):
            shape = list(act.shape)
            if len(shape) != len(exp["shape"]):
                raise BundleError(f"{bundle.directory.name}: {file} {kind[:-1]} {act.name!r} has shape "
                                  f"{_dims(shape)}, the bundle format (files.{key}) expects {_dims(exp['shape'])}")
            for size, field_name, real in zip(exp["shape"], name_exp["shape"], shape):
                if isinstance(size, int) and isinstance(real, int) and size != real:
                    where = (f"field {field_name!r} is {size}" if field_name in (*REQUIRED_INTS, "upscaler.resolution")
                             else f"{field_name} gives {size}" if field_name.startswith("reading")
                             else f"the bundle format expects {size}")
                    raise BundleError(f"{bundle.directory / MANIFEST}: {where} but {file} {kind[:-1]} "
                                      f"{act.name!r} has shape {_dims(shape)}")
