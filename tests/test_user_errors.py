"""Every user mistake ends the command with ONE stderr line ``sslab: error: <what, value>; <way out>``,
exit status 2, before any training step (no checkpoint, no metrics row). Real processes, as a user
runs them; they are started together (a few at a time) so the file stays fast on 2 cores."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
QUICK = ["--wandb-mode", "disabled", "--num-workers", "0", "--progress-bar", "false"]


def bomb_png(path: Path, side: int = 40000) -> None:
    """A tiny PNG whose header claims side x side pixels (over PIL's decompression-bomb limit)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def bad_folder(root: Path) -> tuple[Path, list[str]]:
    """12 RGB JPEGs in 2 classes plus 4 bad files: empty, not an image, truncated, decompression bomb."""
    rng = np.random.default_rng(0)
    for c in "ab":
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / c / f"{i}.jpg")
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "a" / "garbage.png").write_bytes(b"not an image at all")
    whole = (root / "b" / "0.jpg").read_bytes()
    (root / "b" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    bomb_png(root / "b" / "bomb.png")
    return root, [str(root / n) for n in ("a/empty.jpg", "a/garbage.png", "b/truncated.jpg", "b/bomb.png")]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Runs every case once, concurrently; returns {case: (CompletedProcess, run dir)} and the bad files."""
    tmp = tmp_path_factory.mktemp("user_errors")
    folder, bad = bad_folder(tmp / "images")
    recipe = tmp / "typo_recipe.py"
    recipe.write_text("from sslab import Config, main\n\nCONFIG = Config(maks_ratio=0.5)\n\nif __name__ == '__main__':\n"
                      "    main(CONFIG)\n")
    bug = tmp / "bug_recipe.py"
    bug.write_text("import sslab\n\n{}['no such key']\n")
    demo = [str(ROOT / "experiments" / "mae_demo.py")]
    tiny = ["--model-kwargs", '{"depth": 1}', "--decoder-depth", "1", "--batch-size", "4", "--max-steps", "1",
            "--log-every", "1"]
    cases: dict[str, tuple[list[str], dict[str, str]]] = {
        "mask_ratio_0": (demo + ["--mask-ratio", "0"], {}),
        "mask_ratio_099": (demo + ["--mask-ratio", "0.99", "--img-size", "32"], {}),  # 64 patches
        "betas": (demo + ["--betas", "0.9"], {}),
        "crop_scale": (demo + ["--crop-scale", "0.2,0.5,0.9"], {}),
        "model_kwargs": (demo + ["--model-kwargs", '{"dept": 6}'], {}),
        "timm_name": (demo + ["--model", "vit_tiny_patch16_22"], {}),
        "config_typo": ([str(recipe)], {}),
        "misspelled": (demo + ["--mask-ratoi", "0.6"], {}),
        "prefix": (demo + ["--epoch", "1"], {}),
        "no_data": ([str(ROOT / "experiments" / "mae_vitb.py")], {}),
        "in_chans_2": (demo + ["--in-chans", "2", "--mean", "0.5,0.5", "--std", "0.5,0.5"], {}),
        "bad_files_disk": (demo + ["--data", str(folder)], {}),
        "bad_files_memory": (demo + ["--data", str(folder), "--in-memory", "true"], {}),
        "skip_disk": (demo + ["--data", str(folder), "--skip-bad-files", "true"] + tiny, {}),
        "skip_memory": (demo + ["--data", str(folder), "--skip-bad-files", "true", "--in-memory", "true"] + tiny, {}),
        "eval_missing": (["-m", "sslab.eval.knn", str(tmp / "nope.pt"), "--data", "demo", "--in-memory", "true",
                          "--wandb-project", "p", "--wandb-group", "g"], {}),
        "debug_flag": (demo + ["--mask-ratio", "0", "--debug"], {}),
        "debug_env": (demo + ["--mask-ratio", "0"], {"SSLAB_DEBUG": "1"}),
        "bug": ([str(bug)], {}),
        "help_without_torch": (["-c", "import runpy, sys; sys.argv = ['mae_demo.py', '--help']\ntry:\n"
                                f"    runpy.run_path({demo[0]!r}, run_name='__main__')\nexcept SystemExit:\n"
                                "    print('torch imported:', 'torch' in sys.modules)"], {}),
    }

    def run(item):
        name, (args, env) = item
        out = tmp / "runs" / name
        extra = QUICK + ["--output-dir", str(out)] if not args[0].startswith(("-m", "-c")) and name != "bug" else []
        proc = subprocess.run([PY, *args, *extra], capture_output=True, text=True, timeout=600, cwd=tmp,
                              env={**os.environ, "SSLAB_CACHE": str(tmp / "cache"), "WANDB_MODE": "disabled", **env})
        return name, (proc, out)

    with ThreadPoolExecutor(3) as pool:
        results = dict(pool.map(run, cases.items()))
    return results, bad


def assert_one_line(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("sslab: error: ") and "; " in line, line
    for f in fragments:
        assert f in line, (f, line)
    return line


def assert_nothing_trained(run_dir: Path) -> None:
    assert not list(run_dir.glob("checkpoint-*.pt")) and not (run_dir / "metrics.jsonl").exists()


@pytest.mark.parametrize("case, fragments", [
    ("mask_ratio_0", ["mask_ratio 0.0 removes none of the 49 patches", "pass a --mask-ratio of at least"]),
    ("mask_ratio_099", ["mask_ratio 0.99 keeps none of the 64 patches", "--mask-ratio of at most 0.984"]),
    ("betas", ["--betas takes 2 comma-separated numbers, got '0.9'", "e.g. --betas 0.9,0.95"]),
    ("crop_scale", ["--crop-scale takes 2 comma-separated numbers, got '0.2,0.5,0.9'", "e.g. --crop-scale"]),
    ("model_kwargs", ["--model-kwargs: vit_tiny_patch16_224 (VisionTransformer) has no argument 'dept'",
                      "did you mean 'depth'?"]),
    ("timm_name", ["--model 'vit_tiny_patch16_22': unknown timm model", "did you mean vit_tiny_patch16_224"]),
    ("config_typo", ["unknown config field(s) maks_ratio (did you mean mask_ratio?)"]),
    ("misspelled", ["unknown option --mask-ratoi; did you mean --mask-ratio?"]),
    ("prefix", ["unknown option --epoch; did you mean --epochs?"]),
    ("no_data", ["--data is required", "pass --data /path/to/images"]),
    ("in_chans_2", ["in_chans 2 is not supported", "pass --in-chans 1 or --in-chans 3"]),
    ("eval_missing", ["nope.pt does not exist", "give a checkpoint-*.pt"]),
])
def test_one_line_before_compute(world, case, fragments):
    results, _ = world
    proc, run_dir = results[case]
    assert_one_line(proc, *fragments)
    assert_nothing_trained(run_dir)


@pytest.mark.parametrize("case", ["bad_files_disk", "bad_files_memory"])
def test_every_bad_file_is_named_before_compute(world, case):
    results, bad = world
    proc, run_dir = results[case]
    line = assert_one_line(proc, "4 of 16 image files", "pass --skip-bad-files true", "decompression bomb")
    for path in bad:
        assert line.count(path) == 1, path
    assert_nothing_trained(run_dir)


@pytest.mark.parametrize("case", ["skip_disk", "skip_memory"])
def test_skipped_files_named_once_counted_once(world, case):
    """A 1-channel recipe (the demo) on RGB JPEGs trains: images load as grayscale; the 4 bad files are
    each named once, counted once, the total in the log, the metrics and the final line."""
    results, bad = world
    proc, run_dir = results[case]
    assert proc.returncode == 0, proc.stderr
    for path in bad:
        assert proc.stderr.count(path) == 1, (path, proc.stderr)
    assert "skipped 4 of 16 image files" in proc.stderr and "pass --skip-bad-files" not in proc.stderr
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_files"] for r in rows] == [4]
    assert "4 unreadable files skipped" in proc.stdout


def test_torchrun_prints_the_line_once_per_run(tmp_path):
    """2 processes, a global batch of 1: one line from rank 0 (torchrun adds its own failure summary)."""
    torchrun = Path(PY).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", str(ROOT / "experiments" / "mae_demo.py"),
                           *QUICK, "--output-dir", str(tmp_path / "run"), "--effective-batch-size", "1",
                           "--batch-size", "1"], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "SSLAB_CACHE": str(tmp_path / "cache")})
    assert proc.returncode != 0
    ours = [x for x in proc.stderr.splitlines() if x.startswith("sslab: error:")]
    assert ours == ["sslab: error: effective_batch_size 1 is smaller than the 2 processes, each of which needs at "
                    "least one image per step; pass --effective-batch-size 2 or more, or start 1 process(es)"]
    assert "mae_demo.py\", line" not in proc.stderr  # no traceback from the workers
    assert_nothing_trained(tmp_path / "run")


def test_debug_shows_the_traceback_and_bugs_keep_theirs(world):
    results, _ = world
    for case in ("debug_flag", "debug_env"):
        proc, _ = results[case]
        assert proc.returncode != 0 and "Traceback" in proc.stderr
        assert "SslabError: mask_ratio 0.0 removes none" in proc.stderr
    proc, _ = results["bug"]
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "KeyError: 'no such key'" in proc.stderr
    assert "sslab: error" not in proc.stderr


def test_help_needs_no_torch(world):
    results, _ = world
    proc, _ = results["help_without_torch"]
    assert proc.returncode == 0, proc.stderr
    assert "torch imported: False" in proc.stdout and "--mask-ratio FLOAT" in proc.stdout
