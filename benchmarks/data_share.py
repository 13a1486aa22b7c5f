"""Share of a training step spent on data, and epochs per minute, for the small CIFAR-10 recipes, before
and after the device data path, measured alternately in one process.

    python benchmarks/data_share.py                          # MAE and DINO ViT-Tiny CIFAR-10 recipes
    python benchmarks/data_share.py --recipes mae --steps 10 --device cuda

"before": ``--augment-on-device false``, the per-image torchvision transforms in the loader (the
in-memory uint8 images are cropped, flipped, jittered... one by one). "after": the default, the
images live on the device and are cropped and augmented there in batches; the loader only draws
each sample's boxes and parameters. Data time = the loader's next batch (here in the main process,
``num_workers 0``, so none of it hides behind compute on a shared 2-core machine) + moving it to the
device + the device-side augmentation; compute = loss, backward and AdamW step. Epochs per minute
are extrapolated from the mean step time over the recipe's steps per epoch.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from sslab.branches import BRANCHES
from sslab.data.pipeline import SeededTransformDataset
from sslab.data.sampler import ShardedBatchSampler
from sslab.data.sources import open_images
from sslab.optim import adamw

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"mae": "mae_vit_tiny_cifar10.py", "dino": "dino_vit_tiny_cifar10.py"}


def recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / RECIPES[name])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CONFIG


class Pipeline:
    """One data path of a recipe: source -> seeded dataset -> loader -> branch, with its own model."""

    def __init__(self, cfg, device: torch.device):
        torch.manual_seed(0)
        self.cfg, self.device = cfg, device
        self.branch = BRANCHES[cfg.method](cfg)
        source = open_images(cfg.data, "train", cfg.in_memory, cfg.in_chans, cfg.skip_bad_files,
                             encoded=cfg.augment_on_device)
        dataset = SeededTransformDataset(source, self.branch.transform(source), cfg.seed)
        self.sampler = ShardedBatchSampler(len(dataset), cfg.batch_size, seed=cfg.seed)
        self.steps_per_epoch = len(self.sampler)
        self.loader = iter(DataLoader(dataset, batch_sampler=self.sampler, num_workers=0))
        self.model = self.branch.model.to(device)
        self.opt = adamw(self.model, 1e-4, cfg.weight_decay, tuple(cfg.betas), self.branch.no_weight_decay())
        self.branch.setup(device, self.steps_per_epoch)
        self.plain_cfg = cfg.replace(augment_on_device=False)  # loss on views already expanded below
        self.step = 0

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def run_step(self) -> tuple[float, float]:
        t0 = time.perf_counter()
        views, *meta = next(self.loader)
        views = [v.to(self.device) for v in views] if isinstance(views, list) else views.to(self.device)
        batch = [views, *meta]
        views = self.branch.views(batch)
        self.sync()
        t1 = time.perf_counter()
        cfg, self.branch.cfg = self.branch.cfg, self.plain_cfg
        try:
            loss, _ = self.branch.loss(self.model, [views, *meta], 0, self.step)
        finally:
            self.branch.cfg = cfg
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.branch.after_step(self.model, self.step)
        self.sync()
        self.step += 1
        return t1 - t0, time.perf_counter() - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default="mae,dino")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per path (after one warm-up step)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: two threads oversubscribe a shared 2-core machine badly)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    for name in args.recipes.split(","):
        base = recipe(name)
        paths = {"before": Pipeline(base.replace(augment_on_device=False), device),
                 "after": Pipeline(base.replace(augment_on_device=True), device)}
        for p in paths.values():
            p.run_step()  # warm-up
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in paths}
        for _ in range(args.steps):  # alternate: a busy machine slows both alike
            for k, p in paths.items():
                times[k].append(p.run_step())
        print(f"{name} ({base.model}, {base.img_size} px, batch {base.batch_size}, "
              f"{paths['after'].steps_per_epoch} steps per epoch):")
        for k, rows in times.items():
            data = statistics.mean(d for d, _ in rows)
            comp = statistics.mean(c for _, c in rows)
            per_epoch = paths[k].steps_per_epoch * (data + comp)
            print(f"  {k:6s}: data {data * 1e3:8.1f} ms/step, compute {comp * 1e3:8.1f} ms/step, data share "
                  f"{100 * data / (data + comp):5.1f}%, {60 / per_epoch:.3f} epochs/min", flush=True)


if __name__ == "__main__":
    main()
