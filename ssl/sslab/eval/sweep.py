"""Sweeps: pretrain a grid of runs (model sizes x data fractions x epochs), evaluate each, and write
the scaling curves.

A sweep file defines ``SWEEP = Sweep(...)`` (see ``experiments/sweep_mae_cifar10.py``)::

    python -m sslab.eval.sweep experiments/sweep_mae_cifar10.py [--output-dir D] [--plots-only]
                               [--wandb-mode M] [--CONFIG-FIELD VALUE ...]

Extra ``--field value`` options override the base pretraining config (e.g. ``--data`` or
``--num-workers``). Every point gets its own run folder ``<output_dir>/<point>``. A point whose
pretraining finished (``pretrain_done.json``) is not trained again; one with checkpoints but no
such file resumes from its newest; an evaluation whose JSON result matches the current checkpoint is
not run again. So rerunning the command after an interruption (or after adding points) does only
the missing work. The table ``scaling.csv`` and one PNG per metric (``scaling_<metric>.png``) go to
the output folder and to a wandb run in the sweep's group.

Data fractions are nested, class-balanced subsets of the training split (of ``train_size`` images
when given), written once as an ImageFolder in the cache (symlinks to the files, or PNGs of an
in-memory set such as the demo). Evaluation uses the same labelled ``eval_data`` splits for every point.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import re
import runpy
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import SslabError
from ..config import Config, parse_args
from ..config_cli import adopt_style
from ..data.sources import cache_dir, open_images
from ..engine.checkpoint import list_checkpoints
from ..pretrain import train  # with the epoch-end hooks the config asks for
from .cli import LabelledData, labelled_splits, open_encoder
from .features import dataset_fingerprint, dataset_labels, subset_indices
from .results import read_result, record_name, report
from .scaling import log_scaling_to_wandb, plot_scaling, training_flops_per_image, write_table

log = logging.getLogger("sslab")

EVALUATORS = ("knn", "linear", "finetune")


@dataclass
class Sweep:
    """A grid of pretraining runs and the evaluations that turn it into scaling curves."""

    name: str
    base: Config                                    # the pretraining recipe every point starts from
    models: dict[str, dict[str, Any]]               # label -> Config changes (model, model_kwargs, ...)
    data_fractions: tuple[float, ...] = (1.0,)      # fractions of the training images
    epochs: tuple[int, ...] = (10,)                 # pretraining epochs
    train_size: int | None = None                   # the fractions are of this many images (None: the split)
    evaluators: tuple[str, ...] = ("knn", "linear")
    eval_data: str | None = None                    # labelled tree (train + test/val splits); None: base.data
    eval_train_data: str | None = None              # or the evaluation's training split itself (folder, SPEC:FOLDER)
    eval_test_data: str | None = None               # and its held-out split itself
    eval_train_size: int | None = 5000              # class-balanced subsets used by every evaluation
    eval_test_size: int | None = 1000
    feature: str = "cls"
    probe: dict[str, Any] = field(default_factory=dict)     # run_linear_probe keyword changes (epochs, lrs, ...)
    finetune: dict[str, Any] = field(default_factory=dict)  # run_finetune keyword changes
    output_dir: str | None = None                   # default runs/sweeps/<name>
    seed: int = 0

    def out_dir(self) -> Path:
        """The sweep's folder."""
        return Path(self.output_dir or f"runs/sweeps/{self.name}")


@dataclass
class Point:
    """One pretraining run of a sweep."""

    name: str
    model: str
    data_fraction: float
    epochs: int
    cfg: Config
    train_images: int


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-") or "x"


def materialize_subset(spec: str, indices: list[int], channels: int) -> str:
    """An ImageFolder ``<cache>/subsets/<...>/train/<class>/<file>`` holding ``open_images(spec, 'train')[indices]``:
    symlinks to the files of an ImageFolder, PNG files of an in-memory set. Written once, atomically."""
    ds = open_images(spec, "train", False, channels)
    key = hashlib.sha256(f"{dataset_fingerprint(ds)}|{','.join(map(str, indices))}".encode()).hexdigest()[:16]
    out = cache_dir() / "subsets" / f"{_safe(Path(spec).name if spec != 'demo' else spec)}-{len(indices)}-{key}"
    if out.is_dir():
        return str(out)
    classes = getattr(ds, "classes", None) or [str(c) for c in range(int(dataset_labels(ds).max()) + 1)]
    names = [f"{i:03d}_{_safe(c)}" for i, c in enumerate(classes)]  # index prefix keeps the class order
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for n in names:
        (tmp / "train" / n).mkdir(parents=True, exist_ok=True)
    for i in indices:
        if hasattr(ds, "samples"):
            src, label = ds.samples[i]
            os.symlink(os.path.abspath(src), tmp / "train" / names[label] / f"{i:07d}{Path(src).suffix}")
        else:
            img, label = ds[i]
            arr = np.asarray(img.permute(1, 2, 0))
            img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
            img.save(tmp / "train" / names[label] / f"{i:07d}.png")
    try:
        os.replace(tmp, out)
    except OSError:  # written meanwhile by another process
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


def eval_splits(sweep: Sweep) -> tuple[LabelledData, LabelledData]:
    """The labelled (training, held-out) splits every point is evaluated on: ``train`` and ``test``
    (else ``val``) of ``eval_data`` (default the pretraining data), or ``eval_train_data``/``eval_test_data``."""
    return labelled_splits(sweep.eval_data or sweep.base.data, sweep.eval_train_data, sweep.eval_test_data,
                           sweep.base.in_chans, sweep.eval_train_size, sweep.eval_test_size, sweep.seed)


def points(sweep: Sweep, materialize: bool = True) -> list[Point]:
    """The grid, each point with its pretraining config (data subset materialised when needed). With
    ``materialize=False`` (``--list``) no data is opened or written: sizes come from ``train_size``."""
    if not sweep.models:
        raise SslabError("the sweep has no models; give models={'label': {'model': ..., 'model_kwargs': ...}}")
    bad = [e for e in sweep.evaluators if e not in EVALUATORS]
    if bad:
        raise SslabError(f"unknown evaluators {bad}; choose from {EVALUATORS}")
    if any(not 0 < f <= 1 for f in sweep.data_fractions):
        raise SslabError(f"data_fractions must be in (0, 1], got {sweep.data_fractions}")
    base = sweep.base
    if materialize:
        labels = dataset_labels(open_images(base.data, "train", False, base.in_chans))
        pool = subset_indices(labels, sweep.train_size, sweep.seed)  # the images the fractions are taken of
    out = []
    for (label, changes), frac, ep in itertools.product(sweep.models.items(), sweep.data_fractions, sweep.epochs):
        if not materialize:  # a listing: nothing unpacked, downloaded or written
            n = max(1, int(round(frac * sweep.train_size))) if sweep.train_size else 0
            data = base.data if frac == 1 and not sweep.train_size else f"{frac:g} of {base.data}"
        elif (n := max(1, int(round(frac * len(pool))))) == len(labels):
            data = base.data
        else:
            sub = subset_indices(labels[pool], n, sweep.seed)  # nested: smaller fractions are inside larger
            data = materialize_subset(base.data, [pool[i] for i in sub], base.in_chans)
        name = f"{_safe(label)}_f{frac:g}_e{ep}"
        cfg = base.replace(**changes).replace(
            epochs=ep, warmup_epochs=min(base.warmup_epochs, ep), data=data, in_memory=base.in_memory,
            output_dir=str(sweep.out_dir() / name), resume="auto", wandb_group=base.wandb_group or sweep.name,
            wandb_name=name, wandb_tags=tuple(base.wandb_tags) + (sweep.name,))
        out.append(Point(name, label, frac, ep, cfg, n))
    return out


def _eval_name(sweep: Sweep, evaluator: str, train: LabelledData, test: LabelledData) -> str:
    """The result file of an evaluation of the sweep: keyed by its settings (:func:`record_name`)."""
    if evaluator == "finetune":
        return record_name("finetune", None, train, test, sweep.finetune.get("epochs", 100),
                           {"seed": sweep.seed, **sweep.finetune})
    extra = {"seed": sweep.seed, **sweep.probe} if evaluator == "linear" else {}
    epochs = sweep.probe.get("epochs", 100) if evaluator == "linear" else None
    return record_name(evaluator, sweep.feature, train, test, epochs, extra)


def run_point(sweep: Sweep, p: Point, train_split: LabelledData, test_split: LabelledData) -> dict[str, Any]:
    """Pretrain (or resume, or skip) one point, run its missing evaluations, and return its table row."""
    from .finetune import run_finetune
    from .knn import run_knn
    from .linear_probe import run_linear_probe

    run_dir = Path(p.cfg.output_dir)
    done_file = run_dir / "pretrain_done.json"
    if not done_file.is_file():
        log.info("sweep point %s: pretraining (%s)", p.name, "resuming" if list_checkpoints(run_dir) else "fresh")
        t0 = time.perf_counter()
        summary = train(p.cfg)
        done = {"step": summary["step"], "effective_batch": summary["effective_batch"],
                "images_seen": summary["step"] * summary["effective_batch"], "epochs": p.epochs,
                "train_images": p.train_images, "seconds_last_session": time.perf_counter() - t0}
        done_file.write_text(json.dumps(done, indent=2))
    done = json.loads(done_file.read_text())
    flops_file = run_dir / "flops.json"
    if not flops_file.is_file():
        flops_file.write_text(json.dumps({"per_image": training_flops_per_image(p.cfg)}))
    per_image = json.loads(flops_file.read_text())["per_image"]

    src = open_encoder(run_dir)
    row: dict[str, Any] = {"point": p.name, "model": p.model, "data_fraction": p.data_fraction, "epochs": p.epochs,
                           "train_images": p.train_images,
                           "params": sum(t.numel() for t in src.encoder.parameters()),
                           "flops_per_image": per_image, "images_seen": done["images_seen"],
                           "pretrain_flops": per_image * done["images_seen"]}
    for ev in sweep.evaluators:
        name = _eval_name(sweep, ev, train_split, test_split)
        prev = read_result(run_dir, name)
        if prev is not None and prev.get("checkpoint_fingerprint") == src.fingerprint:
            result = prev
        else:
            log.info("sweep point %s: %s", p.name, name)
            if ev == "knn":
                result = run_knn(src, train_split, test_split, sweep.feature, num_workers=0)
            elif ev == "linear":
                result = run_linear_probe(src, train_split, test_split, sweep.feature, **{"seed": sweep.seed,
                                                                                          **sweep.probe})
            else:
                result = run_finetune(src, train_split, test_split, **{"seed": sweep.seed, **sweep.finetune})
            report(name, result, p.cfg.to_dict(), run_dir, wandb_mode=p.cfg.wandb_mode)
        row[f"{ev}_top1"] = result["top1"]
    return row


def run_sweep(sweep: Sweep, plots_only: bool = False) -> list[dict[str, Any]]:
    """Run or resume every point, then write ``scaling.csv`` and ``scaling_<metric>.png``; returns the rows."""
    out = sweep.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    # The evaluation splits first: a layout without them is refused before any pretraining.
    train_split, test_split = (None, None) if plots_only else eval_splits(sweep)
    pts = points(sweep)
    rows: list[dict[str, Any]] = []
    if plots_only:
        from .scaling import read_table

        rows = read_table(out / "scaling.csv")
    else:
        for i, p in enumerate(pts):
            log.info("sweep %s: point %d/%d %s", sweep.name, i + 1, len(pts), p.name)
            rows.append(run_point(sweep, p, train_split, test_split))
            write_table(rows, out / "scaling.csv")  # a partial table survives an interruption
    from .features import world_info

    if world_info()[0] != 0:
        return rows
    images, fits = {}, {}
    for ev in sweep.evaluators:
        metric = f"{ev}_top1"
        images[metric] = out / f"scaling_{metric}.png"
        for k, f in plot_scaling(rows, metric, images[metric], title=f"{sweep.name}: power-law fits (black) with 95% bands, 4+ points").items():
            fits[f"{metric}/{k}"] = f
    (out / "fits.json").write_text(json.dumps(fits, indent=2))
    log_scaling_to_wandb(rows, images, fits, sweep.base.wandb_group or sweep.name, sweep.base.wandb_project,
                         sweep.base.wandb_entity, sweep.base.wandb_mode, out)
    log.info("sweep %s: %d points -> %s", sweep.name, len(rows), out / "scaling.csv")
    return rows


def load_sweep(path: str | os.PathLike) -> Sweep:
    """The ``SWEEP`` defined by a sweep file."""
    ns = runpy.run_path(str(path), run_name="sslab_sweep")
    sweep = ns.get("SWEEP")
    if not isinstance(sweep, Sweep):
        raise SslabError(f"{path} must define SWEEP = sslab.eval.sweep.Sweep(...), found {type(sweep).__name__}")
    return sweep


def main(argv: list[str] | None = None, sweep: Sweep | None = None) -> list[dict[str, Any]]:
    """``python -m sslab.eval.sweep SWEEP.py [...]`` (or a sweep file's own ``main(SWEEP)``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ap = argparse.ArgumentParser(prog="python -m sslab.eval.sweep", description=__doc__.split("\n\n")[0])
    adopt_style(ap)  # one-line errors, no prefix matching, --debug (as every sslab command)
    if sweep is None:
        ap.add_argument("sweep_file", help="a Python file defining SWEEP = Sweep(...)")
    ap.add_argument("--output-dir", dest="sweep_output_dir", default=None, help="the sweep's folder")
    ap.add_argument("--plots-only", action="store_true", help="redraw the plots from scaling.csv")
    ap.add_argument("--list", action="store_true", help="print the points and exit")
    args, rest = ap.parse_known_args(argv)
    if sweep is None:
        sweep = load_sweep(args.sweep_file)
    if rest:  # the remaining options change the base pretraining config
        sweep = dataclasses.replace(sweep, base=parse_args(sweep.base, rest, description="base config overrides"))
    if args.sweep_output_dir:
        sweep = dataclasses.replace(sweep, output_dir=args.sweep_output_dir)
    if args.list:
        for p in points(sweep, materialize=False):
            size = f"{p.train_images} images" if p.train_images else f"{p.data_fraction:g} of the images"
            print(f"{p.name}: {size} x {p.epochs} epochs -> {p.cfg.output_dir}", file=sys.stderr)
        return []
    return run_sweep(sweep, args.plots_only)


if __name__ == "__main__":
    from sslab.eval.sweep import main as _main  # the importable module, whose Sweep class sweep files use

    _main()
