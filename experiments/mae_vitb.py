"""MAE ViT-B/16 on ImageNet-1k, the paper's recipe (He et al. 2021, Tables 8 and 9 / official PRETRAIN.md).

    accelerate launch experiments/mae_vitb.py --data /path/to/imagenet/train --output-dir runs/mae_vitb
    accelerate launch experiments/mae_vitb.py --data ... --epochs 1600     # the longer schedule

Effective batch 4096 on any number of GPUs: accum_iter = 4096 / (64 x processes), e.g. 8 on one
8-GPU node, 1 on 64 GPUs.
"""

from sslab import Config, main

CONFIG = Config(
    method="mae",
    data=None,                     # required: --data /path/to/your/images (ImageFolder tree or .tar)
    output_dir="runs/mae_vitb",
    resume="auto",                 # a requeued job continues where it stopped
    model="vit_base_patch16_224",
    img_size=224,
    mask_ratio=0.75,
    norm_pix_loss=True,
    decoder_embed_dim=512,
    decoder_depth=8,
    decoder_num_heads=16,
    epochs=800,
    warmup_epochs=40,
    batch_size=64,
    effective_batch_size=4096,
    base_lr=1.5e-4,                # lr = 1.5e-4 x 4096 / 256 = 2.4e-3
    min_lr=0.0,
    weight_decay=0.05,
    betas=(0.9, 0.95),
    mixed_precision="bf16",        # the official code used fp16 AMP; bf16 needs no loss scaling
    num_workers=10,
    save_every_steps=1000,
    keep_last=3,
    log_every=50,
    wandb_project="sslab",
    wandb_group="mae_vitb",
    wandb_tags=("mae", "vit_base", "in1k"),
)

if __name__ == "__main__":
    main(CONFIG)
