"""The exported graphs as small torch modules, and their ONNX export.

Each wrapper puts the pre/post-processing inside the graph (uint8 in/out, compositing,
normalisation), so the server feeds raw tensors and does no image maths of its own.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from moe_avatar.bundle import graph_io
from moe_avatar.training.models import encode_images, encode_texts


class TextEncoder(nn.Module):
    """input_ids int64 [B, C] -> L2-normalised text embedding [B, D]."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return encode_texts(self.clip, input_ids, trim=False)


class ImageEncoder(nn.Module):
    """RGBA uint8 [B, H, W, 4] -> L2-normalised image embedding [B, D]."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        return encode_images(self.clip, x)


class GeneratorGraph(nn.Module):
    """z [B, Z], text_embedding [B, D], psi [B] -> RGBA uint8 [B, R, R, 4] (rows top-down)."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.g = generator

    def forward(self, z: torch.Tensor, text_embedding: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        x = self.g(z, text_embedding, psi)
        x = torch.round((x + 1.0) * 127.5).clamp(0.0, 255.0).to(torch.uint8)
        return x.permute(0, 2, 3, 1)


class ReaderGraph(nn.Module):
    """text_embedding [B, D] -> stated [B, F] (P(the prompt states each family)) and values
    [B, V] (each family's value probabilities, block after block): the generator's attribute
    prior (training.models.AttributePrior) at its own temperature, as the generator reads the
    prompt. Lets a client see what was understood (and what was not)."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.prior = generator.prior
        self.scale = float(generator.embed_dim) ** 0.5

    def forward(self, text_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values, gates = self.prior.parts(text_embedding * self.scale)
        t = self.prior.temperature
        return torch.sigmoid(gates / t), torch.cat([torch.softmax(v / t, dim=1) for v in values], dim=1)


class UpscalerReference(nn.Module):
    """RGBA uint8 [B, R, R, 4] -> RGBA uint8 [B, sR, sR, 4] through the training module as it is
    written (training.upscaler.Upscaler.forward): what UpscalerGraph must reproduce, and the
    PyTorch side of the upscaler's benchmark."""

    def __init__(self, upscaler: nn.Module):
        super().__init__()
        self.up = upscaler

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0
        x = torch.round((self.up(x) + 1.0) * 127.5).clamp(0.0, 255.0).to(torch.uint8)
        return x.permute(0, 2, 3, 1)


def bilinear_kernel(scale: int, channels: int) -> torch.Tensor:
    """[channels * scale^2, channels, 3, 3]: a convolution over the edge-padded input whose
    output, pixel-shuffled, is the input enlarged `scale` times by bilinear interpolation
    (torch's `align_corners=False`, borders clamped). Sub-pixel i of a row samples source row
    h + (2i + 1 - scale) / (2 scale), between its neighbours."""
    taps = torch.zeros(scale, 3, dtype=torch.float64)
    for i in range(scale):
        off = (2 * i + 1 - scale) / (2 * scale)
        taps[i, 1] = 1 - abs(off)
        taps[i, 0 if off < 0 else 2] = abs(off)
    k = torch.zeros(channels, scale, scale, channels, 3, 3, dtype=torch.float64)
    for c in range(channels):
        k[c, :, :, c] = taps[:, None, :, None] * taps[None, :, None, :]
    return k.reshape(channels * scale * scale, channels, 3, 3).float()


class UpscalerGraph(nn.Module):
    """RGBA uint8 [B, R, R, 4] -> RGBA uint8 [B, sR, sR, 4]: `UpscalerReference` rearranged so
    that ONNX Runtime does little work at the high resolution. The bilinear base becomes a fixed
    convolution added to the net's last one, the clamp,
    alpha rules and rounding run before the pixel shuffle (elementwise, so the order does
    not matter), and the shuffle and NCHW -> NHWC move uint8 instead of float. The exporter's
    parity check holds it to `UpscalerReference`."""

    def __init__(self, upscaler: nn.Module):
        super().__init__()
        self.up = upscaler
        cfg = upscaler.cfg
        self.register_buffer("bilinear", bilinear_kernel(cfg.scale, cfg.channels), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        from moe_avatar.training.upscaler import alpha_rules, opaque_background

        s, c = self.up.cfg.scale, self.up.cfg.channels
        x = image.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0
        body, tail = self.up.net[:-2], self.up.net[-2]
        base = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), self.bilinear)
        v = ((tail(body(x)) + base + 1.0) * 127.5).clamp(0.0, 255.0)
        rgb, a = v[:, :(c - 1) * s * s], v[:, (c - 1) * s * s:]
        a = alpha_rules(a, opaque_background(x), full=255.0)
        v = torch.round(torch.cat([rgb, a], dim=1)).to(torch.uint8)
        return torch.nn.functional.pixel_shuffle(v, s).permute(0, 2, 3, 1)


@dataclass(frozen=True)
class GraphSpec:
    """Names, dtypes and shapes of one graph's inputs and outputs (goes into the manifest)."""

    inputs: list[dict]
    outputs: list[dict]


def graph_specs(context_length: int, embed_dim: int, z_dim: int, resolution: int,
                upscaled: int | None = None, reading: tuple[int, int] | None = None) -> dict[str, GraphSpec]:
    """The bundle contract's graph inputs and outputs (moe_avatar.bundle.graph_io)."""
    return {key: GraphSpec(io["inputs"], io["outputs"])
            for key, io in graph_io(context_length, embed_dim, z_dim, resolution, upscaled, reading).items()}


def export_graph(module: nn.Module, example: tuple[torch.Tensor, ...], spec: GraphSpec, path: Path, opset: int) -> None:
    """torch -> ONNX with every non-fixed dimension (batch, height, width) dynamic."""
    dynamic_axes: dict[str, dict[int, str]] = {}
    for io in spec.inputs + spec.outputs:
        axes = {i: d for i, d in enumerate(io["shape"]) if isinstance(d, str)}
        if axes:
            dynamic_axes[io["name"]] = axes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is chatty about tracing
        torch.onnx.export(
            module.eval(), example, str(path),
            input_names=[i["name"] for i in spec.inputs],
            output_names=[o["name"] for o in spec.outputs],
            dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False,
        )


# Initializers kept float32 by store_weights_fp16: the generator's attribute prior ends in an
# argmax (which value to draw), and rounding its weights could flip a near-tie into another
# hair colour, not a level or two of one pixel. It is small (≈ 55 k weights in chibi-64).
KEEP_FP32 = ("prior.",)


def store_weights_fp16(path: Path, min_elements: int = 1024) -> None:
    """Store large float32 initializers as float16 with a Cast back to float32.

    Halves the file size; ONNX Runtime folds the Cast at load time, so inference still
    runs in float32 and only the weights' rounding changes (see the fp16 parity bounds).
    Initializers named with a KEEP_FP32 part stay float32.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    new_inits, casts = [], []
    for init in graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size >= min_elements and not any(k in init.name for k in KEEP_FP32):
            half_name = init.name + "__fp16"
            new_inits.append(numpy_helper.from_array(arr.astype(np.float16), half_name))
            casts.append(helper.make_node("Cast", [half_name], [init.name], to=onnx.TensorProto.FLOAT,
                                          name=init.name + "__cast"))
        else:
            new_inits.append(init)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.save(model, str(path))
