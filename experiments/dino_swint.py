"""DINO on Swin-T (window 7) at 224 px on ImageNet-1k: EsViT's view-level recipe (Li et al. 2021, arXiv 2106.09785).

    accelerate launch experiments/dino_swint.py --data /path/to/imagenet/train [--output-dir ... --epochs 300]

Settings of the EsViT release for Swin-T/W=7 (README command line, main_esvit.py defaults and
experiments/imagenet/swin/swin_tiny_patch4_window7_224.yaml): batch 512 in total (32 x 16 GPUs there),
300 epochs, AdamW lr 0.0005 x batch / 256 with 10 warm-up epochs and cosine to 1e-6, weight decay
cosine 0.04 -> 0.4, teacher temperature 0.04 -> 0.07 over 30 epochs, --norm_last_layer false,
teacher momentum 0.996 -> 1, last layer frozen for the first epoch, per-parameter clip 3.0, 65536
prototypes, 2 x 224 px global crops (scale 0.4-1) + 8 x 96 px local crops (scale 0.05-0.4), drop path
0.1 (student), fp16. Only EsViT's view-level task (its README: 77.0% linear at batch 512); its
region-level task (--use_dense_prediction) is not part of sslab. The Swin pools its last stage (avg)
into the head; the 96 px local crops run through the same backbone, each stage padded to whole windows
before the cyclic shift, as EsViT's Swin (sslab/models/swin_pad_shift.py, tested against a direct
implementation of EsViT's block).
"""

from sslab import Config, main

CONFIG = Config(
    method="dino",
    output_dir="runs/dino_swint",
    resume="auto",                           # a requeued job continues where it stopped
    model="swin_tiny_patch4_window7_224",
    model_kwargs={"drop_path_rate": 0.1},   # student only; the teacher has no drop path
    img_size=224,
    # DINO
    out_dim=65536,
    norm_last_layer=False,
    global_crops_scale=(0.4, 1.0),
    local_crops_number=8,
    local_crops_size=96,
    local_crops_scale=(0.05, 0.4),
    warmup_teacher_temp=0.04,
    teacher_temp=0.07,
    warmup_teacher_temp_epochs=30,
    momentum_teacher=0.996,
    freeze_last_layer=1,
    # optimisation
    epochs=300,
    batch_size=32,                           # per process (EsViT: 32 per GPU on 16 GPUs)
    effective_batch_size=512,                # accum_iter = 512 / (32 x processes)
    base_lr=0.0005,                          # lr = 0.0005 * 512 / 256 = 0.001
    min_lr=1e-6,
    warmup_epochs=10,
    weight_decay=0.04,
    weight_decay_end=0.4,
    betas=(0.9, 0.999),
    clip_grad=3.0,
    clip_grad_mode="per_param",
    mixed_precision="fp16",                  # EsViT --use_fp16 default true; bf16 works too on Ampere and later
    num_workers=10,
    save_every_steps=1250,
    log_every=10,
    wandb_group="dino_swint",
    wandb_tags=("dino", "swin_tiny", "in1k"),
)

if __name__ == "__main__":
    main(CONFIG)
