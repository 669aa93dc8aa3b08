"""`moe-avatar-export`: checkpoints -> ONNX model bundle; `moe-avatar-export verify BUNDLE`;
`moe-avatar-export add-upscaler BUNDLE --upscaler CKPT --version V`;
`moe-avatar-export add-reader BUNDLE --version V`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from moe_avatar.export.bundle import (
    ExportError,
    ExportOptions,
    add_reader,
    add_upscaler,
    export_bundle,
    verify_bundle,
    write_triton_repository,
)


def _export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="moe-avatar-export", description="Export CLIP + GAN checkpoints to a model bundle "
                                "(parity-checked). `moe-avatar-export verify BUNDLE` checks an existing bundle; "
                                "`moe-avatar-export add-upscaler BUNDLE ...` adds an upscaler to one.")
    p.add_argument("--clip", required=True, type=Path, help="CLIP checkpoint (clip run's checkpoint.pt)")
    p.add_argument("--gan", required=True, type=Path, help="GAN checkpoint (gan run's checkpoint.pt)")
    p.add_argument("--upscaler", type=Path, help="upscaler checkpoint (upscaler run's checkpoint.pt): adds upscaler.onnx, "
                   "the 4x texture upscaler the server uses above the native size")
    p.add_argument("--out", required=True, type=Path, help="bundle directory, e.g. models/chibi-64")
    p.add_argument("--name", help="model name (default: the --out directory name)")
    p.add_argument("--version", default="0.1.0", help="model version")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default %(default)s)")
    p.add_argument("--fp16", action="store_true", help="store weights as float16 (half the size; compute stays float32)")
    p.add_argument("--generator-weights", choices=["ema", "raw"], default="ema",
                   help="which generator weights of the GAN checkpoint to export (default: the EMA copy)")
    p.add_argument("--simplify", action="store_true", help="simplify each graph with onnxslim (parity re-checked after)")
    p.add_argument("--eval", type=Path, help="eval.json to record in the manifest")
    p.add_argument("--triton", type=Path, help="also write a Triton model repository here")
    a = p.parse_args(argv)
    evaluation = json.loads(a.eval.read_text()) if a.eval else None
    manifest = export_bundle(a.clip, a.gan, a.out, ExportOptions(name=a.name or a.out.name, version=a.version,
                                                                   opset=a.opset, fp16=a.fp16, evaluation=evaluation,
                                                                   generator_weights=a.generator_weights,
                                                                   simplify=a.simplify, upscaler=a.upscaler))
    total = sum(f["bytes"] for f in manifest["files"].values())
    up = f", upscaler to {manifest['upscaler']['resolution']} px" if "upscaler" in manifest else ""
    print(f"wrote {a.out} ({total / 1e6:.1f} MB, {manifest['precision']}, {manifest['resolution']} px{up})")
    if a.triton:
        write_triton_repository(a.out, a.triton)
        print(f"wrote Triton model repository {a.triton}")
    return 0


def _verify(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="moe-avatar-export verify", description="Check a bundle's hashes and ONNX/PyTorch parity.")
    p.add_argument("bundle", type=Path, help="bundle directory, e.g. models/chibi-64")
    p.add_argument("--clip", type=Path, help="CLIP checkpoint (default: the manifest's source)")
    p.add_argument("--gan", type=Path, help="GAN checkpoint (default: the manifest's source)")
    p.add_argument("--upscaler", type=Path, help="upscaler checkpoint, for a bundle with one (default: the manifest's source)")
    a = p.parse_args(argv)
    verify_bundle(a.bundle, a.clip, a.gan, upscaler_ckpt=a.upscaler)
    return 0


def _add_upscaler(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="moe-avatar-export add-upscaler", description="Export an upscaler checkpoint into "
                                "an existing bundle (parity-checked); every other file stays byte for byte.")
    p.add_argument("bundle", type=Path, help="bundle directory, e.g. models/chibi-64")
    p.add_argument("--upscaler", required=True, type=Path, help="upscaler checkpoint (upscaler run's checkpoint.pt)")
    p.add_argument("--version", required=True, help="the bundle's new model version")
    p.add_argument("--replace", action="store_true", help="swap the bundle's upscaler for this one")
    a = p.parse_args(argv)
    manifest = add_upscaler(a.bundle, a.upscaler, a.version, replace=a.replace)
    print(f"wrote {a.bundle / 'upscaler.onnx'} ({manifest['files']['upscaler']['bytes'] / 1e3:.0f} kB, "
          f"{manifest['resolution']} -> {manifest['upscaler']['resolution']} px); version {a.version}")
    return 0


def _add_reader(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="moe-avatar-export add-reader", description="Add reader.onnx (what the model reads "
                                "from a prompt) to a bundle exported without one, from its generator's own attribute "
                                "prior (parity-checked); every other file stays byte for byte.")
    p.add_argument("bundle", type=Path, help="bundle directory, e.g. models/chibi-64")
    p.add_argument("--version", required=True, help="the bundle's new model version")
    a = p.parse_args(argv)
    manifest = add_reader(a.bundle, a.version)
    print(f"wrote {a.bundle / 'reader.onnx'} ({manifest['files']['reader']['bytes'] / 1e3:.0f} kB, "
          f"{len(manifest['reading'])} families); version {a.version}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "verify":
            return _verify(argv[1:])
        if argv and argv[0] == "add-upscaler":
            return _add_upscaler(argv[1:])
        if argv and argv[0] == "add-reader":
            return _add_reader(argv[1:])
        return _export(argv)
    except ExportError as exc:
        print(f"moe-avatar-export: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        print(f"moe-avatar-export: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
