"""Captions as token ids: tokenized once per run with open_clip's tokenizer, then sampled."""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm


def tokenize(texts: list[str], context_length: int) -> torch.Tensor:
    """open_clip's tokenizer (BPE vocabulary shipped inside the package; nothing downloaded)."""
    import open_clip

    return open_clip.tokenize(texts, context_length=context_length)


class CaptionBank:
    """Every caption of every image as token ids, with a fast random pick per image."""

    def __init__(self, captions: list[list[str]], context_length: int, progress: bool = True, chunk: int = 4096,
                 states: list[list[dict]] | None = None):
        flat = [c for caps in captions for c in caps]
        counts = np.array([len(caps) for caps in captions], dtype=np.int64)
        if (counts == 0).any():
            raise ValueError(f"image {int(np.argmin(counts))} has no caption")
        self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.counts = counts
        self.texts = flat
        parts = []
        for start in tqdm(range(0, len(flat), chunk), desc="tokenize", unit="chunk", disable=not progress):
            parts.append(tokenize(flat[start:start + chunk], context_length).to(torch.int32))
        self.tokens = torch.cat(parts) if parts else torch.zeros(0, context_length, dtype=torch.int32)
        # What each caption states, as training targets (training.labels); None for user data without labels.
        self.targets = None
        if states is not None:
            from moe_avatar.training.labels import caption_targets

            self.targets = caption_targets([s for row in states for s in row])

    def pick_indices(self, image_indices: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """Index of one random caption per image into the flat caption list."""
        choice = self.offsets[image_indices] + (rng.random(len(image_indices)) * self.counts[image_indices]).astype(np.int64)
        return torch.from_numpy(choice)

    def pick(self, image_indices: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, list[str]]:
        """One random caption per image: (token ids [B, C] int64, texts)."""
        choice = self.pick_indices(image_indices, rng)
        return self.tokens[choice].long(), [self.texts[i] for i in choice.tolist()]

    def tokens_for(self, choice: torch.Tensor, shuffle: float = 0.0, rng: np.random.Generator | None = None) -> torch.Tensor:
        """Token ids [B, C] of the chosen captions; with `shuffle` > 0 each caption's segments
        are put in a random order with that probability (training.captions.shuffle_segments:
        a list states the same in any order) and tokenized afresh."""
        tokens = self.tokens[choice].long()
        if not shuffle:
            return tokens
        from moe_avatar.training.captions import shuffle_segments

        redo = np.flatnonzero(rng.random(len(choice)) < shuffle)
        if len(redo):
            texts = [shuffle_segments(self.texts[int(choice[i])], rng) for i in redo]
            tokens[torch.from_numpy(redo)] = tokenize(texts, tokens.shape[1]).long()
        return tokens
