"""``--data cifar10`` / ``fashion-mnist``: resolved from the cache; nothing downloads in the tests."""

import gzip
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from sslab.data import open_images
from sslab.errors import SslabError
from sslab.viz.samples import held_out_split

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_cifar10_from_a_populated_cache(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("SSLAB_CACHE", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "named").mkdir()
    x = np.arange(6 * 3 * 32 * 32, dtype=np.uint8).reshape(6, 3, 32, 32)
    np.savez(tmp_path / "named" / "cifar10-test.npz", images=x, labels=np.arange(6))
    ds = open_images("cifar10:val", "train", channels=3)  # val means test
    assert len(ds) == 6 and ds.classes[0] == "airplane" and (ds[5][0].numpy() == x[5]).all() and ds[5][1] == 5
    assert len(open_images("CIFAR10", "test")) == 6 and held_out_split("cifar10") == "test"
    with pytest.raises(SslabError, match="3-channel images, in_chans is 1"):
        open_images("cifar10", "test", channels=1)
    with pytest.raises(SslabError, match="not 'holdout'"):
        open_images("cifar10:holdout", "train")
    # A local folder of that name wins over the named dataset.
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "cifar10" / c).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "cifar10" / c / "0.png")
    assert len(open_images("cifar10", "train")) == 2


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(), reason="needs the shared Fashion-MNIST files")
def test_fashion_mnist_through_torchvision_from_its_own_cache_layout(tmp_path, monkeypatch, no_network):
    # torchvision's own folder, filled as its downloader leaves it: torchvision reads it and downloads nothing.
    monkeypatch.setenv("SSLAB_CACHE", str(tmp_path))
    raw = tmp_path / "torchvision" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(SHARED / "fashion-mnist" / f"{f}.gz") as src, open(raw / f, "wb") as dst:
            shutil.copyfileobj(src, dst)
    ds = open_images("fashion-mnist", "test", channels=1)
    assert len(ds) == 10_000 and tuple(ds[0][0].shape) == (1, 28, 28) and ds.classes[9] == "Ankle-boot"
    first = ds[0][0].clone()
    shutil.rmtree(tmp_path / "torchvision")  # later runs read the arrays kept in the cache
    rgb = open_images("fashion-mnist", "test", channels=3)
    assert tuple(rgb[0][0].shape) == (3, 28, 28) and (rgb[0][0][2] == first[0]).all()
    assert sorted(p.name for p in (tmp_path / "named").iterdir()) == ["fashion-mnist-test.npz"]
