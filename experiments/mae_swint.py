"""MAE on Swin-T at 224 px on ImageNet-1k, encoder on the visible units only (GreenMIM-style).

    accelerate launch experiments/mae_swint.py --data /path/to/imagenet/train --output-dir runs/mae_swint
    accelerate launch experiments/simmim_swint.py --data ...   # the SimMIM baseline, with SimMIM's own settings

Masking unit = one last-stage token, 32x32 px (patch 4, three merges): 49 units, 12 visible at 75%.
Settings of GreenMIM's released Swin pretraining (Huang et al. 2022, arXiv 2205.13515;
scripts/run_greenmim_swin_base.sh and modeling/model_factory.py): decoder 512-d x 1 block with 16
heads, norm-pix loss, mask ratio 0.75, base lr 1.5e-4 x batch / 256, weight decay 0.05, 40 warm-up
epochs, 200 epochs, no stochastic depth; MAE's AdamW betas (0.9, 0.95); GreenMIM's init (xavier-uniform
linears and patch projection). timm's Swin keeps its own
LayerNorm eps (1e-5; GreenMIM's is 1e-6). The effective batch of 2048 is this recipe's choice, on any
number of GPUs (accum_iter = 2048 / (128 x processes)).
"""

from sslab import Config, main

CONFIG = Config(
    method="mae",
    output_dir="runs/mae_swint",
    resume="auto",                 # a requeued job continues where it stopped
    model="swin_tiny_patch4_window7_224",
    model_kwargs={"drop_path_rate": 0.0},
    img_size=224,
    mask_ratio=0.75,
    swin_mae_mode="visible",
    norm_pix_loss=True,
    decoder_embed_dim=512,
    decoder_depth=1,
    decoder_num_heads=16,
    epochs=200,
    warmup_epochs=40,
    batch_size=128,
    effective_batch_size=2048,
    base_lr=1.5e-4,                # lr = 1.5e-4 x 2048 / 256 = 1.2e-3
    min_lr=0.0,
    weight_decay=0.05,
    betas=(0.9, 0.95),
    mixed_precision="bf16",
    num_workers=10,
    save_every_steps=1000,
    keep_last=3,
    log_every=50,
    wandb_group="mae_swint",
    wandb_tags=("mae", "swin_tiny", "in1k"),
)

if __name__ == "__main__":
    main(CONFIG)
