"""An ablation summary without a dashboard: several run folders -> one CSV and one plot.

    sslab summarize runs/mae_mr0.6 runs/mae_mr0.75 runs/mae_mr0.9 --out runs/summary_mask_ratio
    python -m sslab.summarize runs/mae_vit_tiny_cifar10/sweep-abc123/*

Each run folder contributes its config (``config.json``), its last logged loss and online k-NN
(``metrics.jsonl``) and its evaluation results (``eval/*.json``, the ``top1`` of each). The table has
one row per run and, as columns, the config fields whose values differ between the runs, then the
results. The plot has one panel per (differing field, result): the result against the field's value.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

from .errors import SslabError

# Fields that differ between any two runs without being a setting of the experiment.
BOOKKEEPING = {"output_dir", "resume", "wandb_name", "wandb_group", "wandb_tags", "wandb_mode", "progress_bar",
               "num_workers", "save_every_steps", "keep_last", "log_every", "dataset_size"}


def read_run(run_dir: Path) -> dict[str, Any]:
    """``{"run", "config": {...}, "results": {...}}`` of one run folder."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SslabError(f"{run_dir} has no readable config.json ({type(e).__name__}); give the run folders "
                         "that sslab training wrote (they hold config.json and metrics.jsonl)") from e
    results: dict[str, float] = {}
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            for key, name in (("loss", "final_loss"), ("monitor/knn20_top1", "monitor_knn20_top1")):
                if isinstance(row.get(key), (int, float)):
                    results[name] = row[key]
            if isinstance(row.get("step"), int):
                results["steps"] = row["step"]
    for f in sorted((run_dir / "eval").glob("*.json")):
        try:
            top1 = json.loads(f.read_text()).get("top1")
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(top1, (int, float)):
            results[f"{f.stem}_top1"] = top1
    return {"run": str(run_dir), "config": config, "results": results}


def differing_fields(runs: list[dict[str, Any]]) -> list[str]:
    """Config fields (in config order) whose values are not the same in every run."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r["config"] if k not in keys]
    return [k for k in keys if k not in BOOKKEEPING
            and len({json.dumps(r["config"].get(k), sort_keys=True) for r in runs}) > 1]


def summary_table(runs: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows): run, the differing fields, then every result any run has."""
    fields = differing_fields(runs)
    results: list[str] = []
    for r in runs:
        results += [k for k in r["results"] if k not in results]
    rows = []
    for r in runs:
        row = {"run": r["run"]}
        row.update({f: _cell(r["config"].get(f)) for f in fields})
        row.update({k: r["results"].get(k) for k in results})
        rows.append(row)
    return ["run", *fields, *results], rows


def _cell(v: Any) -> Any:
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v


def human(name: str) -> str:
    """An axis label from a column name: ``mask_ratio`` -> ``mask ratio``, ``knn_cls_top1`` -> ``knn cls top-1 (%)``."""
    label = name.replace("monitor_", "online ").replace("_top1", " top-1 (%)").replace("_", " ")
    return label.replace("final loss", "final training loss")


def plot_summary(columns: list[str], rows: list[dict[str, Any]], fields: list[str], path: Path) -> Path:
    """One panel per (field, result): the result of each run against the field's value (categorical when the
    values are not all numbers), points of one field value joined in the order of the values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [c for c in columns if c not in fields and c not in ("run", "steps")]
    if not fields or not results:
        raise SslabError(f"nothing to plot: {len(fields)} differing field(s) and {len(results)} result(s); give runs "
                         "that differ in a setting and have logged a loss or an evaluation")
    fig, axes = plt.subplots(len(results), len(fields), figsize=(4 * len(fields), 3 * len(results)), squeeze=False)
    for j, f in enumerate(fields):
        values = [r[f] for r in rows]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        order = sorted(set(map(str, values))) if not numeric else None
        for i, res in enumerate(results):
            ax = axes[i][j]
            pts = sorted((v if numeric else order.index(str(v)), r[res]) for v, r in zip(values, rows)
                         if isinstance(r.get(res), (int, float)) and math.isfinite(r[res]))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if numeric else "o", color="C0")
            if not numeric:
                ax.set_xticks(range(len(order)), order, rotation=20, fontsize=8)
            ax.set_xlabel(human(f))
            ax.set_ylabel(human(res))
            ax.grid(alpha=0.3)
    fig.suptitle(f"{len(rows)} runs")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summarize(run_dirs: list[str | Path], out: str | Path) -> tuple[Path, Path | None]:
    """Write ``<out>.csv`` and ``<out>.png``; returns their paths (no PNG when there is nothing to plot)."""
    runs = [read_run(Path(d)) for d in run_dirs]
    if len(runs) < 2:
        raise SslabError(f"got {len(runs)} run folder(s); give two or more to compare")
    columns, rows = summary_table(runs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path = out.with_name(out.name + ".csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    fields = differing_fields(runs)
    try:
        png = plot_summary(columns, rows, fields, out.with_name(out.name + ".png"))
    except SslabError as e:
        print(f"sslab: no plot: {e}", file=sys.stderr)
        png = None
    return csv_path, png


def main(argv: list[str] | None = None) -> tuple[Path, Path | None]:
    """``sslab summarize RUN_DIR RUN_DIR... [--out PREFIX]``."""
    ap = argparse.ArgumentParser(prog="sslab summarize", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders (each with config.json and metrics.jsonl)")
    ap.add_argument("--out", default="summary", help="writes PREFIX.csv and PREFIX.png")
    args = ap.parse_args(argv)
    csv_path, png = summarize(args.runs, args.out)
    print(f"wrote {csv_path}" + (f" and {png}" if png else ""), file=sys.stderr)
    return csv_path, png


if __name__ == "__main__":
    main()
