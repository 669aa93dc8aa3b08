"""Write a model bundle from CLIP + GAN checkpoints, and verify one (hashes and parity).

The bundle layout and manifest are specified in models/README.md.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moe_avatar.bundle import (
    FORMAT_VERSION,
    GRAPH_FILES,
    MANIFEST,
    OPTIONAL_GRAPH_FILES,
    TOKENIZER_FILE,
    BundleError,
    clean_prompt,
    load_bundle,
    noise_from_seeds,
    reading_shape,
    sha256_file,
)
from moe_avatar.export import __version__
from moe_avatar.export.graphs import (
    GeneratorGraph,
    ImageEncoder,
    ReaderGraph,
    TextEncoder,
    UpscalerGraph,
    UpscalerReference,
    export_graph,
    graph_specs,
    store_weights_fp16,
)
from moe_avatar.export.tokenizer import build_tokenizer, merges_for_vocab
from moe_avatar.training.models import load_clip_checkpoint, load_gan_checkpoint, load_upscaler_checkpoint, model_schema

ALL_GRAPH_FILES = {**GRAPH_FILES, **OPTIONAL_GRAPH_FILES}

# Parity tolerances: max abs error of ONNX Runtime vs PyTorch fp32.
# fp16 stores weights as float16 (compute stays float32), so only weight rounding differs.
TOLERANCES = {
    "fp32": {"embedding": 1e-4, "image_levels": 1},
    "fp16": {"embedding": 1e-2, "image_levels": 16},
}
PARITY_PROMPTS = [
    "pink-haired girl with twin tails and cat ears",
    "a sleepy girl with silver hair and headphones",
    "粉色双马尾的女孩，蓝眼睛，戴眼镜",
    "戴猫耳的蓝发少女，开心地笑",
    "Blonde ponytail, green eyes, ribbon!",
]


class ExportError(RuntimeError):
    """Export or verification failed; the message says which file or check."""


@dataclass
class ExportOptions:
    name: str
    version: str = "0.1.0"
    opset: int = 17
    fp16: bool = False
    evaluation: dict[str, Any] | None = None
    attributes: dict[str, list[str]] | None = None
    generator_weights: str = "ema"  # "ema" or "raw" (see load_gan_checkpoint)
    simplify: bool = False  # run onnxslim on each graph (parity is checked after it)
    upscaler: Path | None = None  # an upscaler checkpoint (training.train_upscaler): adds upscaler.onnx


@dataclass
class ParityReport:
    rows: list[dict[str, Any]] = field(default_factory=list)
    ok: bool = True

    def add(self, graph: str, batch: int, err: float, limit: float) -> None:
        ok = bool(err <= limit)
        self.rows.append({"graph": graph, "batch": batch, "max_abs_err": float(err), "tolerance": limit, "ok": ok})
        self.ok &= ok

    def table(self) -> str:
        lines = [f"{'graph':<14}{'batch':>6}{'max abs err':>14}{'tolerance':>12}  result"]
        for r in self.rows:
            lines.append(f"{r['graph']:<14}{r['batch']:>6}{r['max_abs_err']:>14.3g}{r['tolerance']:>12.3g}  {'ok' if r['ok'] else 'FAIL'}")
        return "\n".join(lines)


def export_bundle(clip_ckpt: Path, gan_ckpt: Path, out: Path, options: ExportOptions, log=print) -> dict[str, Any]:
    """Checkpoints -> bundle directory; raises ExportError if parity fails. Returns the manifest."""
    clip, clip_cfg = load_clip_checkpoint(clip_ckpt)
    g, gan_cfg, gan_raw = load_gan_checkpoint(gan_ckpt, options.generator_weights)
    embed_dim = clip.text_projection.shape[1]
    if gan_raw["embed_dim"] != embed_dim:
        raise ExportError(f"{gan_ckpt}: GAN was trained on {gan_raw['embed_dim']}-d text embeddings but "
                          f"{clip_ckpt} makes {embed_dim}-d ones: not the CLIP this GAN was trained with")
    context = int(clip.positional_embedding.shape[0])
    res, z_dim = g.resolution, g.z_dim
    up, up_cfg, _ = load_upscaler_checkpoint(options.upscaler) if options.upscaler else (None, None, None)
    upscaled = res * up.cfg.scale if up is not None else None
    # The prior's answer gets a graph of its own (reader.onnx) when G has a prior.
    reading = model_schema(gan_cfg["model"]).reading_labels() if g.prior is not None else None
    out.mkdir(parents=True, exist_ok=True)
    specs = graph_specs(context, embed_dim, z_dim, res, upscaled,
                        reading_shape(reading) if reading else None)

    steps = [
        ("text_encoder", TextEncoder(clip), (torch.zeros(2, context, dtype=torch.long),)),
        ("image_encoder", ImageEncoder(clip), (torch.zeros(2, res, res, 4, dtype=torch.uint8),)),
        ("generator", GeneratorGraph(g), (torch.zeros(2, z_dim), torch.zeros(2, embed_dim), torch.ones(2))),
    ]
    if up is not None:
        steps.append(("upscaler", UpscalerGraph(up), (torch.zeros(2, res, res, 4, dtype=torch.uint8),)))
    if reading:
        steps.append(("reader", ReaderGraph(g), (torch.zeros(2, embed_dim),)))
    _write_graphs(steps, specs, out, options, log)
    build_tokenizer(context, n_merges=merges_for_vocab(clip.token_embedding.num_embeddings)).save(str(out / TOKENIZER_FILE))
    log(f"[export {len(steps) + 1}/{len(steps) + 1}] tokenizer.json (context {context})")

    precision = "fp16" if options.fp16 else "fp32"
    report = check_parity(out, clip, g, context, precision, up)
    log(report.table())
    if not report.ok:
        raise ExportError(f"parity check failed for {out} ({precision}); see the table above")

    manifest = {
        "format_version": FORMAT_VERSION,
        "name": options.name,
        "version": options.version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "exporter": {"name": "moe-avatar-export", "version": __version__, "torch": torch.__version__},
        "resolution": res,
        "embed_dim": embed_dim,
        "z_dim": z_dim,
        "context_length": context,
        "opset": options.opset,
        "precision": precision,
        "simplified": options.simplify,
        "truncation": "z_eff = psi * z",
        "files": {},
        "attributes": _vocabulary(options, gan_cfg, clip_cfg),
        "training": {"clip": clip_cfg, "gan": gan_cfg, "gan_step": gan_raw.get("step"),
                     "generator_weights": options.generator_weights},
        "evaluation": options.evaluation,
        "parity": {"tolerances": TOLERANCES[precision], "rows": report.rows},
        # Relative to the bundle, so a manifest never carries the build machine's paths.
        "source": {"clip": os.path.relpath(clip_ckpt, out), "gan": os.path.relpath(gan_ckpt, out)},
    }
    if up is not None:  # the optional 4x texture upscaler (models/README.md)
        manifest["upscaler"] = {"resolution": upscaled, "native_resolution": res, "scale": up.cfg.scale}
        manifest["training"]["upscaler"] = up_cfg
        manifest["source"]["upscaler"] = os.path.relpath(options.upscaler, out)
    if reading:
        manifest["reading"] = reading
    manifest["files"] = _file_entries(out, specs)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def _write_graphs(steps: list, specs: dict, out: Path, options: ExportOptions, log) -> None:
    """Each (key, module, example input) to ONNX, simplified and fp16-stored as asked, checked."""
    for i, (key, module, example) in enumerate(steps, 1):
        t0 = time.time()
        path = out / ALL_GRAPH_FILES[key]
        export_graph(module, example, specs[key], path, options.opset)
        if options.simplify:
            simplify_graph(path)
        if options.fp16:
            store_weights_fp16(path)
        _check_onnx(path)
        log(f"[export {i}/{len(steps) + 1}] {path.name}: {path.stat().st_size / 1e6:.1f} MB in {time.time() - t0:.1f}s")


def _vocabulary(options: ExportOptions, gan_cfg: dict, clip_cfg: dict) -> dict[str, list[str]]:
    """The manifest's attribute vocabulary: as given, else the schema G's prior was built from, else the CLIP data's."""
    if options.attributes is not None:
        return options.attributes
    if "attributes" in gan_cfg["model"]:
        return model_schema(gan_cfg["model"]).vocabulary()
    return (clip_cfg.get("data") or {}).get("attributes") or {}


def _file_entries(out: Path, specs: dict) -> dict[str, dict[str, Any]]:
    """files.<key>: path, sha256, bytes, and a graph's inputs and outputs."""
    files = {}
    for key, fname in [(k, f) for k, f in ALL_GRAPH_FILES.items() if k in specs] + [("tokenizer", TOKENIZER_FILE)]:
        entry: dict[str, Any] = {"path": fname, "sha256": sha256_file(out / fname), "bytes": (out / fname).stat().st_size}
        if key in specs:
            entry["inputs"], entry["outputs"] = specs[key].inputs, specs[key].outputs
        files[key] = entry
    return files


def simplify_graph(path: Path) -> None:
    """Graph simplification with onnxslim (constant folding, dead-node and shape cleanup)."""
    try:
        import onnxslim
    except ImportError as exc:
        raise ExportError("--simplify needs onnxslim: pip install onnxslim") from exc
    import onnx

    onnx.save(onnxslim.slim(onnx.load(str(path))), str(path))


def _check_onnx(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{path}: onnx.checker failed: {exc}") from exc


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_parity(bundle: Path, clip, g, context: int, precision: str, upscaler=None) -> ParityReport:
    """Run PyTorch and ONNX Runtime on the same inputs; compare against the tolerances."""
    from tokenizers import Tokenizer

    tol = TOLERANCES[precision]
    tok = Tokenizer.from_file(str(bundle / TOKENIZER_FILE))
    text_s, image_s, gen_s = (_session(bundle / GRAPH_FILES[k]) for k in ("text_encoder", "image_encoder", "generator"))
    report = ParityReport()


    for batch in (1, 5):
        prompts = [PARITY_PROMPTS[i % len(PARITY_PROMPTS)] for i in range(batch)]
        ids = np.array([e.ids for e in tok.encode_batch([clean_prompt(p) for p in prompts])], dtype=np.int64)
        with torch.no_grad():
            ref_t = TextEncoder(clip)(torch.from_numpy(ids)).numpy()
        ort_t = text_s.run(None, {"input_ids": ids})[0]
        report.add("text_encoder", batch, np.abs(ref_t - ort_t).max(), tol["embedding"])

        z = noise_from_seeds(list(range(7, 7 + batch)), g.z_dim)
        psi = np.linspace(1.0, 0.6, batch).astype(np.float32)
        with torch.no_grad():
            ref_img = GeneratorGraph(g)(torch.from_numpy(z), torch.from_numpy(ref_t), torch.from_numpy(psi)).numpy()
        ort_img = gen_s.run(None, {"z": z, "text_embedding": ref_t, "psi": psi})[0]
        report.add("generator", batch, np.abs(ref_img.astype(np.int16) - ort_img.astype(np.int16)).max(), tol["image_levels"])
        if g.prior is not None and (bundle / OPTIONAL_GRAPH_FILES["reader"]).is_file():
            with torch.no_grad():
                ref_r = ReaderGraph(g)(torch.from_numpy(ref_t))
            ort_r = _session(bundle / OPTIONAL_GRAPH_FILES["reader"]).run(None, {"text_embedding": ref_t})
            report.add("reader", batch, max(np.abs(a.numpy() - b).max() for a, b in zip(ref_r, ort_r)), tol["embedding"])

        with torch.no_grad():
            ref_i = ImageEncoder(clip)(torch.from_numpy(ref_img)).numpy()
        ort_i = image_s.run(None, {"image": ref_img})[0]
        report.add("image_encoder", batch, np.abs(ref_i - ort_i).max(), tol["embedding"])
        if upscaler is not None:
            with torch.no_grad():
                ref_u = UpscalerReference(upscaler)(torch.from_numpy(ref_img)).numpy()
            ort_u = _session(bundle / OPTIONAL_GRAPH_FILES["upscaler"]).run(None, {"image": ref_img})[0]
            report.add("upscaler", batch, np.abs(ref_u.astype(np.int16) - ort_u.astype(np.int16)).max(), tol["image_levels"])
    return report


def verify_bundle(bundle: Path, clip_ckpt: Path | None = None, gan_ckpt: Path | None = None, log=print,
                  upscaler_ckpt: Path | None = None) -> ParityReport | None:
    """Check the manifest and every file's hash; re-run parity when the checkpoints are at hand."""
    try:
        checked = load_bundle(bundle)
    except BundleError as exc:
        raise ExportError(str(exc)) from exc
    for key in checked.manifest["files"]:
        if checked.path(key).suffix == ".onnx":
            _check_onnx(checked.path(key))
    log(f"{bundle}: manifest and {len(checked.manifest['files'])} file hashes ok")
    source = checked.manifest.get("source") or {}
    clip_ckpt = clip_ckpt or (bundle / source["clip"] if source.get("clip") else None)
    gan_ckpt = gan_ckpt or (bundle / source["gan"] if source.get("gan") else None)
    upscaler_ckpt = upscaler_ckpt or (bundle / source["upscaler"] if source.get("upscaler") else None)
    if not (clip_ckpt and gan_ckpt and clip_ckpt.is_file() and gan_ckpt.is_file()):
        log("parity: skipped (source checkpoints not found; pass --clip and --gan)")
        if checked.upscaled_resolution and upscaler_ckpt and upscaler_ckpt.is_file():
            report = upscaler_parity(checked, checked.path("upscaler"), load_upscaler_checkpoint(upscaler_ckpt)[0])
            log(report.table())
            if not report.ok:
                raise ExportError(f"{bundle}: upscaler parity check failed")
            return report
        return None
    clip, _ = load_clip_checkpoint(clip_ckpt)
    g, _, _ = load_gan_checkpoint(gan_ckpt, checked.manifest.get("training", {}).get("generator_weights", "ema"))
    up = None
    if checked.upscaled_resolution:
        if upscaler_ckpt and upscaler_ckpt.is_file():
            up = load_upscaler_checkpoint(upscaler_ckpt)[0]
        else:
            log("parity: upscaler skipped (its checkpoint not found; pass --upscaler)")
    report = check_parity(bundle, clip, g, checked.context_length, checked.precision, up)
    log(report.table())
    if not report.ok:
        raise ExportError(f"{bundle}: parity check failed")
    return report


def upscaler_parity(checked, path: Path, up) -> ParityReport:
    """upscaler.onnx at `path` vs its PyTorch module on the bundle's own generator drawings (ORT)."""
    report = ParityReport()
    gen = _session(checked.path("generator"))
    limit = TOLERANCES[checked.precision]["image_levels"]
    for batch in (1, 5):
        z = noise_from_seeds(list(range(7, 7 + batch)), checked.z_dim)
        emb = np.random.default_rng(batch).standard_normal((batch, checked.embed_dim)).astype(np.float32)
        images = gen.run(None, {"z": z, "text_embedding": emb / np.linalg.norm(emb, axis=1, keepdims=True),
                                "psi": np.ones(batch, np.float32)})[0]
        with torch.no_grad():
            ref = UpscalerReference(up)(torch.from_numpy(images)).numpy()
        err = np.abs(ref.astype(np.int16) - _session(path).run(None, {"image": images})[0].astype(np.int16)).max()
        report.add("upscaler", batch, err, limit)
    return report


def add_upscaler(bundle: Path, upscaler_ckpt: Path, version: str, opset: int = 17, log=print,
                 replace: bool = False) -> dict[str, Any]:
    """Export an upscaler checkpoint into an existing bundle, leaving every other file as it is:
    upscaler.onnx (its weights stored like the bundle's), its parity on the bundle's own
    generator drawings (ONNX Runtime), and the manifest's upscaler entries and `version`.
    `replace` swaps a bundle's upscaler for this one; the old one stays if the new one fails."""
    checked = load_bundle(bundle)
    if checked.upscaled_resolution and not replace:
        raise ExportError(f"{bundle}: already has an upscaler (--replace swaps it)")
    old = checked.path("upscaler").read_bytes() if checked.upscaled_resolution else None
    try:
        return _export_upscaler(checked, upscaler_ckpt, version, opset, log)
    except Exception:
        if old is not None:
            checked.path("upscaler").write_bytes(old)
        raise


def _export_upscaler(checked, upscaler_ckpt: Path, version: str, opset: int, log) -> dict[str, Any]:
    bundle = checked.directory
    up, up_cfg, _ = load_upscaler_checkpoint(upscaler_ckpt)
    res, precision = checked.resolution, checked.precision
    upscaled = res * up.cfg.scale
    spec = graph_specs(checked.context_length, checked.embed_dim, checked.z_dim, res, upscaled)["upscaler"]
    path = bundle / OPTIONAL_GRAPH_FILES["upscaler"]
    export_graph(UpscalerGraph(up), (torch.zeros(2, res, res, 4, dtype=torch.uint8),), spec, path, opset)
    if precision == "fp16":
        store_weights_fp16(path)
    _check_onnx(path)
    manifest = _manifest_with_graph(checked, "upscaler", spec, upscaler_parity(checked, path, up), version, log)
    manifest["upscaler"] = {"resolution": upscaled, "native_resolution": res, "scale": up.cfg.scale}
    manifest["training"] = {**manifest.get("training", {}), "upscaler": up_cfg}
    manifest["source"] = {**manifest.get("source", {}), "upscaler": os.path.relpath(upscaler_ckpt, bundle)}
    return _write_manifest(bundle, manifest)


def _manifest_with_graph(checked, key: str, spec, report: ParityReport, version: str, log) -> dict[str, Any]:
    """The bundle's manifest with an added graph's files entry, parity rows and the new
    `version`; a graph that fails its parity check is deleted (ExportError)."""
    path = checked.directory / OPTIONAL_GRAPH_FILES[key]
    log(report.table())
    if not report.ok:
        path.unlink()
        raise ExportError(f"parity check failed for {path}; see the table above")
    manifest = dict(checked.manifest)
    manifest["version"] = version
    rows = [r for r in manifest.get("parity", {}).get("rows", []) if r.get("graph") != key]
    manifest["parity"] = {**manifest.get("parity", {}), "rows": rows + report.rows}
    manifest["files"] = {**manifest["files"], key: {"path": path.name, "sha256": sha256_file(path),
                                                    "bytes": path.stat().st_size,
                                                    "inputs": spec.inputs, "outputs": spec.outputs}}
    return manifest


def _write_manifest(bundle: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    load_bundle(bundle)  # the bundle as written passes every check
    return manifest


def prior_from_generator(checked) -> tuple[Any, dict[str, list[str]]]:
    """The generator's attribute prior rebuilt from generator.onnx's own fp32 prior weights
    (`g.prior.*`, kept fp32 by store_weights_fp16) and the manifest's recorded GAN config, with
    its reading labels: the same prior the generator draws with, for bundles exported before
    reader.onnx existed."""
    import onnx
    from onnx import numpy_helper

    from moe_avatar.training.models import AttributePrior

    model_cfg = (checked.manifest.get("training") or {}).get("gan", {}).get("model") or {}
    if not model_cfg.get("prior"):
        raise ExportError(f"{checked.directory}: the manifest's GAN (training.gan.model) has no attribute prior to read with")
    weights = {i.name.removeprefix("g.prior."): torch.from_numpy(numpy_helper.to_array(i).astype(np.float32).copy())
               for i in onnx.load(str(checked.path("generator"))).graph.initializer if i.name.startswith("g.prior.")}
    if "net.0.weight" not in weights:
        raise ExportError(f"{checked.path('generator')}: no fp32 prior weights (g.prior.*) in the graph")
    schema = model_schema(model_cfg)
    prior = AttributePrior(checked.embed_dim, schema.blocks, schema.log_marginal(), schema.hiders(),
                           hidden=weights["net.0.weight"].shape[0], temperature=float(model_cfg.get("prior_temperature", 1.0)))
    prior.load_state_dict(weights)
    return prior.eval(), schema.reading_labels()


def add_reader(bundle: Path, version: str, opset: int = 17, log=print) -> dict[str, Any]:
    """Add reader.onnx to a bundle whose generator has an attribute prior, every other file left
    as it is: the prior from generator.onnx (prior_from_generator), exported and parity-checked
    against itself in PyTorch, and the manifest's `reading`, files.reader and `version`."""
    from types import SimpleNamespace

    checked = load_bundle(bundle)
    if checked.reading:
        raise ExportError(f"{bundle}: already has a reader")
    prior, reading = prior_from_generator(checked)
    spec = graph_specs(checked.context_length, checked.embed_dim, checked.z_dim, checked.resolution,
                       reading=reading_shape(reading))["reader"]
    path = bundle / OPTIONAL_GRAPH_FILES["reader"]
    graph = ReaderGraph(SimpleNamespace(prior=prior, embed_dim=checked.embed_dim))
    export_graph(graph, (torch.zeros(2, checked.embed_dim),), spec, path, opset)
    _check_onnx(path)
    report, session = ParityReport(), _session(path)
    for batch in (1, 5):
        emb = torch.nn.functional.normalize(torch.randn(batch, checked.embed_dim, generator=torch.Generator().manual_seed(batch)), dim=1)
        with torch.no_grad():
            ref = graph(emb)
        err = max(np.abs(a.numpy() - b).max() for a, b in zip(ref, session.run(None, {"text_embedding": emb.numpy()})))
        report.add("reader", batch, err, TOLERANCES[checked.precision]["embedding"])
    manifest = _manifest_with_graph(checked, "reader", spec, report, version, log)
    manifest["reading"] = reading
    return _write_manifest(bundle, manifest)


def write_triton_repository(bundle: Path, out: Path, max_batch_size: int = 64) -> None:
    """A Triton model repository (onnxruntime backend, dynamic batching) from a bundle."""
    manifest = load_bundle(bundle).manifest
    triton_types = {"float32": "TYPE_FP32", "int64": "TYPE_INT64", "uint8": "TYPE_UINT8"}
    for key, fname in GRAPH_FILES.items():
        entry = manifest["files"][key]
        model_dir = out / f"{manifest['name']}_{key}"
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle / fname, model_dir / "1" / "model.onnx")

        def tensors(items: list[dict]) -> str:
            parts = []
            for t in items:
                dims = ", ".join(str(d) if isinstance(d, int) else "-1" for d in t["shape"][1:]) or "1"
                reshape = "\n    reshape: { shape: [ ] }" if len(t["shape"]) == 1 else ""
                parts.append(f'  {{\n    name: "{t["name"]}"\n    data_type: {triton_types[t["dtype"]]}\n'
                             f'    dims: [ {dims} ]{reshape}\n  }}')
            return ",\n".join(parts)

        config = (
            f'name: "{model_dir.name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch_size}\n'
            f"input [\n{tensors(entry['inputs'])}\n]\noutput [\n{tensors(entry['outputs'])}\n]\n"
            "dynamic_batching {\n  max_queue_delay_microseconds: 2000\n}\n"
            'instance_group [ { kind: KIND_AUTO } ]\n'
        )
        (model_dir / "config.pbtxt").write_text(config)
    shutil.copyfile(bundle / "tokenizer.json", out / "tokenizer.json")
