"""Load and check model bundles (format: models/README.md).

A bundle that fails any check is refused with a message naming the bundle and the file,
and the server does not start: serving a half-broken model silently is worse than not
starting.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import dataclass
from typing import Any

SUPPORTED_FORMAT_VERSIONS = (1,)
REQUIRED_FILES = ("text_encoder", "image_encoder", "generator", "tokenizer")
REQUIRED_INTS = ("resolution", "embed_dim", "z_dim", "context_length")


class BundleError(RuntimeError):
    """The bundle is unusable; the message says which bundle and which file or field."""


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
    def embed_dim(self) -> int:
        return int(self.manifest["embed_dim"])

    @property
    def z_dim(self) -> int:
        return int(self.manifest["z_dim"])

    @property
    def context_length(self) -> int:
        return int(self.manifest["context_length"])

    @property
    def attributes(self) -> dict[str, list[str]]:
        return {str(k): [str(v) for v in vs] for k, vs in (self.manifest.get("attributes") or {}).items()}

    def path(self, key: str) -> pathlib.Path:
        return self.directory / self.manifest["files"][key]["path"]


def sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_bundle(directory: pathlib.Path) -> Bundle:
    """Read manifest.json, check format version, fields, file presence and sha256."""
    manifest_path = directory / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BundleError(f"{manifest_path}: cannot read manifest: {e}") from e
    version = manifest.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise BundleError(f"{manifest_path}: format_version {version!r} is not supported "
                          f"(this server reads {SUPPORTED_FORMAT_VERSIONS})")
    for key in ("name", "version", *REQUIRED_INTS):
        if key not in manifest:
            raise BundleError(f"{manifest_path}: missing field {key!r}")
    for key in REQUIRED_INTS:
        if not isinstance(manifest[key], int) or manifest[key] <= 0:
            raise BundleError(f"{manifest_path}: field {key!r} must be a positive integer")
    files = manifest.get("files") or {}
    root = directory.resolve()
    for key in REQUIRED_FILES:
        entry = files.get(key)
        if not entry or "path" not in entry or "sha256" not in entry:
            raise BundleError(f"{manifest_path}: files.{key} must give path and sha256")
        path = (directory / entry["path"]).resolve()
        if root not in path.parents:
            raise BundleError(f"{manifest_path}: files.{key}.path {entry['path']!r} points outside the bundle")
        if not path.is_file():
            raise BundleError(f"{directory.name}: {entry['path']} is missing (listed as files.{key})")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise BundleError(f"{directory.name}: {entry['path']} is corrupt or replaced: sha256 {actual} "
                              f"does not match the manifest's {entry['sha256']}")
    return Bundle(directory=directory, manifest=manifest)


def find_bundles(repository: pathlib.Path) -> list[Bundle]:
    """Every sub-directory of the model repository that holds a manifest.json."""
    bundles = [load_bundle(d) for d in sorted(repository.iterdir()) if (d / "manifest.json").is_file()]
    seen: set[tuple[str, str]] = set()
    for b in bundles:
        if (b.name, b.version) in seen:
            raise BundleError(f"{b.directory}: model {b.name} version {b.version} is already loaded "
                              "from another directory")
        seen.add((b.name, b.version))
    if not bundles:
        raise BundleError(f"{repository}: no model bundles (sub-directories with a manifest.json)")
    return bundles
