"""Shared fixtures: the committed tiny model bundle (tests/fixtures/models/tiny).

It is what `python -m moe_avatar.export.tiny` writes with the real exporter (a test checks
that it still is), so the server and client tests need no torch: a serving install tests itself.
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "models"
# Modules that test training and export: they need the `train` extra (torch, open_clip, onnx).
TRAINING_TESTS = ["test_detail.py", "test_evaluate.py", "test_export.py", "test_labels.py", "test_prior.py",
                  "test_training.py", "test_upscaler.py"]
HAS_TRAIN_EXTRA = importlib.util.find_spec("torch") is not None
collect_ignore = [] if HAS_TRAIN_EXTRA else TRAINING_TESTS


def pytest_report_header(config: pytest.Config) -> str | None:
    if not HAS_TRAIN_EXTRA:
        return f"serving install (no torch): {len(TRAINING_TESTS)} training/export test modules not collected"
    return None


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository directory holding one tiny bundle named `tiny` (64 px); a copy, so tests may change it."""
    repo = tmp_path_factory.mktemp("model_repo")
    shutil.copytree(FIXTURES / "tiny", repo / "tiny")
    return repo


@pytest.fixture(scope="session")
def tiny_bundle(model_repo: Path) -> Path:
    return model_repo / "tiny"
