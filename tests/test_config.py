"""Every config field is overridable from the command line, with types."""

import dataclasses
import json

import pytest

from sslab.config import Config, parse_args
from sslab.errors import SslabError


def test_overrides_of_every_kind():
    cfg = parse_args(Config(), [
        "--data", "/x", "--output-dir", "o", "--epochs", "3", "--batch-size", "7", "--accum-iter", "2",
        "--resume", "auto", "--seed", "5", "--base_lr", "1e-3", "--norm-pix-loss", "false", "--in-memory",
        "--betas", "0.9,0.99", "--wandb-tags", "a,b", "--model-kwargs", '{"depth": 6}', "--lr", "none",
        "--patch-size", "4", "--clip-grad", "3.0",
    ])
    assert (cfg.data, cfg.output_dir, cfg.epochs, cfg.batch_size, cfg.accum_iter) == ("/x", "o", 3, 7, 2)
    assert cfg.resume == "auto" and cfg.seed == 5 and cfg.base_lr == 1e-3
    assert cfg.norm_pix_loss is False and cfg.in_memory is True
    assert cfg.betas == (0.9, 0.99) and cfg.wandb_tags == ("a", "b") and cfg.model_kwargs == {"depth": 6}
    assert cfg.lr is None and cfg.patch_size == 4 and cfg.clip_grad == 3.0


def test_defaults_come_from_the_recipe():
    base = Config(epochs=11, model="vit_small_patch16_224")
    cfg = parse_args(base, ["--seed", "1"])
    assert cfg.epochs == 11 and cfg.model == "vit_small_patch16_224" and cfg.seed == 1


@pytest.mark.parametrize("argv, line", [
    (["--epochs", "x"], "--epochs takes an integer, got 'x'; e.g. --epochs 800"),
    (["--no-such-field", "1"], "unknown option --no-such-field; "),
    (["--in-memory", "maybe"], "--in-memory takes true or false, got 'maybe'; e.g. --in-memory true"),
    (["--model-kwargs", "[1]"], "--model-kwargs takes a JSON object, got '[1]'; e.g. --model-kwargs"),
    (["--betas", "0.9"], "--betas takes 2 comma-separated numbers, got '0.9'; e.g. --betas 0.9,0.95"),
    (["--crop-scale=0.2,0.5,0.9"], "--crop-scale takes 2 comma-separated numbers, got '0.2,0.5,0.9'"),
    (["--mask-ratoi", "0.5"], "unknown option --mask-ratoi; did you mean --mask-ratio?"),
    (["--epoch", "1"], "unknown option --epoch; did you mean --epochs?"),  # no prefix matching
    (["--mask_ratoi=0.5"], "unknown option --mask_ratoi; did you mean --mask-ratio?"),
    (["--epochs"], "--epochs needs a value; "),
])
def test_bad_values_are_one_line_errors(argv, line):
    with pytest.raises(SslabError) as e:
        parse_args(Config(), argv)
    assert str(e.value).startswith(line) and "\n" not in str(e.value)


def test_wandb_agent_forms_and_json_lists():
    cfg = parse_args(Config(), ["--mask_ratio=0.6", '--model_kwargs={"depth": 4}', "--norm_pix_loss=False",
                                "--betas=[0.8, 0.9]", "--wandb-tags=[\"a\", \"b\"]"])
    assert cfg.mask_ratio == 0.6 and cfg.model_kwargs == {"depth": 4} and cfg.norm_pix_loss is False
    assert cfg.betas == (0.8, 0.9) and cfg.wandb_tags == ("a", "b")


def test_config_file_then_flags_on_top(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    saved = {**Config(epochs=7, mask_ratio=0.6, batch_size=8, effective_batch_size=32).to_dict(),
             "accum_iter": 4, "lr_resolved": 1e-3, "world_size": 1}  # derived keys are ignored
    (run / "config.json").write_text(json.dumps(saved))
    cfg = parse_args(Config(), ["--config", str(run / "config.json"), "--epochs", "3"])
    assert (cfg.epochs, cfg.mask_ratio, cfg.batch_size, cfg.effective_batch_size) == (3, 0.6, 8, 32)
    assert cfg.accum_iter == 1 and cfg.betas == (0.9, 0.95)  # derived from effective_batch_size again
    assert parse_args(Config(), [f"--config={run}"]).epochs == 7  # a run folder works too
    with pytest.raises(SslabError, match="--config .*nope.*: no such file; give a run's config.json"):
        parse_args(Config(), ["--config", str(tmp_path / "nope")])


def test_help_lists_every_field_by_section_with_its_comment(capsys):
    with pytest.raises(SystemExit):
        parse_args(Config(mask_ratio=0.6), ["--help"])
    out = capsys.readouterr().out
    for f in dataclasses.fields(Config):
        assert f"--{f.name.replace('_', '-')} " in out, f.name
    assert "\nMAE:\n" in out and "\noptimisation:\n" in out
    assert "prototypes K of the DINO head" in out  # the # comment of out_dim in config.py
    mae = out[out.index("\nMAE:"):]
    assert "--mask-ratio FLOAT" in mae and "(default: 0.6)" in mae


def test_replace_and_init_reject_unknown_fields_with_a_suggestion():
    with pytest.raises(SslabError, match=r"unknown config field\(s\) epoch \(did you mean epochs\?\)"):
        Config().replace(epoch=3)
    with pytest.raises(SslabError, match=r"Config\(...\): unknown config field\(s\) maks_ratio \(did you mean mask_ratio"):
        Config(maks_ratio=0.5)
    assert Config().to_dict()["betas"] == [0.9, 0.95]


def test_evaluators_share_the_training_style():
    """``--in-memory true``, ``--name=value``, ``--wandb-project/--wandb-group``, one-line mistakes."""
    import argparse

    from sslab.eval.cli import add_common_args

    ap = argparse.ArgumentParser(prog="python -m sslab.eval.knn")
    add_common_args(ap)
    args = ap.parse_args(["run", "--data", "demo", "--in-memory", "true", "--no-cache=false",
                          "--wandb-project=p", "--wandb-group", "g", '--model-kwargs={"depth": 2}'])
    assert args.in_memory is True and args.no_cache is False and (args.wandb_project, args.wandb_group) == ("p", "g")
    assert args.model_kwargs == {"depth": 2} and ap.parse_args(["run", "--data", "demo", "--in-memory"]).in_memory
    with pytest.raises(SslabError, match=r"^unknown option --in-memry; did you mean --in-memory\?$"):
        ap.parse_args(["run", "--data", "demo", "--in-memry", "true"])
    with pytest.raises(SslabError, match=r"^unknown option --wandb-proj; did you mean --wandb-project\?$"):
        ap.parse_args(["run", "--data", "demo", "--wandb-proj", "p"])  # no prefix matching
    with pytest.raises(SslabError, match=r"^missing checkpoint; python -m sslab.eval.knn --help"):
        ap.parse_args(["--data", "demo"])
