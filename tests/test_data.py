"""Data: decoding to RGB, bad files, sharded and resumable sampling, seeded per-sample augmentation."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslab.data import (BadImageError, ImageFolder, SeededTransformDataset, ShardedBatchSampler, load_demo,
                        load_rgb, mae_transform, open_images)
from sslab.data.sources import unpack_tar


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "RGB", "I;16", "LA", "1"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    arr = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert("RGB" if mode == "I;16" else mode)
    if mode == "I;16":
        img = Image.fromarray(arr[..., 0].astype(np.uint16) * 257)  # 16-bit grayscale
    ext = "jpg" if mode in ("CMYK", "L", "RGB") else "png"
    if mode == "CMYK":
        ext = "tiff"
    path = tmp_path / f"x.{ext}"
    img.save(path)
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (7, 9)


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 4))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 0
    img.save(tmp_path / "t.png", transparency=0)
    assert load_rgb(tmp_path / "t.png").mode == "RGB"


def test_undecodable_file_names_its_path(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(BadImageError, match="broken.jpg.*--skip-bad-files"):
        load_rgb(bad)


def test_skip_bad_files_replaces_and_counts(image_folder):
    (image_folder / "a" / "zz_bad.jpg").write_bytes(b"garbage")
    folder = ImageFolder(image_folder)
    bad_index = [i for i, (p, _) in enumerate(folder.samples) if p.endswith("zz_bad.jpg")][0]
    strict = SeededTransformDataset(folder, mae_transform(16), seed=0)
    with pytest.raises(BadImageError, match="zz_bad.jpg"):
        strict[(0, bad_index)]
    lenient = SeededTransformDataset(folder, mae_transform(16), seed=0, skip_bad_files=True)
    view, label, index, skipped = lenient[(0, bad_index)]
    assert view.shape == (3, 16, 16) and index == bad_index and skipped == 1


def test_image_folder_layout_and_errors(tmp_path, image_folder):
    folder = ImageFolder(image_folder)
    assert folder.classes == ["a", "b", "c"] and len(folder) == 24
    assert [lab for _, lab in folder.samples] == sorted(lab for _, lab in folder.samples)
    with pytest.raises(ValueError, match="does not exist"):
        ImageFolder(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "x.png")
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolder(tmp_path / "flat")


def test_tar_is_unpacked_into_the_cache_once(tmp_path, image_folder, monkeypatch):
    import tarfile

    monkeypatch.setenv("SSLAB_CACHE", str(tmp_path / "cache"))
    tar = tmp_path / "set.tar"
    (image_folder.parent / "wrap" / "train").mkdir(parents=True)
    image_folder.rename(image_folder.parent / "wrap" / "train" / "images")
    with tarfile.open(tar, "w") as t:
        t.add(image_folder.parent / "wrap", arcname="wrap")
    out = unpack_tar(tar)
    assert out.is_relative_to(tmp_path / "cache") and unpack_tar(tar) == out
    ds = open_images(str(tar), "train")
    assert isinstance(ds, ImageFolder) and ds.classes == ["images"]


def test_in_memory_folder_matches_decoded_files(tmp_path, image_folder, monkeypatch):
    monkeypatch.setenv("SSLAB_CACHE", str(tmp_path / "cache"))
    mem = open_images(str(image_folder), in_memory=True)
    folder = ImageFolder(image_folder)
    img, label = mem[5]
    assert img.dtype == torch.uint8 and img.shape == (3, 20, 20) and label == folder[5][1]
    assert np.array_equal(img.permute(1, 2, 0).numpy(), np.asarray(folder[5][0]))
    assert len(list((tmp_path / "cache").glob("inmem-*.npz"))) == 1


def test_demo_set_ships_with_the_package():
    train, test = load_demo("train"), load_demo("test", channels=3)
    assert len(train) == 4000 and len(test) == 1000
    assert train[0][0].shape == (1, 28, 28) and test[0][0].shape == (3, 28, 28)
    assert sorted(set(train.labels.tolist())) == list(range(10))


def test_sampler_shards_one_global_permutation():
    single = ShardedBatchSampler(103, batch_size=8, world_size=1, seed=3)
    shards = [ShardedBatchSampler(103, batch_size=4, world_size=2, rank=r, seed=3) for r in range(2)]
    for s in [single, *shards]:
        s.set_epoch(2)
    assert len(single) == len(shards[0]) == 12  # incomplete global batches are dropped
    for b_single, b0, b1 in zip(single, *shards):
        assert b_single == b0 + b1
    single.set_epoch(3)
    assert list(single)[0] != next(iter(ShardedBatchSampler(103, 8, seed=3)))


def test_sampler_resumes_mid_epoch():
    s = ShardedBatchSampler(50, batch_size=5, seed=1)
    s.set_epoch(1)
    full = list(s)
    s.set_epoch(1, start_batch=4)
    assert list(s) == full[4:]
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ShardedBatchSampler(10, batch_size=8, world_size=2)


def test_augmentation_depends_only_on_seed_epoch_and_index():
    ds = SeededTransformDataset(load_demo("train"), mae_transform(28, (0.5,), (0.5,)), seed=7)
    a = ds[(0, 11)][0]
    torch.manual_seed(123)  # the global stream must not matter
    assert torch.equal(ds[(0, 11)][0], a)
    assert not torch.equal(ds[(1, 11)][0], a)
    state = torch.get_rng_state()
    ds[(0, 12)]
    assert torch.equal(torch.get_rng_state(), state)  # and is not consumed


def test_images_load_in_the_recipes_channel_count(image_folder, tmp_path):
    """RGB, L, P, RGBA and CMYK files all come out as 1-channel L or 3-channel RGB, on both paths."""
    from sslab.errors import SslabError

    gray = ImageFolder(image_folder, channels=1)
    assert {gray[i][0].mode for i in range(len(gray))} == {"L"}
    assert {ImageFolder(image_folder, channels=3)[i][0].mode for i in range(5)} == {"RGB"}
    mem = open_images(str(image_folder), in_memory=True, channels=1)
    assert tuple(mem.images.shape[1:]) == (1, 20, 20)
    with pytest.raises(SslabError, match="in_chans 2 is not supported"):
        ImageFolder(image_folder, channels=2)


def test_file_check_is_cached_per_dataset(image_folder, tmp_path):
    """The second check of an unchanged dataset reads the cache (planted entry comes back); a changed
    file changes the key and is checked again."""
    import json

    from sslab.data.file_check import find_bad_files

    paths = [p for p, _ in ImageFolder(image_folder).samples]
    assert find_bad_files(paths, tmp_path / "c", "x") == []
    (entry,) = (tmp_path / "c" / "file-checks").glob("x-*.json")
    entry.write_text(json.dumps({"files": len(paths), "bad": [[paths[0], "planted"]]}))
    assert find_bad_files(paths, tmp_path / "c", "x") == [(paths[0], "planted")]
    whole = Path(paths[1]).read_bytes()  # a JPEG (000-001 alternate RGB, L, ... in make_image_folder)
    Path(paths[1]).write_bytes(whole[:-2])  # its end marker cut off: a new key, so checked again
    assert find_bad_files(paths, tmp_path / "c", "x") == [
        (paths[1], f"truncated JPEG file ({len(whole) - 2} bytes, no end marker)")]


def test_error_from_a_dataloader_worker_is_still_one_line():
    from torch._utils import ExceptionWrapper

    from sslab.errors import one_line

    try:
        raise BadImageError("/x/a.jpg", "Truncated File Read")
    except BadImageError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(BadImageError) as e:
        wrapped.reraise()  # what the DataLoader does in the main process: the message holds the worker's traceback
    assert "\n" in str(e.value)
    assert one_line(e.value) == ("cannot decode image /x/a.jpg: Truncated File Read; remove or fix the file, or pass "
                                 "--skip-bad-files true to leave undecodable files out (they are counted in the log)")
