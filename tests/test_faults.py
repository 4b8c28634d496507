"""Faults during training: NaN/inf, a full disk, and SIGKILL at any moment (also inside a
checkpoint write). The previous checkpoint always stays loadable, `--resume` always finishes,
and no NaN ever reaches checkpoint.safetensors or best.safetensors."""
from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metaprompt.cli import main
from metaprompt.run.checkpoint import CheckpointError, load_checkpoint, read_init_file, save_checkpoint, write_init_file
from tests.conftest import tiny_overrides
from tests.tiny import cli_sets

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("keep_torch_threads")  # the CLI sets threads=1



def _all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def _assert_saved_files_finite(run: Path) -> int:
    """Both files load and hold finite parameters; returns the checkpoint's step."""
    ckpt = load_checkpoint(run / "checkpoint.safetensors")
    assert _all_finite(ckpt["params"])
    if (run / "best.safetensors").exists():
        best, _ = read_init_file(run / "best.safetensors")
        assert _all_finite(best)
    return ckpt["state"]["step"]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- NaN and inf


def test_nonfinite_loss_stops_naming_step_and_episode(tmp_path, tiny_data, tiny_models, capsys):
    run = tmp_path / "run"
    sets = cli_sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1, **{"meta.inner_lr": 1e30}))
    capsys.readouterr()
    assert main(["train", "--out", str(run), *sets]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: non-finite loss or gradient at outer step 1, training episode"), err
    assert "the last checkpoint" in err and "train.on_nonfinite=skip" in err and "Traceback" not in err
    assert _assert_saved_files_finite(run) == 0
    assert not (run / "train_summary.json").exists()


def test_nonfinite_loss_skipped_on_request(tmp_path, tiny_data, tiny_models):
    run = tmp_path / "run"
    sets = cli_sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1,
                                **{"meta.inner_lr": 1e30, "train.on_nonfinite": "skip"}))
    assert main(["train", "--out", str(run), *sets]) == 0
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["skipped_steps"] == summary["outer_steps"] == 4
    assert _assert_saved_files_finite(run) == 4


def test_update_that_overflows_stops_before_anything_is_saved(tmp_path, tiny_data, tiny_models, capsys, monkeypatch):
    # A finite loss and gradient, but an update that overflows (as a huge learning rate can):
    # the next validation would otherwise have saved the NaN parameters as the best init.
    real_step = torch.optim.Adam.step
    calls = {"n": 0}

    def step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    run = tmp_path / "run"
    sets = cli_sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1))
    assert main(["train", "--out", str(run), *sets]) == 2
    err = capsys.readouterr().err
    assert "the update of outer step 2" in err and "non-finite" in err, err
    assert _assert_saved_files_finite(run) == 1


def test_checkpoint_files_refuse_nan(tmp_path):
    params = {"prompt.embeds": torch.zeros(2, 3), "verbalizer.log_scale": torch.zeros(())}
    write_init_file(tmp_path / "best.safetensors", params, {"step": 0})
    before = (tmp_path / "best.safetensors").read_bytes()
    params["prompt.embeds"][1, 2] = float("nan")
    with pytest.raises(CheckpointError, match="'prompt.embeds' has non-finite values"):
        write_init_file(tmp_path / "best.safetensors", params, {"step": 1})
    optimizer = torch.optim.Adam([p.requires_grad_() for p in params.values()])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with pytest.raises(CheckpointError, match="non-finite"):
        save_checkpoint(tmp_path / "checkpoint.safetensors", params, optimizer, scheduler, {"step": 1})
    assert (tmp_path / "best.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors"]


# ---------------------------------------------------------------- full disk


def test_disk_full_during_training_keeps_the_last_checkpoint(tmp_path, tiny_data, tiny_models, capsys, monkeypatch):
    import metaprompt.run.checkpoint as checkpoint_module

    real_save = checkpoint_module.save_file
    calls = {"n": 0}

    def save_file(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] == 6:  # step-0 checkpoint, best, checkpoint, steps 1 and 2, then the disk is full
            Path(filename).write_bytes(b"\0" * 100)  # part of the file got out
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint_module, "save_file", save_file)
    run = tmp_path / "run"
    sets = cli_sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1, **{"train.episodes": 6,
                                                                               "train.val_every": 3}))
    assert main(["train", "--out", str(run), *sets]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and f"train --resume {run}" in err and "Traceback" not in err, err
    assert _assert_saved_files_finite(run) == 2
    assert not list(run.glob(".*.tmp")), "a partial temporary file was left behind"
    monkeypatch.undo()
    assert main(["train", "--resume", str(run)]) == 0
    assert _assert_saved_files_finite(run) == 6


# ---------------------------------------------------------------- SIGKILL at any moment

# Runs the CLI with a checkpoint write that ends in SIGKILL: "replace" kills after the new file is
# complete but before it is renamed over the old one, "torn" after writing half of it.
_KILLING_WRITER = r"""
import os, signal, sys
from pathlib import Path
import metaprompt.run.checkpoint as ck

mode, at = sys.argv[1], int(sys.argv[2])
count = [0]
real_save = ck.save_file

def save_file(tensors, filename, metadata=None):
    real_save(tensors, filename, metadata=metadata)
    if not Path(filename).name.startswith(".checkpoint.safetensors."):
        return
    count[0] += 1
    if count[0] == at:
        if mode == "torn":
            data = Path(filename).read_bytes()
            Path(filename).write_bytes(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

ck.save_file = save_file
from metaprompt.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _kill_inside_write(mode: str, at: int, argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", _KILLING_WRITER, mode, str(at), *argv], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def _kill_at_random(argv: list[str], ckpt: Path, delay: float) -> None:
    """Start the CLI, wait for its first checkpoint write, then SIGKILL it ``delay`` seconds later."""
    before = ckpt.stat().st_mtime_ns if ckpt.exists() else None
    proc = subprocess.Popen([sys.executable, "-m", "metaprompt", *argv], env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and ckpt.stat().st_mtime_ns != before:
            break
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_at_random_moments_and_inside_checkpoint_writes(tmp_path, tiny_data, tiny_models):
    overrides = tiny_overrides(tiny_data, tiny_models("bert"), **{
        "threads": 1, "train.episodes": 40, "train.checkpoint_every": 1, "train.val_every": 8, "train.patience": 0})
    reference, run = tmp_path / "reference", tmp_path / "killed"
    assert main(["train", "--out", str(reference), *cli_sets(overrides)]) == 0
    ckpt = run / "checkpoint.safetensors"
    resume = ["train", "--resume", str(run)]

    # Killed after the n-th checkpoint was written but before it replaced the one before (writes:
    # the step-0 checkpoint taken at once, the one after the first validation, then one per step).
    n = random.Random(0).randint(3, 6)
    _kill_inside_write("replace", n, ["train", "--out", str(run), *cli_sets(overrides)])
    assert _assert_saved_files_finite(run) == n - 3
    assert list(run.glob(".checkpoint.safetensors.*.tmp")), "the kill should have left the unrenamed new file"

    # A metrics line torn by a kill, then a kill halfway through writing the m-th checkpoint.
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 2, "episodes": 2, "lo')
    m = random.Random(1).randint(1, 4)
    _kill_inside_write("torn", m, resume)
    assert _assert_saved_files_finite(run) == n - 3 + m - 1

    # A kill at a random moment (a seeded delay after the resumed process's first checkpoint).
    _kill_at_random(resume, ckpt, random.Random(2).uniform(0.0, 0.4))
    assert n - 3 + m - 1 <= _assert_saved_files_finite(run) <= 40

    finished = subprocess.run([sys.executable, "-m", "metaprompt", *resume], env=_env(), cwd=ROOT,
                              capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert not list(run.glob(".*.tmp"))

    # The interrupted run ends exactly where the uninterrupted one does.
    a, b = load_checkpoint(reference / "checkpoint.safetensors"), load_checkpoint(ckpt)
    assert a["state"]["step"] == b["state"]["step"] == 40
    assert all(torch.equal(a["params"][k], b["params"][k]) for k in a["params"])
    best_a, info_a = read_init_file(reference / "best.safetensors")
    best_b, info_b = read_init_file(run / "best.safetensors")
    assert info_a == info_b and all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    assert _metrics(reference) == _metrics(run)
