"""Checkpoints: atomic writes, keep-last-K, resume resolution, weights-only loading."""

import pytest
import torch

from sslab.engine import checkpoint as ck


def test_keep_last_and_newest_is_resumed(tmp_path):
    for step in (5, 10, 15, 20):
        ck.save_checkpoint({"step": step, "w": torch.ones(2) * step}, tmp_path, step, keep_last=2)
    names = [p.name for p in ck.list_checkpoints(tmp_path)]
    assert names == ["checkpoint-00000015.pt", "checkpoint-00000020.pt"]
    newest = ck.resolve_resume("auto", tmp_path)
    assert ck.load_checkpoint(newest)["step"] == 20
    assert ck.resolve_resume("auto", tmp_path / "empty") is None and ck.resolve_resume("", tmp_path) is None
    with pytest.raises(ValueError, match="no such checkpoint"):
        ck.resolve_resume(str(tmp_path / "missing.pt"), tmp_path)


def test_crash_while_saving_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    ck.save_checkpoint({"step": 1, "w": torch.zeros(3)}, tmp_path, 1, keep_last=1)

    real_save = torch.save

    def crash(obj, f, *a, **k):
        f.write(b"partial bytes")  # the process dies half-way through the write
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint({"step": 2, "w": torch.ones(3)}, tmp_path, 2, keep_last=1)
    monkeypatch.setattr(torch, "save", real_save)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["checkpoint-00000001.pt"]
    assert ck.load_checkpoint(ck.resolve_resume("auto", tmp_path))["step"] == 1


def test_checkpoints_load_weights_only(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "checkpoint-00000001.pt"
    torch.save({"step": 1, "evil": Payload()}, path)
    with pytest.raises(ValueError, match="refusing to load .*checkpoint-00000001.pt"):
        ck.load_checkpoint(path)
