"""A run directory has one owner and one truth (issue 23, part 1).

- one writer at a time: a second `train`, `train --resume`, `eval` or `export` into the run is
  refused (exit 2, one `error:` line naming the holder's pid) while another process owns it, and
  a killed owner never blocks the next command;
- on resume, config.yaml is the truth: a --set that changes what is trained is refused, runtime
  keys are allowed and recorded in run.json;
- nothing a command writes silently replaces an earlier result (results.json, episode files).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metaprompt.cli import main
from metaprompt.run.rundir import LOCK_FILE, OWNER_FILE, RunDirBusy, owned
from tests.conftest import tiny_overrides
from tests.tiny import cli_sets

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.usefixtures("keep_torch_threads")  # the CLI sets threads=1


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metaprompt", *argv], env=ENV, cwd=ROOT, capture_output=True,
                          text=True, timeout=240)


def _one_error(done: subprocess.CompletedProcess, *parts: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    err = done.stderr
    assert err.startswith("error: ") and err.count("error: ") == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, err
    return err


def _expect_error(capsys, argv, *parts) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("error: ") == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data, tiny_models):
    """A finished, evaluated run (copied by tests that change it)."""
    run = tmp_path_factory.mktemp("owned") / "run"
    sets = cli_sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1, **{"train.episodes": 2}))
    assert main(["train", "--out", str(run), *sets]) == 0
    return run


def _copy(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to)
    return to


# ------------------------------------------------------------------------------ one writer at a time
@pytest.mark.slow
def test_a_running_train_owns_its_directory(tmp_path, tiny_data, tiny_models):
    """Two real `metaprompt train` processes on one --out: the second (and an eval, a resume) is
    refused naming the first's pid; once the first is killed, its lock does not block a resume."""
    run = tmp_path / "run"
    sets = cli_sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1, **{
        "train.episodes": 100000, "train.patience": 0, "train.val_every": 1000}))
    first = subprocess.Popen([sys.executable, "-m", "metaprompt", "train", "--out", str(run), *sets], env=ENV,
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run / "checkpoint.safetensors").is_file() and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert first.poll() is None and (run / "checkpoint.safetensors").is_file()
        holder = f"pid {first.pid}, `metaprompt train`"
        _one_error(_cli("train", "--out", str(run), *sets), holder, "is in use by another metaprompt process")
        _one_error(_cli("eval", str(run)), holder, "`metaprompt eval` would write into it")
        _one_error(_cli("train", "--resume", str(run)), holder)
        assert first.poll() is None, "the first run was disturbed"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the killed process left its lock file and a stale owner file behind: neither blocks
    assert (run / LOCK_FILE).is_file() and json.loads((run / OWNER_FILE).read_text())["pid"] == first.pid
    done = _cli("eval", str(run), "--init", "pretrained", "--episodes", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (run / OWNER_FILE).exists()  # released on exit


@pytest.mark.parametrize("command", ["eval", "resume", "export into the run", "train --out"])
def test_second_writer_is_refused_while_another_process_holds_the_run(trained, tmp_path, tiny_data, tiny_models,
                                                                      command):
    # train --out: a new directory that another process has just created and locked
    run = tmp_path / "new" if command == "train --out" else _copy(trained, tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from metaprompt.run.rundir import owned\n"
        f"with owned({str(run)!r}, 'eval'):\n    print('held', flush=True); time.sleep(120)")],
        env=ENV, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _digest(run)
        argv = {"eval": ["eval", str(run)], "resume": ["train", "--resume", str(run)],
                "export into the run": ["export", str(run), "--out", str(run / "export")],
                "train --out": ["train", "--out", str(run),
                                *cli_sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1))]}[command]
        _one_error(_cli(*argv), f"pid {holder.pid}, `metaprompt eval`")
        assert _digest(run) == before and not (run / "export").exists()
    finally:
        holder.kill()
        holder.wait()


def test_owner_is_named_and_the_lock_reentrant_in_process(tmp_path):
    run = tmp_path / "run"
    with owned(run, "train"):
        with owned(run, "eval"):  # baseline: train, then eval, in one process
            assert json.loads((run / OWNER_FILE).read_text())["pid"] == os.getpid()
        code = ("from metaprompt.run.rundir import owned\n"
                f"with owned({str(run)!r}, 'eval'): pass")
        done = subprocess.run([sys.executable, "-c", code], env=ENV, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode != 0 and "RunDirBusy" in done.stderr and f"pid {os.getpid()}" in done.stderr
        (run / OWNER_FILE).unlink()  # a holder that has not written its owner file yet
        done = subprocess.run([sys.executable, "-c", code], env=ENV, cwd=ROOT, capture_output=True, text=True)
        assert "RunDirBusy" in done.stderr and "pid is not recorded" in done.stderr
    with owned(run, "eval"):  # released
        pass
    assert issubclass(RunDirBusy, Exception)


# ------------------------------------------------------------------------------ config.yaml is the truth
@pytest.mark.parametrize("sets, named", [
    (["seed=77", "train.lr=0.5"], ["seed (1999 -> 77)", "train.lr (0.002 -> 0.5)"]),
    (["prompt.length=3"], ["prompt.length (2 -> 3)"]),
    (["meta.inner_lr=0.5", "threads=2"], ["meta.inner_lr (0.1 -> 0.5)"]),
    (["model.dtype=bfloat16"], ["model.dtype ('float32' -> 'bfloat16')"]),
    (["train.schedule=cosine", "log.progress=true"], ["train.schedule ('constant' -> 'cosine')"]),
])
def test_resume_refuses_a_set_that_changes_what_is_trained(trained, tmp_path, capsys, sets, named):
    run = _copy(trained, tmp_path / "run")
    before = _digest(run)
    err = _expect_error(capsys, ["train", "--resume", str(run), *cli_sets(sets)], "config.yaml is what this run trains",
                        *named)
    refused = err.split("refusing to change")[1].split(". On resume")[0]
    assert "threads" not in refused and "log.progress" not in refused  # runtime keys are not refused
    assert _digest(run) == before


def test_resume_refuses_growing_a_budget_the_schedule_depends_on(tmp_path, tiny_data, tiny_models, capsys):
    run = tmp_path / "run"
    sets = cli_sets(tiny_overrides(tiny_data, tiny_models("bert"), threads=1,
                                   **{"train.episodes": 2, "train.schedule": "cosine"}))
    assert main(["train", "--out", str(run), *sets]) == 0
    _expect_error(capsys, ["train", "--resume", str(run), "--set", "train.episodes=6"],
                  "train.episodes cannot grow here: train.schedule=cosine spreads the learning rate")


def test_resume_records_runtime_keys_and_extensions(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path / "run")
    config = (run / "config.yaml").read_text()
    assert main(["train", "--resume", str(run), "--set", "threads=2", "--set", "log.progress=true"]) == 0
    assert (run / "config.yaml").read_text() == config  # config.yaml stays the truth
    entry = json.loads((run / "run.json").read_text())["resumes"][-1]
    assert entry["runtime"] == {"threads": 2, "log.progress": True} and entry["config_changes"] == {}
    # a longer budget (constant schedule: the steps done do not depend on it) is written into config.yaml
    assert main(["train", "--resume", str(run), "--set", "train.episodes=4"]) == 0
    from metaprompt.config import Config

    assert Config.load(run / "config.yaml").train.episodes == 4
    entry = json.loads((run / "run.json").read_text())["resumes"][-1]
    assert entry["config_changes"] == {"train.episodes": {"from": 2, "to": 4}} and entry["at_step"] == 2
    assert json.loads((run / "train_summary.json").read_text())["episodes"] == 4


# ------------------------------------------------------------------------------ no silent overwrite
def test_eval_never_replaces_a_result_of_another_kind(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path / "run")
    assert main(["eval", str(run)]) == 0  # the run's own evaluation
    own = (run / "results.json").read_bytes()
    for argv, name in ((["--init", "pretrained", "--episodes", "1"], "results.pretrained-1ep.json"),
                       (["--init", "meta"], "results.meta-3ep.json"),
                       (["--episodes", "2"], "results.both-2ep.json")):
        capsys.readouterr()
        assert main(["eval", str(run), *argv]) == 0
        err = capsys.readouterr().err
        assert f"written to {run / name}" in err and "results.json is left as it is" in err, err
        assert (run / "results.json").read_bytes() == own
        assert json.loads((run / name).read_text())["results_file"] == name
    capsys.readouterr()
    assert main(["eval", str(run), "--set", "eval.steps=1"]) == 0  # another setting: named by a hash of it
    changed = [p.name for p in run.glob("results.both-3ep.*.json")]
    assert len(changed) == 1 and (run / "results.json").read_bytes() == own
    assert main(["export", str(run), "--out", str(tmp_path / "export")]) == 0
    card = json.loads((tmp_path / "export" / "metaprompt.json").read_text())["metrics"]
    assert card["n_episodes"] == 3 and "meta" in card and "pretrained" in card  # the run's own result


def test_own_evaluation_moves_an_earlier_partial_one_aside(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path / "run")
    assert main(["eval", str(run), "--init", "pretrained", "--episodes", "1"]) == 0  # first: takes results.json
    quick = (run / "results.json").read_bytes()
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert "moved the earlier" in capsys.readouterr().err
    assert (run / "results.pretrained-1ep.json").read_bytes() == quick
    assert json.loads((run / "results.json").read_text())["n_episodes"] == 3


def test_eval_refuses_to_replace_a_result_on_other_data(trained, tmp_path, tiny_data, capsys):
    run = _copy(trained, tmp_path / "run")
    assert main(["eval", str(run)]) == 0
    own = (run / "results.json").read_bytes()
    data = tmp_path / "data.jsonl"
    data.write_text(tiny_data[0].read_text())
    on_copy = ["--set", f"data.path={data}"]
    capsys.readouterr()
    assert main(["eval", str(run), *on_copy]) == 0  # another data file: beside results.json
    beside = [p for p in run.glob("results.both-3ep.*.json")]
    assert len(beside) == 1 and (run / "results.json").read_bytes() == own
    first = beside[0].read_bytes()
    data.write_text(tiny_data[0].read_text().replace("goal", "goals"))  # that file changed since
    err = _expect_error(capsys, ["eval", str(run), *on_copy])
    assert "holds an evaluation of other data or test episodes" in err or "sha256" in err, err
    assert beside[0].read_bytes() == first and (run / "results.json").read_bytes() == own
    assert not list(run.glob("results*partial*"))  # refused before anything was scored


def test_a_hand_edited_config_yaml_is_refused(trained, tmp_path, capsys):
    """run.json records the config that trained the run: eval, export and --resume refuse a config.yaml
    edited since (a --set on resume is refused the same way), naming the keys."""
    run = _copy(trained, tmp_path / "run")
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace("lr: 0.002", "lr: 0.5").replace("seed: 1999", "seed: 77"))
    before = _digest(run)
    for argv in (["train", "--resume", str(run)], ["eval", str(run)], ["export", str(run), "--out", str(tmp_path / "x")]):
        _expect_error(capsys, argv, "config.yaml was edited after this run was trained with it", "seed (1999 -> 77)",
                      "train.lr (0.002 -> 0.5)")
    assert _digest(run) == before and not (tmp_path / "x").exists()
    (run / "config.yaml").write_text(config.replace("progress: false", "progress: true"))  # a runtime key: fine
    assert main(["eval", str(run), "--episodes", "1", "--init", "pretrained"]) == 0


def test_episode_file_is_never_silently_replaced(tmp_path, tiny_data, capsys):
    data = cli_sets([f"data.path={tiny_data[0]}", f"data.splits={tiny_data[1]}"])
    out = tmp_path / "episodes.jsonl"
    argv = ["episodes", "--dataset", "custom", "--n-way", "3", "--count", "2", "--out", str(out), *data]
    assert main(argv) == 0
    first = out.read_bytes()
    _expect_error(capsys, [*argv[:-len(data)], "--seed", "7", *data], "the file already exists", "--force")
    assert out.read_bytes() == first
    assert main([*argv, "--seed", "7", "--force"]) == 0 and out.read_bytes() != first


@pytest.mark.parametrize("argv", [["eval", "{run}", "--set", "eval.adapt=adam"], ["eval", "{run}", "--set", "seed=-1"],
                                  ["train", "--resume", "{run}", "--set", "train.lr=-1"]])
def test_a_refused_command_does_not_even_take_the_lock(trained, tmp_path, capsys, argv):
    """Bad input is refused before the run is touched: not even the lock file appears (a run
    written before runs had locks stays byte-for-byte as it was)."""
    run = _copy(trained, tmp_path / "run")
    (run / LOCK_FILE).unlink()
    before = _digest(run)
    _expect_error(capsys, [a.format(run=run) for a in argv], "config key")
    assert _digest(run) == before and not (run / LOCK_FILE).exists()
