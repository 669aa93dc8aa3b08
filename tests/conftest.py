"""Shared fixtures: a tiny real model bundle, exported once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository directory holding one tiny exported bundle named `tiny` (64 px)."""
    from moe_avatar.export.tiny import make_tiny_bundle

    repo = tmp_path_factory.mktemp("model_repo")
    make_tiny_bundle(repo / "tiny", name="tiny", resolution=64)
    return repo


@pytest.fixture(scope="session")
def tiny_bundle(model_repo: Path) -> Path:
    return model_repo / "tiny"
