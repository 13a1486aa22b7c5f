"""DINO ViT-S/16, 100 epochs: the official README's "Vanilla DINO training" command, field by field.

    accelerate launch experiments/dino_vits16.py --data /path/to/imagenet/train [--output-dir ...]

Official command (facebookresearch/dino README; every other argument at its ``main_dino.py`` default):

    python -m torch.distributed.launch --nproc_per_node=8 main_dino.py --arch vit_small \\
        --data_path /path/to/imagenet/train --output_dir /path/to/saving_dir

Published result: **69.3% k-NN and 74.0% linear** top-1 on ImageNet (1.75 days on 8 GPUs).

That is: batch 8 x 64 = 512 (here on any number of processes: accum_iter = 512 / (64 x processes),
with one center update per optimiser step), AdamW (torch's betas) at lr 0.0005 x 512 / 256 with 10
warm-up epochs and cosine to 1e-6, weight decay cosine 0.04 -> 0.4, per-parameter gradient clip 3.0,
fp16, 2 x 224 px global crops (scale 0.4-1) + 8 x 96 px local crops (scale 0.05-0.4), teacher
temperature 0.04 throughout, student 0.1, center momentum 0.9, teacher momentum cosine 0.996 -> 1,
``norm_last_layer`` true, last layer frozen for 1 epoch, 65536 prototypes, drop path 0.1 (student),
the official ViT's class-token init and position interpolation (``pos_interpolation="dino"``).
``tests/test_dino_recipes.py`` checks every field against the official arguments.
"""

from sslab import Config, main

CONFIG = Config(
    method="dino",
    output_dir="runs/dino_vits16",
    resume="auto",                           # a requeued job continues where it stopped
    model="vit_small_patch16_224",           # --arch vit_small --patch_size 16
    model_kwargs={"drop_path_rate": 0.1},    # student only; the teacher has no drop path
    img_size=224,
    pos_interpolation="dino",
    # DINO
    out_dim=65536,
    norm_last_layer=True,
    use_bn_in_head=False,
    global_crops_scale=(0.4, 1.0),
    local_crops_number=8,
    local_crops_size=96,
    local_crops_scale=(0.05, 0.4),
    warmup_teacher_temp=0.04,
    teacher_temp=0.04,
    warmup_teacher_temp_epochs=0,
    momentum_teacher=0.996,
    freeze_last_layer=1,
    # optimisation
    epochs=100,
    batch_size=64,                           # --batch_size_per_gpu 64
    effective_batch_size=512,                # 8 GPUs x 64
    base_lr=0.0005,                          # lr = 0.0005 * 512 / 256
    min_lr=1e-6,
    warmup_epochs=10,
    weight_decay=0.04,
    weight_decay_end=0.4,
    betas=(0.9, 0.999),                      # torch defaults, as the official AdamW
    clip_grad=3.0,
    clip_grad_mode="per_param",              # official utils.clip_gradients
    mixed_precision="fp16",                  # --use_fp16 true (bf16 works too on Ampere and later)
    seed=0,
    num_workers=10,
    save_every_steps=1250,
    log_every=10,
    wandb_group="dino_vits16",
    wandb_tags=("dino", "vit_small", "in1k"),
)

if __name__ == "__main__":
    main(CONFIG)
