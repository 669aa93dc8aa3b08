"""The one-command recipe: `moe-avatar-train pipeline --preset cpu --out RUN_DIR`.

synth -> clip -> generator stage(s) -> the texture upscaler (upscaler/, training.train_upscaler,
on render pairs of the same data); export clip/, gan/ and upscaler/. Presets are data. `cpu` is the
recipe of the bundled default model on 2 CPU cores: CLIP with attribute heads, then G (with
its attribute prior, training.models.AttributePrior) learns by reconstruction from each
render's true values (gan_rec) and an adversarial stage starts from it (gan). `gpu` trains the larger configs. Each generator stage is a
train_gan run in RUN_DIR/<name>; `init` names the earlier stage it starts from; the last one
is RUN_DIR/gan, the one to export. Each stage runs its config's own step count (the config
is the one place the recipe lives); only the `test` preset shortens the stages.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

PRESETS: dict[str, dict] = {
    "cpu": {"synth": {"count": 30000, "size": 64, "seed": 0},
            "clip": {"config": "clip-tiny"},
            "gan": [{"name": "gan_rec", "config": "gan-64-rec"},
                    {"name": "gan", "config": "gan-64", "init": "gan_rec"}],
            "upscaler": {"config": "upscaler-64"}},
    "gpu": {"synth": {"count": 200000, "size": 128, "seed": 0},
            "clip": {"config": "clip-base"},
            "gan": [{"name": "gan", "config": "gan-128"}],
            "upscaler": {"config": "upscaler-64"}},
    "test": {"synth": {"count": 64, "size": 64, "seed": 0},
             "clip": {"config": "clip-test", "steps": 2},
             "gan": [{"name": "gan_rec", "config": "gan-test-rec", "steps": 2},
                     {"name": "gan", "config": "gan-test", "steps": 2, "init": "gan_rec"}],
             "upscaler": {"config": "upscaler-test", "steps": 2}},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="cpu: the bundled model's recipe on 2 cores; gpu: the larger configs; test: seconds (default %(default)s)")
    p.add_argument("--out", required=True, type=Path, help="pipeline directory (data/, clip/, gan/ inside)")
    p.add_argument("--workers", type=int, default=None, help="synthesis processes (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from moe_avatar.training import synth, train_clip, train_gan, train_upscaler

    preset = PRESETS[args.preset]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "preset.json").write_text(json.dumps({"preset": args.preset, **preset}, indent=2) + "\n")
    timings: dict[str, float] = {}

    def stage(name: str, module, argv: list[str]) -> None:
        print(f"== {name}: moe-avatar-train {name} {' '.join(argv)}", flush=True)
        parser = argparse.ArgumentParser(prog=f"moe-avatar-train {name}")
        module.add_arguments(parser)
        t0 = time.time()
        rc = module.run(parser.parse_args(argv))
        if rc:
            raise SystemExit(rc)
        timings[name] = round(time.time() - t0, 1)
        (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")

    s = preset["synth"]
    data = out / "data"
    if not (data / "metadata.jsonl").exists():
        argv = ["--count", str(s["count"]), "--size", str(s["size"]), "--seed", str(s["seed"]), "--out", str(data)]
        if args.workers:
            argv += ["--workers", str(args.workers)]
        stage("synth", synth, argv)
    quiet = ["--quiet"] if args.quiet else []
    c = preset["clip"]
    argv = ["--data", str(data), "--config", c["config"], "--out", str(out / "clip"), "--resume"] + quiet
    stage("clip", train_clip, argv + (["--steps", str(c["steps"])] if c.get("steps") else []))
    for g in preset["gan"]:
        argv = ["--data", str(data), "--clip", str(out / "clip" / "checkpoint.pt"), "--config", g["config"],
                "--out", str(out / g["name"]), "--resume"] + quiet
        if g.get("init"):
            argv += ["--init", str(out / g["init"] / "checkpoint.pt")]
        stage(g["name"], train_gan, argv + (["--steps", str(g["steps"])] if g.get("steps") else []))
    u = preset["upscaler"]
    argv = ["--data", str(data), "--config", u["config"], "--out", str(out / "upscaler"), "--resume"] + quiet
    stage("upscaler", train_upscaler, argv + (["--steps", str(u["steps"])] if u.get("steps") else []))
    print(f"done in {sum(timings.values()) / 60:.1f} min: {timings}")
    print(f"export with: moe-avatar-export --clip {out}/clip/checkpoint.pt --gan {out}/gan/checkpoint.pt "
          f"--upscaler {out}/upscaler/checkpoint.pt --out models/NAME")
    return 0
