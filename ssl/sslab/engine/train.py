"""The training engine: one loop for CPU, one GPU, many GPUs and many nodes, on accelerate.

dataset -> seeded transform -> sharded batches -> branch.loss -> backward (accumulated) ->
optimiser step with per-iteration lr / wd -> branch.after_step -> log -> checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from ..branches import BRANCHES
from ..checks import check_batch, check_config
from ..config import Config, encoder_kwargs, parse_args
from ..data.pipeline import SeededTransformDataset
from ..data.sampler import ShardedBatchSampler
from ..data.sources import open_images
from ..errors import SslabError
from ..optim import adamw, clip_per_param
from ..schedules import constant, warmup_cosine
from .checkpoint import check_space_to_continue, find_resume, list_checkpoints, save_checkpoint
from ..models.timm_create import create_timm_model
from .distributed import make_accelerator
from .hooks import EpochEnd, EpochHook, run_epoch_hooks
from .logger import RunLogger, sweep_trial_dir
from .nonfinite import NonFiniteGuard, refuse_nonfinite
from .preemption import StopSignals
from .progress import Progress
from .run_lock import RunLock
from .run_record import keep_console_log, write_run_record
from .same_run import check_effective_batch, check_same_run, finished_message, load_model_state

log = logging.getLogger("sslab")


def validate(cfg: Config) -> None:
    """Reject a config that cannot run, with the value and the fix, before anything is built."""
    check_config(cfg)  # the torch-free checks (sslab/checks.py); sslab.main ran them already
    if cfg.method not in BRANCHES:
        raise SslabError(f"method {cfg.method!r} is not one of {sorted(BRANCHES)}; pass --method mae or --method dino")
    for name in ("epochs", "batch_size", "accum_iter", "log_every", "keep_last"):
        if getattr(cfg, name) < 1:
            raise SslabError(f"{name} must be >= 1, got {getattr(cfg, name)}; pass --{name.replace('_', '-')} 1 or more")
    if cfg.warmup_epochs < 0 or cfg.warmup_epochs > cfg.epochs:
        raise SslabError(f"warmup_epochs {cfg.warmup_epochs} is not between 0 and epochs {cfg.epochs}; "
                         "lower --warmup-epochs or raise --epochs")
    if cfg.clip_grad_mode not in ("global", "per_param"):
        raise SslabError(f"clip_grad_mode {cfg.clip_grad_mode!r} is not 'global' or 'per_param'; "
                         "pass --clip-grad-mode global or per_param")
    if cfg.vis_every_epochs < 0 or cfg.vis_num_images < 1:
        raise SslabError(f"vis_every_epochs must be >= 0 (0: never) and vis_num_images >= 1, got "
                         f"{cfg.vis_every_epochs} and {cfg.vis_num_images}; pass --vis-every-epochs 0 or a positive "
                         "--vis-num-images")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise SslabError(f"max_steps must be >= 1 or none, got {cfg.max_steps}; pass --max-steps none or 1 or more")
    if len(cfg.mean) != cfg.in_chans or len(cfg.std) != cfg.in_chans:
        raise SslabError(f"mean/std have {len(cfg.mean)}/{len(cfg.std)} values for in_chans {cfg.in_chans}; "
                         "give one per channel (--mean 0.5 --std 0.5 for one channel)")
    with torch.device("meta"):  # weightless, fast: a wrong timm name or keyword fails here, before the data
        create_timm_model(cfg.model, pretrained=False, num_classes=0, **encoder_kwargs(cfg))
    if not cfg.resume and list_checkpoints(cfg.output_dir):
        raise SslabError(
            f"output_dir {cfg.output_dir} already holds checkpoints; pass --resume auto to continue that run, "
            "or choose another --output-dir"
        )


def resolve_accum_iter(cfg: Config, world: int) -> int:
    """``accum_iter`` that reaches ``effective_batch_size`` with this many processes (or the given one)."""
    if cfg.effective_batch_size is None:
        return cfg.accum_iter
    check_batch(cfg, world)
    per_step = cfg.batch_size * world
    if cfg.effective_batch_size % per_step:
        raise SslabError(
            f"effective_batch_size {cfg.effective_batch_size} is not a multiple of batch_size {cfg.batch_size} x "
            f"{world} processes = {per_step}; change --batch-size or --effective-batch-size"
        )
    accum = cfg.effective_batch_size // per_step
    if cfg.accum_iter not in (1, accum):
        raise SslabError(f"accum_iter {cfg.accum_iter} contradicts effective_batch_size {cfg.effective_batch_size} "
                         f"with {world} x {cfg.batch_size}; set only one of them")
    return accum


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
            "python_pos": random.getstate()[2], "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
            "numpy_pos": int(np.random.get_state()[2])}


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate((3, tuple(s["python"]), s["python_pos"]))
    np.random.set_state(("MT19937", s["numpy"].numpy().astype(np.uint32), s["numpy_pos"], 0, 0.0))


def train(cfg: Config, hooks: Sequence[EpochHook] = ()) -> dict[str, Any]:
    """Run (or resume) the pretraining described by ``cfg``, calling ``hooks`` at each epoch end
    (:mod:`.hooks`; ``sslab.train`` adds the ones the config asks for); returns a summary of the run.

    Meanwhile the main process holds the run-directory lock (:mod:`.run_lock`), and SIGTERM,
    SIGUSR1 or SIGINT stop the run after the current step with one checkpoint (:mod:`.preemption`).
    """
    cfg = cfg.replace(output_dir=sweep_trial_dir(cfg.output_dir))  # a wandb sweep trial: its own folder
    validate(cfg)
    with StopSignals() as stop, contextlib.ExitStack() as held:
        if int(os.environ.get("RANK", "0")) == 0:  # the main process, known before the process group exists
            stop.on_abort.append(held.enter_context(RunLock(cfg.output_dir)).release)
        return _train(cfg, hooks, stop)


def _train(cfg: Config, hooks: Sequence[EpochHook], stop: StopSignals) -> dict[str, Any]:
    # Before any compute: the newest readable checkpoint, the same run (config), room for the next save.
    resume_path, state = find_resume(cfg.resume, cfg.output_dir, report=int(os.environ.get("RANK", "0")) == 0) \
        or (None, {})
    if resume_path is not None:
        check_same_run(state.get("config", cfg.to_dict()), cfg, resume_path)
        check_space_to_continue(cfg.output_dir, resume_path)
    acc = make_accelerator(cfg.mixed_precision)
    world, rank, main = acc.num_processes, acc.process_index, acc.is_main_process
    stop.attach()
    cfg = cfg.replace(accum_iter=resolve_accum_iter(cfg, world))
    if resume_path is not None:
        check_effective_batch(state["effective_batch"], cfg.batch_size * cfg.accum_iter * world, resume_path)
    set_seed(cfg.seed)  # same init on every process; DDP also broadcasts rank 0's weights

    # The data first: a wrong folder or a bad file is reported before the model is built.
    source = open_images(cfg.data, "train", cfg.in_memory, cfg.in_chans, cfg.skip_bad_files, flat_ok=True,
                         encoded=cfg.augment_on_device)
    branch = BRANCHES[cfg.method](cfg)
    dataset = SeededTransformDataset(source, branch.transform(source), cfg.seed, cfg.skip_bad_files)
    skipped_up_front = len(getattr(source, "bad_files", ()))  # named and dropped by the pre-check (data/file_check)
    if main:  # after the data checks, so that a user's mistake stays the only line on stderr
        log.info(acc.precision_note)
    sampler = ShardedBatchSampler(len(dataset), cfg.batch_size, world, rank, cfg.seed)
    steps_per_epoch = len(sampler) // cfg.accum_iter
    if steps_per_epoch < 1:
        raise SslabError(
            f"--data {cfg.data} gives {len(sampler)} batches of {cfg.batch_size} x {world} per epoch, fewer than the "
            f"accum_iter {cfg.accum_iter} micro-batches of one optimiser step; use a larger dataset or a smaller "
            "--effective-batch-size / --accum-iter")
    workers = min(cfg.num_workers, os.cpu_count() or 1)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=acc.device.type == "cuda",
                        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
                        # Its own generator: starting an iterator would otherwise draw from the global RNG,
                        # and a resumed run (new iterator mid-epoch) would then diverge in drop path etc.
                        generator=torch.Generator().manual_seed(cfg.seed))

    eff_batch = cfg.batch_size * cfg.accum_iter * world
    lr = cfg.lr if cfg.lr is not None else cfg.base_lr * eff_batch / 256
    total_steps = cfg.epochs * steps_per_epoch
    lr_sched = warmup_cosine(lr, cfg.min_lr, cfg.epochs, steps_per_epoch, cfg.warmup_epochs)
    wd_sched = (constant(cfg.weight_decay, total_steps) if cfg.weight_decay_end is None
                else warmup_cosine(cfg.weight_decay, cfg.weight_decay_end, cfg.epochs, steps_per_epoch))
    last_step = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps

    if resume_path is not None and int(state["step"]) >= last_step:  # nothing to train: say so, touch nothing
        return {"run_dir": cfg.output_dir, "losses": [], "step": int(state["step"]),
                "finished": finished_message(cfg, resume_path, int(state["step"]), last_step, total_steps)}

    model = branch.model
    optimizer = adamw(model, lr, cfg.weight_decay, tuple(cfg.betas), branch.no_weight_decay(), cfg.fused_optimizer)
    model, optimizer = acc.prepare(model, optimizer)  # `model` may now be DDP-wrapped; branch.model is not
    branch.setup(acc.device, steps_per_epoch, acc.mixed_precision)

    step = 0
    if resume_path is not None:
        load_model_state(acc.unwrap_model(model), state["model"], resume_path)
        optimizer.load_state_dict(state["optimizer"])
        if acc.scaler is not None and state.get("scaler"):
            acc.scaler.load_state_dict(state["scaler"])
        branch.load_state_dict(state["branch"])
        _set_rng_state(state["rng"])
        step = int(state["step"])
        log.info("resumed from %s at step %d", resume_path, step)

    run_dir = Path(cfg.output_dir)
    resolved = {**cfg.to_dict(), "lr_resolved": lr, "effective_batch": eff_batch, "world_size": world,
                "steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "dataset_size": len(dataset)}
    logger = console = None
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(resolved, indent=2))
        write_run_record(run_dir, world)  # command, git commit, versions, host, world size
        console = keep_console_log(run_dir)
        logger = RunLogger(run_dir, resolved, cfg.wandb_mode, cfg.wandb_project, cfg.wandb_entity,
                           cfg.wandb_group, cfg.wandb_name, cfg.wandb_tags, resumed_step=step)

    def checkpoint() -> None:
        acc.wait_for_everyone()
        error = None
        if main:
            state = {"model": acc.unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(),
                     "scaler": acc.scaler.state_dict() if acc.scaler is not None else {},
                     "branch": branch.state_dict(), "rng": _rng_state(), "step": step,
                     "epoch": step // steps_per_epoch, "effective_batch": eff_batch, "config": cfg.to_dict(),
                     "nonfinite_skipped": guard.skipped}
            try:
                refuse_nonfinite(state, step, run_dir)
                save_checkpoint(state, run_dir, step, cfg.keep_last)
            except SslabError as e:  # full disk, non-finite state: every process must stop, not wait
                error = e
        # An all-reduce instead of the closing barrier: every process learns whether the save failed.
        if acc.reduce(torch.tensor(float(error is not None), device=acc.device), reduction="sum").item():
            raise error or SslabError(f"the main process could not write the checkpoint of step {step} (its "
                                      "message is in its log); see there")

    bar = Progress(cfg, main, step, last_step, eff_batch, steps_per_epoch)  # a tqdm bar on a TTY, else log lines
    bar.start(len(dataset), eff_batch, lr, total_steps, acc.mixed_precision, world, run_dir)  # the one used
    window_loss, step_loss = torch.zeros((), device=acc.device), torch.zeros((), device=acc.device)
    guard = NonFiniteGuard(cfg.nonfinite_skip_limit, acc.scaler is not None, acc.device,
                           int(state.get("nonfinite_skipped", 0)))
    window_micro, window_good, window_t0, skipped_total = 0, 0, time.perf_counter(), 0
    params = [p for p in model.parameters() if p.requires_grad]
    summary: dict[str, Any] = {"run_dir": str(run_dir), "losses": []}
    model.train()
    saved_step = step if resume_path is not None else -1
    stopped = stop.agreed()  # a signal during the setup stops before the first step
    while step < last_step and not stopped:
        epoch = step // steps_per_epoch
        micro_start = (step % steps_per_epoch) * cfg.accum_iter
        sampler.set_epoch(epoch, micro_start)
        micro_end = steps_per_epoch * cfg.accum_iter  # leftover micro-batches that cannot fill a step are dropped
        for micro, batch in enumerate(loader, start=micro_start):
            if micro >= micro_end:
                break
            # Only the views go to the device; labels, sample indices and skip counts stay on the CPU,
            # where the branches and the log read them without a device sync.
            views, *meta = batch
            views = ([v.to(acc.device, non_blocking=True) for v in views] if isinstance(views, (list, tuple))
                     else views.to(acc.device, non_blocking=True))
            batch = [views, *meta]
            sync = (micro + 1) % cfg.accum_iter == 0
            with contextlib.nullcontext() if sync else acc.no_sync(model):
                with acc.autocast():
                    loss, metrics = branch.loss(model, batch, epoch, step)
                acc.backward(guard.watch(loss) / cfg.accum_iter)  # a non-finite loss makes the grads NaN
            step_loss += loss.detach()
            window_micro += 1
            skipped_total += int(batch[3].sum())
            if not sync:
                continue
            for g in optimizer.param_groups:
                g["lr"] = float(lr_sched[step]) * g.get("lr_scale", 1.0)
                g["weight_decay"] = float(wd_sched[step]) * g.get("wd_scale", 1.0)
            # Unscales fp16 gradients, then measures (and with "global" clips) the total norm; one sync.
            max_norm = cfg.clip_grad if cfg.clip_grad and cfg.clip_grad_mode == "global" else float("inf")
            acc.unscale_gradients()
            grad_norm, ok, why = guard.clip_and_check(params, max_norm)
            if ok:
                if cfg.clip_grad and cfg.clip_grad_mode == "per_param":
                    clip_per_param(params, cfg.clip_grad)
                branch.before_step(model, step, epoch)
                optimizer.step()
                branch.after_step(model, step)
                window_loss += step_loss
                window_good += cfg.accum_iter
            elif guard.on_bad_step(why, acc.unwrap_model(model).named_parameters(), step, epoch, run_dir,
                                   float(lr_sched[step])):
                optimizer.step()  # fp16: the GradScaler sees the overflow, skips the update, lowers its scale
            optimizer.zero_grad(set_to_none=True)
            step_loss.zero_()
            step += 1
            bar.update(1)

            if step % cfg.log_every == 0 or step == last_step:
                mean_loss = acc.reduce(window_loss / max(window_good, 1), reduction="mean").item()
                skipped = skipped_up_front + int(
                    acc.reduce(torch.tensor(skipped_total, device=acc.device), reduction="sum").item())
                dt = time.perf_counter() - window_t0
                row = {"epoch": step / steps_per_epoch, "loss": mean_loss, "lr": float(lr_sched[step - 1]),
                       "weight_decay": float(wd_sched[step - 1]), "grad_norm": float(grad_norm),
                       "images_per_sec": window_micro * cfg.batch_size * world / dt, "skipped_files": skipped,
                       **metrics}
                if cfg.nonfinite_skip_limit:
                    row["nonfinite_skipped"] = guard.skipped
                if not window_good:  # every step of this window was skipped: there is no loss to report
                    del row["loss"]
                if logger is not None:
                    logger.log(row, step)
                if window_good:
                    summary["losses"].append(mean_loss)
                    bar.row(row)
                window_loss.zero_()
                window_micro, window_good, window_t0 = 0, 0, time.perf_counter()

            epoch_done = step % steps_per_epoch == 0
            if epoch_done and hooks:  # epoch-end hooks (pictures, online evaluation), before the save
                row = run_epoch_hooks(hooks, EpochEnd(cfg, acc.unwrap_model(model), branch, run_dir,
                                                      step // steps_per_epoch, step, main, logger))
                if logger is not None and row:
                    logger.log({"epoch": step / steps_per_epoch, **row}, step)
            if epoch_done or step % cfg.save_every_steps == 0 or step == last_step:
                checkpoint()
                saved_step = step
            if step >= last_step:
                break
            stopped = stop.agreed()  # every step, on every process: all stop after the same step
            if stopped:
                break
    if saved_step != step:
        checkpoint()
    summary.update(bar.close())
    if logger is not None:
        logger.finish()
    if console is not None:
        logging.getLogger("sslab").removeHandler(console)
        console.close()
    if stopped:
        acc.wait_for_everyone()  # all processes exit together (srun/torchrun end the rest at the first exit)
        stop.exit(stopped, step, list_checkpoints(run_dir)[-1] if main else None, main)
    summary.update(skipped_files=skipped_up_front + skipped_total,
                   step=step, epochs_done=step / steps_per_epoch, world_size=world, effective_batch=eff_batch,
                   lr=lr, steps_per_epoch=steps_per_epoch)
    return summary


def main(base: Config, argv: list[str] | None = None,
         hooks: Callable[[Config], Sequence[EpochHook]] | None = None) -> dict[str, Any]:
    """Apply CLI overrides to ``base`` and train with the epoch-end hooks ``hooks(cfg)`` returns
    (``sslab.main``, the entry point of ``experiments/*.py``, passes the config's own ones)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = parse_args(base, argv, description=f"sslab {base.method} pretraining")
    try:
        out = train(cfg, hooks(cfg) if hooks is not None else ())
        if int(os.environ.get("RANK", "0")) == 0 and "finished" in out:
            print(out["finished"], flush=True)
        elif int(os.environ.get("RANK", "0")) == 0:
            losses = out["losses"]
            trend = f"loss {losses[0]:.4f} -> {losses[-1]:.4f}, " if losses else ""
            skipped = f"{out['skipped_files']} unreadable files skipped, " if out.get("skipped_files") else ""
            print(f"done: {out['step']} steps ({out['epochs_done']:.2f} epochs), {trend}{skipped}"
                  f"checkpoints and metrics in {out['run_dir']}", flush=True)
        return out
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
