"""A run killed with SIGKILL and resumed ends exactly where an uninterrupted run ends."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from metaprompt.run.checkpoint import load_checkpoint, read_init_file, read_safetensors
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


@pytest.mark.slow
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
    best_a, info_a = read_init_file(full / "best.safetensors")
    best_b, info_b = read_init_file(killed / "best.safetensors")
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


class _Killed(Exception):
    pass


def test_killed_evaluation_goes_on_where_it_stopped(tmp_path, tiny_data, tiny_models, monkeypatch):
    """Scores are saved per episode: an evaluation stopped after 4 of 2 × 5 episodes, run again,
    scores only the other 6 and ends with the results of an uninterrupted evaluation."""
    import metaprompt.run.evaluate as evaluation
    from metaprompt.config import Config
    from metaprompt.run.eval_progress import PARTIAL_FILE
    from metaprompt.run.train import train

    run = tmp_path / "run"
    train(Config.load(None, tiny_overrides(tiny_data, tiny_models("bert"), **{
        "train.episodes": 2, "eval.episodes": 5, "eval.reference": False})), run)
    full = evaluation.evaluate(run)
    assert not (run / PARTIAL_FILE).exists()

    real, calls = evaluation.adapt_and_score, []

    def dies_after(limit):
        def adapt_and_score(*args):
            if len(calls) == limit:
                raise _Killed
            calls.append(args[2].index)
            return real(*args)
        return adapt_and_score

    monkeypatch.setattr(evaluation, "adapt_and_score", dies_after(4))
    with pytest.raises(_Killed):
        evaluation.evaluate(run)
    lines = (run / PARTIAL_FILE).read_text().splitlines()
    assert len(lines) == 1 + 4  # the fingerprint, then one line per scored episode
    with open(run / PARTIAL_FILE, "a") as f:  # killed while writing the fifth line
        f.write('{"init": "pretrained", "episode": 4, "accur')

    calls.clear()
    monkeypatch.setattr(evaluation, "adapt_and_score", dies_after(99))
    resumed = evaluation.evaluate(run)
    assert calls == [4, 0, 1, 2, 3, 4]  # the last pretrained episode, then every meta episode
    assert [r["episodes_resumed"] for r in resumed["results"]] == [4, 0]
    for a, b in zip(full["results"], resumed["results"]):
        assert a["init"] == b["init"] and a["accuracies_per_episode"] == b["accuracies_per_episode"]
    assert not (run / PARTIAL_FILE).exists()


def test_partial_scores_are_reused_only_for_the_same_setting(tmp_path, tiny_data, tiny_models, monkeypatch):
    """Another thread count reuses the saved scores; another adaptation sets them aside."""
    import metaprompt.run.evaluate as evaluation
    from metaprompt.config import Config
    from metaprompt.run.eval_progress import PARTIAL_FILE
    from metaprompt.run.train import train

    run = tmp_path / "run"
    train(Config.load(None, tiny_overrides(tiny_data, tiny_models("bert"), **{
        "train.episodes": 2, "eval.episodes": 3, "eval.reference": False})), run)
    real = evaluation.adapt_and_score

    def dies_at_episode_2(algorithm, params, task, cfg):
        if task.index == 2:
            raise _Killed
        return real(algorithm, params, task, cfg)

    def killed_evaluation():
        monkeypatch.setattr(evaluation, "adapt_and_score", dies_at_episode_2)
        with pytest.raises(_Killed):
            evaluation.evaluate(run, ["threads=1"])
        assert len((run / PARTIAL_FILE).read_text().splitlines()) == 1 + 2
        monkeypatch.setattr(evaluation, "adapt_and_score", real)

    killed_evaluation()
    other_steps = evaluation.evaluate(run, ["eval.steps=1"])
    assert [r["episodes_resumed"] for r in other_steps["results"]] == [0, 0]
    assert (run / (PARTIAL_FILE + ".stale")).is_file() and not (run / PARTIAL_FILE).exists()

    killed_evaluation()
    other_threads = evaluation.evaluate(run, ["threads=2"])
    assert [r["episodes_resumed"] for r in other_threads["results"]] == [2, 0]
