"""Frozen-encoder features: the feature choices, class-balanced subsets, and the on-disk cache."""

import pytest
import torch

import sslab.eval.features as features
from eval_helpers import tiny_swin, tiny_vit, write_mae_checkpoint
from sslab.data import load_demo
from sslab.eval.cli import eval_preprocess, open_encoder
from sslab.eval.features import cached_features, encode, subset_indices


def test_vit_feature_choices():
    vit = tiny_vit()
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        tokens = vit.forward_features(x)
        cls, avg = encode(vit, x, "cls"), encode(vit, x, "avg")
        last1, last3, both = encode(vit, x, "last1"), encode(vit, x, "last3"), encode(vit, x, "last1+avg")
    assert torch.allclose(cls, tokens[:, 0]) and torch.allclose(avg, tokens[:, 1:].mean(1))
    # DINO's last-block class token through the final norm is the class token itself.
    assert torch.allclose(last1, cls, atol=1e-5)
    assert last3.shape == (3, 96) and torch.allclose(last3[:, 64:], cls, atol=1e-5)
    assert not torch.allclose(last3[:, :32], last3[:, 32:64])  # earlier blocks differ
    assert torch.allclose(both, torch.cat([cls, avg], 1), atol=1e-5)
    for bad in ("token", "last0", "cls+", "last4"):
        with pytest.raises(ValueError):
            features.check_feature(vit, bad)


def test_swin_feature_choices():
    swin = tiny_swin()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        avg, last2 = encode(swin, x, "avg"), encode(swin, x, "last2")
        pooled = swin.forward_head(swin.forward_features(x), pre_logits=True)
    assert torch.allclose(avg, pooled, atol=1e-5)  # timm's own global average pool
    assert last2.shape == (2, 16 + 32) and torch.allclose(last2[:, 16:], avg, atol=1e-5)
    with pytest.raises(ValueError, match="no class token"):
        features.check_feature(swin, "cls")


def test_subsets_are_class_balanced_seeded_and_nested():
    labels = torch.arange(10).repeat_interleave(torch.tensor([50, 50, 50, 50, 50, 50, 50, 50, 50, 5]))
    small, big = subset_indices(labels, 40, seed=1), subset_indices(labels, 100, seed=1)
    assert len(small) == 40 and len(set(small)) == 40
    assert torch.bincount(labels[small], minlength=10).tolist() == [4] * 10
    counts = torch.bincount(labels[big], minlength=10)
    assert counts[9] == 5 and counts[:9].min() >= 10  # a small class gives all it has, the others share the rest
    assert set(small) <= set(big) and small == subset_indices(labels, 40, seed=1)
    assert subset_indices(labels, 40, seed=2) != small and subset_indices(labels, None) == list(range(455))


def test_cache_is_reused_and_invalidated_by_a_new_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLAB_CACHE", str(tmp_path / "cache"))
    calls = []
    real = features.extract_features
    monkeypatch.setattr(features, "extract_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    ckpt = write_mae_checkpoint(tmp_path / "run" / "checkpoint-00000001.pt", tmp_path, seed=0)
    data, idx = load_demo("train", 1), list(range(0, 4000, 80))

    def feats(feature="cls"):
        src = open_encoder(ckpt)
        return cached_features(src.encoder, src.fingerprint, data, "demo", "train", eval_preprocess(src), feature, idx)

    f1, y1, info1 = feats()
    f2, y2, info2 = feats()
    assert (info1["cache_hit"], info2["cache_hit"], len(calls)) == (False, True, 1)
    assert torch.equal(f1, f2) and torch.equal(y1, y2) and f1.shape == (50, 192)
    assert torch.equal(y1, data.labels[idx])
    feats("avg")  # another feature choice is another entry
    assert len(calls) == 2
    # New weights in the same file: the fingerprint changes, the features are recomputed.
    write_mae_checkpoint(ckpt, tmp_path, seed=1)
    f3, _, info3 = feats()
    assert not info3["cache_hit"] and len(calls) == 3 and not torch.allclose(f1, f3)
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 3
    assert not list((tmp_path / "cache" / "features").glob(".*tmp"))  # written atomically, no leftovers
