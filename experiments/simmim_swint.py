"""SimMIM on Swin-T: the baseline the visible-only Swin MAE (``mae_swint.py``) is compared with.

    accelerate launch experiments/simmim_swint.py --data /path/to/imagenet/train --output-dir runs/simmim_swint

Xie et al. 2022 (arXiv 2111.09886), official microsoft/SimMIM: every token goes through the encoder,
masked ones as a learned mask token; a one-layer head (1x1 convolution + pixel shuffle by the encoder
stride, 32) predicts the normalised image; L1 loss on the masked pixels. Settings of SimMIM's
``simmim_pretrain__swin_base__img192_window6__100ep.yaml`` over its ``config.py`` defaults, run as its
README (16 GPUs x 128 = batch 2048): 192 px, window 6, mask patches of 32 px (one last-stage token) at
ratio 0.6, 100 epochs with 10 warm-up, lr 2e-4 x batch / 512 (= base_lr 1e-4 x batch / 256 here) with
cosine to 1e-5 x batch / 512, weight decay 0.05, AdamW betas (0.9, 0.999), global gradient clip 5.0, no
stochastic depth, RandomResizedCrop scale (0.67, 1) + flip. SimMIM publishes this config (82.8% / 83.5%
top-1 after fine-tuning at 192 / 224 px) for Swin-B; here it is applied to Swin-T, for which SimMIM
gives no pretraining number. Differences kept: the warm-up starts at 0 (SimMIM: 1e-6 x batch / 512),
and timm's Swin LayerNorm eps (1e-5).
"""

from sslab import Config, main

CONFIG = Config(
    method="mae",
    output_dir="runs/simmim_swint",
    resume="auto",
    model="swin_tiny_patch4_window7_224",
    model_kwargs={"window_size": 6, "drop_path_rate": 0.0},
    img_size=192,
    crop_scale=(0.67, 1.0),
    swin_mae_mode="mask_token",
    mask_ratio=0.6,
    epochs=100,
    warmup_epochs=10,
    batch_size=128,
    effective_batch_size=2048,
    base_lr=1e-4,                  # lr = 1e-4 x 2048 / 256 = 8e-4 = SimMIM's 2e-4 x 2048 / 512
    min_lr=4e-5,                   # SimMIM's 1e-5 x 2048 / 512
    weight_decay=0.05,
    betas=(0.9, 0.999),
    clip_grad=5.0,
    clip_grad_mode="global",
    mixed_precision="bf16",
    num_workers=10,
    save_every_steps=1000,
    log_every=50,
    wandb_group="simmim_swint",
    wandb_tags=("simmim", "swin_tiny", "in1k"),
)

if __name__ == "__main__":
    main(CONFIG)
