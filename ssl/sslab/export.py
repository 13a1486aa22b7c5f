"""Exported encoders: a folder timm loads with ``timm.create_model("local-dir:" + folder, pretrained=True)``.

    python -m sslab.export runs/mae_demo/checkpoint-00000300.pt exported/mae_demo [--results eval.json]

The folder holds ``model.safetensors`` (the encoder only, in timm's key layout: for MAE no decoder
or mask token, for DINO the teacher backbone without its head), timm's ``config.json``
(``architecture``, ``num_classes`` 0, ``model_args`` with every non-default architecture argument,
``pretrained_cfg`` with input size, mean/std and crop) and ``sslab.json`` + ``README.md`` recording
the method, the run's full config (the recipe), the epochs and the evaluation results known for it.

:func:`load_encoder` reads such a folder, an sslab training checkpoint, or an official MAE/DINO
release file and returns the timm model; every file is read without executing code
(:mod:`sslab.serialization`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file
from torch import nn

from . import __version__
from .config_cli import ArgumentParser, parse_bool
from .encoders import MAE_ONLY_PREFIXES, build_encoder, encoder_spec, encoder_state_dict
from .errors import SslabError
from .serialization import safe_load

WEIGHTS_NAME = "model.safetensors"
# What the README/metadata keep of a stored evaluation result (sslab.eval writes many more fields): the
# numbers with the facts that make them comparable (data and splits, sizes, epochs, which figure is which).
EVAL_HEADLINE = ("evaluator", "mode", "recipe", "feature", "top1", "top5", "top1_best_over_epochs", "best_epoch",
                 "k", "data", "train_size", "test_size", "epochs", "reported")
# Keys of released checkpoints that never belong to a headless encoder.
NON_ENCODER_PREFIXES = MAE_ONLY_PREFIXES + ("head.",)
ENCODER_SOURCE = {"mae": "encoder; decoder and mask token removed",
                  "dino": "teacher backbone; projection head removed"}


def _jsonable(x: Any) -> Any:
    """Tuples -> lists, recursively (JSON has no tuples)."""
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    return x


def data_config(config: dict[str, Any]) -> dict[str, Any]:
    """timm pretrained_cfg fields describing the run's evaluation preprocessing
    (:func:`sslab.data.transforms.eval_transform`: bicubic resize to img/crop_pct, centre crop, normalise)."""
    img = int(config["img_size"])
    return {"input_size": [int(config["in_chans"]), img, img], "interpolation": "bicubic",
            "crop_pct": 0.875 if img >= 64 else 1.0, "crop_mode": "center",
            "mean": list(config["mean"]), "std": list(config["std"])}


def timm_config(config: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """The ``config.json`` timm's ``local-dir:`` loader reads (``timm.models._hub.load_model_config_from_path``).

    ``model_args`` are passed to ``create_model``, so every architecture override of the run
    (img_size, patch_size, in_chans, depth, window_size, ...) goes there.
    """
    name, kwargs = encoder_spec(config)
    model_args = _jsonable({"num_classes": 0, **kwargs})
    dynamic = bool(kwargs.get("dynamic_img_size")) or kwargs.get("strict_img_size") is False
    src = getattr(model, "pretrained_cfg", {}) or {}
    pretrained_cfg = {"tag": f"sslab_{config['method']}", "custom_load": False, **data_config(config),
                      "fixed_input_size": not dynamic, "num_classes": 0, "pool_size": None,
                      "first_conv": src.get("first_conv", "patch_embed.proj"),
                      "classifier": src.get("classifier", "head")}
    out = {"architecture": name, "num_classes": 0, "num_features": int(model.num_features)}
    if isinstance(getattr(model, "global_pool", None), str):
        out["global_pool"] = model.global_pool
    out.update(model_args=model_args, pretrained_cfg=pretrained_cfg)
    return out


def _last_logged_row(run_dir: Path, step: int) -> dict[str, Any]:
    """The run's last ``metrics.jsonl`` row at or before ``step`` (training loss, lr, branch metrics)."""
    path = run_dir / "metrics.jsonl"
    last: dict[str, Any] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get("step", 0) <= step:
                last = row
    return last


def _evaluations(run_dir: Path, checkpoint: Path) -> dict[str, dict[str, Any]]:
    """Headline numbers of the evaluations stored in ``<run_dir>/eval/*.json`` (:mod:`sslab.eval.results`)
    that were made on this very checkpoint file; results of other checkpoints are left out."""
    out: dict[str, dict[str, Any]] = {}
    for f in sorted((run_dir / "eval").glob("*.json")):
        try:
            r = json.loads(f.read_text())
            same = Path(r["checkpoint"]).resolve() == checkpoint.resolve()
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            continue
        if same:
            out[r.get("name", f.stem)] = {k: r[k] for k in EVAL_HEADLINE if k in r}
    return out


def _epochs_done(run_dir: Path, ckpt: dict[str, Any]) -> float:
    """Epochs (fractional) behind a checkpoint, from the run's resolved ``config.json`` when present."""
    try:
        spe = json.loads((run_dir / "config.json").read_text())["steps_per_epoch"]
        return int(ckpt.get("step", 0)) / int(spe)
    except (OSError, KeyError, ValueError, ZeroDivisionError):
        return float(ckpt.get("epoch") or 0)


def _readme(meta: dict[str, Any], timm_cfg: dict[str, Any], out_dir: Path) -> str:
    cfg = meta["config"]
    lines = [
        f"# {out_dir.name}: {meta['method'].upper()} encoder exported by sslab {meta['sslab_version']}",
        "",
        f"- method: {meta['method']} ({meta['encoder_source']})",
        f"- architecture: `{timm_cfg['architecture']}` with `{json.dumps(timm_cfg['model_args'])}`",
        f"- trained: {meta['epochs_done']:g} of {cfg.get('epochs')} epochs ({meta['step']} optimiser steps) "
        f"on `{cfg.get('data')}`",
        f"- input: {cfg.get('in_chans')}x{cfg.get('img_size')}x{cfg.get('img_size')}, "
        f"mean {list(cfg.get('mean', []))}, std {list(cfg.get('std', []))}",
        f"- source checkpoint: `{meta['checkpoint']}` (run folder / file)",
        "",
        "## Evaluation results",
        "",
    ]
    from .eval.results import describe  # here: sslab.eval imports this module

    rows = []
    for k, v in sorted(meta["results"].items()):
        if isinstance(v, dict):
            top1 = v.get("top1")
            if "data" in v:  # an sslab.eval record: data, sizes, epochs, and which figure is which
                settings = describe(v)
            else:
                settings = ", ".join(f"{s} {v[s]}" for s in EVAL_HEADLINE if s not in ("top1", "top5") and s in v)
            rows.append(f"| {k} | {top1 if top1 is not None else ''} | {v.get('top5', '')} | {settings} |")
        else:
            rows.append(f"| {k} | {v} | | |")
    lines += (["| result | top-1 (%) | top-5 (%) | settings |", "|---|---|---|---|", *rows] if rows
              else ["- none recorded"])
    if any(isinstance(v, dict) and "top1_best_over_epochs" in v for v in meta["results"].values()):
        lines += ["", "top-1 is ours (the final epoch; for the cached probe the head chosen on held-out training "
                      "images); 'best over epochs' is the best test accuracy over epochs, the figure the official "
                      "MAE/DINO scripts print (chosen on the test split)."]
    if meta["last_logged"]:
        lines += ["", "## Last logged training row", "", f"`{json.dumps(meta['last_logged'])}`"]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import timm",
        f'model = timm.create_model("local-dir:path/to/{out_dir.name}", pretrained=True)  # features, no head',
        "cfg = timm.data.resolve_data_config({}, model=model)  # input size, mean/std, crop",
        "```",
        "",
        "The full training recipe (every config field) is in `sslab.json`.",
        "",
    ]
    return "\n".join(lines)


def export_encoder(checkpoint_path: str | os.PathLike, out_dir: str | os.PathLike,
                   results: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write the encoder of an sslab checkpoint as a timm ``local-dir`` folder; returns the folder.

    MAE: the ViT without decoder and mask token; DINO: the teacher backbone (the better one, DINO
    paper Sec. 5.2) without projection head. ``results`` (e.g. ``{"knn_top1": 71.3}``) are recorded
    in ``sslab.json`` and ``README.md`` with the evaluations stored for this checkpoint in
    ``<run_dir>/eval/*.json`` and the run's last logged training row.
    """
    checkpoint_path, out = Path(checkpoint_path), Path(out_dir)
    if (out / WEIGHTS_NAME).exists() and not overwrite:
        raise SslabError(f"{out} already holds an exported encoder; choose another folder or pass "
                              "overwrite=True (--overwrite)")
    ckpt = safe_load(checkpoint_path)
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("config"), dict) and "method" in ckpt["config"]):
        raise SslabError(f"{checkpoint_path} is not an sslab training checkpoint (no 'config' with a 'method'); "
                         "export works on the checkpoint-*.pt files of a run")
    config = ckpt["config"]
    model = build_encoder(config)
    state = encoder_state_dict(ckpt)
    model.load_state_dict(state, strict=True)  # the export holds exactly the encoder's keys
    # Save the model's own state dict: contiguous CPU tensors, non-persistent buffers excluded.
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}

    step = int(ckpt.get("step", 0))
    meta = {
        "sslab_version": __version__, "method": config["method"],
        "encoder_source": ENCODER_SOURCE.get(config["method"], "encoder"),
        # The run folder's name and the file, never a local absolute path (the folder is meant to be shared).
        "checkpoint": f"{checkpoint_path.resolve().parent.name}/{checkpoint_path.name}", "step": step,
        "epoch": ckpt.get("epoch"),
        "epochs_done": _epochs_done(checkpoint_path.parent, ckpt),
        "results": {**_evaluations(checkpoint_path.parent, checkpoint_path), **(results or {})},
        "last_logged": _last_logged_row(checkpoint_path.parent, step),
        "config": config,
    }
    meta = portable(meta)
    cfg_json = timm_config(config, model)

    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_NAME), metadata={"format": "pt", "sslab_method": config["method"]})
    (out / "config.json").write_text(json.dumps(cfg_json, indent=2))
    (out / "sslab.json").write_text(json.dumps(meta, indent=2, default=str))
    (out / "README.md").write_text(model_card_metadata(meta, cfg_json) + _readme(meta, cfg_json, out))
    for name in (WEIGHTS_NAME, "config.json", "sslab.json", "README.md"):
        os.chmod(out / name, 0o644)  # shared with others (the Hub, a group folder), whatever the umask
    return out


def portable(x: Any) -> Any:
    """``x`` with every absolute local path replaced by its last component (``/home/me/data/cifar.tar`` ->
    ``cifar.tar``): an export names where it came from without leaking or depending on this machine."""
    if isinstance(x, dict):
        return {k: portable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [portable(v) for v in x]
    if isinstance(x, str) and (os.path.isabs(x) or x.startswith("~")):
        return Path(x).name
    return x


def model_card_metadata(meta: dict[str, Any], timm_cfg: dict[str, Any]) -> str:
    """The model card's YAML front matter, as the Hub and timm read it: ``library_name: timm``, tags, the
    license, and a ``model-index`` entry per evaluation result with its settings (evaluator, data, feature, k)."""
    cfg = meta["config"]
    lines = ["---", "library_name: timm", "license: apache-2.0", "pipeline_tag: image-feature-extraction",
             "tags:", "- image-feature-extraction", "- timm", "- sslab", f"- {meta['method']}",
             "- self-supervised"]
    results = [(name, r) for name, r in sorted(meta["results"].items())
               if isinstance(r, dict) and isinstance(r.get("top1"), (int, float))]
    if results:
        lines += ["model-index:", f"- name: {json.dumps(timm_cfg['architecture'] + '.sslab_' + meta['method'])}",
                  "  results:"]
        for name, r in results:
            settings = ", ".join(f"{k} {r[k]}" for k in ("evaluator", "feature", "k") if k in r)
            data = r.get("data", cfg.get("data"))
            if isinstance(data, dict):  # an sslab.eval record: the held-out split it was scored on
                data = f"{data['test'].get('spec')}:{data['test'].get('split')}"
            lines += ["  - task:", "      type: image-classification",
                      f"      name: {json.dumps(name + (' (' + settings + ')' if settings else ''))}",
                      "    dataset:", f"      name: {json.dumps(str(data))}",
                      f"      type: {json.dumps(str(data))}",
                      "    metrics:", "    - type: accuracy", f"      value: {float(r['top1'])}",
                      f"      name: {json.dumps('top-1 (%)')}"]
    return "\n".join(lines + ["---", ""]) + "\n"


def log_export_artifact(folder: str | os.PathLike, checkpoint_path: str | os.PathLike, mode: str = "auto") -> bool:
    """Log an exported folder as a wandb artifact (type ``model``) from a short ``export`` run in the
    pretraining run's project and group (read from its run folder). Returns whether it was logged; never fatal."""
    from .engine.logger import offline_sync_command, resolve_wandb_mode, wandb_target

    folder, run_dir = Path(folder), Path(checkpoint_path).resolve().parent
    mode = resolve_wandb_mode(mode)
    if mode == "disabled":
        return False
    try:
        recorded = json.loads((run_dir / "wandb.json").read_text())
    except (OSError, json.JSONDecodeError):
        recorded = None
    meta = json.loads((folder / "sslab.json").read_text())
    target = recorded or wandb_target(meta["config"], run_dir)
    try:
        import wandb

        run = wandb.init(project=target["project"], entity=target["entity"], group=target["group"],
                         job_type="export", name=f"{target['name']}/export", dir=str(run_dir), mode=mode,
                         reinit="create_new", settings=wandb.Settings(console="off", silent=True))
        art = wandb.Artifact(f"{target['name']}-encoder", type="model",
                             metadata={k: meta[k] for k in ("method", "step", "epochs_done", "results", "checkpoint")})
        art.add_dir(str(folder))
        run.log_artifact(art)
        sync = offline_sync_command(run) if mode == "offline" else None
        run.finish()
        if sync:
            print(f"wandb run saved offline; upload it with: {sync}", file=sys.stderr)
        return True
    except Exception as e:  # the export is on disk already
        print(f"sslab: wandb artifact skipped ({type(e).__name__}: {e})", file=sys.stderr)
        return False


def push_to_hub(folder: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload an exported folder to the Hugging Face Hub repository ``repo_id`` (created if missing) through
    ``huggingface_hub``; ``timm.create_model("hf-hub:" + repo_id, pretrained=True)`` then loads it. Returns
    the commit URL."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / WEIGHTS_NAME).is_file():
        raise SslabError(f"{folder} holds no {WEIGHTS_NAME}; export first (sslab export CHECKPOINT {folder})")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                               allow_patterns=[WEIGHTS_NAME, "config.json", "sslab.json", "README.md"],
                               commit_message=f"sslab {__version__}: {folder.name}")
    return str(getattr(commit, "commit_url", commit))


def _strip(sd: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}


def official_encoder_state_dict(obj: Any, path: str | os.PathLike = "") -> dict[str, torch.Tensor]:
    """Encoder weights (timm key layout) from an official release file's contents.

    - MAE ``mae_pretrain_vit_*.pth`` / ``mae_visualize_vit_*.pth``: ``{"model": ...}`` (decoder dropped);
    - DINO full checkpoint: ``{"student", "teacher", ...}``: the teacher, ``module.``/``backbone.`` stripped;
    - DINO ``dino_*_pretrain.pth`` or any bare state dict of ViT keys.
    """
    if isinstance(obj, dict) and "teacher" in obj and "student" in obj:
        sd = obj["teacher"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        sd = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        sd = obj["state_dict"]
    else:
        sd = obj
    if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        raise SslabError(f"{path}: not a state dict nor an MAE/DINO release layout "
                         "({'model': ...}, {'teacher': ...}, or a bare state dict of tensors)")
    sd = _strip(sd, "module.")
    if any(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    return {k: v for k, v in sd.items() if not k.startswith(NON_ENCODER_PREFIXES)}


def _load_state_strict(model: nn.Module, sd: dict[str, torch.Tensor], path: Path, name: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
             for k in sd if k in own and sd[k].shape != own[k].shape]
    if missing or unexpected or shape:
        raise SslabError(
            f"{path} does not fit timm {name!r}: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, shape mismatches {shape[:5]}; "
            "pass the release's architecture and its arguments, e.g. model='vit_small_patch16_224' or "
            "model='vit_base_patch16_224', img_size=..., patch_size=..."
        )
    model.load_state_dict(sd, strict=True)


# ViT width -> (timm size name, heads): the widths of the released ViTs (heads are not in the shapes).
VIT_WIDTHS = {192: ("tiny", 3), 384: ("small", 6), 768: ("base", 12), 1024: ("large", 16), 1280: ("huge", 16)}


def infer_vit_architecture(sd: dict[str, torch.Tensor], path: str | os.PathLike = "") -> tuple[str, dict[str, Any]]:
    """(timm name, create_model kwargs) of a plain ViT state dict (an official MAE/DINO release), from the
    shapes: ``patch_embed.proj.weight`` (D, C, p, p) gives width, channels and patch; ``pos_embed``
    (1, 1 + g*g, D) the position grid g and so the image size g*p; ``blocks.<i>`` the depth;
    ``blocks.0.mlp.fc1.weight`` the MLP ratio. Says in one line (stderr) what it inferred."""
    try:
        d, c, ph, pw = sd["patch_embed.proj.weight"].shape
        tokens = sd["pos_embed"].shape[1] - (1 if "cls_token" in sd else 0)
        depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
        hidden = sd["blocks.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError, AttributeError) as e:
        raise SslabError(f"{path}: cannot infer the architecture from its tensors (no ViT patch_embed / pos_embed / "
                         f"blocks: {e}); pass model=..., e.g. load_encoder(path, model='vit_base_patch16_224')") from e
    grid = int(round(tokens ** 0.5))
    if d not in VIT_WIDTHS or ph != pw or grid * grid != tokens:
        raise SslabError(f"{path}: a ViT of width {d}, patch {ph}x{pw}, {tokens} positions is not one of the released "
                         f"sizes (widths {sorted(VIT_WIDTHS)}, square grids); pass model=... and its kwargs")
    size, heads = VIT_WIDTHS[int(d)]
    name = f"vit_{size}_patch16_224"
    kwargs: dict[str, Any] = {"img_size": grid * ph, "patch_size": int(ph), "in_chans": int(c), "depth": depth,
                              "num_heads": heads, "mlp_ratio": hidden / d}
    if "fc_norm.weight" in sd and "norm.weight" not in sd:
        kwargs["global_pool"] = "avg"
    print(f"sslab: {Path(path).name}: inferred {name} with width {d}, depth {depth}, patch {ph}, "
          f"{grid}x{grid} positions ({grid * ph} px), {c} channels, mlp ratio {hidden / d:g} "
          f"({heads} heads assumed for width {d})", file=sys.stderr)
    return name, kwargs


def load_encoder(path: str | os.PathLike, model: str | None = None, **model_kwargs: Any) -> nn.Module:
    """The timm encoder (``num_classes=0``, eval mode) stored at ``path``.

    ``path`` is an exported folder (:func:`export_encoder`), an sslab training checkpoint, or an
    official MAE/DINO release file; the releases do not record their architecture, so it is inferred
    from the tensor shapes (:func:`infer_vit_architecture`, one line on stderr says what), or given:
    ``load_encoder("mae_pretrain_vit_base.pth", model="vit_base_patch16_224")``.
    ``model_kwargs`` go to ``timm.create_model``. Nothing in the file is executed.
    """
    p = Path(path)
    if p.is_dir():
        if not (p / "config.json").is_file() or not (p / WEIGHTS_NAME).is_file():
            raise SslabError(f"{p} is not an exported encoder folder (needs config.json and {WEIGHTS_NAME}); "
                                    "write one with python -m sslab.export CHECKPOINT OUT_DIR")
        # timm reads model.safetensors first (timm.models._hub._PREFERRED_FILES): no pickle involved.
        return timm.create_model(f"local-dir:{p}", pretrained=True, **model_kwargs).eval()
    obj = safe_load(p)
    if isinstance(obj, dict) and isinstance(obj.get("config"), dict) and "method" in obj["config"]:
        config = obj["config"]
        if model is not None and model != config["model"]:
            raise SslabError(f"{p} is an sslab checkpoint of {config['model']!r}, not {model!r}; leave model out")
        enc = build_encoder(config, **model_kwargs)
        enc.load_state_dict(encoder_state_dict(obj), strict=True)
        # Record the run's preprocessing where timm.data.resolve_data_config looks for it.
        dc = {**data_config(config), "tag": f"sslab_{config['method']}", "num_classes": 0}
        dc["input_size"] = tuple(dc["input_size"])
        enc.pretrained_cfg = {**(getattr(enc, "pretrained_cfg", None) or {}), **dc}
        return enc.eval()
    sd = official_encoder_state_dict(obj, p)
    if model is None:
        model, inferred = infer_vit_architecture(sd, p)
        model_kwargs = {**inferred, **model_kwargs}
    enc = timm.create_model(model, pretrained=False, num_classes=0, **model_kwargs)
    _load_state_strict(enc, sd, p, model)
    if "img_size" in model_kwargs or "in_chans" in model_kwargs:  # keep resolve_data_config truthful
        c, h, w = enc.pretrained_cfg.get("input_size", (3, 224, 224))
        size = model_kwargs.get("img_size", (h, w))
        size = (size, size) if isinstance(size, int) else tuple(size)
        enc.pretrained_cfg = {**enc.pretrained_cfg, "input_size": (model_kwargs.get("in_chans", c), *size)}
    return enc.eval()


def main(argv: list[str] | None = None) -> Path:
    """``python -m sslab.export CHECKPOINT OUT_DIR [--results RESULTS.json] [--overwrite]``."""
    ap = ArgumentParser(prog="python -m sslab.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="an sslab training checkpoint (checkpoint-*.pt)")
    ap.add_argument("out_dir", help="folder to write (model.safetensors, config.json, sslab.json, README.md)")
    ap.add_argument("--results", default=None, help="JSON file of evaluation results to record with the encoder")
    ap.add_argument("--overwrite", type=parse_bool, nargs="?", const=True, default=False, metavar="true|false",
                    help="replace an encoder already in OUT_DIR")
    ap.add_argument("--push-to-hub", metavar="REPO", default=None,
                    help="also upload the folder to this Hugging Face Hub model repo (user/name; needs a login)")
    ap.add_argument("--private", type=parse_bool, nargs="?", const=True, default=False, metavar="true|false",
                    help="create the Hub repo private")
    ap.add_argument("--wandb-artifact", type=parse_bool, nargs="?", const=True, default=False, metavar="true|false",
                    help="also log the folder as a wandb artifact (type model) in the run's project and group")
    ap.add_argument("--wandb-mode", default="auto", help="auto | online | offline | disabled (for --wandb-artifact)")
    args = ap.parse_args(argv)
    try:
        results = json.loads(Path(args.results).read_text()) if args.results else None
    except (OSError, json.JSONDecodeError) as e:
        raise SslabError(f"--results {args.results}: cannot read a JSON file ({e}); give a JSON file such as "
                         "an evaluation result") from None
    if results is not None and not isinstance(results, dict):
        raise SslabError(f"--results {args.results} must hold a JSON object; e.g. {{\"knn_top1\": 71.3}}")
    out = export_encoder(args.checkpoint, args.out_dir, results=results, overwrite=args.overwrite)
    print(f"wrote {out} (load with timm.create_model('local-dir:{out}', pretrained=True))", file=sys.stderr)
    if args.wandb_artifact:
        log_export_artifact(out, args.checkpoint, args.wandb_mode)
    if args.push_to_hub:
        url = push_to_hub(out, args.push_to_hub, private=args.private)
        print(f"uploaded to {url} (load with timm.create_model('hf-hub:{args.push_to_hub}', pretrained=True))",
              file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
