"""wandb sweep files: every trial's arguments, as the agent writes them, parse into the recipe's config;
scaling-sweep listings and the CIFAR-10 recipes need nothing from a development machine."""

import itertools
import os
import runpy
from pathlib import Path

import pytest
import yaml
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from sslab.config import parse_args

ROOT = Path(__file__).resolve().parents[1]


def trials(sweep: dict):
    """Every grid combination of a sweep file, as the ``{name: {"value": v}}`` the agent receives."""
    params = sweep["parameters"]
    names = list(params)
    grids = [p["values"] if "values" in p else [p["value"]] for p in params.values()]
    for combo in itertools.product(*grids):
        yield {n: {"value": v} for n, v in zip(names, combo)}


@pytest.mark.parametrize("name", ["wandb_sweep_mae.yaml", "wandb_sweep_dino.yaml"])
def test_every_trial_of_a_sweep_file_parses(name):
    sweep = yaml.safe_load((ROOT / "experiments" / name).read_text())
    assert sweep["command"][-1] == "${args}" and sweep["metric"]["name"] == "monitor/knn20_top1"
    recipe = runpy.run_path(str(ROOT / sweep["program"]))["CONFIG"]  # not run as __main__: nothing trains
    n = 0
    for args in trials(sweep):
        argv = create_sweep_command_args({"args": args})["args"]  # wandb's own formatting: --name=value
        assert all(a.startswith("--") and "=" in a for a in argv)
        cfg = parse_args(recipe, argv)
        for field, v in args.items():
            want = v["value"]
            if field == "model_kwargs":
                want = {"drop_path_rate": 0.1, "depth": 6}
            assert getattr(cfg, field) == want, (field, getattr(cfg, field), want)
        assert cfg.monitor_every_epochs > 0 and cfg.epochs % cfg.monitor_every_epochs == 0
        n += 1
    assert n == {"wandb_sweep_mae.yaml": 12, "wandb_sweep_dino.yaml": 16}[name]


def test_the_agents_argument_form_parses():
    from sslab import Config

    cfg = parse_args(Config(), ["--mask_ratio=0.6", '--model_kwargs={"depth": 4, "drop_path_rate": 0.1}',
                                "--norm_pix_loss=False", "--wandb_tags=a,b", "--lr=None"])
    assert (cfg.mask_ratio, cfg.model_kwargs, cfg.norm_pix_loss, cfg.wandb_tags, cfg.lr) == \
        (0.6, {"depth": 4, "drop_path_rate": 0.1}, False, ("a", "b"), None)


def test_recipes_run_from_a_fresh_clone(tmp_path, monkeypatch):
    # A clone with no shared/data beside it and run from elsewhere: the recipes fall back to the named set.
    clone = tmp_path / "clone" / "experiments"
    clone.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    for recipe in sorted((ROOT / "experiments").glob("*cifar10*.py")):
        (clone / recipe.name).write_text(recipe.read_text())
        ns = runpy.run_path(str(clone / recipe.name))
        cfg = ns["CONFIG"] if "CONFIG" in ns else ns["SWEEP"].base
        assert cfg.data == "cifar10", recipe.name
        assert "shared" not in recipe.read_text().split('"""', 2)[2].replace("shared/data's", ""), recipe.name


def test_sweep_list_writes_nothing(tmp_path, monkeypatch, capsys):
    from sslab.eval.sweep import main as sweep_main

    cache, cwd = tmp_path / "cache", tmp_path / "cwd"
    cache.mkdir(), cwd.mkdir()
    monkeypatch.setenv("SSLAB_CACHE", str(cache))
    monkeypatch.chdir(cwd)
    assert sweep_main([str(ROOT / "experiments" / "sweep_mae_cifar10.py"), "--list"]) == []
    listing = capsys.readouterr().err.splitlines()
    assert len(listing) == 18 and listing[0].startswith("vit-d64x2_f0.1_e5: 1000 images x 5 epochs")
    assert os.listdir(cache) == [] and os.listdir(cwd) == []
