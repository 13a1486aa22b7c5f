"""DINO with a small two-stage Swin (patch 2, window 4) on 32 px CIFAR-10, scaled down to a CPU.

    python experiments/dino_swin_cifar10.py      # ../shared/data's CIFAR-10 tar if there, else --data cifar10

The encoder of experiments/mae_swin_cifar10.py (Swin-T widths 96/192, heads 3/6, depths 2/6): global
crops of 32 px give 16x16 then 8x8 token grids (window 4, shifted by 2); the 6 local crops of 16 px
give 8x8 then 4x4. The last stage is average-pooled into the DINO head. Augmentations, scales,
temperatures, schedules and clipping as in experiments/dino_vit_tiny_cifar10.py.
"""

from sslab import Config, main
from sslab.data.named import local_or_named

CONFIG = Config(
    method="dino",
    data=local_or_named("cifar10/CIFAR-10-images-jpeg.tar", "cifar10", __file__),  # else --data cifar10
    in_memory=True,
    output_dir="runs/dino_swin_cifar10",
    resume="auto",
    model="swin_tiny_patch4_window7_224",
    model_kwargs={"depths": [2, 6], "num_heads": [3, 6], "embed_dim": 96, "window_size": 4, "drop_path_rate": 0.1},
    img_size=32,
    patch_size=2,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    # DINO
    out_dim=4096,
    global_crops_scale=(0.4, 1.0),
    local_crops_number=6,
    local_crops_size=16,
    local_crops_scale=(0.05, 0.4),
    warmup_teacher_temp=0.04,
    teacher_temp=0.07,
    warmup_teacher_temp_epochs=10,
    momentum_teacher=0.996,
    freeze_last_layer=1,
    # optimisation
    epochs=50,
    warmup_epochs=5,
    batch_size=128,
    base_lr=0.0005,
    min_lr=1e-6,
    weight_decay=0.04,
    weight_decay_end=0.4,
    betas=(0.9, 0.999),
    clip_grad=3.0,
    clip_grad_mode="per_param",
    num_workers=2,
    save_every_steps=500,
    log_every=20,
    wandb_group="dino_swin_cifar10",
    wandb_tags=("dino", "swin", "cifar10"),
)

if __name__ == "__main__":
    main(CONFIG)
