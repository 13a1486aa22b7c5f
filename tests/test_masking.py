"""Per-sample random masking (MAE Sec. 3) and the reconstruction loss."""

import pytest
import torch

from sslab.losses.mae_loss import mae_loss, patch_targets
from sslab.models.masking import gather_tokens, num_kept, random_masking


@pytest.mark.parametrize("L,ratio", [(196, 0.75), (64, 0.75), (49, 0.75), (10, 0.33), (7, 0.0)])
def test_keep_count_is_exact_per_sample(L, ratio):
    m = random_masking(5, L, ratio)
    keep = int(L * (1 - ratio))
    assert m.ids_keep.shape == (5, keep)
    assert torch.equal(m.mask.sum(1), torch.full((5,), float(L - keep)))
    # kept ids are exactly the zeros of the mask
    for n in range(5):
        assert set(m.ids_keep[n].tolist()) == set(torch.nonzero(m.mask[n] == 0).flatten().tolist())


def test_ids_restore_inverts_the_shuffle():
    noise = torch.rand(3, 50)
    m = random_masking(3, 50, 0.6, noise)
    shuffle = torch.argsort(noise, dim=1)
    x = torch.randn(3, 50, 4)
    shuffled = gather_tokens(x, shuffle)
    assert torch.equal(gather_tokens(shuffled, m.ids_restore), x)


def test_noise_makes_masking_deterministic_and_small_noise_is_kept():
    noise = torch.rand(2, 16)
    a, b = random_masking(2, 16, 0.75, noise), random_masking(2, 16, 0.75, noise.clone())
    assert torch.equal(a.mask, b.mask) and torch.equal(a.ids_keep, b.ids_keep)
    smallest = torch.argsort(noise, dim=1)[:, :4]
    assert torch.equal(torch.sort(a.ids_keep, 1).values, torch.sort(smallest, 1).values)
    torch.manual_seed(0)
    other = random_masking(2, 16, 0.75, torch.rand(2, 16))
    assert not torch.equal(other.mask, a.mask)  # other noise, other mask


def test_masking_rejects_bad_inputs():
    with pytest.raises(ValueError, match="mask_ratio"):
        num_kept(10, 1.0)
    with pytest.raises(ValueError, match="noise must have shape"):
        random_masking(2, 10, 0.5, torch.rand(2, 9))


def test_loss_counts_removed_patches_only():
    torch.manual_seed(0)
    pred, patches = torch.randn(2, 8, 12), torch.randn(2, 8, 12)
    mask = torch.zeros(2, 8)
    mask[:, 2:] = 1
    base = mae_loss(pred, patches, mask, norm_pix_loss=False)
    changed_visible = pred.clone()
    changed_visible[:, :2] += 100.0
    assert torch.allclose(mae_loss(changed_visible, patches, mask, False), base)
    changed_removed = pred.clone()
    changed_removed[:, 5] += 1.0
    assert not torch.allclose(mae_loss(changed_removed, patches, mask, False), base)


def test_loss_against_direct_computation():
    torch.manual_seed(1)
    pred, patches = torch.randn(3, 10, 6, dtype=torch.float64), torch.randn(3, 10, 6, dtype=torch.float64)
    mask = (torch.rand(3, 10) > 0.5).double()
    for norm in (False, True):
        total, count = 0.0, 0
        for n in range(3):
            for i in range(10):
                if mask[n, i]:
                    t = patches[n, i]
                    if norm:
                        mu = sum(t.tolist()) / 6
                        var = sum((v - mu) ** 2 for v in t.tolist()) / 5  # unbiased, as the official code
                        t = (t - mu) / (var + 1e-6) ** 0.5
                    total += float(((pred[n, i] - t) ** 2).mean())
                    count += 1
        assert abs(mae_loss(pred, patches, mask, norm).item() - total / count) < 1e-6


def test_norm_pix_target_has_zero_mean_unit_variance():
    t = patch_targets(torch.randn(4, 9, 48) * 5 + 3, norm_pix_loss=True)
    assert torch.allclose(t.mean(-1), torch.zeros(4, 9), atol=1e-5)
    assert torch.allclose(t.var(-1), torch.ones(4, 9), atol=1e-3)
