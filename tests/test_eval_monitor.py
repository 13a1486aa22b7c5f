"""Online k-NN during pretraining: a logged curve that leaves the training itself unchanged."""

import torch

from conftest import make_image_folder, read_metrics, tiny_mae_config
from sslab import train
from sslab.branches import MAEBranch
from sslab.eval.monitor import monitor_knn


def test_monitor_leaves_rng_and_model_mode_alone(tmp_path):
    cfg = tiny_mae_config(tmp_path, monitor_every_epochs=1, monitor_train_size=50, monitor_test_size=20)
    branch = MAEBranch(cfg)
    model = branch.model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    row = monitor_knn(cfg, model, branch, is_main=True)
    assert torch.equal(torch.get_rng_state(), rng)  # building the encoder copy drew from a forked stream
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # 20 class-balanced test images: the accuracy is a multiple of 5%.
    assert set(row) == {"monitor/knn20_top1", "monitor/seconds"} and row["monitor/knn20_top1"] % 5 == 0
    assert monitor_knn(cfg, model, branch, is_main=False) == {}


def test_monitor_logs_a_curve_without_changing_training(tmp_path):
    # 24 training images, batch 8 -> 3 steps per epoch, 3 epochs; the k-NN is scored on the val/ folder.
    tree = tmp_path / "tree"
    make_image_folder(tree / "train"), make_image_folder(tree / "val", n_per_class=3)
    common = dict(data=str(tree), img_size=16, in_chans=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                  batch_size=8, epochs=3, warmup_epochs=1, log_every=1)
    plain = tiny_mae_config(tmp_path / "plain", **common)
    watched = tiny_mae_config(tmp_path / "watched", **common, monitor_every_epochs=2, monitor_train_size=12,
                              monitor_test_size=9)
    train(plain), train(watched)
    a, b = read_metrics(plain.output_dir), read_metrics(watched.output_dir)
    mon = [r for r in b if "monitor/knn20_top1" in r]
    assert [r["step"] for r in mon] == [6] and mon[0]["epoch"] == 2.0  # end of epoch 2 only
    assert [r["loss"] for r in b if "loss" in r] == [r["loss"] for r in a]
