"""Sweeps and scaling curves: power-law fits, the plot file, skipping finished points, resuming."""

import json

import numpy as np
import pytest
from PIL import Image

import sslab.eval.knn
import sslab.eval.linear_probe
import sslab.eval.sweep as sweep_mod
from conftest import read_metrics, tiny_mae_config
from sslab import train
from sslab.eval.scaling import fit_power_law, plot_scaling, read_table
from sslab.eval.sweep import Sweep, points, run_sweep

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_power_law_fit_recovers_the_exponent_with_its_uncertainty():
    x = np.geomspace(1e12, 1e16, 6)
    fit = fit_power_law(x, 100.0 - 40.0 * x ** -0.07)
    assert fit["b"] == pytest.approx(-0.07, abs=1e-9) and fit["a"] == pytest.approx(40.0, rel=1e-6)
    assert fit["r2"] == pytest.approx(1.0) and fit["b_se"] == pytest.approx(0.0, abs=1e-9) and fit["n"] == 6
    # Noise: the 95% interval of the exponent covers the truth and widens with the noise.
    rng = np.random.default_rng(0)
    noisy = 100.0 - 40.0 * x ** -0.07 * np.exp(rng.normal(0, 0.05, 6))
    f = fit_power_law(x, noisy)
    assert abs(f["b"] + 0.07) < f["b_ci95"] and 0 < f["b_se"] < f["b_ci95"]
    # Fewer points than parameters + 2: no fit (a 2-point fit is exact, r^2 = 1, and says nothing).
    assert fit_power_law(x[:3], (100.0 - 40.0 * x ** -0.07)[:3]) is None
    assert fit_power_law([5.0, 5.0, 5.0, 6.0], [60.0, 70.0, 65.0, 64.0]) is None  # two distinct x


def grid_rows():
    """2 models x 2 fractions x 4 epoch counts; accuracy a power law of compute."""
    return [{"model": m, "data_fraction": f, "epochs": e, "params": p, "images_seen": 5e3 * f * e,
             "pretrain_flops": 1e9 * p * f * e, "knn_top1": 100 - 30 * (p * f * e) ** -0.1}
            for m, p in (("s", 1e5), ("m", 4e5)) for f in (0.25, 1.0) for e in (1, 2, 4, 8)]


def test_plot_is_a_valid_png_and_lines_vary_one_quantity(tmp_path):
    fits = plot_scaling(grid_rows(), "knn_top1", tmp_path / "curve.png")
    data = (tmp_path / "curve.png").read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(tmp_path / "curve.png") as img:
        img.verify()
    with Image.open(tmp_path / "curve.png") as img:
        assert img.size[0] > 3 * img.size[1] / 2  # three panels side by side
    # Compute: one line per (model, fraction) over 4 epoch counts -> 4 fits; images seen: per (model, epochs),
    # 2 fractions -> no fit; parameters: per (fraction, epochs), 2 models -> no fit.
    assert set(fits) == {f"pretrain_flops/{m}, {f:g} of the data" for m in ("s", "m") for f in (0.25, 1.0)}
    assert fits["pretrain_flops/s, 0.25 of the data"]["b"] == pytest.approx(-0.1, abs=1e-6)


def test_plot_does_not_join_points_that_differ_in_more_than_x(tmp_path, monkeypatch):
    import matplotlib.axes

    joined = []
    real_plot = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):
        if args and len(args[0]) > 1 and kwargs.get("label"):
            joined.append((kwargs["label"], list(args[0])))
        return real_plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    rows = grid_rows()
    rows.append({**rows[0], "knn_top1": rows[0]["knn_top1"] + 3})  # a repeat of one setting at the same x
    plot_scaling(rows, "knn_top1", tmp_path / "c.png")
    assert all(len(set(xs)) == len(xs) for _, xs in joined)
    assert not any(label.startswith("s, 0.25 of the data") for label, _ in joined)  # the repeated setting
    assert any(label.startswith("m, 0.25 of the data") for label, _ in joined)


def tiny_sweep(tmp_path):
    tiny = {"depth": 1, "embed_dim": 32, "num_heads": 2}
    base = tiny_mae_config(tmp_path, in_chans=3, mean=(0.286,) * 3, std=(0.353,) * 3, img_size=16, batch_size=32,
                           model_kwargs=tiny, decoder_embed_dim=32, decoder_num_heads=2, epochs=1)
    return Sweep(name="tiny", base=base, models={"d1": {}, "d2": {"model_kwargs": {**tiny, "depth": 2}}},
                 data_fractions=(0.5, 1.0), epochs=(1,), train_size=128, eval_train_size=100, eval_test_size=40,
                 probe={"epochs": 5, "lrs": (0.1, 1.0), "wds": (0.0,)}, output_dir=str(tmp_path / "sweep"))


def test_sweep_resumes_an_interrupted_point_and_skips_finished_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLAB_CACHE", str(tmp_path / "cache"))
    sweep = tiny_sweep(tmp_path)
    pts = points(sweep)
    assert [p.name for p in pts] == ["d1_f0.5_e1", "d1_f1_e1", "d2_f0.5_e1", "d2_f1_e1"]
    assert [p.train_images for p in pts] == [64, 128, 64, 128]
    # Interrupt the last point after 2 of its 4 steps.
    train(pts[-1].cfg.replace(max_steps=2))
    rows = run_sweep(sweep)
    assert [r["step"] for r in read_metrics(pts[-1].cfg.output_dir)] == [1, 2, 3, 4]  # resumed, not restarted
    out = tmp_path / "sweep"
    table = read_table(out / "scaling.csv")
    assert [r["point"] for r in table] == [p.name for p in pts] and len(rows) == 4
    for r in table:
        assert r["images_seen"] == r["train_images"]  # one epoch of full batches of 32
        assert r["pretrain_flops"] == pytest.approx(r["flops_per_image"] * r["images_seen"], rel=1e-6)
        assert 0 <= r["knn_top1"] <= 100 and 0 <= r["linear_top1"] <= 100
    d1, d2 = table[0], table[2]
    # Lower bound from the encoder alone: 6 x (block weights) x 5 tokens (4 visible patches + class token).
    assert d1["flops_per_image"] > 6 * (12 * 32 * 32) * 5 and d2["flops_per_image"] > d1["flops_per_image"]
    assert d2["params"] > d1["params"]
    for metric in ("knn_top1", "linear_top1"):
        assert (out / f"scaling_{metric}.png").read_bytes().startswith(PNG_SIGNATURE)
    assert json.loads((out / "fits.json").read_text()) == {}  # 2 points per line: too few to fit (4 needed)
    # Everything done: a rerun trains and evaluates nothing...
    def refuse(*a, **k):
        raise AssertionError("finished work was redone")

    monkeypatch.setattr(sweep_mod, "train", refuse)
    monkeypatch.setattr(sweep_mod, "training_flops_per_image", refuse)
    monkeypatch.setattr(sslab.eval.knn, "run_knn", refuse)
    real_probe, probes = sslab.eval.linear_probe.run_linear_probe, []
    monkeypatch.setattr(sslab.eval.linear_probe, "run_linear_probe",
                        lambda *a, **k: probes.append(1) or real_probe(*a, **k))
    # ... except an evaluation whose result went missing.
    (linear,) = (out / pts[0].name / "eval").glob("linear_cls_*.json")  # named by its settings
    linear.unlink()
    again = run_sweep(sweep)
    assert len(probes) == 1
    assert [r["knn_top1"] for r in again] == [r["knn_top1"] for r in rows]
    assert [r["pretrain_flops"] for r in again] == [r["pretrain_flops"] for r in rows]
