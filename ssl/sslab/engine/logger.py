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
    """``auto`` -> ``online`` with credentials, else ``offline``; other modes pass through."""
    if mode not in ("auto", "online", "offline", "disabled"):
        raise SslabError(f"wandb_mode must be auto|online|offline|disabled, got {mode!r}")
    if mode == "auto":
        return "online" if wandb_credentials_present() else "offline"
    return mode


class RunLogger:
    """Writes metric rows to ``metrics.jsonl`` and ``metrics.csv`` and mirrors them to wandb.

    Only the main process should create one. wandb problems (not installed, no network, bad key)
    are reported as warnings and logging goes on to the files.
    """

    def __init__(self, run_dir: str | os.PathLike, config: dict[str, Any], wandb_mode: str = "auto",
                 project: str = "sslab", entity: str | None = None, group: str | None = None,
                 name: str | None = None, tags: tuple[str, ...] = ()):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.run_dir / "metrics.jsonl"
        self.csv = self.run_dir / "metrics.csv"
        self._csv_fields: list[str] | None = None
        if self.csv.exists():
            with open(self.csv, newline="") as f:
                self._csv_fields = next(csv.reader(f), None)
        self.wandb = None
        mode = resolve_wandb_mode(wandb_mode)
        if mode != "disabled":
            self._init_wandb(mode, config, project, entity, group, name, tags)

    def _init_wandb(self, mode, config, project, entity, group, name, tags) -> None:
        try:
            import wandb

            id_file = self.run_dir / "wandb_id.txt"  # a resumed run continues the same wandb run
            run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
            id_file.write_text(run_id)
            self.wandb = wandb.init(
                project=project, entity=entity, group=group, name=name or self.run_dir.name,
                tags=list(tags), config=config, dir=str(self.run_dir), mode=mode, id=run_id, resume="allow",
                settings=wandb.Settings(console="off", silent=True),
            )
            log.info("wandb %s run %s", mode, run_id)
        except Exception as e:  # logging must never stop training
            log.warning("wandb disabled for this run (%s: %s); metrics still go to %s", type(e).__name__, e,
                        self.jsonl)
            self.wandb = None

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
            rows = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]
            fields: list[str] = []
            for r in rows:
                fields += [k for k in r if k not in fields]
            self._csv_fields = fields
            with open(self.csv, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(rows)
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

    def finish(self) -> None:
        """Close the wandb run."""
        if self.wandb is not None:
            try:
                self.wandb.finish()
            except Exception as e:
                log.warning("wandb.finish failed (%s)", e)
