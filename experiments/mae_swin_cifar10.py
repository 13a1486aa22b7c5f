"""MAE with a small two-stage Swin (patch 2, window 4) on 32 px CIFAR-10, small enough for a CPU.

    python experiments/mae_swin_cifar10.py        # ../shared/data's CIFAR-10 tar if there, else --data cifar10
    python experiments/mae_swin_cifar10.py --swin-mae-mode mask_token

Token grids 16x16 then 8x8 (window 4, shifted by 2 in both stages); the masking unit is one
second-stage token, 4x4 px: 64 units, 16 visible at 75% -- the granularity of ViT-Tiny/4 on the same
images (experiments/mae_vit_tiny_cifar10.py), with a similar cost per image. Swin-T widths
(96, 192) and heads (3, 6), depths (2, 6).
"""

from sslab import Config, main
from sslab.data.named import local_or_named

CONFIG = Config(
    method="mae",
    data=local_or_named("cifar10/CIFAR-10-images-jpeg.tar", "cifar10", __file__),  # else --data cifar10
    in_memory=True,
    output_dir="runs/mae_swin_cifar10",
    resume="auto",
    model="swin_tiny_patch4_window7_224",
    model_kwargs={"depths": [2, 6], "num_heads": [3, 6], "embed_dim": 96, "window_size": 4},
    img_size=32,
    patch_size=2,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    swin_mae_mode="visible",
    decoder_embed_dim=128,         # a light decoder, as for the ViT-Tiny CIFAR recipe
    decoder_depth=2,
    decoder_num_heads=4,
    epochs=20,
    warmup_epochs=2,
    batch_size=128,
    base_lr=1.5e-4,
    num_workers=2,
    save_every_steps=500,
    log_every=20,
    wandb_group="mae_swin_cifar10",
    wandb_tags=("mae", "swin", "cifar10"),
)

if __name__ == "__main__":
    main(CONFIG)
