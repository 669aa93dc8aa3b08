"""The AvatarService servicer: turns validated requests into pipeline steps and streams
progress and texture chunks back.

Every handler goes through `_rpc`, which maps our exceptions to gRPC status codes,
counts the request in the metrics and logs one line per request with its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import json
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Sequence

import grpc
import numpy as np

from moe_avatar.bundle import FamilyReading, noise_from_seeds
from moe_avatar.server import textures, validation
from moe_avatar.server.batcher import QueueFull
from moe_avatar.server.metrics import Metrics
from moe_avatar.server.pipeline import Avatar, ModelPipeline, select_best, slerp
from moe_avatar.server.streaming import CLIENT, ByteBudget, FairEncoder, is_heavy
from moe_avatar.server.validation import RequestError
from moeavatar.v1 import avatar_pb2 as pb
from moeavatar.v1 import avatar_pb2_grpc as pb_grpc

log = logging.getLogger("moe_avatar.service")

REQUEST_ID_KEY = "x-request-id"


class ModelRegistry:
    """The loaded models. Requests address models only through this table, never by
    path, so a model name cannot reach files outside the model repository."""

    def __init__(self, pipelines: Sequence[ModelPipeline], default_model: str = "") -> None:
        self._by_key = {(p.bundle.name, p.bundle.version): p for p in pipelines}
        names = sorted({p.bundle.name for p in pipelines})
        self.default_model = default_model or names[0]
        if self.default_model not in names:
            raise ValueError(f"--default-model {self.default_model!r} is not loaded (loaded: {', '.join(names)})")

    def all(self) -> list[ModelPipeline]:
        return [self._by_key[k] for k in sorted(self._by_key)]

    def resolve(self, name: str, version: str) -> ModelPipeline:
        name = name or self.default_model
        candidates = [p for (n, _), p in self._by_key.items() if n == name]
        if version:
            candidates = [p for p in candidates if p.bundle.version == version]
        if not candidates:
            known = ", ".join(f"{n} {v}" for n, v in sorted(self._by_key))
            what = f"model {name!r}" + (f" version {version!r}" if version else "")
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"{what} is not loaded (loaded: {known})",
                               [("model_version" if version and any(n == name for n, _ in self._by_key)
                                 else "model", "not loaded")])
        return max(candidates, key=lambda p: _version_key(p.bundle.version))


def _version_key(version: str) -> tuple:
    return tuple(int(x) if x.isdigit() else 0 for x in version.split("."))


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and value and len(value) <= 64:
            return str(value)
    return uuid.uuid4().hex[:16]


def _peer(context) -> str:
    """The connection a call came on ('ipv4:10.0.0.7:51234'): the unit of fairness."""
    peer = getattr(context, "peer", None)
    return str(peer()) if callable(peer) else "unknown"


class _StallWatch:
    """Cuts a stream whose client has read nothing for `seconds` (--stream-stall-seconds):
    the task writing to it is cancelled, which frees the textures it holds, and the status
    is queued behind the data already sent, so a client that reads again learns why."""

    def __init__(self, seconds: float, context) -> None:
        self.seconds = seconds
        self.error: validation.RequestError | None = None
        self._context = context
        self._status_task: asyncio.Task | None = None

    @contextlib.contextmanager
    def writing(self):
        """Around one `yield`: arms the timer. A call that ends while suspended here (the client
        cancelled, the deadline passed) disarms it through the task's done callback, so the
        loop's timer does not keep the finished call's generators alive for `seconds`."""
        task = asyncio.current_task()
        if not self.seconds or task is None:
            yield
            return
        handle = asyncio.get_running_loop().call_later(self.seconds, self._cut, weakref.ref(task))
        disarm = lambda _task: handle.cancel()  # noqa: E731
        task.add_done_callback(disarm)
        try:
            yield
        finally:
            handle.cancel()
            task.remove_done_callback(disarm)

    def _cut(self, task_ref: weakref.ref[asyncio.Task]) -> None:
        task = task_ref()
        self.error = RequestError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                  f"stream cut: the client read nothing for {self.seconds:g} s (--stream-stall-seconds)")
        self._status_task = asyncio.ensure_future(self._send_status())
        if task is not None:
            task.cancel()

    async def _send_status(self) -> None:
        with contextlib.suppress(Exception):  # AbortError is how a sent status ends abort()
            await self._context.abort(self.error.code, self.error.message)


def _rpc(method):
    """Status mapping, metrics and the per-request log line for one RPC handler."""
    name = method.__name__
    streaming = inspect.isasyncgenfunction(method)

    async def finish(self: AvatarService, context, request_id: str, start: float, error: BaseException | None):
        code = grpc.StatusCode.OK
        cut = isinstance(error, RequestError) and error.code == grpc.StatusCode.DEADLINE_EXCEEDED \
            and error.message.startswith("stream cut")
        if isinstance(error, QueueFull):
            error = RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"server busy: {error}; retry with backoff")
        if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
            remaining = context.time_remaining()
            code = (grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0
                    else grpc.StatusCode.CANCELLED)
        elif isinstance(error, RequestError):
            code = error.code
        elif error is not None:
            code = grpc.StatusCode.INTERNAL
            log.error("%s failed", name, exc_info=error, extra={"request_id": request_id, "method": name})
            error = RequestError(code, f"internal error; request id {request_id}")
        elapsed = time.perf_counter() - start
        self.metrics.requests.labels(name, code.name).inc()
        self.metrics.request_seconds.labels(name).observe(elapsed)
        log.info("%s %s", name, code.name, extra={"request_id": request_id, "method": name, "code": code.name,
                                                   "elapsed_ms": round(elapsed * 1000, 2)})
        if isinstance(error, RequestError) and not cut:  # a cut stream's call is over already
            status = error.to_status()
            await context.abort(status.code, status.details, status.trailing_metadata)

    if streaming:
        @functools.wraps(method)
        async def stream_wrapper(self, request, context):
            request_id, start = _request_id(context), time.perf_counter()
            CLIENT.set(_peer(context))
            stall = _StallWatch(self.stall_seconds, context)
            await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
            try:
                async for message in method(self, request, context, request_id):
                    with stall.writing():
                        yield message
            except BaseException as e:  # noqa: BLE001 - finish() maps or re-raises
                await finish(self, context, request_id, start, stall.error or e)
                raise
            await finish(self, context, request_id, start, None)

        return stream_wrapper

    @functools.wraps(method)
    async def unary_wrapper(self, request, context):
        request_id, start = _request_id(context), time.perf_counter()
        CLIENT.set(_peer(context))
        await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))
        try:
            response = await method(self, request, context, request_id)
        except BaseException as e:  # noqa: BLE001
            await finish(self, context, request_id, start, e)
            raise
        await finish(self, context, request_id, start, None)
        return response

    return unary_wrapper


class AvatarService(pb_grpc.AvatarServiceServicer):
    def __init__(self, registry: ModelRegistry, metrics: Metrics, encoder: FairEncoder, *,
                 budget: ByteBudget | None = None, stall_seconds: float = 0.0) -> None:
        self.registry = registry
        self.metrics = metrics
        self._encode_executor = encoder
        self.budget = budget or ByteBudget(0, metrics.held_bytes.set)
        self.stall_seconds = stall_seconds  # 0 = never cut a stream that is not read

    def _admit_stream(self) -> None:
        """Refuse a new streaming call while unsent textures fill the byte budget."""
        if self.budget.exhausted:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"server busy: {self.budget.held} bytes of textures wait for slow readers "
                               f"(limit {self.budget.limit}, --max-held-bytes); retry with backoff")

    # --- helpers -----------------------------------------------------------------

    def _progress(self, stage: int, start: float) -> pb.GenerateResponse:
        return pb.GenerateResponse(progress=pb.Progress(stage=stage, elapsed_seconds=time.perf_counter() - start))

    async def _encode(self, avatar: Avatar, spec: textures.OutputSpec, client: str) -> textures.EncodedTexture:
        heavy = is_heavy(spec, avatar.image.shape[0])
        tex = await self._encode_executor.run(client, heavy, textures.encode, avatar.image, spec)
        self.budget.hold(len(tex.data))  # released by _stream_textures once written or dropped
        return tex

    async def _stream_textures(self, avatars: list[Avatar], spec: textures.OutputSpec,
                               start: float) -> AsyncIterator[pb.GenerateResponse]:
        """Stream textures in order as header + chunks, encoding lazily: only the texture being
        written and the next one exist as bytes, so a slow reader holds two textures, not all."""
        t0 = time.perf_counter()
        client = CLIENT.get()
        ahead = asyncio.ensure_future(self._encode(avatars[0], spec, client)) if avatars else None
        try:
            for index, avatar in enumerate(avatars):
                tex = await ahead
                ahead = (asyncio.ensure_future(self._encode(avatars[index + 1], spec, client))
                         if index + 1 < len(avatars) else None)
                try:
                    header = pb.TextureHeader(
                        index=index, width=tex.width, height=tex.height, format=tex.format,
                        row_order=tex.row_order, clip_score=avatar.score, resize_filter=tex.resize_filter,
                        total_bytes=len(tex.data), sha256=tex.sha256, t=avatar.t)
                    if avatar.seed is not None:
                        header.seed = avatar.seed
                    yield pb.GenerateResponse(texture=header)
                    for chunk in textures.chunks(index, tex.data):
                        yield pb.GenerateResponse(chunk=chunk)
                finally:  # written (or dropped): its bytes leave the budget and memory
                    self.budget.release(len(tex.data))
                self.metrics.texture_bytes.labels(pb.TextureFormat.Name(tex.format)).inc(len(tex.data))
                tex = None
        finally:
            if ahead is not None:  # encoded but never written, or still encoding
                if ahead.done() and not ahead.cancelled() and ahead.exception() is None:
                    self.budget.release(len(ahead.result().data))
                ahead.cancel()
        self.metrics.stage_seconds.labels("encoding_textures").observe(time.perf_counter() - t0)
        yield pb.GenerateResponse(done=pb.Done(texture_count=len(avatars),
                                               elapsed_seconds=time.perf_counter() - start))

    async def _upscaled(self, pipe: ModelPipeline, spec: textures.OutputSpec,
                        avatars: list[Avatar]) -> tuple[textures.OutputSpec, list[Avatar]]:
        """The request's filter on this model (textures.resolve_filter) and, for MODEL, the
        avatars through the bundle's upscaler (one micro-batched run for the request)."""
        b = pipe.bundle
        output = textures.resolve_filter(spec, b.resolution, b.upscaled_resolution)
        if output.filter != pb.RESIZE_FILTER_MODEL:
            return output, avatars
        images = await self._timed("upscaling", pipe.upscale(np.stack([a.image for a in avatars])))
        return output, [dataclasses.replace(a, image=img) for a, img in zip(avatars, images)]

    async def _timed(self, stage: str, awaitable):
        t0 = time.perf_counter()
        result = await awaitable
        self.metrics.stage_seconds.labels(stage).observe(time.perf_counter() - t0)
        return result

    async def _generate(self, params: validation.GenerateParams,
                        request_id: str) -> AsyncIterator[pb.GenerateResponse]:
        """Generate as a stream of responses; shared by Generate and Edit."""
        start = time.perf_counter()
        pipe = self.registry.resolve(params.model, params.model_version)
        self._admit_stream()
        with pipe.admit() as ticket:
            yield pb.GenerateResponse(started=pb.Started(
                request_id=request_id, model=pipe.bundle.name, model_version=pipe.bundle.version,
                seed=params.seed, psi=params.psi, texture_count=params.count))
            yield self._progress(pb.STAGE_QUEUED, start)
            yield self._progress(pb.STAGE_ENCODING_TEXT, start)
            text = await self._timed("encoding_text", pipe.text_embeddings([params.prompt], ticket))
            if pipe.reads_prompts:
                yield pb.GenerateResponse(reading=prompt_reading((await pipe.read(text))[0]))
            seeds = list(range(params.seed, params.seed + params.count * params.rerank))
            text_n = np.repeat(text, len(seeds), axis=0)
            yield self._progress(pb.STAGE_GENERATING, start)
            z = noise_from_seeds(seeds, pipe.bundle.z_dim)
            psi = np.full(len(seeds), params.psi, np.float32)
            images = await self._timed("generating", pipe.generate(z, text_n, psi, ticket))
            yield self._progress(pb.STAGE_SCORING, start)
            scores = await self._timed("scoring", pipe.score(images, text_n, ticket))
        avatars = select_best(images, scores, seeds, params.count, params.rerank)
        yield self._progress(pb.STAGE_ENCODING_TEXTURES, start)
        output, avatars = await self._upscaled(pipe, params.output, avatars)
        async for message in self._stream_textures(avatars, output, start):
            yield message

    # --- RPCs --------------------------------------------------------------------

    @_rpc
    async def Generate(self, request: pb.GenerateRequest, context, request_id: str):
        params = validation.generate_params(request)
        async for message in self._generate(params, request_id):
            yield message

    @_rpc
    async def Interpolate(self, request: pb.InterpolateRequest, context, request_id: str):
        params = validation.interpolate_params(request)
        start = time.perf_counter()
        pipe = self.registry.resolve(params.model, params.model_version)
        self._admit_stream()
        with pipe.admit() as ticket:
            yield pb.GenerateResponse(started=pb.Started(
                request_id=request_id, model=pipe.bundle.name, model_version=pipe.bundle.version,
                seed=params.start_seed, psi=params.psi, texture_count=params.frames))
            yield self._progress(pb.STAGE_QUEUED, start)
            yield self._progress(pb.STAGE_ENCODING_TEXT, start)
            text = await self._timed("encoding_text",
                                     pipe.text_embeddings([params.start_prompt, params.end_prompt], ticket))
            t = np.linspace(0.0, 1.0, params.frames)
            z_ends = noise_from_seeds([params.start_seed, params.end_seed], pipe.bundle.z_dim)
            z = slerp(z_ends[0], z_ends[1], t)
            text_t = slerp(text[0], text[1], t)
            yield self._progress(pb.STAGE_GENERATING, start)
            psi = np.full(params.frames, params.psi, np.float32)
            images = await self._timed("generating", pipe.generate(z, text_t, psi, ticket))
            yield self._progress(pb.STAGE_SCORING, start)
            scores = await self._timed("scoring", pipe.score(images, text_t, ticket))
        last = params.frames - 1
        avatars = [Avatar(image=images[i], score=float(scores[i]), t=float(t[i]),
                          seed=params.start_seed if i == 0 else params.end_seed if i == last else None)
                   for i in range(params.frames)]
        yield self._progress(pb.STAGE_ENCODING_TEXTURES, start)
        output, avatars = await self._upscaled(pipe, params.output, avatars)
        async for message in self._stream_textures(avatars, output, start):
            yield message

    @_rpc
    async def Edit(self, request_iterator, context, request_id: str):
        """Work on the newest request only. A new request cancels the one in progress, which then
        ends with EditSuperseded unless its terminal event (Done or an error) already went out; a
        sequence that does not increase is refused in-band and the request in progress goes on."""
        outbox: asyncio.Queue = asyncio.Queue()  # (kind, EditResponse): answer | superseded | refusal
        newest = -1  # sequence of the newest accepted request
        end = object()

        async def answer(sequence: int, request: pb.GenerateRequest) -> None:
            sub_id = f"{request_id}.{sequence}"
            try:
                params = validation.generate_params(request, prefix="request.")
                async for message in self._generate(params, sub_id):
                    await outbox.put(("answer", pb.EditResponse(sequence=sequence, response=message)))
            except QueueFull as e:
                await outbox.put(("answer", pb.EditResponse(sequence=sequence, error=pb.EditError(
                    code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message=f"server busy: {e}"))))
            except RequestError as e:
                await outbox.put(("answer", pb.EditResponse(sequence=sequence, error=pb.EditError(
                    code=e.code.value[0], message=e.message))))

        async def read() -> None:
            nonlocal newest
            current: asyncio.Task | None = None
            try:
                async for edit in request_iterator:
                    if edit.sequence <= newest:
                        why = f"must be greater than the previous request's sequence {newest} (got {edit.sequence})"
                        await outbox.put(("refusal", pb.EditResponse(sequence=edit.sequence, error=pb.EditError(
                            code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=f"sequence: {why}"))))
                        continue
                    if current is not None:
                        current.cancel()  # stale: the user has moved on
                        await outbox.put(("superseded", pb.EditResponse(
                            sequence=newest, superseded=pb.EditSuperseded(by_sequence=edit.sequence))))
                    newest = edit.sequence
                    current = asyncio.create_task(answer(edit.sequence, edit.request))
                if current is not None:
                    await asyncio.gather(current, return_exceptions=True)
            finally:
                if current is not None:
                    current.cancel()
                await outbox.put(end)

        reader = asyncio.create_task(read())
        finished = -1  # newest sequence whose terminal event went out
        try:
            while (item := await outbox.get()) is not end:
                kind, message = item
                if kind == "answer" and message.sequence < newest:
                    continue  # a newer request made it stale; its superseded event follows
                if kind == "superseded" and message.sequence <= finished:
                    continue  # it had already ended with Done or an error
                if kind != "refusal" and (message.HasField("error") or message.HasField("superseded")
                                          or message.response.HasField("done")):
                    finished = message.sequence
                yield message
            await reader  # surfaces reader errors
        finally:
            reader.cancel()

    @_rpc
    async def EncodeText(self, request: pb.EncodeTextRequest, context, request_id: str):
        prompt = validation.text_prompt(request)
        pipe = self.registry.resolve(request.model, request.model_version)
        with pipe.admit(("text_encoder",)) as ticket:
            embedding = await pipe.text_embeddings([prompt], ticket)
        reading = prompt_reading((await pipe.read(embedding))[0]) if pipe.reads_prompts else None
        return pb.EncodeTextResponse(embedding=embedding[0].tolist(), model=pipe.bundle.name,
                                     model_version=pipe.bundle.version, reading=reading)

    @_rpc
    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context, request_id: str):
        validation.model_ref(request)
        return self.model_info(self.registry.resolve(request.model, request.model_version))

    @_rpc
    async def ListModels(self, request: pb.ListModelsRequest, context, request_id: str):
        return pb.ListModelsResponse(models=[self.model_info(p) for p in self.registry.all()],
                                     default_model=self.registry.default_model)

    def model_info(self, pipe: ModelPipeline) -> pb.ModelInfo:
        b = pipe.bundle
        exporter = b.manifest.get("exporter") or {}
        return pb.ModelInfo(
            name=b.name, version=b.version, resolution=b.resolution, embed_dim=b.embed_dim, z_dim=b.z_dim,
            context_length=b.context_length, precision=str(b.manifest.get("precision", "fp32")),
            created=str(b.manifest.get("created", "")),
            exporter=f"{exporter.get('name', '')} {exporter.get('version', '')}".strip(),
            attributes={k: pb.AttributeValues(values=v) for k, v in b.attributes.items()},
            is_default=b.name == self.registry.default_model, execution_provider=pipe.provider,
            manifest_json=json.dumps(b.manifest, ensure_ascii=False, sort_keys=True),
            upscaled_resolution=b.upscaled_resolution or 0, reads_prompts=pipe.reads_prompts)


def prompt_reading(families: list[FamilyReading]) -> pb.PromptReading:
    return pb.PromptReading(families=[pb.FamilyReading(
        family=f.family, stated=f.stated, stated_probability=f.stated_probability, value=f.value,
        value_probability=f.value_probability) for f in families])
