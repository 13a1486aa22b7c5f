"""Evaluators of pretrained encoders and the scaling-curve sweep.

- :mod:`.features`: frozen-encoder features (class token, average-pooled patches, last-k concat), cached on disk.
- :mod:`.knn`: weighted k-NN (DINO). :mod:`.linear_probe`: many linear heads at once on cached features,
  or the papers' augmented probe (:mod:`.lars` for MAE). :mod:`.finetune`: end-to-end fine-tuning (timm).
- :mod:`.monitor`: online k-NN during pretraining. :mod:`.results`: JSON results + wandb.
- :mod:`.cli`: opening an encoder (checkpoint, run folder, exported folder, official file) and labelled data
  (``train/`` and ``test/`` else ``val/``, :func:`sslab.data.sources.resolve_split`).
- :mod:`.preprocess`: eval images in the encoder's channels and size, the papers' eval transform and probe crops.
- :mod:`.protocols`: each method's default feature, BatchNorm and probe recipe.
- :mod:`.sweep` + :mod:`.scaling`: pretrain-and-evaluate a grid, CSV + power-law plots.

Command lines (each a module): ``python -m sslab.eval.knn CHECKPOINT --data DATA``, likewise
``linear_probe`` and ``finetune``, and ``python -m sslab.eval.sweep SWEEP.py``.
"""
