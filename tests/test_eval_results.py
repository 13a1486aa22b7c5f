"""Evaluation results: the JSON file in the run folder and the wandb run in the pretraining run's group."""

import json
import sys
import types

from sslab.eval.results import log_to_wandb, read_result, write_result


class FakeRun:
    def __init__(self, **kw):
        self.init_kwargs, self.logged, self.summary, self.finished = kw, [], {}, False

    def log(self, row):
        self.logged.append(row)

    def finish(self):
        self.finished = True


def fake_wandb(monkeypatch):
    runs = []
    mod = types.SimpleNamespace(init=lambda **kw: runs.append(FakeRun(**kw)) or runs[-1],
                                Settings=lambda **kw: kw, Table=lambda columns, data: ("table", columns, data))
    monkeypatch.setitem(sys.modules, "wandb", mod)
    return runs


def test_result_json_is_written_and_read_back(tmp_path):
    path = write_result(tmp_path, "knn_cls", {"top1": 71.5, "by_k": {"20": {"top1": 71.5}}})
    assert path == tmp_path / "eval" / "knn_cls.json"
    data = json.loads(path.read_text())
    assert data["top1"] == 71.5 and data["name"] == "knn_cls" and "created" in data and "sslab_version" in data
    assert read_result(tmp_path, "knn_cls") == data and read_result(tmp_path, "missing") is None
    assert not list((tmp_path / "eval").glob(".*"))


def test_wandb_run_joins_the_pretraining_group(tmp_path, monkeypatch):
    runs = fake_wandb(monkeypatch)
    cfg = {"wandb_project": "proj", "wandb_entity": None, "wandb_group": "mae-sweep", "wandb_name": "vit-s",
           "output_dir": "runs/x"}
    assert log_to_wandb("knn_cls", {"top1": 70.0, "by_k": {"20": {"top1": 70.0}}, "feature": "cls"}, cfg, tmp_path,
                        mode="offline", tables={"by_k": [{"k": 20, "top1": 70.0}]})
    kw = runs[0].init_kwargs
    assert (kw["project"], kw["group"], kw["job_type"], kw["name"], kw["mode"]) == \
        ("proj", "mae-sweep", "eval", "vit-s/knn_cls", "offline")
    assert runs[0].summary == {"knn_cls/top1": 70.0, "knn_cls/by_k/20/top1": 70.0} and runs[0].finished
    assert ("table", ["k", "top1"], [[20, 70.0]]) in [v for row in runs[0].logged for v in row.values()]
    # A run without a group: its evaluations are grouped under the run's name.
    log_to_wandb("linear_cls", {"top1": 1.0}, {**cfg, "wandb_group": None, "wandb_name": None}, tmp_path, "offline")
    assert runs[1].init_kwargs["group"] == "x"
    assert not log_to_wandb("knn_cls", {"top1": 1.0}, cfg, tmp_path, mode="disabled") and len(runs) == 2
