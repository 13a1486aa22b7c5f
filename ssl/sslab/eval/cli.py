"""What every evaluator command shares: open the encoder (checkpoint, run folder, exported folder or
official release file), its preprocessing, the labelled data, and the common command-line options."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..config_cli import adopt_style, converter, parse_bool
from ..errors import SslabError
from ..data.sources import open_images
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from ..encoders import build_encoder, encoder_spec, encoder_state_dict
from ..engine.checkpoint import list_checkpoints
from ..serialization import safe_load
from .features import cached_features, dataset_labels, file_fingerprint, subset_indices

log = logging.getLogger("sslab")


@dataclass
class EncoderSource:
    """A frozen encoder and what is known about where it came from."""

    encoder: nn.Module
    path: Path                       # the file or folder the weights were read from
    fingerprint: str                 # :func:`~sslab.eval.features.file_fingerprint` of ``path``
    run_dir: Path                    # where results go by default
    config: dict[str, Any] | None    # the pretraining run's config when known (sslab checkpoint or export)
    img_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    arch: tuple[str, dict[str, Any]] | None = None   # (timm name, create_model kwargs) to rebuild it with a head


def _load(path: Path, model: str | None, model_kwargs: dict[str, Any]
          ) -> tuple[nn.Module, dict[str, Any] | None, tuple[str, dict[str, Any]] | None]:
    """(encoder, run config or None, (timm name, create_model kwargs) or None) of a file or folder."""
    if path.is_file():
        obj = safe_load(path)
        if isinstance(obj, dict) and isinstance(obj.get("config"), dict) and "method" in obj["config"]:
            config = obj["config"]  # an sslab checkpoint: read once, rebuild the run's encoder
            encoder = build_encoder(config)
            encoder.load_state_dict(encoder_state_dict(obj), strict=True)
            return encoder, config, encoder_spec(config)
        del obj
    try:  # exported folders and official release files
        from ..export import load_encoder
    except ImportError as e:  # pragma: no cover - a tree without sslab.export reads checkpoints only
        raise SslabError(f"{path} is not an sslab checkpoint, and sslab.export (exported folders, official "
                         "files) is not available") from e
    encoder = load_encoder(path, model=model, **model_kwargs)
    if path.is_dir():
        timm_cfg = json.loads((path / "config.json").read_text())
        args = {k: v for k, v in timm_cfg.get("model_args", {}).items() if k != "num_classes"}
        meta = json.loads((path / "sslab.json").read_text()) if (path / "sslab.json").is_file() else {}
        return encoder, meta.get("config"), (timm_cfg["architecture"], args)
    return encoder, None, (model, dict(model_kwargs)) if model else None


def open_encoder(path: str | Path, model: str | None = None, model_kwargs: dict[str, Any] | None = None,
                 img_size: int | None = None, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None) -> EncoderSource:
    """Load the encoder at ``path``: a run folder (its newest checkpoint), a ``checkpoint-*.pt``, an
    exported folder, or an official MAE/DINO file (give ``model``, its timm name). The preprocessing
    is the run's (image size, mean/std) unless overridden; official files default to ImageNet's."""
    p = Path(path).expanduser()
    if not p.exists():
        raise SslabError(f"{p} does not exist; give a checkpoint-*.pt, a run folder, an exported folder "
                                "or an official weight file")
    if p.is_dir() and list_checkpoints(p):
        p = list_checkpoints(p)[-1]
    encoder, config, arch = _load(p, model, dict(model_kwargs or {}))
    run_dir = p if p.is_dir() else p.parent
    pcfg = getattr(encoder, "pretrained_cfg", None) or {}
    if config is not None:
        d_img, d_mean, d_std = int(config["img_size"]), tuple(config["mean"]), tuple(config["std"])
    elif str(pcfg.get("tag", "")).startswith("sslab"):
        d_img, d_mean, d_std = int(pcfg["input_size"][-1]), tuple(pcfg["mean"]), tuple(pcfg["std"])
    else:  # official MAE/DINO releases were trained with ImageNet statistics at the model's size
        d_img, d_mean, d_std = int(_model_img_size(encoder)), IMAGENET_MEAN, IMAGENET_STD
    in_chans = int(_in_chans(encoder))
    mean, std = tuple(mean or d_mean), tuple(std or d_std)
    if len(mean) != in_chans or len(std) != in_chans:
        raise SslabError(f"mean/std have {len(mean)}/{len(std)} values but the encoder takes {in_chans} channels; "
                         "pass --mean/--std with one value per channel")
    return EncoderSource(encoder=encoder.eval(), path=p, fingerprint=file_fingerprint(p), run_dir=run_dir,
                         config=config, img_size=int(img_size or d_img), in_chans=in_chans, mean=mean, std=std,
                         arch=arch)


def _in_chans(encoder: nn.Module) -> int:
    return encoder.patch_embed.proj.in_channels


def _model_img_size(encoder: nn.Module) -> int:
    size = encoder.patch_embed.img_size
    return size[0] if isinstance(size, (tuple, list)) else size


def add_common_args(ap: argparse.ArgumentParser) -> None:
    """Options every evaluator command takes, in the training commands' style: booleans ``true/false``,
    ``--name=value``, no prefix matching, mistakes as one ``sslab: error:`` line (``--debug``: traceback)."""
    adopt_style(ap)
    ap.add_argument("checkpoint", help="checkpoint-*.pt, a run folder (newest checkpoint), an exported encoder "
                                       "folder, or an official MAE/DINO weight file (with --model)")
    ap.add_argument("--data", required=True, help="labelled ImageFolder dir, a .tar of one, or 'demo'; the "
                                                  "'train' and 'test' splits are used")
    ap.add_argument("--model", default=None, help="timm architecture of an official release file, "
                                                  "e.g. vit_base_patch16_224")
    ap.add_argument("--model-kwargs", default={}, type=converter(dict, "model_kwargs"),
                    help="JSON timm.create_model kwargs for --model")
    ap.add_argument("--img-size", type=int, default=None, help="input size (default: the run's)")
    ap.add_argument("--mean", type=_floats, default=None, help="comma-separated (default: the run's)")
    ap.add_argument("--std", type=_floats, default=None, help="comma-separated (default: the run's)")
    ap.add_argument("--train-size", type=int, default=None, help="class-balanced subset of the train split")
    ap.add_argument("--test-size", type=int, default=None, help="class-balanced subset of the test split")
    ap.add_argument("--in-memory", type=parse_bool, nargs="?", const=True, default=False, metavar="true|false",
                    help="decode the images once into memory")
    ap.add_argument("--feature", default="cls", help="cls | avg | lastK | parts joined with '+' (last4: DINO ViT-S)")
    ap.add_argument("--batch-size", type=int, default=256, help="images per forward pass and process")
    ap.add_argument("--num-workers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-cache", type=parse_bool, nargs="?", const=True, default=False, metavar="true|false",
                    help="recompute features instead of using the cache")
    ap.add_argument("--output-dir", default=None, help="where the JSON result goes (default: the run folder)")
    ap.add_argument("--name", default=None, help="result file name (default: evaluator and feature)")
    ap.add_argument("--wandb-mode", default="auto", help="auto | online | offline | disabled")
    ap.add_argument("--wandb-project", default=None, help="wandb project (default: the pretraining run's)")
    ap.add_argument("--wandb-group", default=None, help="wandb group (default: the pretraining run's)")


def _floats(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes comma-separated numbers, got {s!r}; e.g. 0.5,0.5,0.5") from None


def source_from_args(args: argparse.Namespace) -> EncoderSource:
    """:func:`open_encoder` with the command-line overrides (``--wandb-project/--wandb-group`` replace the
    pretraining run's, which the result is logged to)."""
    src = open_encoder(args.checkpoint, args.model, args.model_kwargs, args.img_size, args.mean, args.std)
    wandb = {k: v for k, v in (("wandb_project", args.wandb_project), ("wandb_group", args.wandb_group)) if v}
    if wandb:
        src.config = {**(src.config or {}), **wandb}
    return src


@dataclass
class LabelledData:
    """A labelled split with the chosen indices (a class-balanced subset or all)."""

    spec: str
    split: str
    dataset: Any
    indices: list[int]


def open_labelled(spec: str, split: str, channels: int, size: int | None = None, seed: int = 0,
                  in_memory: bool = False) -> LabelledData:
    """``open_images(spec, split)`` and a class-balanced subset of ``size`` images (all if None)."""
    ds = open_images(spec, split, in_memory, channels)
    return LabelledData(spec, split, ds, subset_indices(dataset_labels(ds), size, seed))


def eval_preprocess(src: EncoderSource):
    """The deterministic eval transform of the encoder's run (resize, centre crop, normalise)."""
    return eval_transform(src.img_size, src.mean, src.std)


def split_features(src: EncoderSource, train: LabelledData, test: LabelledData, feature: str, batch_size: int,
                   num_workers: int, device, use_cache: bool = True):
    """((features, labels, indices) of ``train``, the same of ``test``): frozen features through the cache."""
    src.encoder.to(device)
    tf = eval_preprocess(src)
    return tuple(cached_features(src.encoder, src.fingerprint, d.dataset, d.spec, d.split, tf, feature, d.indices,
                                 batch_size, num_workers, device, use_cache) for d in (train, test))
