"""`moe-avatar-train`: synth | clip | gan | upscale | pipeline | eval."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "synth": ("moe_avatar.training.synth", "render the procedural avatar dataset"),
    "clip": ("moe_avatar.training.train_clip", "pretrain CLIP on image-caption pairs"),
    "gan": ("moe_avatar.training.train_gan", "train the text-conditioned GAN on a frozen CLIP"),
    "upscale": ("moe_avatar.training.train_upscaler", "train the 4x texture upscaler on render pairs (64 -> 256 px)"),
    "pipeline": ("moe_avatar.training.pipeline", "every stage of a recipe in one command: synth -> clip -> gan_rec -> gan (presets)"),
    "eval": ("moe_avatar.training.evaluate", "evaluate a checkpoint or an exported bundle"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="moe-avatar-train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.error(f"{args.command} is not available in this install")
    from moe_avatar.training.models import CheckpointError

    try:
        return args.run(args)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"moe-avatar-train {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
