"""Text-conditioned GAN: `moe-avatar-train gan --data DIR --clip RUN_DIR/checkpoint.pt --config NAME --out RUN_DIR`.

DF-GAN recipe on a frozen CLIP text embedding T:
  D: hinge loss on (real, T), (real, mismatched T), (fake, T) + matching-aware gradient
     penalty (MA-GP) on real matching pairs.
  G: -D(fake, T) - clip_weight * cos(CLIP_image(fake), T)   (GALIP / StyleGAN-T alignment).
With `cls_weight` > 0 and a labelled dataset, AC-GAN attribute heads on D's features
(training.labels) learn every visible attribute from real renders only, and G pays
cls_weight * cross-entropy for the attributes its caption states that D cannot read (with
an attribute prior: the values the prior picked for them, `drawn_targets`).
With `clip_attr_weight` > 0, the CLIP run's own image attribute heads (trained on real
renders with the CLIP, frozen here) read G's images too, and G pays clip_attr_weight *
cross-entropy for the stated attributes they cannot read: a second reader of the caption
that, unlike D's heads, does not move while G learns, and that sees the face (eye colour
0.99, eye shape 1.00 on real renders; clip-tiny's do not see head accessories, see the
chibi-64 model card).
With `ms_weight` > 0, a mode-seeking term (MSGAN) keeps G from ignoring z: half the batch
repeats the other half's captions with new noise, and G pays ms_weight / image-distance
ratio, so what the caption leaves open still varies.
With `rec_weight` > 0 (needs a labelled dataset), G also redraws each real render from its
caption's T and a z that encodes the render's *unstated* attributes (training.latent;
`latent` picks the layout, "buckets" or "argmax"; `code_jitter: true` also codes each render's
position/scale/shade draws, so caption + z determine the render exactly): L1, paired, the pix2pix half of the
objective. It teaches G directly which pixels every attribute owns and that z chooses what
the caption leaves open, far faster per CPU-second than the adversarial signal.
`rec_detail_weight` w weighs the L1 by 1 + w on the pixels a render's head accessories and
irises own (training.detail): plain L1 leaves small parts undrawn; `rec_region_weight` w_r
adds w_r where any head accessory could be, so a spurious one costs too. `rec_shift` s scores G
against the render moved (whole pixels, up to s each way) to where G drew it, so the renders'
position jitter, which G is not told, does not ask for blurred edges (`align_renders`). With
`adversarial: false` a stage trains by reconstruction alone (no D, no CLIP or attribute
loss: several times cheaper per step); a later stage with `--init` adds the adversarial
terms to sharpen.
With model option `prior` (training.models.AttributePrior), G turns T into p(value | caption)
for every family and the head-accessory set and picks the values with z's first dims; the
reconstruction hands G the render's true values instead of a coded z (so `latent` and
`code_jitter` do not apply), and `prior_weight` trains the prior (does the caption state
each family, and which value) in every stage. `prior_open_from_data: true` fits what the
prior draws for the families a caption leaves open to the data's captions
(training.latent.open_log_frequencies; written to RUN_DIR/prior_open.json).
An EMA copy of G is what samples, checkpoints for export, and evaluation use.
`--init CKPT` starts from another GAN run's weights (G from its EMA copy; the next stage of a recipe).
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from moe_avatar.training.models import (build_discriminator, build_generator, clip_from_checkpoint, count_params, encode_images, encode_texts,
                             gan_checkpoint, load_config, read_clip_checkpoint)
from moe_avatar.server.bundle import noise_from_seeds
from moe_avatar.training.runs import (RunDir, add_run_arguments, apply_overrides, autocast, average_gradients, broadcast_parameters, gather_rng_states,
                           images_to_tensor, init_distributed, pick_device, rng_state, sample_batch, seed_everything,
                           shutdown_distributed)
from moe_avatar.training.labels import AttributeHeads, Targets, attribute_loss, image_targets, read_embedding, select, stated
from moe_avatar.training.latent import (CODE_FAMILIES, attribute_indices, caption_pairs, check_z_dim, code_table, code_to_attributes,
                             encode_latents, head_set_index, indices_to_code, open_log_frequencies)
from moe_avatar.training.text import CaptionBank, tokenize

# Fixed prompts for the sample grids (English and Chinese), one row each.
SAMPLE_PROMPTS = [
    "pink hair, twin tails, blue eyes",
    "a girl with silver hair and cat ears",
    "blonde ponytail, green eyes, smiling",
    "black bob, glasses, red ribbon",
    "粉色双马尾，蓝眼睛",
    "银发猫耳少女",
    "金色马尾，绿眼睛，微笑",
    "黑色短发，戴眼镜",
]
SAMPLE_SEEDS = [0, 1, 2, 3, 4, 5]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="dataset directory")
    p.add_argument("--clip", required=True, type=Path, help="CLIP checkpoint (RUN_DIR/checkpoint.pt)")
    p.add_argument("--config", default="gan-64", help="config name in training/configs or a JSON path")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--init", type=Path, help="start G (from its EMA weights) and D from this GAN checkpoint (fresh optimizers)")
    add_run_arguments(p)


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


def reconstruction_error(g, real: torch.Tensor, text: torch.Tensor, image_targets: Targets, head_sets: torch.Tensor,
                         caption_targets: Targets, layout: str = "buckets", jitter: torch.Tensor | None = None,
                         values: torch.Tensor | None = None, shift: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """|G - real| per pixel [B, C, H, W] of G redrawing each real render from its caption's T
    and a z that encodes what the caption leaves open (training.latent, in `layout`; with the
    render's `jitter` draws if given). A G with an attribute prior is handed the render's
    true `values` (training.latent.attribute_indices) in place of its prior's pick.
    With `shift` > 0 each render is first moved (whole pixels, up to `shift` each way) to
    where G drew it (`align_renders`); also returns each render's move (index into
    `shift_offsets`; 0, no move, without `shift`)."""
    if g.prior is not None:
        if values is None:
            raise ValueError("a generator with an attribute prior reconstructs from the renders' true values")
        z = torch.randn(len(real), g.z_dim, device=real.device)
        fake = g(z, text, code=indices_to_code(values).to(real.device))
    else:
        z = encode_latents(image_targets, head_sets, caption_targets, g.z_dim, layout, jitter=jitter).to(real.device)
        fake = g(z, text)
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
        right = torch.stack([lg.argmax(1) for lg in g.prior.mix([v.detach() for v in value_logits], gates.detach())], dim=1) == values
    return gate + value, (right & said).sum() / said.sum().clamp_min(1)


def drawn_targets(code: torch.Tensor, caption: Targets) -> Targets:
    """What G's images must show when G draws its prior's picks `code`: the picked value of
    each family its caption states (a head-accessory mention: the picked set), hidden or
    unstated ones unknown.

    Why not the caption's values, as for a G without a prior: where the pick differs from the
    caption (the prior's mistake, or the pick's share of an uncertain prior), the attribute
    losses then taught G to draw T instead of its code. With the caption's values, chibi-64
    0.9.0's G drew the eye colour it was handed in 0.91 of held-out prompts after the
    reconstruction stage and 0.62 after this one. Matching the caption is the prior's job."""
    picked = image_targets(code_to_attributes(code.cpu()))
    said = stated(caption)
    out: Targets = {}
    for f, t in picked.items():
        keep = said[f][:, None] if t.dim() == 2 else said[f]  # head accessories: [N, items]
        out[f] = torch.where(keep, t, torch.full_like(t, -1))
    return out


def clip_image_heads(ckpt: dict, embed_dim: int, path: Path) -> AttributeHeads:
    """The CLIP run's image attribute heads (training.labels) from its checkpoint dict `ckpt`
    (read from `path`), frozen: a fixed reader of every family in an image embedding, trained
    on real renders only, that G cannot co-adapt with."""
    if "attribute_heads" not in ckpt:
        raise ValueError(f"clip_attr_weight needs a CLIP checkpoint trained with attr_weight > 0; {path} has no attribute heads")
    heads = AttributeHeads(embed_dim)
    heads.load_state_dict({k[len("image."):]: v for k, v in ckpt["attribute_heads"].items() if k.startswith("image.")})
    return heads.eval().requires_grad_(False)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1.0 - decay)


@torch.no_grad()
def sample_grid(g, clip, z_dim: int, context: int, path: Path) -> None:
    """Prompts x seeds picture (composited on a checkerboard so alpha is visible)."""
    from PIL import Image

    tokens = tokenize(SAMPLE_PROMPTS, context)
    text = encode_texts(clip, tokens)
    z = torch.from_numpy(noise_from_seeds(SAMPLE_SEEDS, z_dim))
    rows = []
    for t in text:
        imgs = g(z, t.expand(len(z), -1))
        rows.append(imgs)
    grid = torch.stack(rows)  # [P, S, 4, R, R]
    p, s, _, r, _ = grid.shape
    arr = ((grid + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 3, 1, 4, 2).reshape(p * r, s * r, 4).numpy()
    checker = ((np.indices((p * r, s * r)) // 8).sum(0) % 2) * 40 + 200
    bg = np.stack([checker] * 3, -1).astype(np.float32)
    a = arr[..., 3:4].astype(np.float32) / 255
    rgb = arr[..., :3] * a + bg * (1 - a)
    Image.fromarray(rgb.round().astype(np.uint8)).save(path)


def run(args: argparse.Namespace) -> int:
    from moe_avatar.training.dataset import load_dataset

    d = init_distributed()
    device = pick_device()
    cfg = load_config(args.config, "gan")
    tcfg = cfg["train"]
    apply_overrides(tcfg, args)
    run_dir = RunDir(args.out, d.main)
    seed_everything(tcfg["seed"] + d.rank)

    clip_ckpt = read_clip_checkpoint(args.clip)
    clip, clip_cfg = clip_from_checkpoint(clip_ckpt)
    clip.to(device).requires_grad_(False)
    embed_dim = clip.text_projection.shape[1]
    clip_attr_weight = float(tcfg.get("clip_attr_weight", 0.0))
    clip_heads = clip_image_heads(clip_ckpt, embed_dim, args.clip).to(device) if clip_attr_weight else None
    del clip_ckpt  # its optimizer state is most of the file
    context = clip_cfg["model"]["text_cfg"]["context_length"]
    cfg["clip"] = {"checkpoint": str(args.clip), "config": clip_cfg["name"], "embed_dim": embed_dim}

    res = cfg["model"]["resolution"]
    data = load_dataset(args.data, size=res, skip_bad=args.skip_bad, progress=d.main and not args.quiet, limit=args.limit)
    cfg["data"] = {"path": str(args.data), "images": len(data.files), "bad_rows": len(data.bad_rows)}
    cls_weight = float(tcfg.get("cls_weight", 0.0)) if data.attributes is not None else 0.0
    ms_weight = float(tcfg.get("ms_weight", 0.0))
    rec_weight = float(tcfg.get("rec_weight", 0.0))
    latent_layout = tcfg.get("latent", "buckets")  # training.latent.LAYOUTS
    code_jitter = bool(tcfg.get("code_jitter", False))
    rec_detail_weight = float(tcfg.get("rec_detail_weight", 0.0))
    rec_region_weight = float(tcfg.get("rec_region_weight", 0.0))
    rec_shift = int(tcfg.get("rec_shift", 0))
    adversarial = bool(tcfg.get("adversarial", True))
    has_prior = bool(cfg["model"].get("prior", False))
    prior_weight = float(tcfg.get("prior_weight", 0.0))
    for name, on in (("rec_weight", rec_weight), ("clip_attr_weight", clip_attr_weight), ("model option prior", has_prior)):
        if on and data.attributes is None:
            raise ValueError(f"{name} needs a labelled (procedural) dataset; {args.data} has no ground-truth attributes")
    if has_prior:
        for name in ("latent", "code_jitter"):
            if name in tcfg:
                raise ValueError(f"train.{name} codes z for reconstruction; a generator with model option prior is "
                                 "handed the true values instead: remove it")
        if not prior_weight:
            raise ValueError("model option prior needs train.prior_weight > 0 (nothing else trains the prior)")
    elif prior_weight:
        raise ValueError("train.prior_weight trains the attribute prior: it needs model option prior")
    prior_open_from_data = bool(tcfg.get("prior_open_from_data", False))
    if prior_open_from_data and not has_prior:
        raise ValueError("train.prior_open_from_data fits the attribute prior's open draws: it needs model option prior")
    if rec_weight and not has_prior:
        if code_jitter and data.jitter is None:
            raise ValueError(f"code_jitter needs each render's jitter draws; {args.data}/metadata.jsonl has none "
                             "(synthesise the dataset again)")
        check_z_dim(cfg["model"]["z_dim"], latent_layout, code_jitter)  # fails here, not at the first step
    for name, value in (("rec_detail_weight", rec_detail_weight), ("rec_region_weight", rec_region_weight), ("rec_shift", rec_shift)):
        if value and not rec_weight:
            raise ValueError(f"{name} weighs the reconstruction loss: it needs rec_weight > 0")
    if not adversarial and not rec_weight:
        raise ValueError("a stage with adversarial: false needs rec_weight > 0 (otherwise nothing trains G)")
    labelled = bool(cls_weight or rec_weight or clip_attr_weight or has_prior)
    bank = CaptionBank([[c.text for c in caps] for caps in data.captions], context, progress=d.main and not args.quiet,
                       states=[[c.states for c in caps] for caps in data.captions] if labelled else None)
    img_targets = image_targets(data.attributes) if labelled else None
    head_sets = head_set_index(data.attributes) if rec_weight else None
    jitter = torch.from_numpy(data.jitter) if rec_weight and code_jitter else None
    values = attribute_indices(data.attributes) if has_prior else None
    pixel_weight = None
    if rec_detail_weight or rec_region_weight:
        from moe_avatar.training.detail import OWN, REGION, load_or_make_detail_masks
        masks = load_or_make_detail_masks(data, res, progress=d.main and not args.quiet)
        # One weight map per render: 1 + w on its own accessories and irises + w_r where any accessory could be.
        weights = 1 + np.float32(rec_detail_weight) * masks[:, OWN] + np.float32(rec_region_weight) * masks[:, REGION]
        pixel_weight = torch.from_numpy(weights).to(torch.float16)  # small integers in practice: exact, half the memory
        del masks, weights

    # channels_last: the same arithmetic in the layout oneDNN (and cuDNN) convolve fastest.
    g = build_generator(cfg["model"], embed_dim).to(device, memory_format=torch.channels_last)
    disc = build_discriminator(cfg["model"], embed_dim).to(device, memory_format=torch.channels_last)
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    betas = tuple(tcfg["betas"])
    opt_g = torch.optim.Adam(g.parameters(), lr=tcfg["lr_g"], betas=betas, fused=True)
    opt_d = torch.optim.Adam(disc.parameters(), lr=tcfg["lr_d"], betas=betas, fused=True)
    broadcast_parameters(g, d)
    broadcast_parameters(disc, d)
    if args.init is not None:
        init = torch.load(args.init, map_location="cpu", weights_only=False)
        g.load_state_dict(init["g_ema"])  # the averaged weights: what the earlier stage samples with
        # Attribute heads that are missing (a checkpoint from before they existed) or read
        # another feature map (model.attr_res) start fresh.
        own = disc.state_dict()
        d_init = {k: v for k, v in init["d"].items()
                  if not (k.startswith("attributes.") and k in own and own[k].shape != v.shape)}
        missing, unexpected = disc.load_state_dict(d_init, strict=False)
        if unexpected or any(not k.startswith("attributes.") for k in missing):
            raise ValueError(f"--init {args.init}: discriminator does not match (missing {missing}, unexpected {unexpected})")
        cfg["init"] = str(args.init)
    g_ema.load_state_dict(g.state_dict())
    data_rng = np.random.default_rng([tcfg["seed"], d.rank])

    step = 0
    ckpt = run_dir.start(args.resume, data_rng, d.rank)
    if ckpt is not None:
        g.load_state_dict(ckpt["g"])
        disc.load_state_dict(ckpt["d"])
        g_ema.load_state_dict(ckpt["g_ema"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        step = ckpt["step"]
    if prior_open_from_data and ckpt is None:
        # After --init (whose G carries the sampling frequencies); a resumed checkpoint already holds the fit.
        freq = open_log_frequencies(*caption_pairs([[c.states for c in caps] for caps in data.captions], values)).exp()
        for model in (g, g_ema):
            model.prior.marginal.copy_(freq)
        if d.main:
            table = {f: {v: round(x, 4) for v, x in row.items()} for f, row in code_table(freq).items()}
            (run_dir.path / "prior_open.json").write_text(json.dumps(table, indent=1) + "\n")
    run_dir.write_config(cfg)
    if d.main:
        print(f"GAN {cfg['name']}: G {count_params(g) / 1e6:.2f} M, D {count_params(disc) / 1e6:.2f} M parameters, "
              f"{res} px, {len(data.files)} images, device {device}, precision {tcfg['precision']}, {d.world} process(es)")

    z_dim, bs = cfg["model"]["z_dim"], tcfg["batch_size"]
    bar = tqdm(total=tcfg["steps"], initial=step, desc="gan", disable=not d.main or args.quiet)
    t_last, n_last = time.time(), 0
    stop_at = min(tcfg["steps"], args.stop_at or tcfg["steps"])
    while step < stop_at:
        idx = sample_batch(len(data.files), bs, data_rng)
        choice = bank.pick_indices(idx, data_rng)
        tokens = bank.tokens[choice].long()
        real = images_to_tensor(data.images[idx]).to(device)
        z = torch.randn(len(idx), z_dim, device=device)
        with torch.no_grad():
            text = encode_texts(clip, tokens.to(device))
        rows = torch.from_numpy(idx)
        batch_targets = select(img_targets, rows) if labelled else None
        # This step's figures; tensors stay on the device until a logging step reads them.
        row: dict[str, torch.Tensor | float] = {}

        # --- discriminator
        if adversarial:
            with autocast(device, tcfg["precision"]):
                fake = g(z, text).detach()
                out_real, gp, feats_real = ma_gradient_penalty(disc, real, text)
                out_mis = disc(real[:-1], text[1:])  # real images with someone else's caption
                out_fake = disc(fake, text)
                loss_real = F.relu(1.0 - out_real).mean()
                loss_d = loss_real + 0.5 * (F.relu(1.0 + out_mis).mean() + F.relu(1.0 + out_fake).mean()) \
                    + tcfg["ma_gp_weight"] * gp
                if cls_weight:
                    cls_d, acc_real = attribute_loss(disc.classify(feats_real), batch_targets)
                    loss_d = loss_d + cls_weight * cls_d
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            average_gradients(disc, d)
            opt_d.step()
            row.update(loss_d=loss_d, d_real=out_real.mean(), d_fake=out_fake.mean(), d_mismatch=out_mis.mean(), ma_gp=gp)
            if cls_weight:  # how well D reads real renders
                row.update(cls_d=cls_d, attr_acc_real=acc_real)

        # --- generator
        loss_g = torch.zeros((), device=device)
        if adversarial:
            text_g, choice_g = text, choice
            if ms_weight:  # pair each caption with a second noise: the second half repeats the first half's captions
                half = len(idx) // 2
                keep = torch.cat([torch.arange(half), torch.arange(half), torch.arange(2 * half, len(idx))])
                text_g, choice_g = text[keep], choice[keep]
            fake_targets = select(bank.targets, choice_g) if labelled else None
            code = None
            if g.prior is not None:  # draw its prior's picks, and ask the attribute readers for those
                with torch.no_grad():
                    code = g.prior.pick(g.prior_logits(text_g), z)
                fake_targets = drawn_targets(code, fake_targets)
            with autocast(device, tcfg["precision"]):
                fake = g(z, text_g, code=code)
                feats_fake = disc.features(fake)
                adv = -disc.judge(feats_fake, text_g).mean()
                img_emb = encode_images(clip, (fake + 1) / 2)
                clip_cos = (img_emb * text_g).sum(dim=1).mean()
                loss_g = loss_g + adv - tcfg["clip_weight"] * clip_cos
                row["clip_cos"] = clip_cos
                if clip_attr_weight:  # how often the frozen CLIP's image heads read what G was to draw
                    cls_c, acc_clip = attribute_loss(read_embedding(clip_heads, img_emb), fake_targets)
                    loss_g = loss_g + clip_attr_weight * cls_c
                    row.update(cls_clip=cls_c, attr_acc_clip=acc_clip)
                if cls_weight:  # how often D reads what G was to draw
                    cls_g, acc_fake = attribute_loss(disc.classify(feats_fake), fake_targets)
                    loss_g = loss_g + cls_weight * cls_g
                    row.update(cls_g=cls_g, attr_acc_fake=acc_fake)
                if ms_weight:
                    # Mode seeking (MSGAN): same caption, different noise -> the images must differ.
                    # Minimising 1 / ratio pushes G to use z for what the caption leaves open.
                    ratio = (fake[:half] - fake[half:2 * half]).abs().mean() / (z[:half] - z[half:2 * half]).abs().mean()
                    loss_g = loss_g + ms_weight / (ratio + 1e-5)
                    row["ms_ratio"] = ratio
        if rec_weight:
            # Redraw each real render from its caption and a z that says what the caption leaves open.
            with autocast(device, tcfg["precision"]):
                rec_err, pick = reconstruction_error(g, real, text, batch_targets, head_sets[rows], select(bank.targets, choice),
                                                     latent_layout, None if jitter is None else jitter[rows],
                                                     None if values is None else values[rows], rec_shift)
                rec_l1 = rec_err.mean()
                if pixel_weight is None:
                    loss_g = loss_g + rec_weight * rec_l1
                else:  # the per-pixel weight map (above), moved with its render
                    weight = pixel_weight[rows].to(device, rec_err.dtype)[:, None]
                    if rec_shift:
                        weight = shifted(weight, pick, rec_shift)
                    loss_g = loss_g + rec_weight * (rec_err * weight).mean()
                if rec_shift:
                    row["rec_moved"] = (pick != 0).float().mean()
            row["rec_l1"] = rec_l1
        if prior_weight:
            # The prior learns from the same batch's captions (its pick above has no gradient).
            loss_p, acc = prior_loss(g, text, values[rows], select(bank.targets, choice))
            loss_g = loss_g + prior_weight * loss_p
            row.update(prior_loss=loss_p, prior_acc_stated=acc)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        average_gradients(g, d)
        opt_g.step()
        row["loss_g"] = loss_g
        # Ramp the EMA decay up from 0 so early, near-random weights wash out quickly.
        ema_update(g_ema, g, min(tcfg["ema_decay"], (1 + step) / (10 + step)))

        step += 1
        n_last += len(idx) * d.world
        bar.update(1)
        if step % tcfg["log_every"] == 0 or step == tcfg["steps"]:
            now = time.time()
            row = {"step": step, **{k: round(float(torch.as_tensor(v).detach()), 5) for k, v in row.items()},
                   "samples_per_s": round(n_last / (now - t_last), 1)}
            t_last, n_last = now, 0
            run_dir.log_stats(row)
            bar.set_postfix(g=f"{row['loss_g']:.3f}", sps=row["samples_per_s"])
        if d.main and (step % tcfg["sample_every"] == 0 or step == tcfg["steps"]):
            sample_grid(g_ema, clip, z_dim, context, run_dir.path / "samples" / f"step_{step:06d}.png")
        if step % tcfg["checkpoint_every"] == 0 or step == stop_at:
            rngs = gather_rng_states(rng_state(data_rng), d)
            run_dir.save_checkpoint(gan_checkpoint(g, disc, g_ema, cfg, embed_dim, step=step, opt_g=opt_g.state_dict(),
                                                   opt_d=opt_d.state_dict(), rng=rngs))
    bar.close()
    shutdown_distributed()
    return 0
