"""Evaluation results: one JSON file per evaluation in the run folder, mirrored to wandb.

A result's name is its settings (:func:`record_name`): evaluator, mode, feature, data and splits,
the numbers of images, epochs and a hash of every other knob, so a 200-image 1-epoch fine-tune never
overwrites a full one. Each record states ``data`` (spec, split folder, images used of how many, for
the training and the held-out split), ``train_size``/``test_size`` and ``epochs``; ``top1`` is ours
(the final epoch, or the head chosen on held-out training images) and, where there are epochs,
``top1_best_over_epochs``/``best_epoch`` is what the official MAE and DINO scripts print (the best
test accuracy over epochs), labelled in ``reported``.

``<run_dir>/eval/<name>.json`` holds the headline accuracy (``top1``), every setting, the
checkpoint read and its fingerprint (so a sweep can tell a result is current). The same numbers go
to a short wandb run of ``job_type="eval"`` in the pretraining run's group (its ``wandb_group``, or
the run's name when it had none), offline when there are no credentials; wandb problems never stop
an evaluation.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from .. import __version__
from ..engine.logger import offline_sync_command, resolve_wandb_mode
from ..engine.logger import wandb_target as engine_wandb_target

log = logging.getLogger("sslab")


BEST_OVER_EPOCHS_NOTE = ("best test accuracy over epochs, as the official MAE (main_finetune.py, main_linprobe.py) "
                         "and DINO (eval_linear.py) scripts report it; selected on the test split, so optimistic")


def _slug(s: str) -> str:
    s = Path(s.rstrip("/")).name if s not in ("demo",) else s
    for suffix in (".tar.gz", ".tgz", ".tar"):
        s = s.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9.-]+", "-", s).strip("-")[:40] or "data"


def record_name(evaluator: str, feature: str | None, train, test, epochs: int | None = None,
                extra: dict[str, Any] | None = None) -> str:
    """``<evaluator>_<feature>_<data>-<train split><n>-<held-out split><n>[_e<epochs>]_<hash>``: the result
    file of these settings (``train``/``test``: :class:`~sslab.eval.cli.LabelledData`). The hash covers
    everything, ``extra`` (learning rates, recipe, ...) included; the same settings give the same name."""
    data = _slug(train.spec) if train.spec == test.spec else f"{_slug(train.spec)}+{_slug(test.spec)}"
    parts = [evaluator] + ([feature] if feature else []) + [
        f"{data}-{train.split}{len(train.indices)}-{test.split}{len(test.indices)}"]
    if epochs is not None:
        parts.append(f"e{epochs}")
    key = {"evaluator": evaluator, "feature": feature, "train": [train.spec, train.split, train.indices[:64],
           len(train.indices)], "test": [test.spec, test.split, test.indices[:64], len(test.indices)],
           "epochs": epochs, "extra": extra or {}}
    parts.append(hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:6])
    return "_".join(parts)


def data_record(train, test) -> dict[str, Any]:
    """What a result states about its data: both splits' spec, folder and images used of how many."""
    return {"train": train.describe(), "test": test.describe()}


def best_over_epochs(evals: list[dict[str, Any]], key: str = "top1") -> dict[str, Any]:
    """``top1_best_over_epochs``, ``best_epoch`` and the ``reported`` labels from per-epoch test scores."""
    best = max(evals, key=lambda e: e[key])
    return {f"{key}_best_over_epochs": best[key], "best_epoch": best["epoch"],
            "reported": {key: "ours: final epoch (cached probe: the head chosen on held-out training images)",
                         f"{key}_best_over_epochs": BEST_OVER_EPOCHS_NOTE}}


def describe(r: dict[str, Any]) -> str:
    """One line of a stored result for a README: what, on which data and sizes, epochs, the numbers."""
    what = r.get("evaluator", "?") + "".join(f" {r[k]}" for k in ("mode", "recipe") if r.get(k))
    feat = f", feature {r['feature']}" if r.get("feature") else ""
    d = r.get("data")
    if isinstance(d, dict) and "train" in d:
        tr, te = d["train"], d["test"]
        data = (f"train {tr.get('images')}/{tr.get('of')} of `{tr.get('spec')}` ({tr.get('split')}), "
                f"test {te.get('images')}/{te.get('of')} of `{te.get('spec')}` ({te.get('split')})")
    else:
        data = f"`{d}` train {r.get('train_size')} / test {r.get('test_size')}"
    ep = f", {r['epochs']} epochs" if r.get("epochs") is not None else ""
    extra = f" (k={r['k']})" if r.get("k") is not None else ""
    nums = f"top1 {r.get('top1', float('nan')):.2f}{extra}"
    if r.get("top1_best_over_epochs") is not None:
        nums += f" final; best over epochs {r['top1_best_over_epochs']:.2f} (epoch {r.get('best_epoch')})"
    return f"{what}{feat} on {data}{ep}: {nums}"


def result_path(run_dir: str | os.PathLike, name: str) -> Path:
    """Where the result ``name`` of a run lives."""
    return Path(run_dir) / "eval" / f"{name}.json"


def write_result(run_dir: str | os.PathLike, name: str, result: dict[str, Any]) -> Path:
    """Write ``result`` (plus version and time) to ``<run_dir>/eval/<name>.json`` atomically; returns the path."""
    path = result_path(run_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    full = {"name": name, **result, "sslab_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(full, indent=2, default=str))
    os.replace(tmp, path)
    return path


def read_result(run_dir: str | os.PathLike, name: str) -> dict[str, Any] | None:
    """The stored result ``name`` of a run, or None."""
    path = result_path(run_dir, name)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def wandb_target(config: dict[str, Any] | None, run_dir: str | os.PathLike) -> dict[str, Any]:
    """wandb project / entity / group of the pretraining run the evaluated encoder came from: what that run
    recorded in ``wandb.json``, else the same rule it follows (:func:`sslab.engine.logger.wandb_target`)."""
    try:
        recorded = json.loads((Path(run_dir) / "wandb.json").read_text())
    except (OSError, json.JSONDecodeError):
        recorded = None
    target = recorded or engine_wandb_target(config or {}, run_dir)
    return {**target, "run_name": target["name"]}


def log_to_wandb(name: str, result: dict[str, Any], config: dict[str, Any] | None, run_dir: str | os.PathLike,
                 mode: str = "auto", tables: dict[str, list[dict[str, Any]]] | None = None) -> bool:
    """Log a result's numbers as the summary of an ``eval`` run in the pretraining run's group, and
    ``tables`` (name -> rows) as wandb Tables. Returns whether it was logged."""
    mode = resolve_wandb_mode(mode)
    if mode == "disabled":
        return False
    target = wandb_target(config, run_dir)
    try:
        import wandb

        run = wandb.init(project=target["project"], entity=target["entity"], group=target["group"],
                         job_type="eval", name=f"{target['run_name']}/{name}", dir=str(run_dir), mode=mode,
                         config={k: v for k, v in result.items() if not isinstance(v, (dict, list))},
                         reinit="create_new", settings=wandb.Settings(console="off", silent=True))
        numbers = {f"{name}/{k}": v for k, v in _flatten(result).items() if isinstance(v, (int, float))}
        run.log(numbers)
        for key, v in numbers.items():
            run.summary[key] = v
        for tname, rows in (tables or {}).items():
            if rows:
                cols = list(rows[0])
                run.log({f"{name}/{tname}": wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows])})
        sync = offline_sync_command(run) if mode == "offline" else None
        run.finish()
        if sync:
            log.info("wandb eval run saved offline; upload it with: %s", sync)
        return True
    except Exception as e:  # logging must never lose the result, which is already on disk
        log.warning("wandb logging of %s skipped (%s: %s)", name, type(e).__name__, e)
        return False


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        elif not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


def report(name: str, result: dict[str, Any], config: dict[str, Any] | None, run_dir: str | os.PathLike,
           output_dir: str | os.PathLike | None = None, wandb_mode: str = "auto",
           tables: dict[str, list[dict[str, Any]]] | None = None) -> Path:
    """Write the JSON result (to ``output_dir`` or the run folder) and log it to wandb; returns the JSON path."""
    out_dir = Path(output_dir) if output_dir else Path(run_dir)
    path = write_result(out_dir, name, result)
    log_to_wandb(name, result, config, out_dir, wandb_mode, tables)
    log.info("%s: top1 %.2f -> %s", name, float(result.get("top1", float("nan"))), path)
    return path
