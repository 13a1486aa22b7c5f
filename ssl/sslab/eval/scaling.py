"""Scaling curves: pretraining compute, the table of a sweep, power-law fits and their plots.

- Compute: the FLOPs of one training step of the pretraining model (forward and backward of the
  branch loss, counted by ``torch.utils.flop_counter.FlopCounterMode``: matmuls, convolutions,
  attention) per image, times the images the run saw. Element-wise work and the optimiser are not
  counted, as in the usual ``6 N D``-style estimates.
- Fit: ``error = a * x ** b`` with ``error = 100 - accuracy`` (%), least squares on
  ``log error = log a + b log x``; b < 0 is the scaling exponent (Kaplan et al. 2020's form), given
  with its standard error; no fit on fewer than 4 points (parameters + 2).
- Plots: accuracy against pretraining FLOPs, images seen and encoder parameters, log-scaled x; a
  line varies one swept quantity with the others fixed, a point's colour is its model everywhere,
  fits are drawn with their 95% band.
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

# x axis -> the columns held fixed along one line: every line varies exactly one swept quantity, so it
# joins only comparable points (compute: more epochs; images: more data at fixed epochs; parameters:
# bigger models at fixed data and epochs).
DEFAULT_PANELS = (
    ("pretrain_flops", ("model", "data_fraction")),
    ("images_seen", ("model", "epochs")),
    ("params", ("data_fraction", "epochs")),
)
AXIS_LABELS = {"pretrain_flops": "pretraining compute (FLOPs)", "params": "encoder parameters",
               "images_seen": "images seen in pretraining"}
METRIC_LABELS = {"knn_top1": "k-NN top-1 accuracy (%)", "linear_top1": "linear-probe top-1 accuracy (%)",
                 "finetune_top1": "fine-tuning top-1 accuracy (%)"}
SETTING_LABELS = {"model": "{}", "data_fraction": "{:g} of the data", "epochs": "{} epochs"}
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)))


def setting_label(cols: Sequence[str], values: Sequence[Any]) -> str:
    """``("data_fraction", "epochs"), (0.3, 15)`` -> ``0.3 of the data, 15 epochs``."""
    out = []
    for c, v in zip(cols, values):
        fmt = SETTING_LABELS.get(c, c.replace("_", " ") + " {}")
        try:
            out.append(fmt.format(v))
        except (ValueError, TypeError):
            out.append(f"{c.replace('_', ' ')} {v}")
    return ", ".join(out)


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


FIT_PARAMS = 2  # a and b
# Two-sided 95% quantiles of Student's t by degrees of freedom (1.96 beyond the table).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t95(dof: int) -> float:
    """Two-sided 95% Student-t quantile for ``dof`` degrees of freedom (the next smaller tabulated dof)."""
    return T95[max(k for k in T95 if k <= dof)] if dof <= 30 else 1.96


def fit_power_law(x: Sequence[float], accuracy: Sequence[float]) -> dict[str, float] | None:
    """Fit ``100 - accuracy = a * x ** b`` by least squares in log-log space.

    Returns ``{"a", "b", "b_se", "b_ci95", "r2", "n", "x_mean_log", "sxx", "s"}`` (``b_se``: the slope's
    standard error, ``b_ci95``: half-width of its 95% t-interval; the last three give the band of the fit),
    or None with fewer than ``FIT_PARAMS + 2`` = 4 usable points at >= 3 distinct x: with two points any two
    parameters fit exactly (r^2 = 1) and with three the residuals have one degree of freedom, too few to
    say how uncertain the exponent is.
    """
    xs = np.asarray(x, dtype=float)
    err = 100.0 - np.asarray(accuracy, dtype=float)
    ok = (xs > 0) & (err > 0) & np.isfinite(xs) & np.isfinite(err)
    xs, err = xs[ok], err[ok]
    n = len(xs)
    if n < FIT_PARAMS + 2 or len(np.unique(xs)) < 3:
        return None
    lx, ly = np.log(xs), np.log(err)
    b, log_a = np.polyfit(lx, ly, 1)
    pred = log_a + b * lx
    ss_res, ss_tot = float(((ly - pred) ** 2).sum()), float(((ly - ly.mean()) ** 2).sum())
    sxx = float(((lx - lx.mean()) ** 2).sum())
    s = math.sqrt(ss_res / (n - FIT_PARAMS))
    b_se = s / math.sqrt(sxx)
    return {"a": float(math.exp(log_a)), "b": float(b), "b_se": b_se, "b_ci95": t95(n - FIT_PARAMS) * b_se,
            "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0, "n": n, "x_mean_log": float(lx.mean()),
            "sxx": sxx, "s": s}


def fit_band(fit: dict[str, float], x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(accuracy of the fitted curve, lower, upper 95% band of the fitted mean) at ``x``."""
    lx = np.log(x)
    pred = math.log(fit["a"]) + fit["b"] * lx
    half = t95(fit["n"] - FIT_PARAMS) * fit["s"] * np.sqrt(1 / fit["n"] + (lx - fit["x_mean_log"]) ** 2 / fit["sxx"])
    return 100.0 - np.exp(pred), 100.0 - np.exp(pred + half), 100.0 - np.exp(pred - half)


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
    """One PNG with a panel per (x column, columns held fixed): ``metric`` (an accuracy in %) against x on a
    log axis. A line joins points that share the fixed columns and differ in x only (points of one setting
    with equal x are left unjoined); a point's colour is its model in every panel, a line's style its
    setting. Settings with at least 4 points get the power-law fit (black) with its 95% band and the
    exponent +- its standard error in the legend. Returns ``{"<x>/<setting>": fit}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    models = sorted({str(r.get("model")) for r in rows})
    colour = {m: f"C{i % 10}" for i, m in enumerate(models)}  # one meaning in every panel
    fits: dict[str, dict[str, Any]] = {}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.6), squeeze=False)
    for ax, (xcol, group_cols) in zip(axes[0], panels):
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault(tuple(r.get(c) for c in group_cols), []).append(r)
        # Line style: the fixed columns other than the model (one style per value, in every panel's order).
        others = [i for i, c in enumerate(group_cols) if c != "model"]
        settings = sorted({tuple(k[i] for i in others) for k in groups}, key=str)
        for key, rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
            rs = sorted(rs, key=lambda r: r[xcol])
            xs, ys = [float(r[xcol]) for r in rs], [float(r[metric]) for r in rs]
            name = setting_label(group_cols, key)
            style = LINESTYLES[settings.index(tuple(key[i] for i in others)) % len(LINESTYLES)]
            line_colour = colour[str(key[group_cols.index("model")])] if "model" in group_cols else "0.45"
            fit = fit_power_law(xs, ys)
            label = name
            if fit is not None:
                fits[f"{xcol}/{name}"] = fit
                label += f"; b = {fit['b']:.3f} +- {fit['b_se']:.3f}"  # error exponent: negative = improving
                grid = np.geomspace(min(xs), max(xs), 50)
                mid, lo, hi = fit_band(fit, grid)
                ax.plot(grid, mid, color="black", linewidth=1, linestyle=style)
                ax.fill_between(grid, lo, hi, color="black", alpha=0.08, linewidth=0)
            if len(set(xs)) == len(xs):  # comparable: x is the only thing that changes along the line
                ax.plot(xs, ys, linestyle=style, color=line_colour, linewidth=1.2, label=label)
            else:
                ax.plot([], [], linestyle="none", label=label + " (not joined: repeated x)")
            ax.scatter(xs, ys, c=[colour[str(r.get("model"))] for r in rs], s=22, zorder=3, edgecolors="none")
        for m in models:  # the colour legend: the same in every panel
            ax.scatter([], [], c=colour[m], s=22, label=f"model {m}")
        ax.set_xscale("log")
        ax.set_xlabel(AXIS_LABELS.get(xcol, xcol.replace("_", " ")))
        ax.set_ylabel(METRIC_LABELS.get(metric, metric.replace("_", " ") + " (%)"))
        ax.set_title("lines: " + " and ".join(c.replace("_", " ") for c in group_cols) + " held fixed", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6.5)
    fig.suptitle(title or f"{METRIC_LABELS.get(metric, metric)}; black: fit 100 - acc = a x^b with 95% band "
                          "(4 or more points)")
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
