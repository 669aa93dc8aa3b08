"""Every command-line flag of every program says what it does in --help."""
from __future__ import annotations

import argparse
import importlib

import pytest


def _undocumented(parser: argparse.ArgumentParser, where: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _undocumented(sub, f"{where} {name}")
        elif action.dest != "help" and not (action.help or "").split("(default")[0].strip():
            missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_server_and_client_flags_have_help() -> None:
    from moe_avatar.server.config import build_parser
    from moe_avatar_client.cli import build_parser as client_parser

    assert _undocumented(build_parser({}), "moe-avatar-server") == []
    assert _undocumented(client_parser(), "moe-avatar") == []


def test_training_and_export_flags_have_help() -> None:
    pytest.importorskip("torch", reason="the training extra is not installed")
    from moe_avatar.training.cli import COMMANDS

    missing = []
    for name, (module, _) in COMMANDS.items():
        parser = argparse.ArgumentParser()
        importlib.import_module(module).add_arguments(parser)
        missing += _undocumented(parser, f"moe-avatar-train {name}")
    assert missing == []
