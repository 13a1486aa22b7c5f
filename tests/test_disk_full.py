"""A full disk during a save, and a resume on the still-full disk: one line each, the partial file
removed, the previous checkpoint untouched. A real filesystem that fills up: a small tmpfs mounted in
a private mount namespace (``unshare``), so nothing is left mounted whatever happens."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sslab import train
from sslab.engine import list_checkpoints, load_checkpoint
from tiny_run import BASE

TESTS = Path(__file__).parent


def test_full_disk_during_a_save_and_on_resume_is_one_line(tmp_path, image_folder):
    probe = BASE.replace(output_dir=str(tmp_path / "probe"), data=str(image_folder), max_steps=1)
    train(probe)
    size = list_checkpoints(probe.output_dir)[-1].stat().st_size
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir(), out.mkdir()
    run = [sys.executable, str(TESTS / "tiny_run.py"), "--output-dir", f"{disk}/run", "--data", str(image_folder)]
    # Room for one checkpoint and a half: the save at step 4 fits, the next one (epoch end, step 6) cannot.
    script = (f"mount -t tmpfs -o size={size * 3 // 2} tmpfs {disk} || exit 97\n"
              f"{' '.join(run)} --max-steps 8 > {out}/save.out 2> {out}/save.err; echo $? > {out}/save.rc\n"
              f"{' '.join(run)} --resume auto > {out}/resume.out 2> {out}/resume.err; echo $? > {out}/resume.rc\n"
              f"ls -a {disk}/run > {out}/ls.txt; cp {disk}/run/checkpoint-*.pt {out}/\n")
    if not shutil.which("unshare"):
        pytest.skip("no unshare(1) on this machine to mount a private tmpfs")
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=600)
    if done.returncode == 97 or "unshare:" in done.stderr:
        pytest.skip(f"cannot mount a private tmpfs here: {done.stderr.strip()[:200]}")

    for what, needle in (("save", "no space to write checkpoint"), ("resume", "no space to continue the run")):
        err = (out / f"{what}.err").read_text()
        assert (out / f"{what}.rc").read_text().strip() == "2", err
        assert "Traceback" not in err, err
        errors = [line for line in err.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and errors[0].startswith(f"sslab: error: {needle}"), err
    save_err = (out / "save.err").read_text()
    assert f"{disk}/run/checkpoint-00000006.pt: it needs about " in save_err
    assert "MB free on that filesystem (the partial file was removed; checkpoint-00000004.pt is untouched)" in save_err
    resume_err = (out / "resume.err").read_text()
    assert "(the size of checkpoint-00000004.pt)" in resume_err and "MB is free" in resume_err
    assert [n for n in (out / "ls.txt").read_text().split() if "checkpoint" in n] == ["checkpoint-00000004.pt"]
    assert load_checkpoint(out / "checkpoint-00000004.pt")["step"] == 4
