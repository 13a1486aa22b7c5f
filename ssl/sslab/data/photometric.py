"""DINO's photometric augmentations, batched with per-sample parameters on the model's device.

The official ``DataAugmentationDINO`` (Caron et al. 2021, App. D; after BYOL's) applies, per view and
after the crop: horizontal flip (p 0.5), colour jitter (p 0.8; brightness and contrast 0.4,
saturation 0.2, hue 0.1, the four in a random order as torchvision's ``ColorJitter``), grayscale
(p 0.2), Gaussian blur (sigma ~ U(0.1, 2); p 1.0 for the first global view, 0.1 for the second,
0.5 for local views) and solarisation at 128 (p 0.2, second global view only).

Here the split is: :func:`draw_params` draws every random number of a view on the CPU, in the data
loader, under the per-sample seed (``data/seeding.py``), so resuming replays the same views; and
:func:`apply_photometric` applies them to a whole batch of uint8 crops at once, on whatever device
the batch is on (no random draws there). Parameters of one view are one row of :data:`PARAMS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# Column of each parameter in a (V, len(PARAMS)) parameter row.
PARAMS = ("flip", "jitter", "brightness", "contrast", "saturation", "hue", "order0", "order1", "order2",
          "order3", "gray", "blur", "sigma", "solarize")
COL = {name: i for i, name in enumerate(PARAMS)}

JITTER = dict(p=0.8, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)  # official ColorJitter(0.4, 0.4, 0.2, 0.1)
FLIP_P, GRAY_P = 0.5, 0.2
BLUR_SIGMA = (0.1, 2.0)  # PIL ImageFilter.GaussianBlur radius range of the official code (radius = sigma)
BLUR_GROUPS = ((0.0, 2 / 3), (2 / 3, 4 / 3), (4 / 3, BLUR_SIGMA[1]))  # sigma ranges blurred together (radius 2, 4, 6)
SOLARIZE_THRESHOLD = 128 / 255  # PIL ImageOps.solarize(threshold=128) inverts values >= 128

# Per-view probabilities of the official code: (blur p, solarize p).
VIEW_KINDS = {"global1": (1.0, 0.0), "global2": (0.1, 0.2), "local": (0.5, 0.0)}
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL's convert("L") and torchvision
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # the values of the order columns


def draw_params(kinds: Sequence[str]) -> torch.Tensor:
    """One row of photometric parameters per view, drawn from torch's global generator (seeded per sample).

    ``kinds``: the kind of each view (a key of :data:`VIEW_KINDS`). Returns float32 (V, len(PARAMS)).
    Factors follow torchvision's ColorJitter: brightness/contrast ~ U(0.6, 1.4), saturation
    ~ U(0.8, 1.2), hue ~ U(-0.1, 0.1), order a random permutation of the four. One draw of
    uniforms, then numpy (this runs per image in the loader; small torch ops cost ~10 us each).
    """
    v = len(kinds)
    u = torch.rand(v, 14, dtype=torch.float64).numpy()
    probs = np.array([VIEW_KINDS[k] for k in kinds], dtype=np.float64).reshape(v, 2)
    out = np.empty((v, len(PARAMS)), dtype=np.float32)
    out[:, COL["flip"]] = u[:, 0] < FLIP_P
    out[:, COL["jitter"]] = u[:, 1] < JITTER["p"]
    for i, name in enumerate(("brightness", "contrast", "saturation")):
        out[:, COL[name]] = 1 - JITTER[name] + 2 * JITTER[name] * u[:, 2 + i]
    out[:, COL["hue"]] = -JITTER["hue"] + 2 * JITTER["hue"] * u[:, 5]
    out[:, COL["order0"]:COL["order3"] + 1] = np.argsort(u[:, 6:10], axis=1)  # a random permutation per view
    out[:, COL["gray"]] = u[:, 10] < GRAY_P
    out[:, COL["blur"]] = u[:, 11] < probs[:, 0]
    out[:, COL["sigma"]] = BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * u[:, 12]
    out[:, COL["solarize"]] = u[:, 13] < probs[:, 1]
    return torch.from_numpy(out)


def gray(x: torch.Tensor) -> torch.Tensor:
    """(n, C, H, W) in [0, 1] -> (n, 1, H, W) luma (C = 1: the image itself)."""
    if x.shape[1] == 1:
        return x
    return torch.mul(x[:, 0], GRAY_WEIGHTS[0]).add_(x[:, 1], alpha=GRAY_WEIGHTS[1]).add_(
        x[:, 2], alpha=GRAY_WEIGHTS[2]).unsqueeze(1)


# The operations below work in place on their input (a gathered copy of the views they apply to)
# and return it: eager elementwise chains on the CPU are bound by memory traffic and allocations.

def brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """torchvision ``adjust_brightness``: blend with black; f (n,)."""
    return x.mul_(f.view(-1, 1, 1, 1)).clamp_(0, 1)


def contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """torchvision ``adjust_contrast``: blend with the image's mean luma; f (n,)."""
    f = f.view(-1, 1, 1, 1)
    means = x.mean(dim=(2, 3), keepdim=True)  # the mean luma is the luma of the channel means
    mean = gray(means) if x.shape[1] == 3 else means
    return x.mul_(f).add_(mean * (1 - f)).clamp_(0, 1)


def saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """torchvision ``adjust_saturation``: blend with the luma image; f (n,)."""
    f = f.view(-1, 1, 1, 1)
    g = gray(x)
    return x.mul_(f).addcmul_(g, 1 - f).clamp_(0, 1)


def hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of (n, 3, H, W) in [0, 1] by ``shift`` (n,) turns, keeping value and chroma.

    The hue in sixths of a turn is (g - b) / C, 2 + (b - r) / C or 4 + (r - g) / C as R, G or B is the
    largest (C = max - min); back to RGB with the closed form channel = V - C * clamp(2 - |k - 2|, 0, 1),
    k = (n + 6 H) mod 6 and n = 5, 3, 1 for R, G, B (torchvision's ``adjust_hue`` within 2e-6).
    Float masks and ``frac`` instead of ``torch.where``/``remainder``, which are slow on CPU.
    """
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc = torch.maximum(r, g)
    torch.maximum(maxc, b, out=maxc)
    c = torch.minimum(r, g)
    torch.minimum(c, b, out=c)
    c.neg_().add_(maxc)  # chroma
    is_r = maxc == r
    fr = is_r.to(x.dtype)
    fg = (maxc == g).logical_and_(is_r.logical_not_()).to(x.dtype)
    fb = torch.sub(1.0, fr).sub_(fg)
    turns = torch.sub(g, b).mul_(fr).addcmul_(b - r, fg).addcmul_(r - g, fb).div_(c.clamp_min(1e-12))  # c = 0: grey
    turns.add_(fg, alpha=2.0).add_(fb, alpha=4.0).div_(6.0).add_(shift.view(-1, 1, 1) + 1.0)  # + 1: positive for frac
    for ch, n in enumerate((5.0, 3.0, 1.0)):  # r, g, b are no longer read: write the channels in place
        k = torch.add(turns, n / 6.0).frac_().sub_(1.0 / 3.0).abs_().mul_(-6.0).add_(2.0).clamp_(0, 1)
        torch.addcmul(maxc, k, c, value=-1.0, out=x[:, ch])
    return x


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """RandomGrayscale with 3 output channels."""
    return x.copy_(gray(x).expand_as(x))


def solarize(x: torch.Tensor) -> torch.Tensor:
    """Invert values >= 128/255 (PIL ``ImageOps.solarize(img, 128)``); arithmetic, not ``where`` (CPU speed)."""
    m = (x >= SOLARIZE_THRESHOLD).to(x.dtype)
    return x.mul_(m.mul(-2.0).add_(1.0)).add_(m)


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(n,) sigmas -> (n, 2 * radius + 1) normalised 1-D Gaussian kernels."""
    t = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    k = torch.exp(-0.5 * (t / sigma.view(-1, 1)) ** 2)
    return k / k.sum(1, keepdim=True)


def blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float = BLUR_SIGMA[1]) -> torch.Tensor:
    """Separable Gaussian blur of (n, C, H, W), per-sample sigma (n,) <= ``max_sigma``, kernels to
    +-3 ``max_sigma`` (fixed: a view's result does not depend on its batch), reflect padding.

    A sum of shifted taps, one in-place ``addcmul_`` each with the per-sample weight broadcast: no
    temporaries. (A grouped convolution with one kernel per image is ~20x slower on CPU.)
    """
    n, c, h, w = x.shape
    radius = min(math.ceil(3 * max_sigma), h - 1, w - 1)  # reflect padding needs pad < size
    k = gaussian_kernels(sigma, radius).view(n, 1, 1, 1, -1)
    taps = range(2 * radius + 1)
    xp = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    y = torch.empty(n, c, h + 2 * radius, w, device=x.device, dtype=x.dtype)
    row = y[:, :, radius:radius + h]
    torch.mul(xp[..., 0:w], k[..., 0], out=row)
    for t in taps[1:]:
        row.addcmul_(xp[..., t:t + w], k[..., t])
    y[:, :, :radius] = row[:, :, 1:radius + 1].flip(2)  # reflect padding, top and bottom
    y[:, :, radius + h:] = row[:, :, h - radius - 1:h - 1].flip(2)
    out = torch.mul(y[:, :, 0:h], k[..., 0])
    for t in taps[1:]:
        out.addcmul_(y[:, :, t:t + h], k[..., t])
    return out


JITTER_OPS = (brightness, contrast, saturation, hue)  # index = value of the order columns
CPU_CHUNK = 1_000_000  # values per chunk of views on the CPU: the temporaries of a chunk stay in cache


def _on_subset(x: torch.Tensor, mask: torch.Tensor, fn, *args: torch.Tensor) -> None:
    """``x[mask] = fn(x[mask], *args[mask])`` in place; the other samples are untouched.

    On the CPU the selected samples are handled as runs of consecutive indices: a single run is
    worked on in place as a slice, several are gathered with one ``cat`` and written back per run
    (``index_copy_`` of a few large samples is ~3x slower than slice copies there).
    """
    idx = mask.nonzero().flatten()
    if idx.numel() == 0:
        return
    if x.device.type != "cpu":
        args = tuple(a.index_select(0, idx) for a in args)
        x.index_copy_(0, idx, fn(x.index_select(0, idx), *args))
        return
    runs = _runs(idx.tolist())
    if len(runs) == 1:
        (s, e), = runs
        y = fn(x[s:e], *(a[s:e] for a in args))
        if y.data_ptr() != x[s:e].data_ptr():
            x[s:e].copy_(y)
        return
    y = fn(torch.cat([x[s:e] for s, e in runs]), *(a.index_select(0, idx) for a in args))
    o = 0
    for s, e in runs:
        x[s:e].copy_(y[o:o + e - s])
        o += e - s


def _runs(idx: list[int]) -> list[tuple[int, int]]:
    """Sorted indices -> ``[(start, end)]`` of their runs of consecutive values."""
    runs = [[idx[0], idx[0] + 1]]
    for i in idx[1:]:
        if i == runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([i, i + 1])
    return [tuple(r) for r in runs]


def jitter_groups(params: torch.Tensor) -> list[tuple[torch.Tensor, list[int]]]:
    """Group the colour-jittered views by the order of their four adjustments.

    ``params`` (N, P) -> ``[(indices of the group's views, order of the 4 adjustments)]``. Each group
    is gathered once (a single view or a run of consecutive ones: not at all) for all four
    adjustments, instead of once per (slot, adjustment) as a mask per slot would need.
    """
    jittered = params[:, COL["jitter"]] > 0
    order = params[:, COL["order0"]:COL["order3"] + 1].to(torch.int64)
    key = torch.where(jittered, ((order[:, 0] * 4 + order[:, 1]) * 4 + order[:, 2]) * 4 + order[:, 3], -1)
    groups = []
    for k in torch.unique(key).tolist():
        if k >= 0:
            groups.append((key == k, [(k >> 6) & 3, (k >> 4) & 3, (k >> 2) & 3, k & 3]))
    return groups


def _jitter(x: torch.Tensor, p: torch.Tensor, ops: list[int]) -> torch.Tensor:
    """The four colour adjustments in the order ``ops`` (values of the order columns), in place."""
    for op in ops:
        fn = JITTER_OPS[op]
        if x.shape[1] == 3 or fn in (brightness, contrast):  # saturation and hue leave one channel unchanged
            fn(x, p[:, COL[fn.__name__]])
    return x


def _jitter_by_slot(x: torch.Tensor, p: torch.Tensor) -> None:
    """torchvision's ColorJitter, one (slot, adjustment) at a time over the views it applies to."""
    jitter, rgb = p[:, COL["jitter"]] > 0, x.shape[1] == 3
    for slot in range(4):
        order = p[:, COL[f"order{slot}"]]
        for op, fn in enumerate(JITTER_OPS):
            if rgb or fn in (brightness, contrast):  # saturation and hue leave one channel unchanged
                _on_subset(x, jitter & (order == op), fn, p[:, COL[fn.__name__]])


def apply_photometric(crops: torch.Tensor, params: torch.Tensor, mean: Sequence[float],
                      std: Sequence[float]) -> torch.Tensor:
    """Crops (N, C, H, W) and their :func:`draw_params` rows (N, P) -> normalised float32 (N, C, H, W).

    ``crops`` are uint8, or float32 in [0, 1] (device crops; then they are overwritten in place).
    Order of the official pipeline: flip -> colour jitter (random order) -> grayscale -> blur ->
    solarise -> normalise. Deterministic given ``params``; runs on the device of ``crops``; each
    operation runs once per batch (on the CPU: per chunk of views, whose temporaries stay in cache)
    on the views it applies to, the colour jitter once per group of views with the same order.
    """
    if crops.dtype not in (torch.uint8, torch.float32) or crops.ndim != 4:
        raise ValueError(f"expected uint8 or float32 crops (N, C, H, W), got {crops.dtype} {tuple(crops.shape)}")
    if params.shape != (crops.shape[0], len(PARAMS)):
        raise ValueError(f"expected params ({crops.shape[0]}, {len(PARAMS)}), got {tuple(params.shape)}")
    p = params.to(crops.device, torch.float32)
    out = torch.empty(crops.shape, device=crops.device) if crops.dtype == torch.uint8 else crops
    n = crops.shape[0]
    chunk = max(1, CPU_CHUNK // max(1, crops[0].numel())) if crops.device.type == "cpu" else n
    for i in range(0, n, chunk):
        x, pc = out[i:i + chunk], p[i:i + chunk]
        if crops.dtype == torch.uint8:
            x.copy_(crops[i:i + chunk]).mul_(1 / 255)
        _on_subset(x, pc[:, COL["flip"]] > 0, lambda s: s.flip(-1))
        if x.device.type == "cpu":  # one gather (often none) per view for all four adjustments
            for mask, ops in jitter_groups(pc):
                _on_subset(x, mask, lambda s, ps, ops=ops: _jitter(s, ps, ops), pc)
        else:  # at most 16 (slot, adjustment) subsets per batch: fewer launches than one per order
            _jitter_by_slot(x, pc)
        _after_jitter_(x, pc)
    return normalize_(out, mean, std)


def _after_jitter_(x: torch.Tensor, p: torch.Tensor) -> None:
    """Grayscale, blur and solarise of :func:`apply_photometric`, in place on float views x (n, C, H, W)."""
    if x.shape[1] == 3:
        _on_subset(x, p[:, COL["gray"]] > 0, grayscale)
    if min(x.shape[-2:]) > 1:
        # kernels to +-3 sigma: views grouped by sigma so that small sigmas get short kernels
        blurred, sigma = p[:, COL["blur"]] > 0, p[:, COL["sigma"]]
        for lo, hi in BLUR_GROUPS:
            _on_subset(x, blurred & (sigma > lo) & (sigma <= hi), lambda s, sg, hi=hi: blur(s, sg, hi), sigma)
    _on_subset(x, p[:, COL["solarize"]] > 0, solarize)


def normalize_(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """In place: (x - mean) / std per channel, as one multiply-add."""
    scale = torch.tensor([1 / s for s in std], device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std)], device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return torch.addcmul(shift, x, scale, out=x)
