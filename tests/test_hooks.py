"""The engine's extension point: epoch-end hooks composed above it; the engine imports no evaluator."""

import ast
import subprocess
import sys
from pathlib import Path

import torch

from conftest import read_metrics, tiny_mae_config
from sslab import train
from sslab.engine import train as engine_train

ENGINE = Path(__file__).resolve().parents[1] / "ssl" / "sslab" / "engine"


def test_engine_imports_nothing_from_eval_or_viz():
    for f in ENGINE.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                name = "." * node.level + (node.module or "")
                assert not name.startswith(("..eval", "..viz", "sslab.eval", "sslab.viz")), (f.name, name)
    code = ("import sys, sslab.engine.train; "
            "print(sorted(m for m in sys.modules if m.startswith(('sslab.eval', 'sslab.viz'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def small(tmp_path, image_folder, **changes):
    """24 images, batch 8: 3 steps per epoch."""
    return tiny_mae_config(tmp_path, data=str(image_folder), img_size=16, in_chans=3, mean=(0.5, 0.5, 0.5),
                           std=(0.25, 0.25, 0.25), batch_size=8, epochs=2, **changes)


def test_a_users_hook_runs_at_each_epoch_end_and_its_row_is_logged(tmp_path, image_folder):
    seen = []

    def weight_norm(end):
        seen.append((end.epoch, end.step, end.is_main, end.model.training))
        with torch.no_grad():
            return {"weight_norm": float(sum(p.norm() ** 2 for p in end.model.parameters()) ** 0.5)}

    cfg = small(tmp_path, image_folder)
    train(cfg, hooks=[weight_norm])
    assert seen == [(1, 3, True, True), (2, 6, True, True)]
    rows = [r for r in read_metrics(cfg.output_dir) if "weight_norm" in r]
    assert [(r["step"], r["epoch"]) for r in rows] == [(3, 1.0), (6, 2.0)]


def test_an_engine_without_hooks_skips_the_configs_epoch_work(tmp_path, image_folder):
    # sslab.train adds the monitor the config asks for; the bare engine runs only the hooks it is given.
    cfg = small(tmp_path / "a", image_folder, monitor_every_epochs=1, monitor_train_size=12, monitor_test_size=9)
    engine_train(cfg)
    assert not any("monitor/knn20_top1" in r for r in read_metrics(cfg.output_dir))  # tests/test_eval_monitor.py: with
