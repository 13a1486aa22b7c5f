"""The sslab command and the ablation summary: several run folders -> one CSV and one plot."""

import csv
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from PIL import Image

from conftest import tiny_mae_config
from sslab import train
from sslab.cli import main as cli_main
from sslab.eval.results import write_result

ROOT = Path(__file__).resolve().parents[1]


def test_console_script_is_declared_and_lists_the_commands():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"sslab": "sslab.cli:main"}
    out = subprocess.run([sys.executable, "-m", "sslab", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("train", "knn", "linear-probe", "finetune", "export", "visualize", "sweep", "summarize"):
        assert f"\n  {command} " in out, command
    with pytest.raises(SystemExit, match="unknown command 'trian'"):
        cli_main(["trian"])


def test_summary_of_a_mask_ratio_ablation(tmp_path):
    runs = []
    for ratio, top1 in ((0.5, 40.0), (0.9, 42.0)):
        cfg = tiny_mae_config(tmp_path / f"mr{ratio}", mask_ratio=ratio, max_steps=2, log_every=2)
        train(cfg)
        write_result(cfg.output_dir, "knn_cls", {"top1": top1})
        runs.append(cfg.output_dir)
    out = tmp_path / "summary" / "mask_ratio"
    cli_main(["summarise", *runs, "--out", str(out)])  # the python -m sslab / sslab command, in-process
    rows = list(csv.DictReader(open(out.with_suffix(".csv"))))
    assert list(rows[0]) == ["run", "mask_ratio", "final_loss", "steps", "knn_cls_top1"]  # only the differing field
    assert [(float(r["mask_ratio"]), float(r["knn_cls_top1"]), int(r["steps"])) for r in rows] == \
        [(0.5, 40.0, 2), (0.9, 42.0, 2)]
    assert all(float(r["final_loss"]) > 0 for r in rows)
    with Image.open(out.with_suffix(".png")) as im:
        assert im.format == "PNG" and im.size[0] >= 300  # one panel column (mask ratio) x 2 result rows
