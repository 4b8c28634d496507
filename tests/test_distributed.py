"""Meta-batches over 2 processes (Gloo on CPU) give what one process gives.

- the meta-gradient of a meta-batch split over 2 processes (``torch.multiprocessing.spawn``)
  equals the single-process meta-gradient of the same tasks, for each algorithm, and a fresh
  2-process ``train()`` ends with the checkpoint of a 1-process run with the same meta-batch;
- ``metaprompt train --resume`` under ``torchrun --nproc_per_node 2`` (every rank reads the
  checkpoint, rank 0 writes) continues a run to the parameters, validation curve and best
  init of an uninterrupted 1-process run.

Process starts dominate the time, so each test starts its processes once.
"""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from metaprompt.run.checkpoint import load_checkpoint, read_init_file
from tests.conftest import tiny_overrides

ALGORITHMS = ("fomaml", "maml", "maml++", "reptile")
META_BATCH = 4  # 2 tasks per process: the sum over processes is not the single-process order of additions


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, sets, out):
    """One process: the single-process reference (rank 0), then its share of the meta-batch."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world)})
    torch.set_num_threads(1)
    from safetensors.torch import save_file

    from metaprompt.config import Config
    from metaprompt.meta.algorithms import build_algorithm
    from metaprompt.meta.engines import build_engine
    from metaprompt.run.distributed import Group, init_group
    from metaprompt.run.setup import build_setup

    cfg = Config.load(None, sets + TRAIN)
    setup = build_setup(cfg)
    group = init_group(torch.device("cpu"))
    assert (group.rank, group.world_size, group.backend) == (rank, world, "gloo")
    sampler = setup.sampler("train", cfg.seed)
    step = 1  # the second outer step: episodes 4..7
    tasks = {b: setup.task(sampler.episode(step * META_BATCH + b), step * META_BATCH + b) for b in range(META_BATCH)}
    tensors = {}
    for name in ALGORITHMS:
        cfg.meta.algorithm = name
        algorithm = build_algorithm(cfg.meta, build_engine(cfg.meta.engine), setup.classifier)
        for label, g in (("single", Group()), ("split", group)):
            if label == "single" and rank != 0:
                continue
            params = setup.classifier.init_params()
            params.update(algorithm.extra_params(params))
            results = {b: algorithm.accumulate(params, tasks[b], step, 10, weight=1.0 / META_BATCH)
                       for b in g.slots(META_BATCH)}
            stats = g.reduce_step(params, results, META_BATCH)
            assert stats.finite and len(stats.losses) == META_BATCH
            for key, p in params.items():
                if p.grad is not None:
                    tensors[f"{label}/{name}/{key}"] = p.grad.detach().clone()
            tensors[f"{label}/{name}/_losses"] = torch.tensor(stats.losses)
    if rank == 0:
        save_file(tensors, out)
    # A fresh 2-process run through the trainer (this process group; rank 0 writes the run dir).
    from metaprompt.run.train import train

    cfg.meta.algorithm = "fomaml"
    summary = train(cfg, out + ".run", setup=setup)
    assert summary["processes"] == 2
    group.close()


TRAIN = ["threads=1", "meta.algorithm=fomaml", "train.val_every=1", "train.val_episodes=3",
         "train.checkpoint_every=1", "train.patience=0", "log.progress=false"]


def _train_here(run, sets, resume=False):
    """A 1-process run in this process (one thread, as the launched processes use)."""
    from metaprompt.config import Config
    from metaprompt.run.train import train

    threads = torch.get_num_threads()
    try:
        return train(Config.load(None, sets), run, resume=resume)
    finally:
        torch.set_num_threads(threads)


def _assert_same_run(one, two):
    a, b = load_checkpoint(one / "checkpoint.safetensors"), load_checkpoint(two / "checkpoint.safetensors")
    assert a["state"]["step"] == b["state"]["step"]
    flat_a = torch.cat([a["params"][k].flatten() for k in sorted(a["params"])])
    flat_b = torch.cat([b["params"][k].flatten() for k in sorted(a["params"])])
    assert _rel(flat_b, flat_a) <= 1e-6, _rel(flat_b, flat_a)
    # Validation episodes are split over the processes and merged: the same curve and best step.
    history = lambda c: [(p["step"], round(p["val_accuracy"], 6)) for p in c["state"]["history"]]  # noqa: E731
    assert history(a) == history(b) and len(history(a)) == a["state"]["step"] + 1
    assert read_init_file(one / "best.safetensors")[1]["step"] == read_init_file(two / "best.safetensors")[1]["step"]
    lines = lambda run: [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    la, lb = lines(one), lines(two)
    assert [x["step"] for x in la] == [x["step"] for x in lb]
    for x, y in zip(la, lb):
        if "loss" in x:
            assert x["loss"] == pytest.approx(y["loss"], rel=1e-5) and x["accuracy"] == pytest.approx(y["accuracy"])


@pytest.mark.slow
def test_two_processes_give_the_single_process_meta_gradient(tmp_path, tiny_data, tiny_models):
    sets = tiny_overrides(tiny_data, tiny_models("bert"), **{"meta.inner_steps": 2, "meta.meta_batch": META_BATCH,
                                                             "meta.first_order_fraction": 0.0})
    out = str(tmp_path / "grads.safetensors")
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), sets, out), nprocs=2, join=True)
    from safetensors.torch import load_file

    grads = load_file(out)
    for name in ALGORITHMS:
        single = {k.split("/", 2)[2]: v for k, v in grads.items() if k.startswith(f"single/{name}/")}
        split = {k.split("/", 2)[2]: v for k, v in grads.items() if k.startswith(f"split/{name}/")}
        assert single.keys() == split.keys() and len(single) > 1, name
        assert torch.equal(single.pop("_losses"), split.pop("_losses")), name  # each task's loss, unchanged
        flat_single = torch.cat([v.flatten() for v in single.values()])
        flat_split = torch.cat([split[k].flatten() for k in single])
        assert _rel(flat_split, flat_single) <= 1e-6, (name, _rel(flat_split, flat_single))
        for key in single:
            assert _rel(split[key], single[key]) <= 1e-5, (name, key)
    one = tmp_path / "one"
    _train_here(one, sets + TRAIN)
    two = tmp_path / "grads.safetensors.run"
    _assert_same_run(one, two)
    summary = json.loads((two / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["episodes"] == 4 and summary["episodes_per_second"] > 0
    assert json.loads((two / "run.json").read_text())["distributed"] == {"world_size": 2, "backend": "gloo"}


# -- end to end: `metaprompt train --resume` under torchrun ---------------------------------------------
@pytest.mark.slow
def test_torchrun_resume_on_two_processes_matches_one_process(tmp_path, tiny_data, tiny_models):
    model = tiny_models("bert")
    sets = tiny_overrides(tiny_data, model, **{"meta.meta_batch": META_BATCH}) + TRAIN
    one, two = tmp_path / "one", tmp_path / "two"
    _train_here(one, sets + ["train.episodes=16"])  # 4 outer steps in one process
    _train_here(two, sets + ["train.episodes=4"])  # 1 outer step, then 3 more on 2 processes
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
            "-m", "metaprompt", "train", "--resume", str(two), "--set", "train.episodes=16"]
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("trained 16 episodes") == 1, done.stdout  # rank 0 alone reports
    assert "episodes/s over 2 process(es)" in done.stdout
    _assert_same_run(one, two)
    assert json.loads((two / "train_summary.json").read_text())["processes"] == 2
