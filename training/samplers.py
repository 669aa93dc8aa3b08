"""What evaluation needs from a model, for a PyTorch checkpoint and for an exported bundle
(exactly what the server runs), behind one protocol."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from moe_avatar.bundle import (
    GRAPH_FILES,
    HEAD_SET_JOINER,
    clean_prompt,
    decode_reading,
    load_bundle,
    noise_from_seeds,
)


class Sampler(Protocol):
    z_dim: int
    resolution: int
    # The attribute prior's answer per family, (P(stated), value), when the model exposes it.
    read: Callable[[list[str]], list[dict]] | None

    def encode_text(self, prompts: list[str]) -> np.ndarray: ...
    def generate(self, text_emb: np.ndarray, seeds: list[int], psi: float = 1.0) -> np.ndarray: ...
    def encode_image(self, images: np.ndarray) -> np.ndarray: ...


class CheckpointSampler:
    def __init__(self, clip_ckpt: Path, gan_ckpt: Path):
        from moe_avatar.training.models import load_clip_checkpoint, load_gan_checkpoint

        self.clip, cfg = load_clip_checkpoint(clip_ckpt)
        self.g, _, _ = load_gan_checkpoint(gan_ckpt)
        self.context = cfg["model"]["text_cfg"]["context_length"]
        self.z_dim, self.resolution = self.g.z_dim, self.g.resolution
        self.read = self._read if self.g.prior is not None else None

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> np.ndarray:
        from moe_avatar.training.models import encode_texts
        from moe_avatar.training.text import tokenize

        return encode_texts(self.clip, tokenize(prompts, self.context)).numpy()

    @torch.no_grad()
    def generate(self, text_emb: np.ndarray, seeds: list[int], psi: float = 1.0) -> np.ndarray:
        z = torch.from_numpy(noise_from_seeds(seeds, self.z_dim))
        x = self.g(z, torch.from_numpy(text_emb).float(), torch.full((len(seeds),), psi))
        return ((x + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()

    @torch.no_grad()
    def _read(self, prompts: list[str]) -> list[dict]:
        """Per prompt and family: P(the prompt states it) and the value the prior reads."""
        from moe_avatar.training.attributes import ATTRIBUTES, MULTI_VALUED
        from moe_avatar.training.latent import CODE_FAMILIES, HEAD_SETS

        prior = self.g.prior
        text = torch.from_numpy(batched(self.encode_text, prompts)).float() * self.g.embed_dim ** 0.5
        values, gates = prior.parts(text)
        stated = torch.sigmoid(gates / prior.temperature)
        out: list[dict] = [{} for _ in prompts]
        for b, (fam, v) in enumerate(zip(CODE_FAMILIES, values)):
            for i, k in enumerate(v.argmax(1).tolist()):
                out[i][fam] = (float(stated[i, b]), list(HEAD_SETS[k]) if fam == MULTI_VALUED else ATTRIBUTES[fam][k])
        return out

    @torch.no_grad()
    def encode_image(self, images: np.ndarray) -> np.ndarray:
        from moe_avatar.training.models import encode_images

        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
        return encode_images(self.clip, x).numpy()


class BundleSampler:
    """Exactly what the server runs: the bundle's tokenizer.json and ONNX graphs; `read` from
    its reader graph (the attribute prior's answer) when it has one, else None."""

    def __init__(self, bundle: Path):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.bundle = load_bundle(bundle)
        self.manifest = self.bundle.manifest
        graphs = [*GRAPH_FILES, *(["reader"] if self.bundle.reading else [])]
        self.sessions = {key: ort.InferenceSession(str(self.bundle.path(key)), providers=["CPUExecutionProvider"])
                         for key in graphs}
        self.read = self._read if self.bundle.reading else None
        self.tok = Tokenizer.from_file(str(self.bundle.path("tokenizer")))
        self.z_dim, self.resolution = self.bundle.z_dim, self.bundle.resolution

    def _run(self, key: str, *inputs: np.ndarray) -> np.ndarray:
        names = [i["name"] for i in self.bundle.io(key)["inputs"]]
        return self.sessions[key].run(None, dict(zip(names, inputs)))[0]

    def encode_text(self, prompts: list[str]) -> np.ndarray:
        ids = np.array([e.ids for e in self.tok.encode_batch([clean_prompt(p) for p in prompts])], dtype=np.int64)
        return self._run("text_encoder", ids)

    def generate(self, text_emb: np.ndarray, seeds: list[int], psi: float = 1.0) -> np.ndarray:
        return self._run("generator", noise_from_seeds(seeds, self.z_dim), text_emb.astype(np.float32),
                         np.full(len(seeds), psi, dtype=np.float32))

    def encode_image(self, images: np.ndarray) -> np.ndarray:
        return self._run("image_encoder", np.ascontiguousarray(images))

    def _read(self, prompts: list[str]) -> list[dict]:
        """Per prompt and family: P(the prompt states it) and the value the reader graph reads
        (head accessories as a list of items, as the prompt files annotate them)."""
        text = batched(self.encode_text, prompts)
        stated, values = self.sessions["reader"].run(None, {"text_embedding": text.astype(np.float32)})
        return [{r.family: (r.stated_probability, _annotation(r.family, r.value))
                 for r in decode_reading(self.bundle.reading, s, v)} for s, v in zip(stated, values)]


def _annotation(family: str, label: str):
    from moe_avatar.training.attributes import MULTI_VALUED

    if family != MULTI_VALUED:
        return label
    return [] if label == "none" else label.split(HEAD_SET_JOINER)


def batched(fn: Callable[[np.ndarray], np.ndarray], items, batch: int = 256) -> np.ndarray:
    """fn over items in batches, concatenated (keeps memory flat for thousands of images)."""
    return np.concatenate([fn(items[i:i + batch]) for i in range(0, len(items), batch)])


def generate_many(sampler: Sampler, text_emb: np.ndarray, seeds: list[int], psi: float = 1.0,
                  batch: int = 256) -> np.ndarray:
    """One image per (embedding row, seed), in batches."""
    return np.concatenate([sampler.generate(text_emb[i:i + batch], seeds[i:i + batch], psi)
                           for i in range(0, len(seeds), batch)])


def generate_for_prompts(sampler: Sampler, texts: list[str], seeds: list[int], rerank: int = 1,
                         psi: float = 1.0) -> np.ndarray:
    """[P, S, H, W, 4]: prompt p at each seed; with rerank > 1 the best of `rerank` candidates
    per seed by CLIP score (as the server's `rerank` picks; candidate seeds s*rerank + j)."""
    emb = batched(sampler.encode_text, texts)
    cand = [s * rerank + j for s in seeds for j in range(rerank)]
    rows = np.repeat(emb, len(cand), 0)
    imgs = generate_many(sampler, rows, cand * len(texts), psi)
    imgs = imgs.reshape(len(texts), len(seeds), rerank, *imgs.shape[1:])
    if rerank > 1:
        scores = batched(sampler.encode_image, imgs.reshape(-1, *imgs.shape[3:]))
        scores = (scores.reshape(len(texts), len(seeds), rerank, -1) * emb[:, None, None]).sum(-1)
        pick = scores.argmax(2)
        imgs = np.take_along_axis(imgs, pick[:, :, None, None, None, None], 2)
    return imgs[:, :, 0]
