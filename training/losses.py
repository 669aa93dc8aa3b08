"""The GAN's loss terms (train_gan.py): D's hinge loss with its gradient penalty, the
reconstruction L1 and its alignment, the attribute prior's loss, and what G's images must show.

DF-GAN on a frozen CLIP text embedding T:
  D: hinge loss on (real, T), (real, mismatched T), (fake, T) + matching-aware gradient
     penalty (MA-GP) on real matching pairs.
  G: -D(fake, T) - clip_weight * cos(CLIP_image(fake), T)   (GALIP / StyleGAN-T alignment),
     plus the attribute readers' cross-entropy, mode seeking, the reconstruction L1 and the
     prior's loss (train_config.GanTrainConfig names each weight).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moe_avatar.training.labels import Targets, image_targets, stated
from moe_avatar.training.latent import CODE_FAMILIES, code_to_attributes, indices_to_code


def ma_gradient_penalty(d, real: torch.Tensor, text: torch.Tensor, p: float = 6.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """D's output on (real, text), mean(||grad wrt (real, text)||^p) (DF-GAN's MA-GP), and
    D's features of the real images (reused by the attribute heads)."""
    real = real.detach().requires_grad_(True)
    text = text.detach().requires_grad_(True)
    feats = d.features(real)
    out = d.judge(feats, text)
    g_img, g_txt = torch.autograd.grad(out.sum(), (real, text), create_graph=True)
    norm = torch.sqrt(g_img.flatten(1).pow(2).sum(1) + g_txt.pow(2).sum(1))
    return out, norm.pow(p).mean(), feats


def hinge_d_loss(out_real: torch.Tensor, out_mismatch: torch.Tensor, out_fake: torch.Tensor) -> torch.Tensor:
    """DF-GAN's D loss: real matching pairs above +1, mismatched captions and fakes below -1."""
    return F.relu(1.0 - out_real).mean() + 0.5 * (F.relu(1.0 + out_mismatch).mean() + F.relu(1.0 + out_fake).mean())


def reconstruction_error(g, real: torch.Tensor, text: torch.Tensor, values: torch.Tensor,
                         shift: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """|G - real| per pixel [B, C, H, W] of G redrawing each render from its caption's T and
    the render's true `values` (training.latent.attribute_indices), which G is handed in place
    of its prior's pick. With `shift` > 0 each render is first moved (whole pixels, up to
    `shift` each way) to where G drew it (`align_renders`); also returns each render's move
    (index into `shift_offsets`; 0, no move, without `shift`)."""
    z = torch.randn(len(real), g.z_dim, device=real.device)
    fake = g(z, text, code=indices_to_code(values).to(real.device))
    pick = torch.zeros(len(real), dtype=torch.long, device=real.device)
    if shift:
        pick = align_renders(fake.detach(), real, shift)
        real = shifted(real, pick, shift)
    return (fake - real).abs(), pick


def shift_offsets(shift: int) -> list[tuple[int, int]]:
    """The (dy, dx) moves `align_renders` tries, (0, 0) first."""
    moves = [(dy, dx) for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)]
    return sorted(moves, key=lambda m: (m != (0, 0), abs(m[0]) + abs(m[1])))


def _moved_views(x: torch.Tensor, shift: int) -> list[torch.Tensor]:
    """x [B, C, H, W] (as float) moved by each of shift_offsets(shift), edges repeated: views of one padded copy."""
    h, w = x.shape[-2:]
    pad = F.pad(x.float(), (shift, shift, shift, shift), mode="replicate")
    return [pad[..., shift - dy:shift - dy + h, shift - dx:shift - dx + w] for dy, dx in shift_offsets(shift)]


def shifted(x: torch.Tensor, pick: torch.Tensor, shift: int) -> torch.Tensor:
    """Each image of x [B, C, H, W] moved by its offset shift_offsets(shift)[pick[b]]."""
    views = _moved_views(x, shift)
    out = torch.empty_like(x)
    for k in pick.unique().tolist():
        rows = pick == k
        out[rows] = views[k][rows].to(x.dtype)
    return out


def align_renders(fake: torch.Tensor, real: torch.Tensor, shift: int) -> torch.Tensor:
    """For each image, which move of the render (index into shift_offsets) lies closest (mean
    L1) to G's drawing. The renders' position jitter (up to ~1.5 px at 64 px) is not in G's
    input, so plain L1 asks G to draw the average over positions: a blurred edge. Scoring G
    against the best-aligned render leaves the sharpness to the adversarial terms; ties keep
    the smaller move."""
    with torch.no_grad():
        errors = torch.stack([(fake - view).abs().mean((1, 2, 3)) for view in _moved_views(real, shift)], dim=1)
        return errors.argmin(dim=1)


def prior_loss(g, text: torch.Tensor, values: torch.Tensor, caption_targets: Targets) -> tuple[torch.Tensor, torch.Tensor]:
    """The attribute prior's two questions per block (training.models.AttributePrior): does
    the caption state the family (binary cross-entropy on its gate), and which value is it
    (cross-entropy of its value head against the render's true value, on the captions that
    state it only; a head-accessory mention states the set). Returns the loss and how often
    the prior's top value is right where the caption states the family."""
    value_logits, gates = g.prior.parts(text * g.embed_dim ** 0.5)
    values = values.to(text.device)
    st = stated(caption_targets)
    said = torch.stack([st[f] for f in CODE_FAMILIES], dim=1).to(text.device)
    gate = F.binary_cross_entropy_with_logits(gates, said.float())
    ce = [F.cross_entropy(lg, values[:, b], reduction="none") for b, lg in enumerate(value_logits)]
    value = sum((c * said[:, b]).sum() / said[:, b].sum().clamp_min(1) for b, c in enumerate(ce)) / len(ce)
    # Counted on the device: the stats row is read (synchronised) only at logging steps.
    with torch.no_grad():  # from the same forward pass
        mixed = g.prior.mix([v.detach() for v in value_logits], gates.detach())
        right = torch.stack([lg.argmax(1) for lg in mixed], dim=1) == values
    return gate + value, (right & said).sum() / said.sum().clamp_min(1)


def drawn_targets(code: torch.Tensor, caption: Targets) -> Targets:
    """What G's images must show when G draws its prior's picks `code`: the picked value of
    each family its caption states (a head-accessory mention: the picked set), hidden or
    unstated ones unknown.

    Why not the caption's own values: where the pick differs from the caption (the prior's
    mistake, or the pick's share of an uncertain prior), the attribute losses would teach G
    to draw T instead of its code, and G would stop following the code it is handed.
    Matching the caption is the prior's job."""
    picked = image_targets(code_to_attributes(code.cpu()))
    said = stated(caption)
    out: Targets = {}
    for f, t in picked.items():
        keep = said[f][:, None] if t.dim() == 2 else said[f]  # head accessories: [N, items]
        out[f] = torch.where(keep, t, torch.full_like(t, -1))
    return out


def mode_seeking(fake: torch.Tensor, z: torch.Tensor, half: int) -> torch.Tensor:
    """MSGAN's ratio: image distance over noise distance between the batch's two halves,
    which share captions. G pays weight / ratio, so it uses z for what the caption leaves open."""
    return (fake[:half] - fake[half:2 * half]).abs().mean() / (z[:half] - z[half:2 * half]).abs().mean()
