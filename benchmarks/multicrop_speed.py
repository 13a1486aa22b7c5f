"""DINO multi-crop augmentation: sslab's batched path against a straightforward PIL implementation, one process.

    python benchmarks/multicrop_speed.py                       # 2x224 + 10x96 from the Imagenette sample
    python benchmarks/multicrop_speed.py --device cuda         # photometric half on the GPU

Baseline: the paper's augmentation (official ``DataAugmentationDINO``) written plainly for this
benchmark: PIL decode, per view torchvision RandomResizedCrop (bicubic), flip, ColorJitter(0.4, 0.4,
0.2, 0.1) p 0.8, grayscale p 0.2, PIL GaussianBlur (p 1.0 / 0.1 / 0.5), PIL solarise (p 0.2, second
global view), ToTensor + Normalize. sslab: :class:`MultiCropCrops` per image (what runs in the loader
workers: decode, crop, resize, parameter draws), then default_collate and :func:`multicrop_views`
on the batch (flip, jitter, grayscale, blur, solarise, normalise).

Both run alternately on the same images (one thread: images/s per core), so a shared, busy
machine slows both alike. Printed: the loader's share against the whole baseline (target >= 5x) and
the whole augmentation on the CPU alone against the baseline (target >= 2x), medians of the rounds.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch
from PIL import Image, ImageFilter, ImageOps
from torch.utils.data import default_collate
from torchvision import transforms as T

from sslab.data.image_folder import ImageFolder
from sslab.data.multicrop import MultiCropCrops, multicrop_views
from sslab.data.seeding import sample_seed
from sslab.data.sources import resolve_split, unpack_tar

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "imagenette-sample" / "imagenette-sample.tar"


class PILBlur:
    """PIL Gaussian blur with probability p, radius ~ U(0.1, 2) (the official helper's behaviour)."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, img):
        return img.filter(ImageFilter.GaussianBlur(random.uniform(0.1, 2.0))) if random.random() < self.p else img


class PILSolarize:
    def __init__(self, p: float):
        self.p = p

    def __call__(self, img):
        return ImageOps.solarize(img, 128) if random.random() < self.p else img


def baseline_transform(local_crops_number: int):
    """The paper's multi-crop augmentation on PIL images, per image (plain torchvision + PIL)."""
    flip_jitter_gray = [T.RandomHorizontalFlip(0.5),
                        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), T.RandomGrayscale(0.2)]
    norm = [T.ToTensor(), T.Normalize(MEAN, STD)]
    bic = T.InterpolationMode.BICUBIC
    g1 = T.Compose([T.RandomResizedCrop(224, (0.4, 1.0), interpolation=bic), *flip_jitter_gray, PILBlur(1.0), *norm])
    g2 = T.Compose([T.RandomResizedCrop(224, (0.4, 1.0), interpolation=bic), *flip_jitter_gray, PILBlur(0.1),
                    PILSolarize(0.2), *norm])
    loc = T.Compose([T.RandomResizedCrop(96, (0.05, 0.4), interpolation=bic), *flip_jitter_gray, PILBlur(0.5), *norm])

    def run(path):
        img = Image.open(path).convert("RGB")
        return [g1(img), g2(img)] + [loc(img) for _ in range(local_crops_number)]
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="ImageFolder or tar of JPEGs")
    ap.add_argument("--batch", type=int, default=32, help="images per round (one collated batch for sslab)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--local-crops-number", type=int, default=10)
    ap.add_argument("--device", default="cpu", help="where sslab's photometric half runs (cpu or cuda)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: per-core figures)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = Path(args.data)
    root = resolve_split(unpack_tar(path) if path.is_file() else path, "train")
    files = [p for p, _ in ImageFolder(root).samples]
    print(f"{len(files)} images under {root}; {args.batch} per round, {args.rounds} rounds, 2x224 + "
          f"{args.local_crops_number}x96 crops, {args.threads} thread(s), photometric on {args.device}")

    base = baseline_transform(args.local_crops_number)
    ours = MultiCropCrops(224, (0.4, 1.0), args.local_crops_number, 96, (0.05, 0.4))
    dev = torch.device(args.device)

    def run_baseline(batch):
        return [base(p) for p in batch]

    def run_loader(batch):
        out = []
        for i, p in enumerate(batch):
            torch.default_generator.manual_seed(sample_seed(0, 0, i))  # as the pipeline does per sample
            out.append(ours(p))
        return out

    def run_device(items):
        collated = [t.to(dev, non_blocking=True) for t in default_collate(items)]
        views = multicrop_views(collated, MEAN, STD)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return views

    def timed(fn, arg):
        t0 = time.perf_counter()
        out = fn(arg)
        return out, time.perf_counter() - t0

    random.seed(0)
    run_device(run_loader(files[:4]))  # warm-up
    rows = []
    for r in range(args.rounds):
        batch = [files[(r * args.batch + i) % len(files)] for i in range(args.batch)]
        _, t_base = timed(run_baseline, batch)
        items, t_load = timed(run_loader, batch)
        _, t_dev = timed(run_device, items)
        rows.append((t_base, t_load, t_dev))
        print(f"round {r}: baseline {args.batch / t_base:6.1f} img/s | sslab loader {args.batch / t_load:6.1f} img/s, "
              f"loader + batched photometric ({args.device}) {args.batch / (t_load + t_dev):6.1f} img/s", flush=True)
    loader_ratio = statistics.median(b / lo for b, lo, _ in rows)
    whole_ratio = statistics.median(b / (lo + d) for b, lo, d in rows)
    n = args.batch * args.rounds
    tb, tl, td = (sum(c) for c in zip(*rows))
    print(f"baseline (PIL, per image):            {n / tb:7.1f} img/s per core")
    print(f"sslab loader side (decode+crop+resize): {n / tl:7.1f} img/s per core   ratio {loader_ratio:.2f}x (target >= 5x)")
    print(f"sslab photometric, batched on {args.device}: {n / td:7.1f} img/s")
    print(f"sslab whole augmentation on {args.device}:   {n / (tl + td):7.1f} img/s   ratio {whole_ratio:.2f}x "
          f"(target >= 2x on cpu)")


if __name__ == "__main__":
    main()
