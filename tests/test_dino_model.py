"""DINO head and multi-crop wrapper: official key layout, weight norm, batched multi-crop forward."""

import pytest
import torch
from torch import nn

from sslab import Config, DINOHead
from sslab.branches.dino import build_dino_model
from sslab.models.dino import MultiCropWrapper, resolution_groups


def tiny_cfg(**changes) -> Config:
    base = Config(method="dino", model="vit_tiny_patch16_224", model_kwargs={"depth": 2}, img_size=28, patch_size=4,
                  in_chans=1, mean=(0.286,), std=(0.353,), out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16,
                  local_crops_number=3, local_crops_size=12, epochs=2, warmup_teacher_temp_epochs=1)
    return base.replace(**changes)


def test_head_has_the_official_keys_shapes_and_frozen_norm():
    head = DINOHead(192, 1000)  # official defaults: 3 layers, hidden 2048, bottleneck 256, norm_last_layer
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {"mlp.0.weight": (2048, 192), "mlp.0.bias": (2048,), "mlp.2.weight": (2048, 2048),
                      "mlp.2.bias": (2048,), "mlp.4.weight": (256, 2048), "mlp.4.bias": (256,),
                      "last_layer.weight_g": (1000, 1), "last_layer.weight_v": (1000, 256)}
    assert isinstance(head.mlp[1], nn.GELU) and isinstance(head.mlp[3], nn.GELU)
    assert not head.last_layer.weight_g.requires_grad and torch.all(head.last_layer.weight_g == 1)
    assert DINOHead(192, 10, norm_last_layer=False).last_layer.weight_g.requires_grad
    bn = DINOHead(8, 10, use_bn=True, hidden_dim=16, bottleneck_dim=4).state_dict()
    assert "mlp.1.running_mean" in bn and "mlp.6.weight" in bn  # Linear, BN, GELU, Linear, BN, GELU, Linear


def test_weight_norm_layer_matches_torch_weight_norm_in_value_and_gradient():
    torch.manual_seed(0)
    head = DINOHead(12, 20, norm_last_layer=False, hidden_dim=16, bottleneck_dim=8)
    with torch.no_grad():
        head.last_layer.weight_g.uniform_(0.5, 2.0)
    ref = nn.utils.parametrizations.weight_norm(nn.Linear(8, 20, bias=False))
    with torch.no_grad():
        ref.parametrizations.weight.original0.copy_(head.last_layer.weight_g)
        ref.parametrizations.weight.original1.copy_(head.last_layer.weight_v)
    x = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    ours, theirs = head.last_layer(x), ref(x)
    assert torch.allclose(ours, theirs, atol=1e-6)
    ours.square().sum().backward()
    theirs.square().sum().backward()
    assert torch.allclose(head.last_layer.weight_g.grad, ref.parametrizations.weight.original0.grad, atol=1e-5)
    assert torch.allclose(head.last_layer.weight_v.grad, ref.parametrizations.weight.original1.grad, atol=1e-5)
    # output: L2-normalised bottleneck through unit prototypes -> cosine logits in [-1, 1] when g = 1
    out = DINOHead(12, 20)(torch.randn(4, 12))
    assert out.shape == (4, 20) and out.abs().max() <= 1 + 1e-5


def test_resolution_groups_follow_consecutive_sizes():
    crops = [torch.zeros(2, 1, s, s) for s in (28, 28, 12, 12, 12)]
    assert resolution_groups(crops) == [(0, 2), (2, 5)]
    assert resolution_groups([torch.zeros(1, 1, 8, 8)]) == [(0, 1)]


def test_batched_multicrop_forward_equals_per_crop_forward():
    torch.manual_seed(0)
    model = build_dino_model(tiny_cfg(), teacher=True).eval()
    crops = [torch.randn(3, 1, 28, 28) for _ in range(2)] + [torch.randn(3, 1, 12, 12) for _ in range(3)]
    logits, emb = model(crops, return_embeddings=True)
    assert logits.shape == (15, 64) and emb.shape == (15, 192)
    per_crop = torch.cat([model.head(model.backbone(c)) for c in crops])
    assert torch.allclose(logits, per_crop, atol=1e-5)
    assert torch.allclose(model(crops[0]), per_crop[:3], atol=1e-5)
    # small crops really go through interpolated position embeddings (not padded to 28 px)
    assert not torch.allclose(model.backbone(crops[2]), model.backbone(nn.functional.interpolate(crops[2], 28)))


def test_student_and_teacher_share_keys_and_only_the_student_drops_paths():
    cfg = tiny_cfg(model_kwargs={"depth": 2, "drop_path_rate": 0.1})
    student, teacher = build_dino_model(cfg), build_dino_model(cfg, teacher=True)
    assert isinstance(student, MultiCropWrapper)
    assert list(student.state_dict()) == list(teacher.state_dict())
    assert all(k.startswith(("backbone.", "head.")) for k in student.state_dict())
    assert student.backbone.blocks[1].drop_path1.drop_prob > 0
    assert isinstance(teacher.backbone.blocks[1].drop_path1, nn.Identity)


@pytest.mark.parametrize("changes,match", [
    (dict(local_crops_size=14), "local_crops_size 14 is not a multiple of the patch size 4"),
    (dict(global_crops_size=30), "global_crops_size 30"),
    (dict(warmup_teacher_temp_epochs=5), "warmup_teacher_temp_epochs 5"),
    (dict(teacher_temp=0.0), "teacher_temp must be > 0"),
])
def test_bad_dino_settings_are_rejected_with_the_fix(changes, match):
    from sslab.branches.dino import DINOBranch

    with pytest.raises(ValueError, match=match):
        DINOBranch(tiny_cfg(**changes))
