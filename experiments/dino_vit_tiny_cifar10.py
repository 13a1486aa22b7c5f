"""DINO with a ViT-Tiny (patch 4) on 32 px CIFAR-10: the DINO recipe scaled down to a CPU.

    python experiments/dino_vit_tiny_cifar10.py      # ../shared/data's CIFAR-10 tar if there, else --data cifar10
    torchrun --nproc_per_node 2 experiments/dino_vit_tiny_cifar10.py --batch-size 64

The encoder of the MAE CIFAR recipe (ViT-Tiny, patch 4), so the two methods compare on one architecture;
2 global crops of 32 px + 4 local crops of 16 px (the paper's 224/96 px would upsample 32 px images),
the paper's augmentations, scales, temperatures, schedules and clipping; a smaller prototype count
(4096: ten classes, 50k images) and a short schedule. DINO costs far more per image than MAE (every
crop through the whole encoder, plus the teacher): on a 2-core CPU count hours per epoch, and use
--model-kwargs '{"drop_path_rate": 0.1, "depth": 6}' --local-crops-number 2 for a quicker look.
The tar is unpacked once into $SSLAB_CACHE (default ~/.cache/sslab) and decoded into uint8 arrays.
"""

from sslab import Config, main
from sslab.data.named import local_or_named

CONFIG = Config(
    method="dino",
    data=local_or_named("cifar10/CIFAR-10-images-jpeg.tar", "cifar10", __file__),  # else --data cifar10
    in_memory=True,
    output_dir="runs/dino_vit_tiny_cifar10",
    resume="auto",
    model="vit_tiny_patch16_224",
    model_kwargs={"drop_path_rate": 0.1},
    img_size=32,
    patch_size=4,                  # 8x8 patches for the global crops, 4x4 for the local ones
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    # DINO
    out_dim=4096,
    global_crops_scale=(0.4, 1.0),
    local_crops_number=4,
    local_crops_size=16,
    local_crops_scale=(0.05, 0.4),
    warmup_teacher_temp=0.04,
    teacher_temp=0.07,
    warmup_teacher_temp_epochs=10,
    momentum_teacher=0.996,
    freeze_last_layer=1,
    # optimisation
    epochs=30,
    warmup_epochs=3,
    batch_size=128,
    base_lr=0.0005,                # lr = 0.0005 x 128 / 256
    min_lr=1e-6,
    weight_decay=0.04,
    weight_decay_end=0.4,
    betas=(0.9, 0.999),
    clip_grad=3.0,
    clip_grad_mode="per_param",
    num_workers=2,
    save_every_steps=500,
    log_every=20,
    wandb_group="dino_vit_tiny_cifar10",
    wandb_tags=("dino", "vit_tiny", "cifar10"),
)

if __name__ == "__main__":
    main(CONFIG)
