"""Scaling curves: pretraining compute, the table of a sweep, power-law fits and their plots.

- Compute: the FLOPs of one training step of the pretraining model (forward and backward of the
  branch loss, counted by ``torch.utils.flop_counter.FlopCounterMode``: matmuls, convolutions,
  attention) per image, times the images the run saw. Element-wise work and the optimiser are not
  counted, as in the usual ``6 N D``-style estimates.
- Fit: ``error = a * x ** b`` with ``error = 100 - accuracy`` (%), least squares on
  ``log error = log a + b log x``; b < 0 is the scaling exponent (Kaplan et al. 2020's form).
- Plots: accuracy against pretraining FLOPs, encoder parameters and images seen, log-scaled x,
  one line per setting of the other axes, with the fitted curve and its exponent in the legend.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger("sslab")

# x axis -> the columns whose values make one line (a "setting") on that plot.
DEFAULT_PANELS = (
    ("pretrain_flops", ("model",)),
    ("params", ("data_fraction", "epochs")),
    ("images_seen", ("model",)),
)
AXIS_LABELS = {"pretrain_flops": "pretraining compute (FLOPs)", "params": "encoder parameters",
               "images_seen": "images seen in pretraining"}


def training_flops_per_image(cfg, batch: int = 2) -> float:
    """FLOPs of one forward + backward of ``cfg``'s pretraining branch, per image, on ``batch`` real
    images of its data through its own augmentation (so multi-crop views count)."""
    from torch.utils.data import default_collate

    from ..branches import BRANCHES
    from ..data.pipeline import SeededTransformDataset
    from ..data.sources import open_images

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        branch = BRANCHES[cfg.method](cfg)
        source = open_images(cfg.data, "train", False, cfg.in_chans)
        data = SeededTransformDataset(source, branch.transform(), cfg.seed)
        items = default_collate([data[(0, i)] for i in range(batch)])
        branch.setup(torch.device("cpu"), 1)
        model = branch.model.train()
        with FlopCounterMode(display=False) as counter:
            loss, _ = branch.loss(model, items, 0, 0)
            loss.backward()
    return counter.get_total_flops() / batch


def fit_power_law(x: Sequence[float], accuracy: Sequence[float]) -> dict[str, float] | None:
    """Fit ``100 - accuracy = a * x ** b`` by least squares in log-log space: ``{"a", "b", "r2"}``, or
    None with fewer than two distinct positive x (or an error of 0, which has no logarithm)."""
    xs = np.asarray(x, dtype=float)
    err = 100.0 - np.asarray(accuracy, dtype=float)
    ok = (xs > 0) & (err > 0) & np.isfinite(xs) & np.isfinite(err)
    xs, err = xs[ok], err[ok]
    if len(np.unique(xs)) < 2:
        return None
    lx, ly = np.log(xs), np.log(err)
    b, log_a = np.polyfit(lx, ly, 1)
    pred = log_a + b * lx
    ss_res, ss_tot = float(((ly - pred) ** 2).sum()), float(((ly - ly.mean()) ** 2).sum())
    return {"a": float(math.exp(log_a)), "b": float(b), "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0}


def write_table(rows: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write rows (dicts; the union of their keys, in first-seen order) as CSV, atomically."""
    path = Path(path)
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)
    return path


def read_table(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a CSV written by :func:`write_table`, numbers parsed."""
    def num(v: str) -> Any:
        try:
            f = float(v)
            return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
        except ValueError:
            return v
    with open(path, newline="") as f:
        return [{k: num(v) for k, v in r.items()} for r in csv.DictReader(f)]


def plot_scaling(rows: list[dict[str, Any]], metric: str, path: str | os.PathLike,
                 panels=DEFAULT_PANELS, title: str | None = None) -> dict[str, dict[str, Any]]:
    """One PNG with a panel per (x column, line grouping): ``metric`` (an accuracy in %) against x on a
    log axis, points joined per setting, the fitted power law dashed. Returns the fits
    ``{"<x>/<setting>": {"a", "b", "r2"}}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    fits: dict[str, dict[str, Any]] = {}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, (xcol, group_cols) in zip(axes[0], panels):
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault(tuple(r.get(c) for c in group_cols), []).append(r)
        for gi, (key, rs) in enumerate(sorted(groups.items(), key=lambda kv: str(kv[0]))):
            rs = sorted(rs, key=lambda r: r[xcol])
            xs, ys = [float(r[xcol]) for r in rs], [float(r[metric]) for r in rs]
            name = ", ".join(f"{c}={v}" for c, v in zip(group_cols, key))
            color = f"C{gi % 10}"
            fit = fit_power_law(xs, ys)
            label = name
            if fit is not None:
                fits[f"{xcol}/{name}"] = fit
                label += f" (b={fit['b']:.3f})"  # error exponent: negative = improving
                grid = np.geomspace(min(xs), max(xs), 50)
                ax.plot(grid, 100.0 - fit["a"] * grid ** fit["b"], "--", color=color, linewidth=1)
            ax.plot(xs, ys, "o-", color=color, label=label, markersize=4)
        ax.set_xscale("log")
        ax.set_xlabel(AXIS_LABELS.get(xcol, xcol))
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or f"{metric}: fit 100 - acc = a x^b (dashed)")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return fits


def log_scaling_to_wandb(rows: list[dict[str, Any]], images: dict[str, Path], fits: dict[str, Any], group: str,
                         project: str = "sslab", entity: str | None = None, mode: str = "auto",
                         run_dir: str | os.PathLike = ".") -> bool:
    """The sweep table (a wandb Table), the plots and the fitted exponents as a ``scaling`` run in ``group``."""
    from ..engine.logger import resolve_wandb_mode

    mode = resolve_wandb_mode(mode)
    if mode == "disabled" or not rows:
        return False
    try:
        import wandb

        run = wandb.init(project=project, entity=entity, group=group, job_type="scaling", name=f"{group}/scaling",
                         dir=str(run_dir), mode=mode, reinit="create_new",
                         settings=wandb.Settings(console="off", silent=True))
        cols: list[str] = []
        for r in rows:
            cols += [k for k in r if k not in cols]
        run.log({"scaling/table": wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows])})
        run.log({f"scaling/{k}": wandb.Image(str(p)) for k, p in images.items()})
        for k, f in fits.items():
            run.summary[f"exponent/{k}"] = f["b"]
        run.finish()
        return True
    except Exception as e:
        log.warning("wandb logging of the scaling curves skipped (%s: %s)", type(e).__name__, e)
        return False
