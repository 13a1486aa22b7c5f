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
from ..data.sources import HELD_OUT_SPLIT, WHOLE, locate_split, open_images
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..errors import SslabError
from ..encoders import build_encoder, encoder_spec, encoder_state_dict
from ..engine.checkpoint import list_checkpoints
from ..serialization import safe_load
from .preprocess import eval_image_transform
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
    method: str | None = None        # 'mae' / 'dino' when known (the run's config, or --method): picks protocols


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
                 std: tuple[float, ...] | None = None, method: str | None = None) -> EncoderSource:
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
                         arch=arch, method=method or (config or {}).get("method"))


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
    ap.add_argument("--data", default=None,
                    help="labelled tree with splits (dir, .tar of one, or 'demo'): trains on its 'train' folder, "
                         "scores on 'test', else 'val'; a tree without them is refused")
    ap.add_argument("--train-data", default=None,
                    help="the training split itself (a folder of class folders, or SPEC:FOLDER); overrides --data")
    ap.add_argument("--test-data", default=None,
                    help="the held-out split itself (a folder of class folders, or SPEC:FOLDER); overrides --data")
    ap.add_argument("--model", default=None, help="timm architecture of an official release file, "
                                                  "e.g. vit_base_patch16_224")
    ap.add_argument("--model-kwargs", default={}, type=converter(dict, "model_kwargs"),
                    help="JSON timm.create_model kwargs for --model")
    ap.add_argument("--img-size", type=int, default=None, help="input size (default: the run's)")
    ap.add_argument("--mean", type=converter(tuple[float, ...], "mean", (0.5, 0.5, 0.5)), default=None,
                    help="comma-separated (default: the run's)")
    ap.add_argument("--std", type=converter(tuple[float, ...], "std", (0.25, 0.25, 0.25)), default=None,
                    help="comma-separated (default: the run's)")
    ap.add_argument("--train-size", type=int, default=None, help="class-balanced subset of the training split")
    ap.add_argument("--test-size", type=int, default=None, help="class-balanced subset of the held-out split")
    ap.add_argument("--in-memory", type=parse_bool, nargs="?", const=True, default=False, metavar="true|false",
                    help="decode the images once into memory")
    ap.add_argument("--feature", default=None, help="cls | avg | lastK | parts joined with '+'; default: the "
                                                    "method's protocol (sslab.eval.protocols)")
    ap.add_argument("--method", choices=("mae", "dino"), default=None,
                    help="the pretraining method of an official weight file (sslab runs record it): picks the "
                         "paper's feature and recipe")
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


def source_from_args(args: argparse.Namespace) -> EncoderSource:
    """:func:`open_encoder` with the command-line overrides (``--wandb-project/--wandb-group`` replace the
    pretraining run's, which the result is logged to)."""
    src = open_encoder(args.checkpoint, args.model, args.model_kwargs, args.img_size, args.mean, args.std,
                       args.method)
    wandb = {k: v for k, v in (("project", args.wandb_project), ("group", args.wandb_group)) if v}
    if wandb:
        src.config = {**(src.config or {}), "wandb_override": wandb}
    return src


@dataclass
class LabelledData:
    """A labelled split with the chosen indices (a class-balanced subset or all)."""

    spec: str              # the --data / --train-data / --test-data value
    split: str             # the split folder read: 'train', 'test', 'val', another name, or 'all' (the folder whole)
    dataset: Any
    indices: list[int]
    folder: str | None = None   # the resolved folder (None for the demo set)

    def describe(self) -> dict[str, Any]:
        """What a result records about this split: spec, split, folder, images used of how many."""
        return {"spec": self.spec, "split": self.split, "folder": self.folder, "images": len(self.indices),
                "of": len(self.dataset)}


def open_labelled(spec: str, split: str, channels: int, size: int | None = None, seed: int = 0,
                  in_memory: bool = False) -> LabelledData:
    """A labelled split (``split``: ``train``, ``held_out``, ``all`` or a folder name; see
    :func:`sslab.data.sources.resolve_split`) and a class-balanced subset of ``size`` images (all if None).
    A tree without the split is refused with one line; the root is never used in its place."""
    name, folder = locate_split(spec, split, flat_ok=False)
    ds = open_images(spec, split, in_memory, channels, flat_ok=False)
    return LabelledData(spec, name, ds, subset_indices(dataset_labels(ds), size, seed),
                        None if folder is None else str(folder))


def labelled_splits(data: str | None, train_data: str | None, test_data: str | None, channels: int,
                    train_size: int | None = None, test_size: int | None = None, seed: int = 0,
                    in_memory: bool = False) -> tuple[LabelledData, LabelledData]:
    """(training split, held-out split) of an evaluation: ``train`` and ``test`` (else ``val``) of ``data``,
    or the folders ``train_data`` / ``test_data`` used whole (``SPEC:FOLDER`` picks a folder of a tree).
    Checks both before any image is decoded."""
    if train_data is None and data is None or test_data is None and data is None:
        missing = " and ".join(n for n, v in (("--train-data", train_data), ("--test-data", test_data)) if v is None)
        raise SslabError(f"no data for the evaluation: --data is not given, nor {missing}; pass --data TREE "
                         "(with train/ and test/ or val/) or both --train-data and --test-data")
    tr_spec, tr_split = (train_data, WHOLE) if train_data is not None else (data, "train")
    te_spec, te_split = (test_data, WHOLE) if test_data is not None else (data, HELD_OUT_SPLIT)
    locate_split(tr_spec, tr_split, flat_ok=False)  # both refusals come before the first decoded image
    locate_split(te_spec, te_split, flat_ok=False)
    train = open_labelled(tr_spec, tr_split, channels, train_size, seed, in_memory)
    test = open_labelled(te_spec, te_split, channels, test_size, seed, in_memory)
    if train.folder is not None and train.folder == test.folder:
        raise SslabError(f"the training and held-out splits are the same folder {train.folder}; give disjoint "
                         "--train-data and --test-data")
    return train, test


def splits_from_args(args: argparse.Namespace, src: "EncoderSource") -> tuple[LabelledData, LabelledData]:
    """:func:`labelled_splits` of the common command-line options, in the encoder's channel count."""
    return labelled_splits(args.data, args.train_data, args.test_data, src.in_chans, args.train_size,
                           args.test_size, args.seed, args.in_memory)


def eval_preprocess(src: EncoderSource):
    """The papers' deterministic eval transform (:mod:`sslab.eval.preprocess`) at the encoder's size, mean/std
    and channel count."""
    return eval_image_transform(src.img_size, src.mean, src.std, src.in_chans)


def split_features(src: EncoderSource, train: LabelledData, test: LabelledData, feature: str, batch_size: int,
                   num_workers: int, device, use_cache: bool = True):
    """((features, labels, indices) of ``train``, the same of ``test``): frozen features through the cache."""
    src.encoder.to(device)
    tf = eval_preprocess(src)
    return tuple(cached_features(src.encoder, src.fingerprint, d.dataset, d.spec, d.split, tf, feature, d.indices,
                                 batch_size, num_workers, device, use_cache) for d in (train, test))
