"""The batched data path (uint8 crops in the loader, photometric augmentations on the device, in-memory
images cropped on the device): same shapes, dtypes and ranges as the plain path, the paper's
augmentation statistics, torchvision's values for the same parameters, and exact resume."""

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch.utils.data import default_collate
from torchvision.transforms import RandomResizedCrop

from conftest import read_metrics, tiny_mae_config
from sslab import train
from sslab.data import photometric as P
from sslab.data.device_crop import crop_on_device
from sslab.data.fast_crop import crop_boxes, cut, draft_factor, open_for_crops
from sslab.data.multicrop import MultiCropCrops, MultiCropTransform, multicrop_views
from sslab.data.seeding import sample_seed
from sslab.data.transforms import MAECrop, mae_transform, mae_views
from sslab.engine import list_checkpoints, load_checkpoint
from test_dino_train import tiny_dino_config

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def seeded(fn, x, key):
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(sample_seed(0, 0, key))
        return fn(x)


def smooth_image(h=60, w=80, channels=3):
    """A photo-like image (smooth gradients): resizers agree on it up to their kernels."""
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([128 + 100 * np.sin(x / 9 + c) * np.cos(y / 7 - c) for c in range(channels)], -1)
    return arr.clip(0, 255).astype(np.uint8)


def within(rate, p, n, sigmas=5.0):
    return abs(rate - p) <= sigmas * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12


def test_parameters_follow_the_papers_probabilities_and_ranges():
    # the official DataAugmentationDINO: flip 0.5, jitter 0.8 (0.4, 0.4, 0.2, 0.1) in random order,
    # grayscale 0.2, blur 1.0 / 0.1 / 0.5 with sigma in [0.1, 2], solarise 0 / 0.2 / 0
    n = 20000
    torch.manual_seed(0)
    for kind, (blur_p, sol_p) in {"global1": (1.0, 0.0), "global2": (0.1, 0.2), "local": (0.5, 0.0)}.items():
        p = P.draw_params([kind] * n)
        col = {k: p[:, P.COL[k]] for k in P.PARAMS}
        for name, prob in (("flip", 0.5), ("jitter", 0.8), ("gray", 0.2), ("blur", blur_p), ("solarize", sol_p)):
            assert within(col[name].mean().item(), prob, n), (kind, name, col[name].mean().item())
        for name, (lo, hi) in (("brightness", (0.6, 1.4)), ("contrast", (0.6, 1.4)), ("saturation", (0.8, 1.2)),
                               ("hue", (-0.1, 0.1)), ("sigma", (0.1, 2.0))):
            v = col[name]
            assert lo <= v.min() and v.max() <= hi and v.min() < lo + 0.01 and v.max() > hi - 0.01, name
            assert abs(v.mean().item() - (lo + hi) / 2) < 0.01 * (hi - lo) * 5, name  # uniform
        order = p[:, P.COL["order0"]:P.COL["order3"] + 1].long()
        assert torch.equal(order.sort(1).values, torch.arange(4).expand(n, 4))  # a permutation per view
        for slot in range(4):  # each adjustment equally likely in each position
            counts = torch.bincount(order[:, slot], minlength=4).float() / n
            assert all(within(c.item(), 0.25, n) for c in counts)


@pytest.mark.parametrize("scale", [(0.4, 1.0), (0.05, 0.4)])
def test_crop_boxes_follow_random_resized_crop(scale):
    torch.manual_seed(0)
    boxes = torch.tensor(crop_boxes(300, 200, scale, 1500), dtype=torch.float64)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 300).all() and (boxes[:, 3] <= 200).all()
    area, ratio = w * h / (300 * 200), w / h
    assert area.min() >= scale[0] * 0.9 and area.max() <= scale[1] * 1.05
    assert ratio.min() >= 3 / 4 * 0.95 and ratio.max() <= 4 / 3 * 1.05
    # torchvision's sampler on the same image: the same distribution of areas and ratios
    torch.manual_seed(1)
    tv = torch.tensor([RandomResizedCrop.get_params(torch.zeros(1, 200, 300), list(scale), [3 / 4, 4 / 3])
                       for _ in range(1500)], dtype=torch.float64)
    tv_area, tv_ratio = tv[:, 2] * tv[:, 3] / (300 * 200), tv[:, 3] / tv[:, 2]
    assert abs(area.mean() - tv_area.mean()) < 0.03 * scale[1]
    assert abs(ratio.log().mean() - tv_ratio.log().mean()) < 0.03


def reference_view(u8, prm, mean=MEAN, std=STD):
    """One view through torchvision's own functions with the given parameter row (the plain path's ops)."""
    x = u8.float() / 255
    c = {k: float(prm[P.COL[k]]) for k in P.PARAMS}
    if c["flip"]:
        x = TF.horizontal_flip(x)
    if c["jitter"]:
        fns = [lambda t: TF.adjust_brightness(t, c["brightness"]), lambda t: TF.adjust_contrast(t, c["contrast"]),
               lambda t: TF.adjust_saturation(t, c["saturation"]), lambda t: TF.adjust_hue(t, c["hue"])]
        for slot in range(4):
            x = fns[int(c[f"order{slot}"])](x)
    if c["gray"]:
        x = TF.rgb_to_grayscale(x, 3)
    if c["blur"]:
        radius = next(math.ceil(3 * hi) for lo, hi in P.BLUR_GROUPS if lo < c["sigma"] <= hi)
        x = TF.gaussian_blur(x, [2 * radius + 1] * 2, [c["sigma"]] * 2)
    if c["solarize"]:
        x = TF.solarize(x, 128 / 255)
    return TF.normalize(x, list(mean), list(std))


def test_batched_photometric_equals_torchvision_per_view():
    torch.manual_seed(0)
    crops = torch.randint(0, 256, (48, 3, 20, 20), dtype=torch.uint8)
    crops[:8] = torch.from_numpy(smooth_image(20, 20)).permute(2, 0, 1)
    params = P.draw_params(["global1", "global2", "local"] * 16)
    out = P.apply_photometric(crops, params, MEAN, STD)
    assert out.shape == crops.shape and out.dtype == torch.float32
    ref = torch.stack([reference_view(c, p) for c, p in zip(crops, params)])
    assert (out - ref).abs().max() < 1e-4
    # CPU chunking does not change anything
    old = P.CPU_CHUNK
    try:
        P.CPU_CHUNK = 3 * 20 * 20 * 5
        assert torch.equal(P.apply_photometric(crops, params, MEAN, STD), out)
    finally:
        P.CPU_CHUNK = old
    # nor does the accelerator's jitter schedule (one masked pass per slot and adjustment)
    x = crops.float() / 255
    P._jitter_by_slot(x, params)
    y = crops.float() / 255
    for mask, ops in P.jitter_groups(params):
        y[mask] = P._jitter(y[mask], params[mask], ops)
    assert torch.equal(x, y) and not torch.equal(x, crops.float() / 255)


def test_photometric_on_one_channel_and_float_device_crops():
    torch.manual_seed(0)
    crops = torch.randint(0, 256, (12, 1, 16, 16), dtype=torch.uint8)
    params = P.draw_params(["local"] * 12)
    out = P.apply_photometric(crops, params, (0.5,), (0.25,))
    assert out.shape == (12, 1, 16, 16) and torch.isfinite(out).all()
    assert out.min() >= (0 - 0.5) / 0.25 - 1e-5 and out.max() <= (1 - 0.5) / 0.25 + 1e-5
    as_float = P.apply_photometric(crops.float() / 255, params, (0.5,), (0.25,))
    assert (as_float - out).abs().max() < 1e-5


@pytest.mark.parametrize("channels", [1, 3])
def test_multicrop_crops_match_the_plain_path_in_shape_dtype_and_range(tmp_path, channels):
    arr = smooth_image(60, 80, channels)
    path = tmp_path / "img.jpg"
    Image.fromarray(arr[..., 0] if channels == 1 else arr).save(path, quality=95)
    fast = MultiCropCrops(32, (0.4, 1.0), 3, 16, (0.05, 0.4))
    tensor = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    for image in (tensor, Image.fromarray(arr[..., 0] if channels == 1 else arr)):
        g, l, pg, pl = seeded(fast, image, 3)
        assert g.shape == (2, channels, 32, 32) and l.shape == (3, channels, 16, 16) and g.dtype == torch.uint8
        assert pg.shape == (2, len(P.PARAMS)) and pl.shape == (3, len(P.PARAMS))
    g, l, pg, pl = seeded(fast, str(path), 3)  # files decode to RGB, as ImageFolder's
    assert g.shape == (2, 3, 32, 32)
    batch = default_collate([seeded(fast, tensor, k) for k in range(4)])
    mean, std = [0.5] * channels, [0.25] * channels
    views = multicrop_views(batch, mean, std)
    plain = default_collate([seeded(MultiCropTransform(32, (0.4, 1.0), 3, 16, (0.05, 0.4), mean, std), tensor, k)
                             for k in range(4)])
    assert [tuple(v.shape) for v in views] == [tuple(v.shape) for v in plain]
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in views)
    lo, hi = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25
    assert all(v.min() >= lo - 1e-5 and v.max() <= hi + 1e-5 for v in views)
    # per-sample seeding: a sample's views do not depend on the rest of its batch
    alone = multicrop_views(default_collate([seeded(fast, tensor, 2)]), mean, std)
    assert all(torch.equal(a[0], v[2]) for a, v in zip(alone, views))


def test_jpeg_draft_decodes_smaller_when_every_crop_allows(tmp_path):
    arr = smooth_image(480, 640)
    path = tmp_path / "big.jpg"
    Image.fromarray(arr).save(path, quality=95)
    assert draft_factor([(0, 0, 400, 300)], [96]) == 2 and draft_factor([(0, 0, 800, 800)], [96]) == 8
    assert draft_factor([(0, 0, 400, 300), (0, 0, 150, 150)], [96, 96]) == 1
    boxes = [(40, 30, 600, 450), (100, 100, 500, 420)]
    img, got, fx, fy = open_for_crops(str(path), lambda w, h: (boxes, [64, 64]))
    assert got == boxes and img.shape == (1, 3, 120, 160) and fx == fy == 0.25  # 1/4 scale
    full = Image.fromarray(arr)
    reduced, reference = cut(img, boxes, 64, fx, fy).float(), cut(full, boxes, 64).float()
    assert reduced.shape == (2, 3, 64, 64) and (reduced - reference).abs().mean() < 4  # of 255


def test_cut_matches_the_official_pil_crop_then_resize():
    """torch's uint8 antialiased bicubic on a crop view = PIL's crop + bicubic resize up to rounding."""
    rng = np.random.default_rng(0)
    arr = (smooth_image(120, 150).astype(int) + rng.integers(-20, 21, (120, 150, 3))).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    boxes = [(0, 0, 150, 120), (10, 5, 70, 60), (30, 20, 140, 60), (3, 7, 40, 110), (50, 50, 60, 58)]
    for size in (96, 32):  # upscaled, shrunk and mixed crops
        got = cut(img, boxes, size)
        assert got.shape == (len(boxes), 3, size, size) and got.dtype == torch.uint8
        for crop, box in zip(got, boxes):
            official = torch.from_numpy(np.array(img.crop(box).resize((size, size), Image.Resampling.BICUBIC)))
            diff = (crop.permute(1, 2, 0).int() - official.int()).abs()
            assert diff.float().mean() < 0.5 and diff.max() <= 8, (box, size, diff.float().mean(), diff.max())
    gray_img = Image.fromarray(arr[..., 0])
    assert cut(gray_img, boxes[:2], 16).shape == (2, 1, 16, 16)
    assert torch.equal(cut(torch.from_numpy(arr).permute(2, 0, 1), boxes, 24), cut(img, boxes, 24))


def test_device_crops_match_pil_crops_and_fold_the_flip():
    arr = smooth_image(32, 32)
    images = torch.from_numpy(arr).permute(2, 0, 1)[None].repeat(3, 1, 1, 1).contiguous()
    boxes = torch.tensor([[[4.0, 2.0, 28.0, 30.0], [0.0, 0.0, 32.0, 32.0]]] * 3)
    dev = crop_on_device(images, torch.tensor([0, 2, 1]), boxes, 32)
    assert dev.shape == (6, 3, 32, 32) and dev.dtype == torch.float32 and 0 <= dev.min() and dev.max() <= 1
    pil = cut(Image.fromarray(arr), [tuple(int(v) for v in b) for b in boxes[0].tolist()], 32).float() / 255
    assert (dev[0] - pil[0]).abs().mean() < 0.02 and (dev[3] - pil[1]).abs().max() < 1e-3  # identity crop exact
    flipped = crop_on_device(images, torch.tensor([0, 2, 1]), boxes, 32, flip=torch.ones(3, 2, dtype=torch.bool))
    assert torch.allclose(flipped, dev.flip(-1), atol=1e-5)


def test_mae_crop_paths_agree_in_shape_dtype_and_range():
    arr = smooth_image(28, 28, 1)
    tensor = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    crops = torch.stack([seeded(MAECrop(16), tensor, k) for k in range(6)])
    assert crops.shape == (6, 1, 16, 16) and crops.dtype == torch.uint8
    x = mae_views(crops, (0.5,), (0.25,))
    plain = torch.stack([seeded(mae_transform(16, (0.5,), (0.25,)), tensor, k) for k in range(6)])
    assert x.shape == plain.shape and x.dtype == plain.dtype
    assert x.min() >= -2 - 1e-5 and x.max() <= 2 + 1e-5
    boxes = torch.stack([seeded(MAECrop(16, boxes_only=True), tensor, k) for k in range(6)])
    on_device = mae_views(boxes, (0.5,), (0.25,), images=tensor[None].repeat(6, 1, 1, 1), index=torch.arange(6),
                          img_size=16)
    assert on_device.shape == x.shape and (on_device - x).abs().mean() < 0.1  # same crops, bicubic variants


@pytest.mark.parametrize("method", ["mae", "dino"])
def test_resume_is_exact_with_images_cropped_on_the_device(tmp_path, method):
    # the demo set is held in memory: its images go to the device, the loader only draws boxes/params
    common = dict(batch_size=8, epochs=1, log_every=1, save_every_steps=2, keep_last=5, max_steps=4,
                  model_kwargs={"depth": 1, "drop_path_rate": 0.1})
    make = tiny_mae_config if method == "mae" else tiny_dino_config
    full = make(tmp_path / "full", **common)
    train(full)
    part = make(tmp_path / "part", **{**common, "max_steps": 2})
    train(part)
    train(part.replace(max_steps=4, resume="auto", num_workers=1))
    a, b = read_metrics(full.output_dir), read_metrics(part.output_dir)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    wa = load_checkpoint(list_checkpoints(full.output_dir)[-1])["model"]
    wb = load_checkpoint(list_checkpoints(part.output_dir)[-1])["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
