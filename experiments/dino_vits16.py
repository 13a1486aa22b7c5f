"""DINO ViT-S/16 on ImageNet: the recipe of Caron et al. 2021 (Sec. 4 / App. A) and the official main_dino.py.

    accelerate launch experiments/dino_vits16.py --data /path/to/imagenet/train [--output-dir ... --epochs 800]

Batch 1024 in total on any number of GPUs (64 per process, accumulated to 1024; with accumulation the
center and the teacher see each micro-batch, the official run had 16 GPUs and none),
AdamW lr 0.0005 x batch / 256 with 10 warmup epochs and cosine to 1e-6, weight decay cosine 0.04 -> 0.4,
2 global crops of 224 px + 10 local crops of 96 px, teacher temperature 0.04 -> 0.07 over 30 epochs,
teacher momentum cosine 0.996 -> 1, last layer frozen for the first epoch, per-parameter gradient clip 3.0.
100 epochs here (the paper's ablation length); the headline 77.0% linear ViT-S/16 used --epochs 800
(and --norm-last-layer false, which the official README calls safe only for ViT-S).
"""

from sslab import Config, main

CONFIG = Config(
    method="dino",
    data=None,                     # required: --data /path/to/your/images (ImageFolder tree or .tar)
    output_dir="runs/dino_vits16",
    resume="auto",                           # a requeued job continues where it stopped
    model="vit_small_patch16_224",
    model_kwargs={"drop_path_rate": 0.1},   # student only; the teacher has no drop path
    img_size=224,
    # DINO
    out_dim=65536,
    norm_last_layer=True,
    global_crops_scale=(0.4, 1.0),
    local_crops_number=10,
    local_crops_size=96,
    local_crops_scale=(0.05, 0.4),
    warmup_teacher_temp=0.04,
    teacher_temp=0.07,
    warmup_teacher_temp_epochs=30,
    momentum_teacher=0.996,
    freeze_last_layer=1,
    # optimisation
    epochs=100,
    batch_size=64,                           # per process (official: 64 per GPU on 16 GPUs)
    effective_batch_size=1024,               # accum_iter = 1024 / (64 x processes)
    base_lr=0.0005,                          # lr = 0.0005 * effective_batch / 256
    min_lr=1e-6,
    warmup_epochs=10,
    weight_decay=0.04,
    weight_decay_end=0.4,
    betas=(0.9, 0.999),                      # torch defaults, as the official AdamW
    clip_grad=3.0,
    clip_grad_mode="per_param",              # official utils.clip_gradients
    mixed_precision="fp16",                  # official --use_fp16 true; bf16 works too on Ampere and later
    num_workers=10,
    save_every_steps=1250,
    log_every=10,
    wandb_group="dino_vits16",
    wandb_tags=("dino", "vit_small", "in1k"),
)

if __name__ == "__main__":
    main(CONFIG)
