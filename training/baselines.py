"""Reference images for every prompt figure, so that a figure can be read: chance (random
renders from the data), the real-render ceiling (renders of an avatar each prompt is true of),
and the shuffled-prompt pairing. The empty-prompt baseline is the model's own (evaluate.py)."""
from __future__ import annotations

import numpy as np

from moe_avatar.training.attributes import sample_attributes
from moe_avatar.training.prompt_sets import Prompt, realize


def render(attrs: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    from moe_avatar.training.render import render_avatar

    return np.asarray(render_avatar(attrs, size, rng))


def random_renders(n: int, size: int, seed: int = 0) -> np.ndarray:
    """n jittered renders of avatars drawn as the data draws them, whatever the prompt says."""
    rng = np.random.default_rng([seed, 1])
    return np.stack([render(sample_attributes(rng), size, rng) for _ in range(n)])


def ceiling_renders(prompts: list[Prompt], per_prompt: int, size: int, seed: int = 7) -> tuple[np.ndarray, list[bool]]:
    """[P * per_prompt] renders of avatars each prompt is true of (`realize`; a fresh avatar and
    jitter per image), and which prompts could be realised (the others get a random avatar and
    are left out of the ceiling)."""
    images, ok = [], []
    for i, p in enumerate(prompts):
        rng = np.random.default_rng([seed, i])
        first = realize(p, rng)
        ok.append(first is not None)
        for k in range(per_prompt):
            attrs = first if k == 0 or first is None else realize(p, rng)
            images.append(render(attrs or sample_attributes(rng), size, rng))
    return np.stack(images), ok


def shuffled(judged: list[list[dict]], seed: int = 0) -> list[list[dict]]:
    """Prompt i scored against the images of another prompt (a permutation with no fixed point)."""
    n = len(judged)
    if n < 2:
        return judged
    order = np.random.default_rng(seed).permutation(n)
    perm = np.empty(n, int)
    perm[order] = np.roll(order, -1)  # one n-cycle through a random order
    return [judged[j] for j in perm]
