"""Loading never executes code: a pickle with a code payload is refused by every loader, naming the file."""

import argparse
import builtins
import fractions
import pickle

import pytest
import torch
from safetensors.torch import save_file

from sslab import export_encoder, load_encoder
from sslab.engine import load_checkpoint
from sslab.serialization import UnsafeCheckpointError, safe_load


class Payload:
    """Unpickling this calls ``exec`` with code that writes ``marker``: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').write('payload ran')",)


def malicious_file(tmp_path, fmt):
    """A checkpoint-looking dict with the payload hidden inside, as torch.save (zip) or a plain pickle."""
    marker = tmp_path / f"ran_{fmt}.txt"
    obj = {"model": {"w": torch.ones(2)}, "config": {"method": "mae"}, "extra": Payload(marker)}
    path = tmp_path / f"evil_{fmt}.pth"
    if fmt == "torch_zip":
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=int(fmt[-1]))
    return path, marker


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("fmt", ["torch_zip", "pickle_protocol2", "pickle_protocol5"])
def test_code_payload_is_refused_and_never_runs(tmp_path, fmt):
    path, marker = malicious_file(tmp_path, fmt)
    loaders = {
        "safe_load": lambda: safe_load(path),
        "load_checkpoint": lambda: load_checkpoint(path),
        "load_encoder": lambda: load_encoder(path, model="vit_tiny_patch16_224"),
        "export_encoder": lambda: export_encoder(path, tmp_path / "out"),
    }
    for name, load in loaders.items():
        with pytest.raises(UnsafeCheckpointError, match=f"refusing to load {path}.*could run code") as e:
            load()
        if fmt == "torch_zip":  # the message says what the file asked for
            assert "asks for builtins.exec" in str(e.value), name
        assert not marker.exists(), f"{name} executed the payload"
    assert not (tmp_path / "out").exists()
    # Control: the payload is live, so the test above could fail. An unsafe load runs it.
    if fmt == "torch_zip":
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as f:
            pickle.load(f)
    assert marker.read_text() == "payload ran"


def test_official_checkpoint_args_namespace_is_allowed(tmp_path):
    args = argparse.Namespace(model="mae_vit_base_patch16", lr=None, blr=1.5e-4, norm_pix_loss=True,
                              input_size=224, output_dir="./output_dir", betas=[0.9, 0.95])
    torch.save({"model": {"w": torch.arange(3.0)}, "args": args, "epoch": 799, "scaler": {}}, tmp_path / "c.pth")
    got = safe_load(tmp_path / "c.pth")
    assert got["args"] == args and got["epoch"] == 799 and torch.equal(got["model"]["w"], torch.arange(3.0))


def test_other_objects_are_refused_even_if_harmless(tmp_path):
    torch.save({"w": torch.ones(1), "ratio": fractions.Fraction(1, 3)}, tmp_path / "f.pth")
    with pytest.raises(UnsafeCheckpointError, match="fractions.Fraction"):
        safe_load(tmp_path / "f.pth")


def test_safetensors_by_suffix_or_content(tmp_path):
    sd = {"a": torch.randn(2, 3), "b": torch.arange(4)}
    save_file(sd, str(tmp_path / "w.safetensors"))
    (tmp_path / "w.bin").write_bytes((tmp_path / "w.safetensors").read_bytes())
    for name in ("w.safetensors", "w.bin"):
        got = safe_load(tmp_path / name)
        assert set(got) == {"a", "b"} and all(torch.equal(got[k], sd[k]) for k in sd)


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="nope.pt"):
        safe_load(tmp_path / "nope.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="cut.pt"):
        safe_load(tmp_path / "cut.pt")
