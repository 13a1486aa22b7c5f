"""wandb's environment variables, one group per run, sweep trials in their own folders, offline sync."""

import json
import logging
import time

from conftest import tiny_mae_config
from sslab import train
from sslab.engine.logger import resolve_wandb_mode, sweep_trial_dir, wandb_target
from sslab.eval.results import wandb_target as eval_wandb_target


def no_credentials(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DISABLED", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_TAGS",
                "WANDB_RUN_GROUP", "WANDB_SWEEP_ID", "WANDB_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))


def test_wandb_mode_env_is_honoured_and_flags_win(tmp_path, monkeypatch):
    no_credentials(monkeypatch, tmp_path)
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled" and resolve_wandb_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_DISABLED", "true")
    assert resolve_wandb_mode("auto") == "disabled"


def test_wandb_mode_disabled_in_the_environment_creates_no_run(tmp_path, monkeypatch):
    no_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = tiny_mae_config(tmp_path, max_steps=1, wandb_mode="auto")
    train(cfg)
    run = tmp_path / "run"
    assert not (run / "wandb").exists() and not (run / "wandb_id.txt").exists() and (run / "metrics.jsonl").exists()


def test_project_entity_group_tags_from_env_unless_given(tmp_path, monkeypatch):
    no_credentials(monkeypatch, tmp_path)
    cfg = {"output_dir": "runs/mae_a", "wandb_project": None, "wandb_entity": None, "wandb_group": None,
           "wandb_name": None, "wandb_tags": ["mae"]}
    assert wandb_target(cfg, "ignored") == {"project": "sslab", "entity": None, "group": "mae_a", "name": "mae_a",
                                            "tags": ["mae"]}
    monkeypatch.setenv("WANDB_PROJECT", "envproj")
    monkeypatch.setenv("WANDB_ENTITY", "lab")
    monkeypatch.setenv("WANDB_RUN_GROUP", "ablation-1")
    monkeypatch.setenv("WANDB_TAGS", "cifar, mae")
    assert wandb_target(cfg, "x") == {"project": "envproj", "entity": "lab", "group": "ablation-1", "name": "mae_a",
                                      "tags": ["mae", "cifar"]}
    flags = {**cfg, "wandb_project": "p", "wandb_entity": "e", "wandb_group": "g", "wandb_name": "n"}
    t = wandb_target(flags, "x")
    assert (t["project"], t["entity"], t["group"], t["name"]) == ("p", "e", "g", "n")
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc")  # under a wandb agent the sweep's project and entity win
    t = wandb_target(flags, "x")
    assert (t["project"], t["entity"], t["group"]) == ("envproj", "lab", "g")


def test_offline_run_records_its_group_for_evaluations_and_prints_sync(tmp_path, monkeypatch, caplog):
    no_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_PROJECT", "envproj")
    monkeypatch.setenv("WANDB_TAGS", "from-env")
    cfg = tiny_mae_config(tmp_path, max_steps=1, wandb_mode="auto", wandb_artifacts=True)
    with caplog.at_level(logging.INFO, logger="sslab"):
        train(cfg)
    run = tmp_path / "run"
    recorded = json.loads((run / "wandb.json").read_text())
    run_id = (run / "wandb_id.txt").read_text().strip()
    assert recorded == {"project": "envproj", "entity": None, "group": "run", "name": "run", "tags": ["from-env"],
                        "id": run_id, "mode": "offline"}
    # The evaluations of this run log into the same project and group, whatever the environment says then.
    monkeypatch.setenv("WANDB_PROJECT", "other")
    target = eval_wandb_target(cfg.to_dict(), run)
    assert (target["project"], target["group"]) == ("envproj", "run")
    sync = [r.getMessage() for r in caplog.records if "wandb sync" in r.getMessage()]
    assert len(sync) == 1
    folder = sync[0].split("wandb sync ")[1]
    assert folder.endswith(run_id) and list((run / "wandb").glob(f"offline-run-*-{run_id}/*.wandb"))


def test_sweep_trials_get_their_own_folder(tmp_path, monkeypatch):
    no_credentials(monkeypatch, tmp_path)
    assert sweep_trial_dir("runs/mae") == "runs/mae"
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    monkeypatch.setenv("WANDB_RUN_ID", "r1")
    trial = sweep_trial_dir("runs/mae")
    assert trial == "runs/mae/sweep-abc123/r1" and sweep_trial_dir(trial) == trial
    # Two trials of a recipe with resume="auto": the second starts fresh instead of chaining onto the first.
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = tiny_mae_config(tmp_path, max_steps=2, resume="auto")
    first = train(cfg)
    monkeypatch.setenv("WANDB_RUN_ID", "r2")
    second = train(cfg)
    assert first["run_dir"].endswith("sweep-abc123/r1") and second["run_dir"].endswith("sweep-abc123/r2")
    assert second["step"] == 2 and second["losses"] == first["losses"]


def test_export_logged_as_an_offline_artifact_in_the_runs_group(tmp_path, monkeypatch, capsys):
    from sslab.engine import list_checkpoints
    from sslab.export import main as export_main

    no_credentials(monkeypatch, tmp_path)
    cfg = tiny_mae_config(tmp_path, max_steps=1, wandb_mode="offline", wandb_group="ablation")
    train(cfg)
    ckpt = list_checkpoints(cfg.output_dir)[-1]
    export_main([str(ckpt), str(tmp_path / "exported"), "--wandb-artifact"])
    err = capsys.readouterr().err
    sync = [ln for ln in err.splitlines() if "wandb sync" in ln]
    assert len(sync) == 1, err
    folder = tmp_path / "run" / "wandb" / sync[0].split("wandb/")[-1]
    assert folder.is_dir() and list(folder.glob("*.wandb"))  # the export run, beside the pretraining run
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    # wandb's protobuf records name the group and the artifact; its service may still be flushing them.
    for _ in range(60):
        record = next(folder.glob("*.wandb")).read_bytes()
        if b"model.safetensors" in record:
            break
        time.sleep(0.5)
    assert b"ablation" in record and b"run-encoder" in record and b"model.safetensors" in record
