"""Run logging: JSONL + CSV in the run directory, and wandb (offline when no credentials; never fatal)."""

from __future__ import annotations

import csv
import json
import logging
import netrc
import os
import secrets
from pathlib import Path
from typing import Any
from ..errors import SslabError


log = logging.getLogger("sslab")


def wandb_credentials_present() -> bool:
    """True when an API key is in the environment or in ~/.netrc for api.wandb.ai."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc(os.environ.get("NETRC") or None)
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1].split("/")[0]
        return rc.authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """``auto`` -> ``$WANDB_MODE`` when set (``WANDB_DISABLED=true``: disabled), else ``online`` with
    credentials and ``offline`` without; an explicit mode (a flag or a recipe's value) wins."""
    if mode not in ("auto", "online", "offline", "disabled"):
        raise SslabError(f"wandb_mode must be auto|online|offline|disabled, got {mode!r}; pick one of those")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("disabled", "offline", "online"):
        return env
    if env in ("dryrun", "run"):  # wandb's older names
        return {"dryrun": "offline", "run": "online"}[env]
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return "disabled"
    return "online" if wandb_credentials_present() else "offline"


def wandb_target(config: dict[str, Any], run_dir: str | os.PathLike) -> dict[str, Any]:
    """Project, entity, group, run name and tags of a run: each from its config field when set (flag or
    recipe), else wandb's environment variable (``WANDB_PROJECT``, ``WANDB_ENTITY``, ``WANDB_RUN_GROUP``),
    else the default: project ``sslab``, group and name the run folder's name, so that pretraining and its
    evaluations share one group. ``WANDB_TAGS`` (commas) are added to the config's tags."""
    name = config.get("wandb_name") or Path(config.get("output_dir") or run_dir).name
    env_tags = [t.strip() for t in os.environ.get("WANDB_TAGS", "").split(",") if t.strip()]
    tags = list(dict.fromkeys([*(config.get("wandb_tags") or ()), *env_tags]))
    project, entity = config.get("wandb_project"), config.get("wandb_entity")
    if os.environ.get("WANDB_SWEEP_ID"):  # a sweep trial must log into the sweep's project, whatever the recipe says
        project, entity = os.environ.get("WANDB_PROJECT") or project, os.environ.get("WANDB_ENTITY") or entity
    return {"project": project or os.environ.get("WANDB_PROJECT") or "sslab",
            "entity": entity or os.environ.get("WANDB_ENTITY") or None,
            "group": config.get("wandb_group") or os.environ.get("WANDB_RUN_GROUP") or name,
            "name": name, "tags": tags}


def sweep_trial_dir(output_dir: str) -> str:
    """Under a ``wandb agent`` (``WANDB_SWEEP_ID`` and ``WANDB_RUN_ID`` set) each trial gets its own folder,
    ``<output_dir>/sweep-<sweep id>/<run id>``, so that ``--resume auto`` can never continue another
    trial's checkpoints; elsewhere ``output_dir`` is returned unchanged."""
    sweep, run = os.environ.get("WANDB_SWEEP_ID"), os.environ.get("WANDB_RUN_ID")
    if not (sweep and run):
        return output_dir
    base = Path(output_dir)
    if base.parent.name == f"sweep-{sweep}":  # already a trial folder (e.g. a resumed trial's config)
        return output_dir
    return str(base / f"sweep-{sweep}" / run)


def offline_sync_command(run: Any) -> str | None:
    """The ``wandb sync`` command that uploads an offline run (its folder is the parent of ``run.dir``)."""
    run_files = getattr(run, "dir", None)
    return f"wandb sync {Path(run_files).parent}" if run_files else None


class RunLogger:
    """Writes metric rows to ``metrics.jsonl`` and ``metrics.csv`` and mirrors them to wandb.

    Only the main process should create one. wandb problems (not installed, no network, bad key)
    are reported as warnings and logging goes on to the files. ``resumed_step``: the step the run
    starts from (0 when fresh); rows logged after it by an interrupted run are dropped, since the
    resumed run logs those steps again, so the files equal those of an uninterrupted run.
    """

    def __init__(self, run_dir: str | os.PathLike, config: dict[str, Any], wandb_mode: str = "auto",
                 project: str | None = None, entity: str | None = None, group: str | None = None,
                 name: str | None = None, tags: tuple[str, ...] = (), resumed_step: int = 0):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.run_dir / "metrics.jsonl"
        self.csv = self.run_dir / "metrics.csv"
        self._csv_fields: list[str] | None = None
        self._drop_rows_after(resumed_step)
        if self.csv.exists():
            with open(self.csv, newline="") as f:
                self._csv_fields = next(csv.reader(f), None)
        self.wandb = None
        self.config = config
        self.mode = resolve_wandb_mode(wandb_mode)
        if self.mode != "disabled":
            target = wandb_target({**config, "wandb_project": project, "wandb_entity": entity, "wandb_group": group,
                                   "wandb_name": name, "wandb_tags": tags}, self.run_dir)
            self._init_wandb(self.mode, config, target)

    def _init_wandb(self, mode: str, config: dict[str, Any], target: dict[str, Any]) -> None:
        try:
            import wandb

            id_file = self.run_dir / "wandb_id.txt"  # a resumed run continues the same wandb run
            # Under a wandb agent the run id is the trial's (WANDB_RUN_ID), which ties the run to the sweep.
            run_id = (id_file.read_text().strip() if id_file.exists()
                      else os.environ.get("WANDB_RUN_ID") or secrets.token_hex(4))
            id_file.write_text(run_id)
            self.wandb = wandb.init(
                project=target["project"], entity=target["entity"], group=target["group"], name=target["name"],
                tags=target["tags"], config=config, dir=str(self.run_dir), mode=mode, id=run_id, resume="allow",
                settings=wandb.Settings(console="off", silent=True),
            )
            # Evaluations of this run read it to log into the same project and group.
            (self.run_dir / "wandb.json").write_text(json.dumps({**target, "id": run_id, "mode": mode}, indent=2))
            log.info("wandb %s run %s (project %s, group %s)", mode, run_id, target["project"], target["group"])
        except Exception as e:  # logging must never stop training
            log.warning("wandb disabled for this run (%s: %s); metrics still go to %s", type(e).__name__, e,
                        self.jsonl)
            self.wandb = None

    def _drop_rows_after(self, step: int) -> None:
        """Keep only the rows of steps <= ``step`` (and no half-written last line) in both files."""
        if not self.jsonl.exists():
            self.csv.unlink(missing_ok=True)
            return
        lines = self.jsonl.read_text().splitlines()
        kept = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # the process died mid-line
                continue
            if isinstance(row, dict) and row.get("step", 0) <= step:
                kept.append(row)
        if len(kept) == len(lines) and self._csv_rows() == len(kept):
            return
        tmp = self.jsonl.with_name(self.jsonl.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.jsonl)
        self._rewrite_csv(kept)
        if len(kept) < len(lines):
            log.info("metrics: dropped %d row(s) after step %d, which this run logs again", len(lines) - len(kept),
                     step)

    def _csv_rows(self) -> int:
        """Data rows in the CSV (-1 when there is none); a kill between the two files leaves it short."""
        if not self.csv.exists():
            return -1
        with open(self.csv, newline="") as f:
            return sum(1 for _ in csv.reader(f)) - 1

    def _rewrite_csv(self, rows: list[dict[str, Any]]) -> None:
        """The CSV from ``rows``, with every column any row has, in order of first appearance."""
        fields: list[str] = []
        for r in rows:
            fields += [k for k in r if k not in fields]
        self._csv_fields = fields
        with open(self.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    def log(self, row: dict[str, Any], step: int) -> None:
        """Append one row (numbers and strings) at optimiser step ``step``."""
        row = {"step": step, **row}
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        self._write_csv(row)
        if self.wandb is not None:
            try:
                self.wandb.log(row, step=step)
            except Exception as e:
                log.warning("wandb.log failed (%s); continuing without wandb", e)
                self.wandb = None

    def _write_csv(self, row: dict[str, Any]) -> None:
        if self._csv_fields is None or not set(row) <= set(self._csv_fields):
            # New columns: rewrite the CSV from the JSONL so every row has every column.
            self._rewrite_csv([json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()])
            return
        with open(self.csv, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._csv_fields).writerow(row)

    def log_image(self, key: str, path: str | os.PathLike, step: int) -> None:
        """Send a PNG already written in the run directory to wandb."""
        if self.wandb is None:
            return
        try:
            import wandb

            self.wandb.log({key: wandb.Image(str(path))}, step=step)
        except Exception as e:
            log.warning("wandb image log failed (%s)", e)

    def log_artifact(self, path: str | os.PathLike, kind: str, name: str) -> None:
        """Log a file or folder as a wandb artifact of type ``kind`` (``model``); never fatal."""
        if self.wandb is None:
            return
        try:
            import wandb

            art = wandb.Artifact(name, type=kind, metadata={"path": Path(path).name})
            (art.add_dir if Path(path).is_dir() else art.add_file)(str(path))
            self.wandb.log_artifact(art)
        except Exception as e:
            log.warning("wandb artifact %s skipped (%s: %s)", path, type(e).__name__, e)

    def finish(self) -> str | None:
        """Close the wandb run (logging the newest checkpoint as an artifact first when the config asks);
        returns the ``wandb sync`` command of an offline run, which is also logged."""
        if self.wandb is None:
            return None
        sync = offline_sync_command(self.wandb) if self.mode == "offline" else None
        if self.config.get("wandb_artifacts"):
            ckpts = sorted(self.run_dir.glob("checkpoint-*.pt"))
            if ckpts:
                self.log_artifact(ckpts[-1], "model", f"{self.wandb.id}-checkpoint")
        try:
            self.wandb.finish()
        except Exception as e:
            log.warning("wandb.finish failed (%s)", e)
        if sync:
            log.info("wandb run saved offline; upload it with: %s", sync)
        return sync
