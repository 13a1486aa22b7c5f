"""Pictures of any checkpoint, as PNG.

    python -m sslab.visualize mae runs/mae_demo/checkpoint-00000300.pt [--out recon.png --num-images 8]
    python -m sslab.visualize attention runs/dino/checkpoint-00001000.pt [--threshold 0.6]
    python -m sslab.visualize attention exported/dino_vits --data /data/imagenet.tar
    python -m sslab.visualize attention dino_deitsmall16_pretrain.pth --model vit_small_patch16_224 --data DIR

``mae`` needs an sslab MAE training checkpoint (the decoder is part of the picture). ``attention``
takes anything :func:`sslab.load_encoder` reads; images come from ``--data`` (default: the run's
data), its held-out split (``test``, else ``val``; refused without one, or name a folder as
``SPEC:FOLDER``), with the encoder's own preprocessing. Without
``--out`` the PNG goes to ``pictures/`` next to the checkpoint (inside an exported folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch

from .config import Config


def config_from_dict(d: dict[str, Any]) -> Config:
    """A :class:`Config` from a checkpoint's config dict (fields it lacks keep their defaults)."""
    names = {f.name for f in dataclasses.fields(Config)}
    return Config(**{k: v for k, v in d.items() if k in names})


def mae_model_from_checkpoint(ckpt: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the trained model of an sslab MAE checkpoint (encoder and decoder), eval mode."""
    from .branches import BRANCHES

    cfg = config_from_dict(ckpt["config"])
    if cfg.method != "mae":
        raise ValueError(f"this checkpoint was trained with {cfg.method!r}; reconstructions need an MAE checkpoint "
                         "(use the 'attention' command for other methods)")
    model = BRANCHES[cfg.method](cfg).model
    model.load_state_dict(ckpt["model"], strict=True)
    return model.eval()


def _run_config(path: Path) -> dict[str, Any] | None:
    """The pretraining config recorded with an exported folder, next to a checkpoint, or inside it."""
    for f in ([path / "sslab.json"] if path.is_dir() else [path.parent / "config.json"]):
        try:
            d = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        d = d.get("config", d)
        if isinstance(d, dict) and "data" in d:
            return d
    if path.is_file():  # a checkpoint moved away from its run directory
        from .serialization import safe_load

        obj = safe_load(path)
        if isinstance(obj, dict) and isinstance(obj.get("config"), dict):
            return obj["config"]
    return None


def _default_out(path: Path, kind: str) -> Path:
    """``pictures/`` of the run folder a checkpoint is in; for an exported encoder folder (which is shared as is)
    or a release file, ``pictures/<name>_<kind>.png`` in the working directory, never inside the export."""
    from .export import WEIGHTS_NAME

    if path.is_dir() and (path / WEIGHTS_NAME).exists():
        return Path("pictures") / f"{path.name}_{kind}.png"
    if path.is_dir():
        return path / "pictures" / f"{kind}.png"
    if not list(path.parent.glob("checkpoint-*.pt")) and not (path.parent / "config.json").exists():
        return Path("pictures") / f"{path.stem}_{kind}.png"  # a release file, not in a run folder
    return path.parent / "pictures" / f"{path.stem}_{kind}.png"


def run_mae(args: argparse.Namespace) -> Path:
    """The ``mae`` command: reconstruction grid of an MAE checkpoint."""
    from .engine.checkpoint import load_checkpoint
    from .viz import fixed_images, mae_reconstruction_grid, save_png

    path = Path(args.checkpoint)
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "config" not in ckpt:
        raise ValueError(f"{path} is not an sslab training checkpoint (no 'config'); the mae command needs one")
    model = mae_model_from_checkpoint(ckpt).to(args.device)
    cfg = config_from_dict(ckpt["config"])
    imgs = fixed_images(args.data or cfg.vis_data or cfg.data, args.num_images, cfg.img_size, cfg.mean, cfg.std, cfg.in_chans)
    mask_ratio = cfg.mask_ratio if args.mask_ratio is None else args.mask_ratio
    grid = mae_reconstruction_grid(model, imgs.to(args.device), mask_ratio, cfg.mean, cfg.std, seed=args.seed)
    return save_png(grid, args.out or _default_out(path, "reconstruction"))


def run_attention(args: argparse.Namespace) -> Path:
    """The ``attention`` command: attention maps (ViT) or similarity maps (Swin) of any encoder."""
    from timm.data import resolve_data_config

    from .export import load_encoder
    from .viz import attention_grid, fixed_images, save_png

    path = Path(args.path)
    encoder = load_encoder(path, model=args.model, **args.model_kwargs).to(args.device)
    run_cfg = _run_config(path) or {}
    data = args.data or run_cfg.get("vis_data") or run_cfg.get("data")
    if not data:
        raise ValueError(f"{path} does not record its data; pass --data (an ImageFolder, a tar of one, or demo)")
    dc = resolve_data_config({}, model=encoder)
    in_chans, h, _ = dc["input_size"]
    imgs = fixed_images(data, args.num_images, h, dc["mean"], dc["std"], in_chans)
    grid = attention_grid(encoder, imgs.to(args.device), dc["mean"], dc["std"], threshold=args.threshold)
    return save_png(grid, args.out or _default_out(path, "attention"))


def main(argv: list[str] | None = None) -> Path:
    """Parse the command line and write one PNG; returns its path."""
    ap = argparse.ArgumentParser(prog="python -m sslab.visualize", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=Path, default=None, help="PNG to write")
    common.add_argument("--data", default=None, help="images: a tree's test (else val) folder, or SPEC:FOLDER "
                                                       "(SPEC:all: a folder whole); default: the run's --data")
    common.add_argument("--num-images", type=int, default=8)
    common.add_argument("--device", default="cpu")
    m = sub.add_parser("mae", parents=[common], help="original / masked / reconstruction / pasted")
    m.add_argument("checkpoint")
    m.add_argument("--mask-ratio", type=float, default=None, help="default: the run's")
    m.add_argument("--seed", type=int, default=0, help="seed of the mask noise")
    a = sub.add_parser("attention", parents=[common], help="last-block attention (ViT) / similarity (Swin)")
    a.add_argument("path", help="sslab checkpoint, exported folder, or official MAE/DINO release file")
    a.add_argument("--threshold", type=float, default=None, help="keep the top mass of each map (DINO: 0.6)")
    a.add_argument("--model", default=None, help="timm architecture of an official release file")
    a.add_argument("--model-kwargs", type=json.loads, default={}, help="JSON timm.create_model kwargs")
    args = ap.parse_args(argv)
    if args.num_images < 1:
        ap.error(f"--num-images must be >= 1, got {args.num_images}")
    if args.command == "attention" and args.threshold is not None and not 0 < args.threshold <= 1:
        ap.error(f"--threshold is a mass in (0, 1], got {args.threshold}")
    with torch.no_grad():
        out = run_mae(args) if args.command == "mae" else run_attention(args)
    print(f"wrote {out}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
