"""Shared fixtures: the committed tiny model bundle (tests/fixtures/models/tiny).

It is what `python -m moe_avatar.export.tiny` writes with the real exporter (a test checks
that it still is), so the server and client tests need no torch: a serving install tests itself.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "models"


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository directory holding one tiny bundle named `tiny` (64 px); a copy, so tests may change it."""
    repo = tmp_path_factory.mktemp("model_repo")
    shutil.copytree(FIXTURES / "tiny", repo / "tiny")
    return repo


@pytest.fixture(scope="session")
def tiny_bundle(model_repo: Path) -> Path:
    return model_repo / "tiny"
