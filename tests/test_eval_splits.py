"""Every evaluator reads the training split from ``train/`` and the held-out split from ``test/``, else
``val/``; a tree without them is refused with one line naming what it has, never scored on its root
(the bug: an ImageNet-style tree gave classes ['train', 'val'] and a silent 12.5%)."""

import dataclasses

import pytest

from conftest import make_image_folder, read_metrics, tiny_mae_config
from eval_helpers import write_mae_checkpoint
from sslab.data.sources import locate_split, open_images
from sslab.errors import SslabError
from sslab.eval.cli import labelled_splits
from sslab.eval.finetune import main as finetune_main
from sslab.eval.knn import main as knn_main
from sslab.eval.linear_probe import main as probe_main

# Per split a distinct number of images per class (3 classes): the counts show which folder was read.
N = {"train": 6, "val": 3, "test": 2}


def make_tree(root, splits):
    """An ImageFolder tree with the given split folders, 20 px images in assorted modes; returns root."""
    for s in splits:
        make_image_folder(root / s, n_per_class=N[s])
    return root


@pytest.fixture
def trees(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLAB_CACHE", str(tmp_path / "cache"))
    return {"train_val": make_tree(tmp_path / "tv", ("train", "val")),
            "train_test": make_tree(tmp_path / "tt", ("train", "val", "test")),  # test wins over val
            "flat": make_image_folder(tmp_path / "flat", n_per_class=4),
            "train_only": make_tree(tmp_path / "to", ("train",))}


@pytest.fixture
def ckpt(tmp_path):
    return str(write_mae_checkpoint(tmp_path / "run" / "checkpoint-00000001.pt", tmp_path))


def test_split_rule(trees):
    assert locate_split(str(trees["train_val"]), "held_out", flat_ok=False)[0] == "val"
    assert locate_split(str(trees["train_test"]), "held_out", flat_ok=False)[0] == "test"
    assert locate_split(str(trees["train_test"]) + ":val", "held_out")[0] == "val"  # SPEC:FOLDER wins
    assert len(open_images(str(trees["train_test"]), "train")) == 3 * N["train"]
    # Pretraining may read a tree without split folders whole; an evaluation may not.
    assert len(open_images(str(trees["flat"]), "train")) == 12
    with pytest.raises(SslabError, match=r"no 'train' folder, it has \[a, b, c\]") as e:
        open_images(str(trees["flat"]), "train", flat_ok=False)
    assert "\n" not in str(e.value)
    # A tree with splits is never read whole (its classes would be 'train', 'val').
    with pytest.raises(SslabError, match=r"holds split folders \['train', 'val'\]"):
        open_images(str(trees["train_val"]), "all")
    with pytest.raises(SslabError, match="no held-out split"):
        locate_split(str(trees["train_only"]), "held_out")
    assert locate_split("demo", "held_out") == ("test", None)


def test_labelled_splits_explicit_folders(trees):
    tr, te = labelled_splits(None, str(trees["flat"]), str(trees["train_val"] / "val"), 1)
    assert (tr.split, len(tr.indices), te.split, len(te.indices)) == ("all", 12, "all", 9)
    tr, te = labelled_splits(None, f"{trees['train_test']}:val", f"{trees['train_test']}:test", 1)
    assert (tr.split, len(tr.indices), te.split, len(te.indices)) == ("val", 9, "test", 6)
    with pytest.raises(SslabError, match="holds split folders"):
        labelled_splits(None, str(trees["train_val"]), str(trees["flat"]), 1)
    with pytest.raises(SslabError, match="same folder"):
        labelled_splits(None, str(trees["flat"]), str(trees["flat"]), 1)
    with pytest.raises(SslabError, match="nor --test-data"):
        labelled_splits(None, str(trees["flat"]), None, 1)


COMMON = ["--wandb-mode", "disabled", "--num-workers", "0", "--batch-size", "8"]
EVALUATORS = {
    "knn": (knn_main, ["--ks", "1,3"]),
    "linear_cached": (probe_main, ["--epochs", "2", "--lrs", "0.1", "--wds", "0", "--head-batch-size", "8"]),
    "linear_augmented": (probe_main, ["--mode", "augmented", "--epochs", "1", "--blr", "1"]),
    "finetune": (finetune_main, ["--epochs", "1", "--warmup-epochs", "0", "--log-every", "0"]),
}


@pytest.mark.parametrize("evaluator", sorted(EVALUATORS))
def test_every_evaluator_reads_train_and_held_out_splits(evaluator, trees, ckpt, tmp_path):
    fn, extra = EVALUATORS[evaluator]
    for layout, held in (("train_val", "val"), ("train_test", "test")):
        out = fn([ckpt, "--data", str(trees[layout]), *COMMON, *extra, "--output-dir", str(tmp_path / layout)])
        d = out["data"]
        assert (d["train"]["split"], d["train"]["images"]) == ("train", 3 * N["train"]), layout
        assert (d["test"]["split"], d["test"]["images"]) == (held, 3 * N[held]), layout
        if evaluator == "knn":
            assert out["by_k"]["1"]["top5"] == out["by_k"]["1"]["top1"]  # DINO: top-5 over min(5, k) classes
    # Layouts without the splits are refused before any compute, in one line.
    with pytest.raises(SslabError, match="no 'train' folder") as e:
        fn([ckpt, "--data", str(trees["flat"]), *COMMON, *extra])
    assert "\n" not in str(e.value) and "[a, b, c]" in str(e.value)
    with pytest.raises(SslabError, match=r"no held-out split \('test' or 'val'\), it has \[train\]"):
        fn([ckpt, "--data", str(trees["train_only"]), *COMMON, *extra])
    # Explicit folders for other layouts.
    out = fn([ckpt, "--train-data", str(trees["flat"]), "--test-data", f"{trees['train_val']}:val", *COMMON, *extra,
              "--output-dir", str(tmp_path / "explicit")])
    assert (out["data"]["train"]["images"], out["data"]["test"]["images"]) == (12, 9)


def test_monitor_and_pictures_refuse_a_tree_without_held_out_split(trees, tmp_path):
    from sslab import train
    from sslab.eval.monitor import _labelled_split

    common = dict(img_size=16, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3, batch_size=8, epochs=1)
    cfg = tiny_mae_config(tmp_path, data=str(trees["flat"]), monitor_every_epochs=1, **common)
    with pytest.raises(SslabError, match="monitor: .*no 'train' folder"):
        train(cfg)
    cfg = tiny_mae_config(tmp_path, data=str(trees["train_only"]), vis_every_epochs=1, **common)
    with pytest.raises(SslabError, match="pictures: .*no held-out split"):
        train(cfg)
    tv = str(trees["train_val"])
    _, ytr, _, yte = _labelled_split((tv, "train"), (tv, "held_out"), 3, 16, (0.5,) * 3, (0.25,) * 3, 100, 100, 0)
    assert (len(ytr), len(yte)) == (3 * N["train"], 3 * N["val"])


def test_monitor_takes_separate_train_and_test_folders(trees, tmp_path):
    """Any layout: --monitor-train-data / --monitor-test-data are folders used whole (or SPEC:FOLDER)."""
    from sslab import train
    from sslab.eval.monitor import check_monitor_config, monitor_splits

    common = dict(img_size=16, in_chans=3, mean=(0.5,) * 3, std=(0.25,) * 3, batch_size=8, epochs=1,
                  monitor_every_epochs=1, monitor_train_size=100, monitor_test_size=100)
    cfg = tiny_mae_config(tmp_path / "a", data=str(trees["flat"]), monitor_train_data=str(trees["flat"]),
                          monitor_test_data=f"{trees['train_val']}:val", **common)
    assert monitor_splits(cfg) == ((str(trees["flat"]), "all"), (f"{trees['train_val']}:val", "all"))
    train(cfg)
    assert [r["monitor/knn20_top1"] for r in read_metrics(cfg.output_dir) if "monitor/knn20_top1" in r]
    from sslab.eval.monitor import _labelled_split
    _, ytr, _, yte = _labelled_split(*monitor_splits(cfg), 3, 16, (0.5,) * 3, (0.25,) * 3, 100, 100, cfg.seed)
    assert (len(ytr), len(yte)) == (12, 3 * N["val"])  # the flat folder whole, the tree's val/ only
    # one explicit folder, the other from the tree's split rule
    half = tiny_mae_config(tmp_path / "b", data=str(trees["flat"]), monitor_data=str(trees["train_test"]),
                           monitor_test_data=f"{trees['train_val']}:val", **common)
    assert monitor_splits(half)[0] == (str(trees["train_test"]), "train")
    check_monitor_config(half)
    same = tiny_mae_config(tmp_path / "c", data=str(trees["flat"]), monitor_train_data=str(trees["flat"]),
                           monitor_test_data=str(trees["flat"]), **common)
    with pytest.raises(SslabError, match="monitor: the training and held-out splits are the same folder") as e:
        check_monitor_config(same)
    assert "\n" not in str(e.value)
    missing = tiny_mae_config(tmp_path / "d", data=str(trees["flat"]), monitor_test_data=str(tmp_path / "nope"),
                              monitor_train_data=str(trees["flat"]), **common)
    with pytest.raises(SslabError, match="monitor: .*does not exist"):
        train(missing)
    assert not (tmp_path / "d" / "metrics.jsonl").exists()


def test_sweep_evaluates_on_the_held_out_split_and_refuses_before_pretraining(trees, tmp_path):
    from sslab.eval.sweep import Sweep, eval_splits, run_sweep

    base = tiny_mae_config(tmp_path, data=str(trees["train_val"]), img_size=16, in_chans=3, mean=(0.5,) * 3,
                           std=(0.25,) * 3)
    sweep = Sweep(name="s", base=base, models={"t": {}}, output_dir=str(tmp_path / "sw"))
    tr, te = eval_splits(sweep)
    assert (tr.split, len(tr.indices), te.split, len(te.indices)) == ("train", 18, "val", 9)
    flat = dataclasses.replace(sweep, base=base.replace(data=str(trees["flat"])))
    with pytest.raises(SslabError, match="no 'train' folder"):
        run_sweep(flat)
    assert not (tmp_path / "sw" / "t_f1_e2").exists()  # refused before any point was pretrained
    tr, te = eval_splits(dataclasses.replace(flat, eval_train_data=str(trees["flat"]),
                                             eval_test_data=f"{trees['train_test']}:test"))
    assert (len(tr.indices), te.split, len(te.indices)) == (12, "test", 6)
