"""Pretraining with the epoch-end work the config asks for: ``sslab.train`` and ``sslab.main``.

The engine (:mod:`sslab.engine`) calls a list of epoch-end hooks and knows none of them; this module,
which sits above the engine, the evaluators and the pictures, composes that list from the config:

- ``--vis-every-epochs N``: MAE reconstructions / attention maps (:mod:`sslab.viz.epoch`);
- ``--monitor-every-epochs N``: online 20-NN (:mod:`sslab.eval.monitor`);

then appends the caller's own hooks (``sslab.main(CONFIG, hooks=[my_hook])``, see the README).
"""

from __future__ import annotations

from typing import Any, Sequence

from .config import Config
from .engine import train as engine_train
from .engine.hooks import EpochEnd, EpochHook


def every(n: int, hook: EpochHook) -> EpochHook:
    """``hook`` run only at the end of epochs ``n, 2n, ...`` (never when ``n`` is 0)."""
    def gated(end: EpochEnd) -> dict | None:
        return hook(end) if n > 0 and end.epoch % n == 0 else None

    gated.__name__ = f"every_{n}_{getattr(hook, '__name__', 'hook')}"
    return gated


def pictures_hook(end: EpochEnd) -> dict | None:
    """Write and log this epoch's pictures on the main process (eval mode, fixed images, RNG forked)."""
    if end.is_main:
        from .viz.epoch import log_epoch_pictures

        log_epoch_pictures(end.cfg, end.model, end.branch, end.run_dir, end.epoch, end.step, end.logger)
    return None


def monitor_hook(end: EpochEnd) -> dict:
    """Online 20-NN of the live encoder (main process; ``{}`` on the others)."""
    from .eval.monitor import monitor_knn

    return monitor_knn(end.cfg, end.model, end.branch, end.is_main)


def epoch_hooks(cfg: Config) -> list[EpochHook]:
    """The epoch-end hooks ``cfg`` asks for, its settings checked before any compute."""
    from .eval.monitor import check_monitor_config

    check_monitor_config(cfg)
    if cfg.vis_every_epochs:
        from .viz.samples import check_picture_data

        check_picture_data(cfg.vis_data or cfg.data)
    return [every(cfg.vis_every_epochs, pictures_hook), every(cfg.monitor_every_epochs, monitor_hook)]


def train(cfg: Config, hooks: Sequence[EpochHook] = ()) -> dict[str, Any]:
    """Pretrain as ``cfg`` says, with its epoch-end hooks and then ``hooks``; returns the run's summary."""
    return engine_train(cfg, [*epoch_hooks(cfg), *hooks])


def main(base: Config, argv: list[str] | None = None, hooks: Sequence[EpochHook] = ()) -> dict[str, Any]:
    """Entry point of ``experiments/*.py``: command-line overrides on ``base``, then :func:`train`."""
    from .engine.train import main as engine_main

    return engine_main(base, argv, hooks=lambda cfg: [*epoch_hooks(cfg), *hooks])
