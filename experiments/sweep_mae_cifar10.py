"""A small MAE scaling sweep on CIFAR-10 that finishes on 2 CPU cores in under an hour.

    python -m sslab.eval.sweep experiments/sweep_mae_cifar10.py            # or: python experiments/sweep_mae_cifar10.py
    python -m sslab.eval.sweep experiments/sweep_mae_cifar10.py --list     # the 18 points
    python -m sslab.eval.sweep experiments/sweep_mae_cifar10.py --plots-only

3 tiny ViTs (32 px, patch 4; 0.1M, 0.5M and 0.8M encoder parameters) x 3 nested class-balanced
fractions (0.1, 0.3, 1.0) of a 10,000-image subset of the training set x 2 pretraining lengths
(5 and 15 epochs) = 18 runs, 280k images seen per model size. Each is scored by 20-NN and by the
cached linear probe (class token) on the same 5,000 training / 2,000 test images. Output:
``runs/sweeps/mae_cifar10/{scaling.csv, scaling_knn_top1.png, scaling_linear_top1.png, fits.json}``
plus one run folder per point; rerunning skips finished points and resumes an interrupted one.
"""

from sslab import Config
from sslab.data.named import local_or_named
from sslab.eval.sweep import Sweep, main

BASE = Config(
    method="mae",
    data=local_or_named("cifar10/CIFAR-10-images-jpeg.tar", "cifar10", __file__),  # else --data cifar10
    in_memory=True,
    model="vit_tiny_patch16_224",
    img_size=32,
    patch_size=4,                    # 64 patches, 16 visible at 75% masking
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    decoder_embed_dim=64,            # one light decoder block: on CPU the decoder would otherwise dominate
    decoder_depth=1,
    decoder_num_heads=4,
    warmup_epochs=1,
    batch_size=128,
    base_lr=6e-4,                    # short schedules: 4x the paper's base lr (as experiments/mae_demo.py)
    num_workers=1,
    save_every_steps=10_000,         # a checkpoint per epoch is enough for resuming
    keep_last=1,
    log_every=20,
    progress_bar=False,
    wandb_tags=("mae", "cifar10", "scaling"),
)

SWEEP = Sweep(
    name="mae_cifar10",
    base=BASE,
    models={
        "vit-d64x2": {"model_kwargs": {"embed_dim": 64, "depth": 2, "num_heads": 2}},
        "vit-d96x4": {"model_kwargs": {"embed_dim": 96, "depth": 4, "num_heads": 3}},
        "vit-d128x4": {"model_kwargs": {"embed_dim": 128, "depth": 4, "num_heads": 4}},
    },
    data_fractions=(0.1, 0.3, 1.0),
    epochs=(5, 15),
    train_size=10_000,
    evaluators=("knn", "linear"),
    eval_train_size=5_000,
    eval_test_size=2_000,
    feature="cls",
    probe={"epochs": 100},
)

if __name__ == "__main__":
    main(sweep=SWEEP)
