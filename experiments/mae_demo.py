"""MAE on the embedded Fashion-MNIST demo set, on CPU in a few minutes.

    python experiments/mae_demo.py [--epochs 20 --output-dir runs/mae_demo ...]
"""

from sslab import Config, main

CONFIG = Config(
    method="mae",
    data="demo",
    output_dir="runs/mae_demo",
    resume="auto",  # running it again continues (or finds the run finished)
    model="vit_tiny_patch16_224",
    model_kwargs={"depth": 6},
    img_size=28,
    patch_size=4,
    in_chans=1,
    mean=(0.2860,),
    std=(0.3530,),
    crop_scale=(0.35, 1.0),  # 28 px images: very small crops carry too little to reconstruct
    decoder_embed_dim=128,
    decoder_depth=2,
    decoder_num_heads=4,
    epochs=10,
    warmup_epochs=1,
    batch_size=128,
    base_lr=1.5e-4 * 4,  # short schedule: a higher lr gets visibly far in a few minutes
    num_workers=2,
    save_every_steps=100,
    log_every=5,
)

if __name__ == "__main__":
    main(CONFIG)
