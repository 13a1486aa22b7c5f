"""MAE with a ViT-Tiny (patch 4) on 32 px CIFAR-10, small enough for a CPU (see the README for its speed).

    python experiments/mae_vit_tiny_cifar10.py        # ../shared/data's CIFAR-10 tar if there, else --data cifar10
    torchrun --nproc_per_node 2 experiments/mae_vit_tiny_cifar10.py --batch-size 128

The tar is unpacked once into $SSLAB_CACHE (default ~/.cache/sslab) and decoded into uint8 arrays.
"""

from sslab import Config, main
from sslab.data.named import local_or_named

CONFIG = Config(
    method="mae",
    data=local_or_named("cifar10/CIFAR-10-images-jpeg.tar", "cifar10", __file__),  # else --data cifar10
    in_memory=True,
    output_dir="runs/mae_vit_tiny_cifar10",
    resume="auto",
    model="vit_tiny_patch16_224",
    img_size=32,
    patch_size=4,                  # 8x8 = 64 patches, 16 visible at 75% masking
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    decoder_embed_dim=128,         # a light decoder (ImageNet's is 512x8): on CPU it would cost more than the encoder
    decoder_depth=2,
    decoder_num_heads=4,
    epochs=20,
    warmup_epochs=2,
    batch_size=128,
    base_lr=1.5e-4,
    num_workers=2,
    save_every_steps=500,
    log_every=20,
    wandb_group="mae_vit_tiny_cifar10",
    wandb_tags=("mae", "vit_tiny", "cifar10"),
)

if __name__ == "__main__":
    main(CONFIG)
