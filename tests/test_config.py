"""Every config field is overridable from the command line, with types."""

import pytest

from sslab.config import Config, parse_args


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


@pytest.mark.parametrize("argv", [["--epochs", "x"], ["--no-such-field", "1"], ["--in-memory", "maybe"],
                                  ["--model-kwargs", "[1]"]])
def test_bad_values_are_rejected(argv, capsys):
    with pytest.raises(SystemExit):
        parse_args(Config(), argv)


def test_replace_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown config field"):
        Config().replace(epoch=3)
    assert Config().to_dict()["betas"] == [0.9, 0.95]
