"""A run killed with SIGKILL and resumed ends exactly where an uninterrupted run ends."""
import json
import os
import signal
import subprocess
import sys
import time

import torch

from metaprompt.run.checkpoint import load_checkpoint, load_init, read_safetensors
from tests.conftest import tiny_overrides


def _command(out, sets, resume=False):
    args = [sys.executable, "-m", "metaprompt", "train"]
    args += ["--resume", str(out)] if resume else ["--out", str(out)]
    for item in sets:
        args += ["--set", item]
    return args


def _step_of(path):
    try:
        _, metadata = read_safetensors(path)
        return json.loads(metadata["state"])["step"]
    except Exception:  # not written yet, or being replaced
        return -1


def test_sigkill_and_resume_matches_uninterrupted_run(tmp_path, tiny_data, tiny_models):
    model = tiny_models("bert")
    sets = tiny_overrides(tiny_data, model, **{
        "threads": 1, "train.episodes": 40, "train.checkpoint_every": 1, "train.val_every": 10,
        "train.patience": 0, "meta.algorithm": "maml++", "train.schedule": "cosine"})
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_command(full, sets), check=True, env=env, capture_output=True)

    proc = subprocess.Popen(_command(killed, sets), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _step_of(killed / "checkpoint.safetensors") < 12 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "train_summary.json").exists(), "the run finished before it could be killed"
    assert 12 <= _step_of(killed / "checkpoint.safetensors") < 40

    subprocess.run(_command(killed, [], resume=True), check=True, env=env, capture_output=True)

    a, b = load_checkpoint(full / "checkpoint.safetensors"), load_checkpoint(killed / "checkpoint.safetensors")
    assert a["state"]["step"] == b["state"]["step"] == 40
    for name in a["params"]:
        assert torch.equal(a["params"][name], b["params"][name]), name
    best_a, info_a = load_init(full / "best.safetensors")
    best_b, info_b = load_init(killed / "best.safetensors")
    assert info_a == info_b
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    summary_a = json.loads((full / "train_summary.json").read_text())
    summary_b = json.loads((killed / "train_summary.json").read_text())
    assert summary_a["validation"] == summary_b["validation"]
    metrics = lambda run: [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert metrics(full) == metrics(killed)


def test_resume_refuses_a_missing_checkpoint(tmp_path):
    from metaprompt.cli import main

    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
