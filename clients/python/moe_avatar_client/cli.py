"""`moe-avatar`: command-line client.

    moe-avatar generate "pink hair, twin tails" -n 4 --seed 7 -o out/
    moe-avatar interpolate "pink hair, twin tails" 1 "silver bob" 2 --frames 8 -o morph/
    moe-avatar read "black hair, glasses"   # what the model reads from a prompt
    moe-avatar info            # models, attribute vocabulary
    moe-avatar health
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import grpc
from tqdm import tqdm

from moe_avatar_client.client import FILTERS, FORMATS, AvatarClient, GenerateResult, output_options, reading_summary
from moeavatar.v1 import avatar_pb2 as pb

EXTENSIONS = {pb.TEXTURE_FORMAT_PNG: "png", pb.TEXTURE_FORMAT_RGBA8: "rgba", pb.TEXTURE_FORMAT_WEBP: "webp"}


def _progress_bar(total: int, quiet: bool):
    """A tqdm bar over textures whose description follows the server's stages."""
    bar = tqdm(total=total, unit="tex", disable=quiet, file=sys.stderr)

    def on_message(message: pb.GenerateResponse) -> None:
        kind = message.WhichOneof("event")
        if kind == "progress":
            bar.set_description(pb.Stage.Name(message.progress.stage).removeprefix("STAGE_").lower())
        elif kind == "chunk" and message.chunk.last:
            bar.update(1)

    return bar, on_message


def _write(result: GenerateResult, out: pathlib.Path, prefix: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for tex in result.textures:
        ext = EXTENSIONS[tex.format]
        name = f"{prefix}{tex.index:03d}" if prefix else f"{tex.seed}"
        path = out / f"{name}.{ext}"
        path.write_bytes(tex.data)
        seed = "-" if tex.seed is None else tex.seed
        print(f"{path}\tseed={seed}\tclip_score={tex.clip_score:.4f}\t{tex.width}x{tex.height}")


def _output(args) -> pb.OutputOptions:
    return output_options(args.format, args.size, args.filter, "bottom-up" if args.bottom_up else "top-down")


def cmd_generate(client: AvatarClient, args) -> int:
    bar, on_message = _progress_bar(args.count, args.quiet)
    with bar:
        result = client.generate(args.prompt, count=args.count, seed=args.seed, psi=args.psi, rerank=args.rerank,
                                 output=_output(args), model=args.model, timeout=args.timeout,
                                 on_progress=on_message)
    print(f"# model {result.model} {result.model_version}  base seed {result.seed}  psi {result.psi:g}  "
          f"request {result.request_id}", file=sys.stderr)
    if result.reading is not None:
        print(f"# read: {reading_summary(result.reading)}", file=sys.stderr)
    _write(result, args.out, "")
    return 0


def cmd_interpolate(client: AvatarClient, args) -> int:
    bar, on_message = _progress_bar(args.frames, args.quiet)
    with bar:
        result = client.interpolate((args.start_prompt, args.start_seed), (args.end_prompt, args.end_seed),
                                    frames=args.frames, psi=args.psi, output=_output(args), model=args.model,
                                    timeout=args.timeout, on_progress=on_message)
    _write(result, args.out, "frame-")
    return 0


def cmd_read(client: AvatarClient, args) -> int:
    reading = client.read_prompt(args.prompt, model=args.model, timeout=args.timeout)
    if reading is None:
        print("moe-avatar: the model does not report what it reads", file=sys.stderr)
        return 1
    if args.all:
        for f in reading.families:
            state = "stated" if f.stated else "random"
            print(f"{f.family}\t{state}\t{f.stated_probability:.2f}\t{f.value}\t{f.value_probability:.2f}")
    else:
        print(reading_summary(reading))
    return 0


def cmd_info(client: AvatarClient, args) -> int:
    models = client.list_models(timeout=args.timeout)
    for m in models.models:
        default = "  (default)" if m.is_default else ""
        up = f" (upscaler to {m.upscaled_resolution}px)" if m.upscaled_resolution else ""
        print(f"{m.name} {m.version}{default}: {m.resolution}px{up}, embed {m.embed_dim}, z {m.z_dim}, "
              f"context {m.context_length}, {m.precision}, {m.execution_provider}, created {m.created}")
        for family, values in sorted(m.attributes.items()):
            print(f"  {family}: {', '.join(values.values)}")
    return 0


def cmd_health(client: AvatarClient, args) -> int:
    status = client.health(args.service, timeout=args.timeout)
    print(status)
    return 0 if status == "SERVING" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moe-avatar", description="moe-avatar gRPC client")
    parser.add_argument("--target", default="localhost:50051", help="server host:port; several IP:port,IP:port or dns:///NAME:PORT "
                        "spread calls over the replicas (round_robin) (default %(default)s)")
    parser.add_argument("--tls-ca", help="PEM CA certificate to trust; enables TLS")
    parser.add_argument("--tls-cert", help="PEM client certificate for mutual TLS (with --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--token", help="bearer token sent as `authorization: Bearer ...`")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline per call, seconds")
    sub = parser.add_subparsers(dest="command", required=True)

    def output_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("-o", "--out", type=pathlib.Path, default=pathlib.Path("out"), help="output directory")
        p.add_argument("--format", choices=sorted(FORMATS), default="png",
                       help="png, rgba (raw RGBA8 bytes, .rgba files) or webp (lossless) (default %(default)s)")
        p.add_argument("--size", type=int, default=256, help="output edge in px, 0 = the model's native edge (default %(default)s)")
        p.add_argument("--filter", choices=sorted(FILTERS), default="model",
                       help="resampling filter when --size differs from the model's edge; model: the model's learned "
                       "upscaler above its native edge where it has one, else lanczos (default %(default)s)")
        p.add_argument("--bottom-up", action="store_true", help="bottom-up rows (rgba only; Unity raw upload)")
        p.add_argument("--psi", type=float, default=None, help="truncation psi 0..2 (server default 0.7)")
        p.add_argument("--model", default="", help="model name (default: the server's default)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    g = sub.add_parser("generate", help="prompt -> avatars")
    g.add_argument("prompt", help="what to draw, English or Chinese, e.g. 'pink hair, twin tails'")
    g.add_argument("-n", "--count", type=int, default=1, help="avatars to generate (default %(default)s)")
    g.add_argument("--seed", type=int, default=None,
                   help="seed of the first avatar (the rest take the next ones); default: random, printed")
    g.add_argument("--rerank", type=int, default=1, help="generate K x count, keep the best by CLIP score")
    output_flags(g)
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser("interpolate", help="morph frames between two (prompt, seed) endpoints")
    i.add_argument("start_prompt", help="prompt of the first frame")
    i.add_argument("start_seed", type=int, help="seed of the first frame")
    i.add_argument("end_prompt", help="prompt of the last frame")
    i.add_argument("end_seed", type=int, help="seed of the last frame")
    i.add_argument("--frames", type=int, default=8, help="frames including both ends (default %(default)s)")
    output_flags(i)
    i.set_defaults(func=cmd_interpolate)

    r = sub.add_parser("read", help="what the model reads from a prompt: each family stated (value, probability) or random")
    r.add_argument("prompt", help="the prompt to read, as for generate")
    r.add_argument("--all", action="store_true", help="a tab-separated row per family: family, stated/random, "
                   "P(stated), value, P(value)")
    r.add_argument("--model", default="", help="model name (default: the server's default)")
    r.set_defaults(func=cmd_read)

    sub.add_parser("info", help="loaded models and their attribute vocabulary").set_defaults(func=cmd_info)
    h = sub.add_parser("health", help="server health (exit code 0 when SERVING)")
    h.add_argument("--service", default="", help="service name; empty = whole server")
    h.set_defaults(func=cmd_health)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with AvatarClient(args.target, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
                          token=args.token, timeout=args.timeout) as client:
            return args.func(client, args)
    except grpc.RpcError as e:
        print(f"moe-avatar: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except ValueError as e:  # e.g. an unusable --target
        print(f"moe-avatar: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
