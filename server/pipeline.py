"""The model pipeline: prompt -> tokens -> text embedding -> generator -> CLIP score
(-> the bundle's upscaler, when it has one and the texture is larger than native).

One `ModelPipeline` per loaded bundle. Each ONNX graph sits behind its own
`MicroBatcher`, so concurrent requests share generator / encoder runs. Text embeddings
are cached (LRU) because game UIs send the same prompt again and again.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import tokenizers

from moe_avatar.bundle import Bundle, BundleError, FamilyReading, check_graph_io, clean_prompt, decode_reading, noise_from_seeds
from moe_avatar.server.batcher import MicroBatcher
from moe_avatar.server.metrics import Metrics
from moe_avatar.server.runtime import DeviceError, SessionFactory

log = logging.getLogger("moe_avatar.pipeline")


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation of vectors a, b [D] at times t [N] -> [N, D] (float32).

    Endpoints are returned exactly (t=0 -> a, t=1 -> b) so that morph frames 0 and N-1
    are bit-identical to Generate of the endpoints.
    """
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = np.dot(a64, b64) / (np.linalg.norm(a64) * np.linalg.norm(b64) + 1e-12)
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    t = t.astype(np.float64)[:, None]
    if omega < 1e-6:  # (almost) parallel: slerp degenerates to lerp
        out = (1 - t) * a64 + t * b64
    else:
        out = (np.sin((1 - t) * omega) * a64 + np.sin(t * omega) * b64) / np.sin(omega)
    out = out.astype(np.float32)
    out[t[:, 0] == 0] = a
    out[t[:, 0] == 1] = b
    return out


GRAPHS = ("text_encoder", "generator", "image_encoder")


class Ticket:
    """One request's pass through the pipeline. While it holds a graph it has not reached
    yet, that graph's batcher may wait a moment for it (see MicroBatcher.expect)."""

    def __init__(self, batchers: dict[str, MicroBatcher], graphs: Sequence[str]) -> None:
        self._batchers = batchers
        self._remaining = set(graphs)
        for g in self._remaining:
            batchers[g].expect()

    def take(self, graph: str) -> bool:
        """Called when the request reaches `graph`: True if it had announced itself there."""
        if graph not in self._remaining:
            return False
        self._remaining.discard(graph)
        return True

    def skip(self, graph: str) -> None:
        if self.take(graph):
            self._batchers[graph].unexpect()

    def close(self) -> None:
        for g in list(self._remaining):
            self.skip(g)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Avatar:
    image: np.ndarray  # uint8 [R, R, 4], rows top-down
    score: float  # CLIP cosine similarity with the prompt
    seed: int | None  # None for the inner frames of an interpolation
    t: float = 0.0  # interpolation position


class ModelPipeline:
    def __init__(self, bundle: Bundle, factory: SessionFactory, executor: concurrent.futures.Executor,
                 metrics: Metrics, *, max_batch: int, max_wait_s: float, max_queue: int,
                 text_cache_size: int) -> None:
        self.bundle = bundle
        self.provider = factory.provider
        self.tokenizer = _load_tokenizer(bundle)
        self._metrics = metrics
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._batchers: dict[str, MicroBatcher] = {}
        graphs = (("text_encoder", "image_encoder", "generator") + (("upscaler",) if bundle.upscaled_resolution else ())
                  + (("reader",) if bundle.reading else ()))
        for graph in graphs:
            session = _load_session(bundle, graph, factory)
            self._sessions[graph] = session
            log.info("loaded %s %s %s on %s", bundle.name, bundle.version, graph, session.get_providers()[0],
                     extra={"model": bundle.name, "version": bundle.version, "graph": graph,
                            "provider": session.get_providers()[0]})
            self._batchers[graph] = MicroBatcher(
                f"{bundle.name}:{bundle.version}:{graph}", self._runner(session), executor,
                max_batch=max_batch, max_wait_s=max_wait_s, max_queue=max_queue,
                on_batch=metrics.on_batch, on_queue=metrics.on_queue)
        self._cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._cache_size = text_cache_size

    def warm_up(self) -> None:
        """One batch-of-one run of every graph, checked against the manifest, before the
        server says SERVING: a bundle that loads but cannot run is refused at start instead
        of failing every call (raises BundleError naming the file and field)."""
        b = self.bundle
        ids = self._warm_step("tokenizer", "context_length", lambda: self.tokenize(["warm up"]),
                              (1, b.context_length))
        text = self._warm_step("text_encoder", "embed_dim", lambda: self._sessions["text_encoder"].run(
            None, {"input_ids": ids})[0], (1, b.embed_dim))
        z = noise_from_seeds([0], b.z_dim)
        image = self._warm_step("generator", "resolution", lambda: self._sessions["generator"].run(
            None, {"z": z, "text_embedding": text, "psi": np.ones(1, np.float32)})[0],
            (1, b.resolution, b.resolution, 4), np.uint8)
        self._warm_step("image_encoder", "embed_dim", lambda: self._sessions["image_encoder"].run(
            None, {"image": image})[0], (1, b.embed_dim))
        if b.upscaled_resolution:
            up = b.upscaled_resolution
            self._warm_step("upscaler", "upscaled_resolution", lambda: self._sessions["upscaler"].run(
                None, {"image": image})[0], (1, up, up, 4), np.uint8)
        if b.reading_shape:
            for i, width in enumerate(b.reading_shape):  # stated [1, families], values [1, values]
                self._warm_step("reader", "reading_shape", lambda i=i: self._sessions["reader"].run(
                    None, {"text_embedding": text})[i], (1, width))

    def _warm_step(self, key: str, field: str, run, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        file = self.bundle.manifest["files"][key]["path"]
        try:
            out = np.asarray(run())
        except Exception as e:  # noqa: BLE001 - any failure here is the bundle's
            raise BundleError(f"{self.bundle.directory.name}: warm-up run of {file} failed "
                              f"({_field_text(field, getattr(self.bundle, field))}): {_one_line(e)}") from e
        if out.shape != shape or (key != "tokenizer" and out.dtype != dtype):
            raise BundleError(f"{self.bundle.directory / 'manifest.json'}: warm-up run of {file} gave "
                              f"{out.dtype} {list(out.shape)}, the manifest ({_field_text(field)}) promises "
                              f"{np.dtype(dtype).name if key != 'tokenizer' else 'int64'} {list(shape)}")
        return out

    @staticmethod
    def _runner(session: ort.InferenceSession):
        names = [i.name for i in session.get_inputs()]

        def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
            return session.run(None, dict(zip(names, inputs)))

        return run

    def start(self) -> None:
        for b in self._batchers.values():
            b.start()

    async def stop(self) -> None:
        for b in self._batchers.values():
            await b.stop()

    def tokenize(self, prompts: Sequence[str]) -> np.ndarray:
        ids = np.array([e.ids for e in self.tokenizer.encode_batch([clean_prompt(p) for p in prompts])],
                       dtype=np.int64)
        if ids.shape[1] != self.bundle.context_length:  # the bundle promises exactly C ids
            raise RuntimeError(f"{self.bundle.name}: tokenizer gave {ids.shape[1]} ids, manifest says "
                               f"context_length {self.bundle.context_length}")
        return ids

    def admit(self, graphs: Sequence[str] = GRAPHS) -> Ticket:
        """Announce a request that will pass through `graphs` (use as a context manager)."""
        return Ticket(self._batchers, graphs)

    async def text_embeddings(self, prompts: Sequence[str], ticket: Ticket | None = None) -> np.ndarray:
        """[N, D] L2-normalised embeddings; cached prompts skip the text encoder."""
        found = {p: self._cache[p] for p in prompts if p in self._cache}
        missing = sorted(set(prompts) - found.keys())
        self._metrics.text_cache.labels("hit").inc(len(prompts) - len(missing))
        self._metrics.text_cache.labels("miss").inc(len(missing))
        if missing:
            expected = ticket is not None and ticket.take("text_encoder")
            (embeddings,) = await self._batchers["text_encoder"].submit(self.tokenize(missing), expected=expected)
            found.update(zip(missing, embeddings))
        elif ticket is not None:
            ticket.skip("text_encoder")
        for p, e in found.items():
            self._cache[p] = e
            self._cache.move_to_end(p)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return np.stack([found[p] for p in prompts])

    async def generate(self, z: np.ndarray, text: np.ndarray, psi: np.ndarray,
                       ticket: Ticket | None = None) -> np.ndarray:
        """uint8 [N, R, R, 4] images for z [N, Z], text embeddings [N, D], psi [N]."""
        expected = ticket is not None and ticket.take("generator")
        (images,) = await self._batchers["generator"].submit(z, text, psi, expected=expected)
        return images

    async def score(self, images: np.ndarray, text: np.ndarray, ticket: Ticket | None = None) -> np.ndarray:
        """CLIP cosine similarity [N] of each image with its text embedding."""
        expected = ticket is not None and ticket.take("image_encoder")
        (image_emb,) = await self._batchers["image_encoder"].submit(images, expected=expected)
        return np.sum(image_emb * text, axis=1)

    async def upscale(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, R, R, 4] -> [N, U, U, 4] through the bundle's upscaler (micro-batched like
        the other graphs; only for a bundle with one: `bundle.upscaled_resolution`)."""
        (upscaled,) = await self._batchers["upscaler"].submit(np.ascontiguousarray(images))
        return upscaled

    @property
    def reads_prompts(self) -> bool:
        return self.bundle.reading is not None

    async def read(self, text: np.ndarray) -> list[list[FamilyReading]]:
        """What the model reads from each prompt's embedding [N, D] (the bundle's reader graph:
        its attribute prior); only for a bundle with one (`reads_prompts`)."""
        stated, values = await self._batchers["reader"].submit(np.ascontiguousarray(text, np.float32))
        return [decode_reading(self.bundle.reading, s, v) for s, v in zip(stated, values)]

    async def generate_avatars(self, prompt: str, seed: int, count: int, psi: float,
                               rerank: int = 1) -> list[Avatar]:
        """The whole Generate pipeline without gRPC (service.py runs the same steps with
        progress events in between)."""
        with self.admit() as ticket:
            text = await self.text_embeddings([prompt], ticket)
            seeds = list(range(seed, seed + count * rerank))
            z = noise_from_seeds(seeds, self.bundle.z_dim)
            text_n = np.repeat(text, len(seeds), axis=0)
            images = await self.generate(z, text_n, np.full(len(seeds), psi, np.float32), ticket)
            scores = await self.score(images, text_n, ticket)
        return select_best(images, scores, seeds, count, rerank)


def _field_text(field: str, value=None) -> str:
    """The manifest field a warm-up step checks, in words (the reader's sizes come from field `reading`)."""
    if field == "reading_shape":
        return "field 'reading' lists {} families and {} values".format(*value) if value else "field 'reading'"
    return f"manifest field {field!r} is {value}" if value is not None else f"field {field!r}"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:500]


def _load_tokenizer(bundle: Bundle) -> tokenizers.Tokenizer:
    file = bundle.manifest["files"]["tokenizer"]["path"]
    try:
        return tokenizers.Tokenizer.from_file(str(bundle.path("tokenizer")))
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises plain Exception
        raise BundleError(f"{bundle.directory.name}: {file} is not a tokenizer.json the tokenizers "
                          f"library can load (files.tokenizer): {_one_line(e)}") from e


def _load_session(bundle: Bundle, graph: str, factory: SessionFactory) -> ort.InferenceSession:
    """An ONNX Runtime session whose real inputs and outputs match the manifest."""
    file = bundle.manifest["files"][graph]["path"]
    try:
        session = factory.create(bundle.path(graph))
    except DeviceError:
        raise
    except Exception as e:  # noqa: BLE001 - ORT's own exception types (InvalidProtobuf, Fail, ...)
        raise BundleError(f"{bundle.directory.name}: {file} is not an ONNX graph ONNX Runtime can load "
                          f"(files.{graph}): {_one_line(e)}") from e
    check_graph_io(bundle, graph, session.get_inputs(), session.get_outputs())
    return session


def select_best(images: np.ndarray, scores: np.ndarray, seeds: Sequence[int], count: int,
                rerank: int) -> list[Avatar]:
    """Without reranking keep seed order; with reranking keep the `count` best, best first."""
    order = list(range(len(seeds)))
    if rerank > 1:
        order = sorted(order, key=lambda i: (-float(scores[i]), seeds[i]))[:count]
    return [Avatar(image=images[i], score=float(scores[i]), seed=int(seeds[i])) for i in order]
