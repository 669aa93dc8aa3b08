"""Build a Hugging Face `tokenizers` file that reproduces open_clip's tokenizer.

open_clip cleans text with ftfy + html.unescape, collapses whitespace, lower-cases, splits
with a regex and runs byte-level BPE with a `</w>` end-of-word suffix. The server must not
need torch or open_clip, so we write the same pipeline as a `tokenizer.json`:
ftfy's width, quote and ligature fixes become `Replace` normalizers; HTML entities are
unescaped by the caller (`moe_avatar.bundle.clean_prompt`) because `tokenizers` has no such step.
"""
from __future__ import annotations

import gzip
import unicodedata
from pathlib import Path

SOT, EOT = "<start_of_text>", "<end_of_text>"
FULL_MERGES = 49152 - 256 - 2  # open_clip's vocabulary: 49,408 ids
# open_clip's split pattern (tokenizer.py), applied after lower-casing.
SPLIT_PATTERN = r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode char map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _ftfy_replacements() -> list[tuple[str, str]]:
    """Character fixes ftfy.fix_text applies by default that matter for prompts."""
    pairs: list[tuple[str, str]] = []
    # fix_character_width: full-width and half-width forms -> NFKC (，-> ,  ＡＢＣ -> ABC, ｶ -> カ).
    for cp in list(range(0xFF01, 0xFFEF)) + [0x3000]:
        ch = chr(cp)
        norm = unicodedata.normalize("NFKC", ch)
        if norm != ch and unicodedata.category(ch) != "Cn":
            pairs.append((ch, norm))
    # uncurl_quotes
    for ch in "\u2018\u2019\u201a\u201b":
        pairs.append((ch, "'"))
    for ch in "\u201c\u201d\u201e\u201f":
        pairs.append((ch, '"'))
    # fix_latin_ligatures
    ligatures = {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "ſt", "\ufb06": "st"}
    for ch, rep in ligatures.items():
        pairs.append((ch, rep))
    return pairs


def default_bpe_path() -> Path:
    import open_clip.tokenizer as oct  # training-side dependency; the server never runs this

    return Path(oct.default_bpe())


def merges_for_vocab(vocab_size: int) -> int:
    """How many BPE merges a text tower with `vocab_size` token embeddings reads: its ids are
    the 256 bytes, the same with the end-of-word mark, the merges, then SOT and EOT."""
    merges = vocab_size - 2 * 256 - 2
    if not 0 <= merges <= FULL_MERGES:
        raise ValueError(f"vocab_size {vocab_size} is not open_clip's ({2 * 256 + 2 + FULL_MERGES}) or a prefix of it")
    return merges


def build_tokenizer(context_length: int, bpe_path: Path | None = None, n_merges: int = FULL_MERGES):
    """A `tokenizers.Tokenizer` giving open_clip's ids, padded/truncated to `context_length`.
    `n_merges` < FULL_MERGES keeps only the first merges (a small vocabulary for tiny test models)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    bpe_path = bpe_path or default_bpe_path()
    merges_text = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in merges_text[1 : n_merges + 1]]
    byte_chars = list(_bytes_to_unicode().values())
    vocab_list = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [SOT, EOT]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", fuse_unk=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC()]
        + [normalizers.Replace(a, b) for a, b in _ftfy_replacements()]
        + [normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.BPEDecoder(suffix="</w>")])
    tok.add_special_tokens([SOT, EOT])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, vocab[SOT]), (EOT, vocab[EOT])]
    )
    tok.enable_truncation(max_length=context_length)
    tok.enable_padding(length=context_length, pad_id=0, pad_token="!")
    return tok
